"""`llmrec serve` as a real server process, with a real HTTP client: recommend, add an item then find it,
a hot swap while requests run (none fails), bad requests."""
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest
import yaml

from llmrec_core.data.layout import DataLayout
from llmrec_core.serve.recommend import build_index


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(sample_prepared, tiny_bert):
    params = sample_prepared("http", model={"name_or_path": str(tiny_bert), "user_max_tokens": 48,
                                            "item_max_tokens": 16})
    build_index(params, zero_shot=True)
    path = params.base_dir / "params-http.yaml"
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llmrec_core", "serve", "--params", str(path), "--port", str(port)],
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    deadline = time.time() + 180
    while True:
        try:
            if client.get("/healthz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"server did not start: {proc.stdout.read()[-3000:]}")
        time.sleep(0.5)
    yield client, params
    client.close()
    proc.terminate()
    proc.wait(timeout=30)


def test_recommend_for_a_known_user_and_for_titles(server):
    client, params = server
    prepared = DataLayout(params.data_root).prepared
    user = pd.read_parquet(prepared / "users.parquet")["user_id"].iloc[0]
    res = client.post("/recommend", json={"user": user, "k": 5})
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(body["items"]) == 5 and [r["rank"] for r in body["items"]] == [1, 2, 3, 4, 5]
    titles = [h["title"] for h in body["history"]]
    assert titles and not {r["title"] for r in body["items"]} & set(titles)  # what the user rated is excluded
    res = client.post("/recommend", json={"history": titles[-3:], "k": 3, "domain": body["items"][0]["domain"]})
    assert res.status_code == 200 and {r["domain"] for r in res.json()["items"]} == {body["items"][0]["domain"]}
    # a title the catalogue lacks is read as text and flagged; a known one matches whatever its case
    res = client.post("/recommend", json={"history": [titles[-1].upper(), "A Title Nobody Wrote"], "k": 3})
    assert res.status_code == 200, res.text
    assert [h["in_catalog"] for h in res.json()["history"]] == [True, False]
    assert titles[-1] not in {r["title"] for r in res.json()["items"]}


def test_a_new_item_is_searchable_when_the_call_returns(server):
    client, _ = server
    domain = client.get("/healthz").json()["domains"][0]
    before = client.get("/healthz").json()["items"]
    res = client.post("/items", json={"items": [{"item_id": "brand-new-1", "domain": domain,
                                                 "title": "A Completely New Item"}]})
    assert res.status_code == 200, res.text
    assert res.json()["accepted"] == [f"{domain}:brand-new-1"]
    assert client.get("/healthz").json()["items"] == before + 1
    found = client.post("/recommend", json={"history": ["anything"], "k": 1000, "domain": domain}).json()["items"]
    assert f"{domain}:brand-new-1" in {r["item_id"] for r in found}
    # the same item again, and one of a domain the index does not have, are quarantined with the reason
    again = client.post("/items", json={"items": [{"item_id": "brand-new-1", "domain": domain, "title": "Again"},
                                                  {"item_id": "x", "domain": "Nowhere", "title": "Elsewhere"}]})
    assert again.status_code == 422
    reasons = " ".join(q["reason"] for q in again.json()["quarantined"])
    assert "already indexed" in reasons and "domain" in reasons


def test_hot_swap_while_requests_run_drops_none(server):
    client, params = server
    user = pd.read_parquet(DataLayout(params.data_root).prepared / "users.parquet")["user_id"].iloc[1]
    generation = client.get("/healthz").json()["generation"]

    def ask(_):
        return client.post("/recommend", json={"user": user, "k": 10}).status_code

    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(ask, i) for i in range(40)]
        reloads = [client.post("/reload").status_code for _ in range(2)]
        codes = [f.result() for f in pending]
    assert reloads == [200, 200] and codes == [200] * 40
    assert client.get("/healthz").json()["generation"] == generation + 2
    metrics = client.get("/metrics").text
    assert 'llmrec_requests_total{endpoint="/recommend",status="200"}' in metrics
    assert "llmrec_reloads_total 2.0" in metrics or "llmrec_reloads_total" in metrics


@pytest.mark.parametrize("body, status, text", [
    ({"user": "no-such-user"}, 404, "unknown user"),
    ({"history": []}, 422, ""),
    ({"history": ["x"], "domain": "Nowhere"}, 400, "unknown domain"),
    ({"user": "u", "history": ["x"]}, 422, "exactly one"),
    ({"history": ["x"], "k": 0}, 422, ""),
    ({"history": ["x"], "colour": 1}, 422, ""),
])
def test_bad_requests_get_a_clear_4xx_without_a_trace(server, body, status, text):
    client, _ = server
    res = client.post("/recommend", json=body)
    assert res.status_code == status, res.text
    assert text in res.text and "Traceback" not in res.text


def test_oversized_bodies_are_refused_and_docs_are_served(server):
    client, _ = server
    res = client.post("/recommend", content=b'{"history": ["' + b"x" * (2 << 20) + b'"]}',
                      headers={"content-type": "application/json"})
    assert res.status_code == 413 and "over" in res.json()["detail"]
    assert client.get("/docs").status_code == 200
    assert "/recommend" in client.get("/openapi.json").json()["paths"]


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_sent_whole(server):
    client, _ = server
    offered, chunk = 1600, b"x" * 65536  # 100 MiB, with no Content-Length (chunked transfer encoding)
    sent = 0

    def chunks():
        nonlocal sent
        for _ in range(offered):
            sent += 1
            yield chunk

    res = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert res.status_code == 413 and "over" in res.json()["detail"]
    assert sent < offered // 4, sent  # the server stopped reading: only what the sockets' buffers took was sent
    assert client.get("/healthz").status_code == 200


def test_the_retrain_flow_task_makes_the_service_reload(server, tmp_path):
    from tasks.items import reload_service

    client, params = server
    generation = client.get("/healthz").json()["generation"]
    doc = yaml.safe_load((params.base_dir / "params-http.yaml").read_text())
    doc["orchestration"] = {"serve_url": str(client.base_url).rstrip("/")}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(doc))
    health = reload_service.fn(str(tmp_path))
    assert health["generation"] == generation + 1 == client.get("/healthz").json()["generation"]
