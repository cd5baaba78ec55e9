"""The Prefect flows end to end on a small copy of the project, against a real local S3 server (moto)."""
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on 127.0.0.1, stopped by PID at the end."""
    import boto3

    port = _free_port()
    env = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}
    os.environ.update(env)
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log)
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    for _ in range(100):
        try:
            client.create_bucket(Bucket="llmrec-test")
            break
        except Exception:
            time.sleep(0.1)
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prefect_api():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


def _dvc(project: Path, *args: str) -> str:
    done = subprocess.run([str(BIN / "dvc"), *args], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_bert, s3):
    """A copy of the pipeline (dvc.yaml, code, sample) with a tiny model and a DVC remote on moto."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(REPO / "llmrec_core", root / "llmrec_core", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "data" / "sample", root / "data" / "sample")
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    doc["model"].update(name_or_path=str(tiny_bert), user_max_tokens=48)
    doc["train"].update(max_steps=2, batch_size=8, max_examples_per_user=1, domain_negatives=1)
    doc["sasrec"].update(epochs=2, eval_every=1, hidden=16)
    doc["seqhead"].update(epochs=2, eval_every=1, hidden=16, max_len=10)
    doc["registry"].update(max_valid_users=100)
    doc["eval"].update(max_valid_users=50)
    doc["orchestration"].update(new_items_threshold=2)
    (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    _dvc(root, "init", "--no-scm", "-q")
    _dvc(root, "remote", "add", "-d", "storage", "s3://llmrec-test/dvc")
    _dvc(root, "remote", "modify", "storage", "endpointurl", s3)
    return root


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def trained(project, prefect_api):
    from flows.train_eval import train_eval

    return train_eval(project=str(project))


def test_train_eval_runs_the_pipeline_pushes_registers_and_publishes(project, trained):
    from prefect.artifacts import Artifact

    from llmrec_core.config import load_params
    from llmrec_core.registry import ModelRegistry

    table = trained["metrics"]
    for model in ("seqhead_served", "seqhead", "llmrec", "sasrec", "popularity"):
        assert f"| {model} |" in table
    assert (project / "dvc.yaml").is_file()  # written from params.yaml by the flow
    assert (project / "runs" / "main" / "seqhead" / "index" / "items.faiss").is_file()  # the head serves
    assert trained["decision"]["promoted"] and trained["decision"]["reason"] == "no champion yet"
    champion = ModelRegistry(load_params(project / "params.yaml")).champion()
    assert champion.number == trained["decision"]["version"] and champion.kind == "seqhead"
    assert (project / "registry" / "sample.dvc").is_file()  # the registry is versioned with DVC and pushed
    assert Artifact.get("promotion") is not None
    assert "up to date" in _dvc(project, "status").lower()
    metrics = _dvc(project, "metrics", "show")
    assert "recall@10" in metrics
    assert Artifact.get("metrics") is not None
    assert not (project / "reports" / "sample" / "REPORT.md").exists()  # the analyses report is the lab's


def test_push_then_pull_restores_data_and_checkpoints_byte_identical(project, trained):
    weights = project / "runs" / "main" / "weights.safetensors"
    head = project / "runs" / "main" / "seqhead" / "weights.safetensors"
    prepared = project / "data" / "prepared" / "sequences_mixed.parquet"
    version = next((project / "registry" / "sample" / "versions").glob("[0-9]*/seqhead/weights.safetensors"))
    before = {p: _sha(p) for p in (weights, head, prepared, version)}
    shutil.rmtree(project / ".dvc" / "cache")
    weights.unlink()
    head.unlink()
    shutil.rmtree(project / "data" / "prepared")
    shutil.rmtree(project / "registry" / "sample")
    _dvc(project, "pull")
    assert {p: _sha(p) for p in before} == before


def test_push_with_the_endpoint_down_retries_then_names_it(project, trained):
    from tasks.pipeline import RemoteError, push

    dead = f"http://127.0.0.1:{_free_port()}"
    _dvc(project, "remote", "modify", "--local", "storage", "endpointurl", dead)
    try:
        started = time.perf_counter()
        with pytest.raises(RemoteError, match=dead.replace(".", r"\.")):
            push.with_options(retries=1, retry_delay_seconds=1)(str(project))
        assert time.perf_counter() - started >= 1  # it did retry
    finally:
        _dvc(project, "remote", "modify", "--local", "--unset", "storage", "endpointurl")


def test_push_without_credentials_says_so(project, trained, monkeypatch):
    from tasks.pipeline import MissingCredentials, push

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    with pytest.raises(MissingCredentials, match="AWS_ACCESS_KEY_ID"):
        push(str(project))


def test_new_items_are_indexed_at_once_and_start_a_retrain(project, trained, tmp_path):
    from flows.new_items import ingest_new_items
    from llmrec_core.config import load_params
    from llmrec_core.registry import serving_params
    from llmrec_core.serve.recommend import load_index, recommend

    params = serving_params(load_params(project / "params.yaml"))[0]  # the champion's folders
    before = len(load_index(params).catalog)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"item_id": "X1", "domain": "Books"}\n{not json\n{"item_id": "X2", "domain": "Nope", "title": "t"}\n')
    result = ingest_new_items(str(bad), project=str(project), version=False)
    assert result["rejected"] and result["accepted"] == 0 and result["quarantined"] == 3
    assert len(load_index(params).catalog) == before  # the index was not touched
    good = tmp_path / "new.jsonl"
    good.write_text('{"item_id": "N1", "domain": "Books", "title": "Zyx Quantum Teapot Saga"}\n'
                    '{"item_id": "N2", "domain": "Video_Games", "title": "Porcelain Nebula Racer - PC"}\n')
    result = ingest_new_items(str(good), project=str(project))
    assert result["accepted"] == 2 and result["retrain"]  # threshold 2: a retrain ran as a subflow
    catalog = load_index(params).catalog
    assert {"Books:N1", "Video_Games:N2"} <= set(catalog["item_id"])
    _, recs = recommend(params, history=["Zyx Quantum Teapot Saga"], k=len(catalog), domain="Books")
    assert "Books:N1" not in set(recs["item_id"])  # the history item itself is excluded ...
    _, recs = recommend(params, history=["Porcelain Nebula Racer - PC"], k=len(catalog), domain="Books")
    assert "Books:N1" in set(recs["item_id"])  # ... but it is recommendable to others
    assert (project / "data" / "new_items.dvc").is_file()


def test_a_pipeline_killed_mid_training_continues_from_its_checkpoint(project, trained):
    """What a killed flow leaves behind: `dvc repro` again resumes the train stage (--auto-resume)."""
    import json
    import signal

    import torch

    params_path = project / "params.yaml"
    original = params_path.read_text()
    doc = yaml.safe_load(original)
    doc["train"].update(max_steps=None, checkpoint_every=3)  # a whole epoch: long enough to kill mid-way
    params_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ckpt = project / "runs" / "main" / "checkpoint.pt"
    before = ckpt.stat().st_mtime_ns
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    try:
        proc = subprocess.Popen([str(BIN / "dvc"), "repro", "train-llmrec"], cwd=project, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and (
                not ckpt.is_file() or ckpt.stat().st_mtime_ns == before):
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        killed = torch.load(ckpt, map_location="cpu", weights_only=True)["state"]
        assert not killed["done"] and killed["global_step"] > 0

        done = subprocess.run([str(BIN / "dvc"), "repro", "train-llmrec"], cwd=project, env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"resuming from {ckpt}" in done.stdout + done.stderr
        steps = [int(line.split(",")[0]) for line in (ckpt.parent / "train_log.csv").read_text().splitlines()[1:]]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) > killed["global_step"]
        assert json.loads((ckpt.parent / "train_metrics.json").read_text())["cost"]["global_steps"] == len(steps)
    finally:
        params_path.write_text(original)
