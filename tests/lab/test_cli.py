"""`llmrec-lab`: the lab's own command group, with the product CLI's error path."""
import yaml
from typer.testing import CliRunner

from lab.cli import app

runner = CliRunner()


def test_lab_help_lists_its_commands():
    out = runner.invoke(app, ["--help"]).output
    for command in ("analyses", "report", "new-item-offset", "tune-heads"):
        assert command in out
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output


def test_new_item_offset_names_what_is_missing(tmp_path):
    p = tmp_path / "params.yaml"
    source = {"name": "ml", "format": "recbole", "domain": "d", "interactions": "x.inter", "items": "x.item"}
    p.write_text(yaml.safe_dump({"data": {"sources": [source], "root": str(tmp_path / "data")},
                                 "experiments": [{"name": "lm-only", "set": {"eval.models": ["llmrec"]}},
                                                 {"name": "head", "set": {"eval.models": ["seqhead"]}}]}))
    res = runner.invoke(app, ["new-item-offset", "--params", str(p), "--experiment", "nope"])
    assert res.exit_code == 2 and "unknown experiment(s) ['nope']" in res.output
    res = runner.invoke(app, ["new-item-offset", "--params", str(p), "--experiment", "lm-only"])
    assert res.exit_code == 2 and "run lm-only has no sequence head (eval.models: llmrec)" in res.output
    res = runner.invoke(app, ["new-item-offset", "--params", str(p), "--experiment", "head", "--offset", "-1"])
    assert res.exit_code == 2 and "offsets >= 0" in res.output
    res = runner.invoke(app, ["new-item-offset", "--params", str(p), "--experiment", "head"])
    assert res.exit_code == 2 and "run head has no results for these params and data" in res.output


def test_tune_heads_refuses_a_bad_grid_in_one_line(tmp_path):
    p = tmp_path / "params.yaml"
    source = {"name": "ml", "format": "recbole", "domain": "d", "interactions": "x.inter", "items": "x.item"}
    p.write_text(yaml.safe_dump({"data": {"sources": [source], "root": str(tmp_path / "data")}}))
    res = runner.invoke(app, ["tune-heads", "--params", str(p), "--grid", "train.lr=1,2"])
    assert res.exit_code == 2 and "expected sasrec.<key>=<v1>,<v2>" in res.output
    res = runner.invoke(app, ["tune-heads", "--params", str(p), "--model", "popularity"])
    assert res.exit_code == 2 and "--model 'popularity'" in res.output
