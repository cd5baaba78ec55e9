import yaml
from typer.testing import CliRunner

from llmrec_core.cli import app

runner = CliRunner()


def test_help_lists_every_stage():
    out = runner.invoke(app, ["--help"]).output
    for command in ("ingest", "validate", "prepare"):
        assert command in out
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0 and "--params" in sub.output


def test_bad_params_exit_with_the_key(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"data": {"sources": []}, "colour": 1}))
    res = runner.invoke(app, ["ingest", "--params", str(p)])
    assert res.exit_code == 2
    assert "colour: unknown key" in res.output and "data.sources" in res.output


def test_prepare_on_ml100k_prints_the_settings_table(tmp_path, ml100k_dir):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({
        "data": {"sources": [{"name": "ml", "format": "recbole", "domain_from": "first_genre",
                              "interactions": str(ml100k_dir / "ml-100k.inter"),
                              "items": str(ml100k_dir / "ml-100k.item")}],
                 "top_domains": 5, "root": str(tmp_path / "data")},
        "validation": {"results_dir": str(tmp_path / "gx")}}))
    for stage in ("ingest", "validate", "prepare"):
        res = runner.invoke(app, [stage, "--params", str(p)])
        assert res.exit_code == 0, res.output
    for text in ("Mixed", "S2PIAO", "Single Domain", "Drama", "Adventure", "test targets"):
        assert text in res.output
    assert (tmp_path / "gx").is_dir() and any((tmp_path / "gx").rglob("interactions.json"))


def test_the_product_cli_has_no_lab_commands():
    for command in ("analyses", "report", "new-item-offset", "tune-heads"):
        assert runner.invoke(app, [command, "--help"]).exit_code != 0, command
