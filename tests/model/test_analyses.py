"""The analyses set and the report, on the embedded sample with a tiny random model (fast)."""
import json
import re

import pytest
import yaml

from llmrec_core.analyses import is_current, run_analyses
from llmrec_core.config import load_params
from llmrec_core.report.build import build_report, fmt

PNG = b"\x89PNG\r\n\x1a\n"


def _analyses_doc(sample_prepared, tiny_bert, tmp_path) -> dict:
    base = sample_prepared("analyses-base").base_dir
    doc = yaml.safe_load((base / "params.yaml").read_text())
    doc["model"] = {**doc["model"], "name_or_path": str(tiny_bert), "pooling": "mean"}
    doc["train"] = {**doc["train"], "max_steps": 2, "batch_size": 8, "checkpoint_every": 100,
                    "run_dir": str(tmp_path / "runs" / "base")}
    doc["sasrec"] = {"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2}
    doc["eval"] = {"max_valid_users": 50, "models": ["llmrec", "sasrec", "popularity"]}
    doc["report"] = {"out": str(tmp_path / "report" / "REPORT.md"), "benchmarks_dir": str(tmp_path / "bench")}
    doc["experiments"] = [
        {"name": "mixed", "set": {"eval.models": ["llmrec", "zero_shot", "sasrec", "popularity"]}},
        {"name": "mixed-lora", "set": {"train.tuning": "lora", "eval.models": ["llmrec"]}},
        {"name": "s2piao", "set": {"train.setting": "s2piao"}},
        {"name": "single-books", "set": {"train.setting": "single_domain", "train.domain": "Books"}},
        {"name": "lodo-books", "set": {"train.setting": "leave_one_domain_out", "train.domain": "Books",
                                       "eval.models": ["llmrec"]}},
        {"name": "mixed-bank", "set": {"train.item_bank_negatives": True, "train.item_bank_refresh_steps": 1,
                                       "eval.models": ["llmrec"]}},
    ]
    return doc


@pytest.fixture(scope="module")
def analysed(sample_prepared, tiny_bert, tmp_path_factory):
    """The sample's analyses set, run once for this module: (params path, stamps)."""
    tmp_path = tmp_path_factory.mktemp("analyses")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_analyses_doc(sample_prepared, tiny_bert, tmp_path)))
    return path, run_analyses(path, log=lambda m: None)


def test_analyses_run_once_and_the_report_reads_their_numbers(analysed):
    path, stamps = analysed
    tmp_path = path.parent
    assert [s["name"] for s in stamps] == ["mixed", "mixed-lora", "s2piao", "single-books", "lodo-books", "mixed-bank"]

    # a second sweep trains nothing: every experiment is up to date
    weights = tmp_path / "runs" / "mixed" / "weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert run_analyses(path, log=lambda m: None) == stamps
    assert weights.stat().st_mtime_ns == mtime
    # changing one experiment's params makes only that one stale
    doc = yaml.safe_load(path.read_text())
    doc["experiments"][1]["set"]["train.lr"] = 1e-3
    doc["experiments"][2]["set"]["train.item_bank_negatives"] = False  # an option spelled at its default
    changed = tmp_path / "params-changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    stale = [e.name for e in load_params(changed).experiments if not is_current(load_params(changed, experiment=e.name))]
    assert stale == ["mixed-lora"]

    report = build_report(path)
    text = report.read_text()
    for heading in ("## LLM-Rec against the baselines", "## 1. Data settings", "## 2. Model size", "## 3. FPFT vs PEFT", "## 4. Cold-start and tail",
                    "## 5. Zero-shot", "## 6. Deployment cost", "## 7. Every experiment"):
        assert heading in text
    # table cells are the metrics files' numbers
    single = json.loads((tmp_path / "runs" / "single-books" / "metrics_test.json").read_text())
    books_row = next(line for line in text.split("## 1.")[1].splitlines() if line.startswith("| Books |"))
    assert fmt(single["models"]["llmrec"]["by_domain"]["Books"]["ndcg@10"]) in books_row
    assert fmt(single["models"]["sasrec"]["by_domain"]["Books"]["ndcg@10"]) in books_row
    lodo = json.loads((tmp_path / "runs" / "lodo-books" / "metrics_test.json").read_text())
    zero_row = [line for line in text.split("## 5.")[1].splitlines() if line.startswith("| Books |")][0]
    assert fmt(lodo["models"]["llmrec"]["overall"]["ndcg@10"]) in zero_row
    assert "Mixed beats Single Domain on" in text and "LoRA trains" in text
    # the every-experiment table carries the tuned LM's NDCG@10 on the whole validation split, on which the
    # headline run is chosen; evaluating validation leaves the test split's cost record in place
    mixed = json.loads((tmp_path / "runs" / "mixed" / "metrics_valid.json").read_text())
    assert mixed["split"] == "valid" and mixed["users"] > 50  # all of them, not the training loop's 50
    mixed_row = next(line for line in text.split("## 7.")[1].splitlines() if line.startswith("| mixed | Mixed | all | LLM-Rec |"))
    assert f"| {fmt(mixed['models']['llmrec']['overall']['ndcg@10'])} |" in mixed_row
    assert "(the whole validation split, ranked like the test)" in text
    headline = text.split("## 1.")[0]
    books = next(line for line in headline.splitlines() if line.startswith("| Books |"))  # the per-domain table
    assert fmt(json.loads((tmp_path / "runs" / "mixed" / "metrics_test.json").read_text())
               ["models"]["popularity"]["by_domain"]["Books"]["recall@10"]) in books
    assert re.search(r"- LLM-Rec beats popularity on \d of \d domains", headline)
    # the item-group analysis reads the same headline run
    best = re.search(r"\| LLM-Rec \(`([\w-]+)`\)", headline).group(1)
    groups = text.split("## 4.")[1].split("## 5.")[0]
    assert f"LLM-Rec: `{best}` (the headline run)" in groups
    tail = json.loads((tmp_path / "runs" / best / "metrics_test.json").read_text())["models"]["llmrec"]["by_group"]["tail"]
    assert next(line for line in groups.splitlines() if line.startswith("| tail |")).startswith(
        f"| tail | {fmt(tail['count'])} | {fmt(tail['ndcg@10'])} |")
    assert set(json.loads((tmp_path / "runs" / "mixed" / "cost_eval.json").read_text())) == {"llmrec", "zero_shot", "sasrec"}
    assert (tmp_path / "runs" / "mixed" / "cost_eval_valid.json").is_file()
    assert "- **Negatives** (base config" in text
    negatives = text.split("## 9. Negatives")[1]
    bank_row = next(line for line in negatives.splitlines() if line.startswith("| mixed-bank |"))
    assert "plus a loss over every item of the target's domain (item bank re-encoded every 1 steps)" in bank_row
    assert next(line for line in negatives.splitlines() if line.startswith("| mixed |"))
    assert "Not measured yet" in text  # no size sweep file in benchmarks_dir
    for name in ("data_settings.png", "item_groups.png", "zero_shot.png"):
        assert (report.parent / "figures" / name).read_bytes()[:8] == PNG
        assert f"figures/{name}" in text


