"""The HTTP service against hostile or careless clients, in process: bodies bounded while they stream (chunked
included), no response echoing a body or naming a filesystem path, strict request types, and the token that
state changes need."""
import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from llmrec_core.serve.auth import is_loopback, load_token
from llmrec_core.serve.body_limit import MAX_BODY_BYTES, BodyLimit
from llmrec_core.serve.recommend import build_index, index_dir

REPO = Path(__file__).resolve().parents[2]

TOKEN = "test-token-0123456789abcdef"


@pytest.fixture(scope="module")
def app_params(sample_prepared, tiny_bert):
    params = sample_prepared("http-security", model={"name_or_path": str(tiny_bert), "user_max_tokens": 48,
                                                     "item_max_tokens": 16})
    build_index(params, zero_shot=True)
    return params


@pytest.fixture(scope="module")
def apps(app_params):
    from llmrec_core.serve.http import create_app

    return create_app(app_params, token=TOKEN), create_app(app_params)


def _client(app, host="127.0.0.1"):
    return TestClient(app, client=(host, 50000), raise_server_exceptions=False)


def test_a_chunked_body_over_the_limit_is_refused_before_it_is_read_whole():
    chunk, total_chunks = b"x" * 65536, 1600  # 100 MiB offered, 64 KiB at a time, with no Content-Length
    consumed, inner_read = 0, []

    async def receive():
        nonlocal consumed
        consumed += 1
        return {"type": "http.request", "body": chunk, "more_body": consumed < total_chunks}

    async def app(scope, receive_, send):  # reads the whole body, as a JSON route would
        body = b""
        while True:
            message = await receive_()
            body += message.get("body", b"")
            inner_read.append(len(body))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"read it all"})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/recommend", "headers": [(b"transfer-encoding", b"chunked")],
             "query_string": b"", "http_version": "1.1"}
    asyncio.run(BodyLimit(app)(scope, receive, send))
    assert sent[0]["status"] == 413 and b"over" in sent[1]["body"]
    assert consumed == MAX_BODY_BYTES // len(chunk) + 1  # stopped at the first chunk past the limit
    assert max(inner_read) <= MAX_BODY_BYTES  # the app never held more than the limit


def test_validation_errors_echo_no_input_and_no_path(apps, app_params):
    client = _client(apps[0])
    secret = "s3cr3t-payload-" + "y" * 5000
    for body in ({"history": secret}, {"history": ["x"], secret: 1}, {"user": {"a": secret}},
                 {"history": ["x"], "k": secret}):
        res = client.post("/recommend", json=body)
        assert res.status_code == 422, res.text
        assert secret not in res.text and len(res.text) < 1000  # an unknown key is named, cut short
    res = client.post("/recommend", content=b'{"history": ["' + secret.encode() + b'"', headers={
        "content-type": "application/json"})
    assert res.status_code == 422 and secret not in res.text


def test_no_error_body_names_an_absolute_path(apps, app_params):
    client = _client(apps[1])  # no token: state changes open to loopback clients
    root = str(app_params.data_root.parents[0])
    responses = [client.post("/recommend", json={"user": "no-such-user"}),
                 client.post("/recommend", json={"history": ["x"], "domain": "Nowhere"}),
                 client.post("/recommend", json={"history": ["x"], "k": 0}),
                 client.post("/items", json={"items": [{"item_id": "a", "domain": "Nowhere", "title": "t"}]}),
                 client.get("/no-such-endpoint")]
    index = index_dir(app_params)
    index.rename(index.with_name("index-away"))
    try:
        responses.append(client.post("/reload"))
    finally:
        index.with_name("index-away").rename(index)
    assert [r.status_code for r in responses] == [404, 400, 422, 422, 404, 409]
    assert "unknown user" in responses[0].text and "kept the current model" in responses[5].text
    for res in responses:
        assert root not in res.text and "/tmp" not in res.text, res.text


@pytest.mark.parametrize("body", [
    {"history": ["x"], "k": "5"},
    {"history": ["x"], "k": True},
    {"history": ["x"], "k": 5.0},
    {"history": ["   "]},
    {"history": ["", "\t"]},
    {"history": ["x"], "domain": "Books\n"},
    {"user": "42\x00"},
])
def test_request_types_are_strict(apps, body):
    res = _client(apps[0]).post("/recommend", json=body)
    assert res.status_code == 422, res.text


@pytest.mark.parametrize("item_id", ["new\nline", "nul\x00", "tab\tid", "del\x7f"])
def test_item_ids_with_control_characters_are_refused(apps, item_id):
    client = _client(apps[0])
    res = client.post("/items", headers={"Authorization": f"Bearer {TOKEN}"},
                      json={"items": [{"item_id": item_id, "domain": "x", "title": "A title"}]})
    assert res.status_code == 422 and "control characters" in res.text


def test_state_changes_need_the_token_when_one_is_set(apps):
    client = _client(apps[0])
    item = {"items": [{"item_id": "auth-1", "domain": "x", "title": "t"}]}
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):
        for path, body in (("/items", item), ("/reload", None)):
            res = client.post(path, json=body, headers=headers)
            assert res.status_code == 401, (path, headers, res.text)
            assert res.headers["www-authenticate"] == "Bearer"
    healthz = client.get("/healthz").json()
    res = client.post("/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert res.status_code == 200 and res.json()["generation"] == healthz["generation"] + 1
    assert client.post("/recommend", json={"history": ["x"], "k": 1}).status_code == 200  # reads stay open


def test_without_a_token_state_changes_are_open_to_loopback_only(apps):
    assert _client(apps[1], "10.1.2.3").post("/reload").status_code == 403
    assert _client(apps[1], "127.0.0.1").post("/reload").status_code == 200
    assert _client(apps[1], "10.1.2.3").get("/healthz").status_code == 200


def test_serve_refuses_a_non_loopback_bind_without_a_token():
    env = {k: v for k, v in os.environ.items() if k != "LLMREC_API_TOKEN"}
    res = subprocess.run([sys.executable, "-m", "llmrec_core", "serve", "--params", str(REPO / "params.yaml"),
                          "--host", "0.0.0.0"], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "LLMREC_API_TOKEN" in res.stdout + res.stderr, res.stdout + res.stderr


def test_tokens_come_from_a_file_or_the_environment_and_weak_ones_are_refused(tmp_path):
    from llmrec_core.errors import UserError

    assert load_token(None, {}) is None
    assert load_token(None, {"LLMREC_API_TOKEN": TOKEN}) == TOKEN
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert load_token(tmp_path / "token", {"LLMREC_API_TOKEN": "other-token-0123456789"}) == TOKEN
    for bad in ("", "short", "has a space in it, quite long"):
        with pytest.raises(UserError, match="LLMREC_API_TOKEN"):
            load_token(None, {"LLMREC_API_TOKEN": bad})
    with pytest.raises(UserError, match="cannot read"):
        load_token(tmp_path / "missing")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example.com")
