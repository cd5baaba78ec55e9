from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sample_prepared(tmp_path_factory):
    """The embedded sample, prepared once per session; returns a function making params for a run."""
    import yaml

    from llmrec_core.config import load_params
    from llmrec_core.data.ingest import ingest
    from llmrec_core.data.prepare import prepare
    from llmrec_core.data.validate import validate

    base = tmp_path_factory.mktemp("sample")
    doc = yaml.safe_load((REPO / "params.yaml").read_text())
    for src in doc["data"]["sources"]:
        for key in ("interactions", "items"):
            src[key] = str(REPO / src[key])
    doc["data"]["root"] = str(base / "data")
    doc["validation"]["results_dir"] = str(base / "gx")
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
        d["train"] = {**doc["train"], "run_dir": str(base / "runs" / run), **train}
        path = base / f"params-{run}.yaml"
        path.write_text(yaml.safe_dump(d))
        return load_params(path)

    return make