def test_report_lists_experiments_not_run_and_reads_a_size_sweep(analysed):
    path, _ = analysed
    doc = yaml.safe_load(path.read_text())
    doc["experiments"].append({"name": "never-run", "set": {"train.tuning": "lora", "train.lr": 1e-3}})
    tmp_path = path.parent / "second"
    doc["report"] = {"out": str(tmp_path / "REPORT.md"), "benchmarks_dir": str(tmp_path / "bench")}
    tmp_path.mkdir()
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc))
    bench = tmp_path / "bench"
    bench.mkdir()
    row = {"model": "opt-40m", "parameters_total": 40_000_000, "parameters_trainable": 40_000_000,
           "train_samples_per_s": 3.5, "peak_host_mb": 900.0, "peak_gpu_mb": None, "titles_encoded_per_s": 120.0,
           "mfu": None, "precision": "fp32"}
    sweep = {"opt-40m/fpft": {**row, "tuning": "fpft"},
             "opt-40m/lora": {**row, "tuning": "lora", "parameters_trainable": 300_000, "train_samples_per_s": 7.0},
             "machine": {"gpu": None, "cpu_threads": 2}}
    (bench / "sizes_cpu.json").write_text(json.dumps(sweep))
    side = {"epochs_run": 5, "seconds_per_epoch": 1.5, "fit_seconds": 9.0, "test_eval_seconds": 0.4,
            "test": {"recall@10": 0.21, "ndcg@10": 0.105}}
    (bench / "recbole_cpu.json").write_text(json.dumps({
        "epoch_budget": 5, "dataset": "d", "protocol": "p", "ours": side, "ours_converged": None,
        "recbole": {**side, "seconds_per_epoch": 30.25, "recbole_version": "1.2.1"},
        "machine": {"machine": "x86_64", "cpu_threads": 2, "date": "2026-11-25"}}))
    text = build_report(path).read_text()
    assert "| RecBole 1.2.1 SASRec (5-epoch budget) | 5 | 30.25 |" in text
    assert "| llmrec SASRec (5-epoch budget) | 5 | 1.50 |" in text
    assert "One RecBole epoch takes 20x ours" in text  # 30.25 s / 1.5 s, computed from the file
    assert "**Not run yet**: never-run (" in text
    assert "| opt-40m | 40,000,000 | lora | 300,000 | CPU (2 threads) | 7.00 |" in text
    examples = json.loads((path.parent.parent / "runs" / "mixed" / "cost_train.json").read_text())["examples_per_epoch"]
    assert f"| 7.00 | {fmt(examples / 7.0)} |" in text  # s per epoch of the reference run at the measured rate
    assert "opt-40m 2.00×" in text
    assert (tmp_path / "figures" / "model_size_cost.png").read_bytes()[:8] == PNG
