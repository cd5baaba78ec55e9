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
