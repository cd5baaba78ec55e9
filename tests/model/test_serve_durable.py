"""Serving loses nothing: items answered with 200 survive concurrent adds, reloads and restarts, each persisted
once, and a retried batch gets the same answer."""
import threading
import time

import pytest

from llmrec_core.serve.item_store import accepted_items
from llmrec_core.serve.recommend import Recommender, build_index


@pytest.fixture
def durable_params(sample_prepared, tiny_bert, request):
    params = sample_prepared(f"durable-{request.node.name[:40]}",
                             model={"name_or_path": str(tiny_bert), "user_max_tokens": 48, "item_max_tokens": 16})
    build_index(params, zero_shot=True)
    return params


def _items(prefix: str, n: int, domain: str) -> list[dict]:
    return [{"item_id": f"{prefix}-{i}", "domain": domain, "title": f"Soak item {prefix} number {i}"}
            for i in range(n)]


def test_items_added_while_reloading_are_all_served_and_persisted_once(durable_params):
    from llmrec_core.serve.http import Service

    service = Service(durable_params)
    domain = service.recommender.domains[0]
    acknowledged, errors, stop = [], [], threading.Event()

    def add(worker: int) -> None:
        for batch in range(5):
            try:
                body, status = service.add_items(_items(f"w{worker}b{batch}", 3, domain))
            except Exception as e:  # noqa: BLE001 - a 500 in the service is a failure of this test
                errors.append(repr(e))
                continue
            if status == 200:
                acknowledged.extend(body["accepted"])

    def reload() -> None:
        while not stop.is_set():
            service.reload()
            time.sleep(0.02)

    reloader = threading.Thread(target=reload)
    reloader.start()
    adders = [threading.Thread(target=add, args=(w,)) for w in range(4)]
    for t in adders:
        t.start()
    for t in adders:
        t.join()
    stop.set()
    reloader.join()
    assert not errors and len(acknowledged) == 4 * 5 * 3
    served = set(service.recommender.index.catalog["item_id"])
    assert set(acknowledged) <= served, f"{len(set(acknowledged) - served)} acknowledged items not served"
    restarted = set(Recommender.load(durable_params).index.catalog["item_id"])
    assert set(acknowledged) <= restarted, f"{len(set(acknowledged) - restarted)} lost after a restart"
    stored = accepted_items(durable_params)["item_id"]
    assert sorted(stored[stored.isin(acknowledged)]) == sorted(acknowledged)  # each persisted exactly once


def test_a_retried_batch_gets_its_first_answer_and_a_reused_key_with_other_items_is_refused(durable_params):
    from llmrec_core.serve.http import Service
    from llmrec_core.serve.new_items import IdempotencyConflict

    service = Service(durable_params)
    domain = service.recommender.domains[0]
    batch = _items("retry", 2, domain)
    first, status = service.add_items(batch, key="k-1")
    assert status == 200 and len(first["accepted"]) == 2
    assert service.add_items(batch, key="k-1") == (first, 200)  # applied once, answered the same
    again, status = service.add_items(batch)  # no key, every item already accepted as it is: success again
    assert status == 200 and again["accepted"] == first["accepted"] and again["index_ids"] == first["index_ids"]
    with pytest.raises(IdempotencyConflict):
        service.add_items(_items("other", 1, domain), key="k-1")
    changed, status = service.add_items([{**batch[0], "title": "Another title"}])  # same id, other content
    assert status == 422 and "already indexed" in changed["quarantined"][0]["reason"]
    stored = accepted_items(durable_params)["item_id"]
    assert sorted(stored[stored.str.contains("retry")]) == sorted(first["accepted"])


def test_a_crash_mid_append_or_mid_index_swap_loses_no_acknowledged_item(durable_params):
    from llmrec_core.serve.item_store import LOG, new_items_dir
    from llmrec_core.serve.recommend import index_dir

    recommender = Recommender.load(durable_params)
    domain = recommender.domains[0]
    import pandas as pd

    ids = recommender.add(pd.DataFrame(_items("crash", 2, domain)).assign(item_id=lambda f: domain + ":" + f.item_id))
    with open(new_items_dir(durable_params) / LOG, "ab") as log:
        log.write(b'{"position": 99, "torn')  # a kill mid-append: the batch was never answered
    folder = index_dir(durable_params)
    folder.rename(folder.with_name(f".{folder.name}.old-deadbeef"))  # a kill between the swap's two renames
    restarted = Recommender.load(durable_params)
    assert list(restarted.index.catalog["item_id"].iloc[ids]) == [f"{domain}:crash-0", f"{domain}:crash-1"]
    more = restarted.add(pd.DataFrame(_items("after", 1, domain)).assign(item_id=lambda f: domain + ":" + f.item_id))
    assert Recommender.load(durable_params).index.catalog["item_id"].iloc[more[0]] == f"{domain}:after-0"
    logged = accepted_items(durable_params)["item_id"]
    assert sorted(logged[logged.str.contains("crash|after")]) == [f"{domain}:after-0", f"{domain}:crash-0",
                                                                   f"{domain}:crash-1"]


def test_items_logged_but_not_in_the_saved_index_are_replayed_and_an_older_build_never_overwrites(durable_params):
    from llmrec_core.serve.item_store import writer
    from llmrec_core.serve.recommend import save_index

    old = Recommender.load(durable_params)
    domain = old.domains[0]
    import pandas as pd

    rebuilt = build_index(durable_params, zero_shot=True)  # a new build while `old` is served
    old.add(pd.DataFrame(_items("late", 1, domain)).assign(item_id=lambda f: domain + ":" + f.item_id))
    with writer(durable_params):
        assert not save_index(durable_params, old.index)  # the older build does not replace the newer one
    from llmrec_core.serve.index import ItemIndex
    from llmrec_core.serve.recommend import index_dir

    assert ItemIndex.saved_meta(index_dir(durable_params))["build_id"] == rebuilt.meta["build_id"]
    assert f"{domain}:late-0" in set(Recommender.load(durable_params).index.catalog["item_id"])  # from the log
