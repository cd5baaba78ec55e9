"""The analyses set and the report, on the embedded sample with a tiny random model (fast)."""
import json
import re

import numpy as np
import pytest
import yaml

from lab.experiments import analyses_status, is_current, run_analyses
from llmrec_core.config import load_params
from lab.report.build import build_report
from lab.report.markdown import fmt

PNG = b"\x89PNG\r\n\x1a\n"


def _analyses_doc(sample_prepared, tiny_bert, tmp_path) -> dict:
    base = sample_prepared("analyses-base").base_dir
    doc = yaml.safe_load((base / "params.yaml").read_text())
    doc["model"] = {**doc["model"], "name_or_path": str(tiny_bert), "pooling": "mean"}
    doc["train"] = {**doc["train"], "max_steps": 2, "batch_size": 8, "checkpoint_every": 100,
                    "run_dir": str(tmp_path / "runs" / "base")}
    doc["sasrec"] = {"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2}
    doc["seqhead"] = {"epochs": 1, "eval_every": 1, "hidden": 16, "heads": 2}
    doc["eval"] = {"max_valid_users": 50, "models": ["llmrec", "sasrec", "popularity"]}
    # the base serves the LM, with no offset of new items (params.yaml serves the head, with calibration)
    doc["index"] = {**doc["index"], "model": "llmrec", "new_item_offset": 0.0, "new_item_offset_calibration": False}
    doc["report"] = {"out": str(tmp_path / "report" / "REPORT.md"), "benchmarks_dir": str(tmp_path / "bench")}
    doc["experiments"] = [
        {"name": "mixed", "seeds": [0, 1],
         "set": {"eval.models": ["llmrec", "zero_shot", "seqhead", "sasrec", "popularity"]}},
        # `index.model` names the head, which this run does not have: it indexes its LM
        {"name": "mixed-lora", "set": {"train.tuning": "lora", "eval.models": ["llmrec"], "index.model": "seqhead"}},
        {"name": "s2piao", "set": {"train.setting": "s2piao"}},
        {"name": "single-books", "set": {"train.setting": "single_domain", "train.domain": "Books"}},
        {"name": "lodo-books", "set": {"train.setting": "leave_one_domain_out", "train.domain": "Books",
                                       "eval.models": ["llmrec"]}},
        # in one process after fp32 runs: a sweep may change the mixed precision between runs
        # (its batch size repeats the base config's: the report's levers table does not list it)
        {"name": "mixed-bank", "set": {"train.batch_size": 8, "train.item_bank_negatives": True,
                                       "train.item_bank_refresh_steps": 1, "train.mixed_precision": "bf16",
                                       "eval.models": ["llmrec"]}},
        # the sequence head over this run's fine-tuned LM: the sweep trains the LM first, though it is not evaluated
        {"name": "mixed-head-tuned", "set": {"seqhead.item_vectors": "tuned", "eval.models": ["seqhead"],
                                             "index.model": "seqhead"},
         "compare_to": "mixed"},
        # the new-item setting: its own data root, which the sweep prepares (a time split of the sample)
        # (every new-item event of the window, and a sample of 40 warm ones)
        {"name": "new-items", "set": {"data.root": str(tmp_path / "data-new-items"),
                                      "prepare.time_split": {"new_item_share": 0.2, "window_days": 60,
                                                             "warm_test_sample": 40},
                                      "eval.models": ["llmrec", "zero_shot", "seqhead", "sasrec", "popularity"]}},
        # a lever on the new-item split (logit adjustment in the head's loss), paired with the experiment it names
        {"name": "new-items-head-la", "compare_to": "new-items",
         "set": {"data.root": str(tmp_path / "data-new-items"),
                 "prepare.time_split": {"new_item_share": 0.2, "window_days": 60, "warm_test_sample": 40},
                 "seqhead.logit_adjustment": 0.5, "eval.models": ["seqhead"]}},
        # a lever of the head on SASRec itself (an ensemble of 2): no LM is trained for it
        {"name": "mixed-sasrec-ens", "set": {"sasrec.members": 2, "eval.models": ["sasrec"]}},
    ]
    return doc


@pytest.fixture(scope="module")
def analysed(sample_prepared, tiny_bert, tmp_path_factory):
    """The sample's analyses set, run once for this module: (params path, stamps)."""
    tmp_path = tmp_path_factory.mktemp("analyses")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_analyses_doc(sample_prepared, tiny_bert, tmp_path)))
    return path, run_analyses(path, log=lambda m: None)


def _section(text: str, title: str) -> str:
    """The body of the section whose heading contains `title` (sections are numbered when written)."""
    match = re.search(rf"^## (\d+)\. {re.escape(title)}.*$", text, flags=re.M)
    assert match, title
    rest = text[match.end():]
    following = re.search(r"^## \d+\. ", rest, flags=re.M)
    return rest[: following.start()] if following else rest


def _mean(path, run_names, model, scope=("overall",), metric="ndcg@10"):
    values = []
    for name in run_names:
        node = json.loads((path.parent / "runs" / name / "metrics_test.json").read_text())["models"][model]
        for key in scope:
            node = node[key]
        values.append(node[metric])
    return sum(values) / len(values)


def test_analyses_run_once_and_the_report_reads_their_numbers(analysed):
    path, stamps = analysed
    tmp_path = path.parent
    assert [s["name"] for s in stamps] == ["mixed.seed0", "mixed.seed1", "mixed-lora", "s2piao", "single-books",
                                           "lodo-books", "mixed-bank", "mixed-head-tuned", "new-items",
                                           "new-items-head-la", "mixed-sasrec-ens"]
    assert [s["seed"] for s in stamps[:2]] == [0, 1]
    assert all(len(s["provenance"]["code_hash"]) == 16 for s in stamps)
    # each run indexes every model it trained that serves (the LM, the head), whatever `index.model` says
    runs = tmp_path / "runs"
    assert (runs / "mixed-head-tuned" / "seqhead" / "index" / "index.json").is_file()
    assert not (runs / "mixed-head-tuned" / "index").exists()  # its LM was trained, not evaluated
    assert (runs / "mixed-lora" / "index" / "index.json").is_file()
    assert not (runs / "mixed-lora" / "seqhead").exists()
    assert all((runs / "mixed.seed0" / sub / "index.json").is_file() for sub in ("index", "seqhead/index"))
    assert not any((runs / "mixed-sasrec-ens").glob("**/index.json"))

    # a second sweep trains nothing: every run is up to date
    weights = tmp_path / "runs" / "mixed.seed0" / "weights.safetensors"
    mtime = weights.stat().st_mtime_ns
    assert run_analyses(path, log=lambda m: None) == stamps
    assert weights.stat().st_mtime_ns == mtime
    # changing one experiment's params makes only that one stale
    doc = yaml.safe_load(path.read_text())
    doc["experiments"][1]["set"]["train.lr"] = 1e-3
    doc["experiments"][2]["set"]["train.item_bank_negatives"] = False  # an option spelled at its default
    changed = tmp_path / "params-changed.yaml"
    changed.write_text(yaml.safe_dump(doc))
    stale = [r for r in load_params(changed).run_names() if not is_current(load_params(changed, experiment=r))]
    assert stale == ["mixed-lora"]

    # a validation grid of the head (`llmrec-lab tune-heads`) shows in the levers section, with goal 1's rule
    bench = tmp_path / "bench"
    bench.mkdir(exist_ok=True)
    point = {"seqhead.hidden": 16, "epochs_run": 1, "valid_ndcg@10": 0.2, "valid_recall@10": 0.3,
             "valid_tail_ndcg@10": 0.1}
    (bench / "seqhead_tuning.json").write_text(json.dumps(
        {"model": "seqhead", "experiment": "mixed.seed0", "grid": {"seqhead.hidden": [16]}, "points": [point],
         "points_total": 1, "best": point, "machine": {"date": "2026-11-27"}}))
    seed_points = [{"seqhead.seed": seed, "epochs_run": 1, "valid_ndcg@10": 0.2 + seed / 100, "valid_recall@10": 0.3,
                    "valid_tail_ndcg@10": 0.1} for seed in (1, 2)]
    (bench / "seqhead_tuning_seed.json").write_text(json.dumps(
        {"model": "seqhead", "experiment": "mixed.seed0", "grid": {"seqhead.seed": [1, 2]}, "points": seed_points,
         "points_total": 2, "best": seed_points[1], "machine": {"date": "2026-11-27"}}))
    sasrec_point = {"sasrec.hidden": 16, "epochs_run": 1, "valid_ndcg@10": 0.25, "valid_recall@10": 0.3,
                    "valid_tail_ndcg@10": 0.05}
    (bench / "sasrec_tuning.json").write_text(json.dumps(
        {"params": "configs/ml-100k.yaml", "grid": {"sasrec.hidden": [16]}, "points": [sasrec_point],
         "points_total": 1, "best": sasrec_point, "machine": {"date": "2026-11-27"}}))

    text = build_report(path).read_text()
    headings = re.findall(r"^## (\d+)\. ", text, flags=re.M)
    budgets = _section(text, "Tuning budgets")  # each grid names the dataset it was tuned on
    assert "| SASRec | `sasrec_tuning.json` | ml-100k | hidden {16} | the base config |" in budgets
    assert "| LLM-Rec seq head | `seqhead_tuning_seed.json` | – | seed {1, 2} |" in budgets
    assert headings == [str(i) for i in range(1, len(headings) + 1)] and len(headings) == 14
    # every model's validation score where the run scored it, SASRec's included (it was once left out)
    valid0 = json.loads((tmp_path / "runs" / "mixed.seed0" / "metrics_valid.json").read_text())["models"]
    sasrec_run = next(line for line in _section(text, "Every run").splitlines()
                      if line.startswith("| mixed.seed0 |") and "| SASRec |" in line)
    assert sasrec_run.split(" | ")[8] == f"{valid0['sasrec']['overall']['ndcg@10']:.4f}"
    # the headline: means over the two seeds, and differences with an interval and a computed verdict
    headline = _section(text, "LLM-Rec against the baselines")
    sasrec_row = next(line for line in headline.splitlines() if line.startswith("| SASRec (`mixed`) |"))
    assert f"| {_mean(path, ['mixed.seed0', 'mixed.seed1'], 'sasrec'):.4f} ± " in sasrec_row
    verdicts = re.findall(r"\| ([+-]\d\.\d{4}) to ([+-]\d\.\d{4}) \| [\d,]+ \| (paired|unpaired) \| ([a-z ]+) \|", headline)
    assert verdicts and all(kind == "paired" for *_, kind, _ in verdicts)
    for low, high, _, verdict in verdicts:
        low, high = float(low), float(high)
        assert verdict == ("holds" if low > 0 else "does not hold" if high < 0 else "inconclusive at this budget")
    assert re.search(r"- Against SASRec, per domain \(shown, not deciding\): ahead on \d of \d domains", headline)
    # the headline head is the Mixed head with the best whole-validation NDCG@10
    valid = {name: [json.loads((tmp_path / "runs" / r / "metrics_valid.json").read_text())["models"]["seqhead"]
                    ["overall"]["ndcg@10"] for r in runs] for name, runs in
             {"mixed": ["mixed.seed0", "mixed.seed1"], "mixed-head-tuned": ["mixed-head-tuned"]}.items()}
    best = max(valid, key=lambda n: sum(valid[n]) / len(valid[n]))
    head_row = next(line for line in headline.splitlines() if line.startswith("| LLM-Rec seq head (`"))
    assert head_row.startswith(f"| LLM-Rec seq head (`{best}`) |")
    if best == "mixed":
        assert f"| {_mean(path, ['mixed.seed0', 'mixed.seed1'], 'seqhead'):.4f} ± " in head_row
    else:
        assert f"| {_mean(path, ['mixed-head-tuned'], 'seqhead'):.4f} |" in head_row
    assert re.search(rf"- \*\*LLM-Rec seq head \(`{best}`\) ≥ SASRec\*\* \(NDCG@10, overall and tail\): (not reached|met in "
                     r"the means, not settled|holds);",
                     headline)
    # a goal line of a seeded experiment says how many of its single runs are ahead of SASRec's mean; one run, none
    for name, line in re.findall(r"^- \*\*LLM-Rec(?: seq head)? \(`([\w-]+)`\) ≥ SASRec\*\*(.*)$", headline, flags=re.M):
        single = re.search(r"Single runs ahead of SASRec's mean: \d of (\d) \([+-]\d\.\d{4} to [+-]\d\.\d{4}\) overall, "
                           r"\d of \d \(.*\) on the tail\.$", line)
        assert (single is not None and single[1] == "2") if name == "mixed" else single is None, line
    # the levers: every Mixed tuned model against SASRec, with what its experiment sets
    levers = _section(text, "Levers")
    assert re.search(r"\| `mixed-bank` \| LLM-Rec \| `train.item_bank_negatives=True`.*\| [+-]\d\.\d{4} \([^|]*\) "
                     r"\| (holds|not reached|met in the means, not settled) \|$", levers, flags=re.M)
    assert "| `mixed` | LLM-Rec seq head | base config |" in levers
    # each lever against the same-budget experiment that sets the least, with a paired interval
    overall = re.search(r"\| `mixed-bank` vs `mixed` \| NDCG@10 \| [+-]\d\.\d{4} \| [+-]\d\.\d{4} to [+-]\d\.\d{4} "
                        r"\| ([\d,]+) \| paired \|", levers)
    # ... and on tail targets (goal 1 asks for both), fewer of them
    tail = re.search(r"\| `mixed-bank` vs `mixed`, tail targets \| NDCG@10 \| [+-]\d\.\d{4} \| [^|]+ \| ([\d,]+) \| paired \|",
                     levers)
    assert overall and tail and int(tail[1].replace(",", "")) < int(overall[1].replace(",", ""))
    # the head over the fine-tuned LM: its budget and training time include the LM's; paired with the experiment
    # it names (`compare_to`), for the model both ran
    assert re.search(r"\| `mixed-head-tuned` \| LLM-Rec seq head \| `seqhead.item_vectors=tuned` \| [^|]*, over the LM "
                     r"tuned 2 steps × 8 \(", levers)
    assert re.search(r"\| `mixed-head-tuned` vs `mixed` \(LLM-Rec seq head, named by compare_to\) "
                     r"\| NDCG@10 \| [+-]\d\.\d{4} \|", levers)
    assert "(LLM-Rec, named by compare_to)" not in levers  # its LM was not evaluated: no pair of LMs
    assert "| `mixed-head-tuned` | LLM-Rec |" not in levers  # its LM is not evaluated
    assert "`llmrec-lab tune-heads --model seqhead` on top of run `mixed.seed0`" in levers
    # the same levers on SASRec itself, against the standard one
    assert re.search(r"^\| `mixed-sasrec-ens` \| `sasrec.members=2` \| 2 networks × 1 epochs .* \| 1 \| \d\.\d{4} \| "
                     r"\d\.\d{4}( \| [+-]\d\.\d{4} \([^|]*\)){4} \|$", levers, flags=re.M)
    assert "and the headline head (`" in levers  # each variant against the headline head (the last two columns)
    assert not (path.parent / "runs" / "mixed-sasrec-ens" / "train_log.csv").exists()  # no LM trained
    assert "| 16 | 1 | 0.2000 | 0.3000 | 0.1000 | -0.0500 | yes |" in levers  # min(0.2 - 0.25, 0.1 - 0.05)
    assert "picks hidden 16: -0.0500" in levers
    # a grid over the head's seed is a spread beside the experiment's seeds, not a choice
    assert "**Seed spread**" in levers and "| 2 | 1 | 0.2200 | 0.1000 | grid |" in levers
    assert "(seed 2) is not the one in use" not in levers and "across the experiment's seeds" in levers
    # data settings: single-domain cells are that run's numbers; settings test other targets (unpaired)
    settings = _section(text, "Data settings")
    books_row = next(line for line in settings.splitlines() if line.startswith("| Books |"))
    single = json.loads((tmp_path / "runs" / "single-books" / "metrics_test.json").read_text())
    assert fmt(single["models"]["llmrec"]["by_domain"]["Books"]["ndcg@10"]) in books_row
    assert fmt(single["models"]["sasrec"]["by_domain"]["Books"]["ndcg@10"]) in books_row
    assert "| paired |" in settings and "per-domain training **" in settings  # every setting ranks the same targets
    assert "steps × 8 (" in settings  # every arm's budget is printed
    # leave-one-domain-out against the untuned LM on the same targets: paired
    zero = _section(text, "Zero-shot")
    lodo = json.loads((tmp_path / "runs" / "lodo-books" / "metrics_test.json").read_text())
    zero_row = next(line for line in zero.splitlines() if line.startswith("| Books |"))
    assert fmt(lodo["models"]["llmrec"]["overall"]["ndcg@10"]) in zero_row
    assert "| paired |" in zero
    tuning = _section(text, "FPFT vs PEFT")
    assert "LoRA trains" in tuning and "full fine-tuning beats LoRA **" in tuning
    # every run names the commit of its code and whether it is current
    runs = _section(text, "Every run")
    assert re.search(r"\| mixed\.seed1 \| Mixed \| all \| LLM-Rec \|.*\| `[0-9a-f?]{1,10}\*?` \| current \|", runs)
    groups = _section(text, "Cold-start and tail items")
    assert "(the headline run)" in groups and "| tail |" in groups
    # new items: a table per time-split experiment, paired comparisons on new and warm targets, users resampled
    new = _section(text, "New items")
    assert "**`new-items`**: trained on the" in new and "| LLM-Rec (`new-items`) | 1 |" in new
    sampled = re.search(r"every one of its ([\d,]+) new-item events and a seeded sample of ([\d,]+) of its ([\d,]+) "
                        r"warm ones", new)
    kept, warm = (int(sampled[i].replace(",", "")) for i in (2, 3)) if sampled else (None, None)
    assert sampled and kept == min(40, warm)  # warm_test_sample
    assert re.search(r"\| LLM-Rec \(`new-items`\) vs SASRec \(`new-items`\), new targets \| NDCG@10 \|.*\| paired \|", new)
    assert re.search(r"- LLM-Rec \(`new-items`\) ahead of every baseline on new-item targets \(NDCG@10\): \*\*", new)
    for scope in ("new", "warm"):  # a new-item lever against the experiment it names
        assert re.search(rf"\| LLM-Rec seq head \(`new-items-head-la`\) vs LLM-Rec seq head \(`new-items`\), {scope} "
                         r"targets \| NDCG@10 \|.*\| paired \|", new)
    ranks = __import__("pandas").read_parquet(tmp_path / "runs" / "new-items" / "ranks_test.parquet")
    assert (ranks["group"] == "new").any() and ranks["user_idx"].duplicated().any()
    # the whole window: every event, each sampled warm target standing for its share of the window's warm events
    split = json.loads((tmp_path / "data-new-items" / "prepared" / "manifest.json").read_text())["time_split"]
    weight = split["test_warm_events"] / (split["test_rows"] - split["test_groups"]["new"])
    counts = np.where(ranks["group"] == "new", 1.0, weight)
    gain = np.where(ranks["rank_llmrec"] < 10, 1.0 / np.log2(ranks["rank_llmrec"] + 2.0), 0.0)
    events = split["test_groups"]["new"] + split["test_warm_events"]
    assert re.search(rf"\| LLM-Rec \(`new-items`\) \| 1 \| [^|]+ \| {fmt(events)} \| "
                     rf"{np.average(gain, weights=counts):.4f} \| {fmt(split['test_groups']['new'])} \|", new)
    assert "new-items" not in _section(text, "LLM-Rec against the baselines")  # leave-one-out sections only
    negatives = _section(text, "Negatives")
    bank_row = next(line for line in negatives.splitlines() if line.startswith("| mixed-bank |"))
    assert "plus a loss over every item of the target's domain (item bank re-encoded every 1 steps)" in bank_row
    assert set(json.loads((tmp_path / "runs" / "mixed.seed0" / "cost_eval.json").read_text())) == {
        "llmrec", "zero_shot", "seqhead", "sasrec"}
    assert (tmp_path / "runs" / "mixed.seed0" / "cost_eval_valid.json").is_file()
    assert "Not measured yet" in text  # no size sweep file in benchmarks_dir
    for name in ("data_settings.png", "item_groups.png", "zero_shot.png"):
        assert (tmp_path / "report" / "figures" / name).read_bytes()[:8] == PNG
        assert f"figures/{name}" in text


def test_an_edit_to_the_evaluator_marks_runs_made_before_it_as_earlier_code(analysed, monkeypatch, tmp_path):
    """A real edit of a source file, not a patched hash: the code hash is taken over a copy of llmrec_core/ (the
    runs were made from the package itself), and a file of the copy is edited, then restored."""
    import shutil

    import llmrec_core.provenance as provenance

    path, stamps = analysed
    copy = tmp_path / "llmrec_core"
    shutil.copytree(provenance.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    hash_files = provenance.code_hash.__wrapped__  # not the cached one: the copy changes during the test
    monkeypatch.setattr(provenance, "code_hash", lambda scopes, root=None: hash_files(scopes, copy))

    def status_of_mixed() -> dict[str, str]:
        return {run: s for run, s, _ in analyses_status(path, ["mixed"])}

    recorded = json.loads((path.parent / "runs" / "mixed.seed0" / "experiment.json").read_text())["provenance"]
    assert provenance.code_hash(provenance.EXPERIMENT_CODE) == recorded["code_hash"]  # the copy is the code as it is
    assert {status for _, status, _ in analyses_status(path)} == {"current"}
    # an edit outside the code behind the results (the serving index) leaves the runs current
    serving = copy / "serve" / "recommend.py"
    serving.write_text(serving.read_text() + "\nSERVING_EDITED = True\n")
    assert status_of_mixed() == {"mixed.seed0": "current", "mixed.seed1": "current"}
    # an edit to the evaluator: the runs were made with earlier code
    metrics = copy / "evaluate" / "metrics.py"
    original = metrics.read_bytes()
    metrics.write_bytes(original + b"\nEVALUATOR_EDITED = True\n")
    assert provenance.code_hash(provenance.EXPERIMENT_CODE) != recorded["code_hash"]
    status = analyses_status(path, ["mixed"])
    assert [(run, s) for run, s, _ in status] == [("mixed.seed0", "earlier code"), ("mixed.seed1", "earlier code")]
    assert all(f"made with the code of commit {(recorded['commit'] or '?')[:12]}" in why for *_, why in status)
    # kept by default (its results stand for the commit it names), so nothing is retrained
    logged = []
    assert run_analyses(path, ["mixed"], log=logged.append) == [s for s in stamps if s["name"].startswith("mixed.")]
    assert logged and all("kept" in line and "--rerun-earlier-code" in line for line in logged)
    # the edit undone: the code is the runs' again, and so they are current
    metrics.write_bytes(original)
    assert status_of_mixed() == {"mixed.seed0": "current", "mixed.seed1": "current"}


def test_a_change_to_params_makes_runs_stale(analysed):
    path, _ = analysed
    doc = yaml.safe_load(path.read_text())
    doc["eval"] = {**doc.get("eval", {}), "ks": [5, 10]}
    changed = path.parent / "params-changed-eval.yaml"
    changed.write_text(yaml.safe_dump(doc))
    assert {(s, why) for _, s, why in analyses_status(changed)} == {("stale", "params or prepared data changed")}


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
            "targets_per_epoch": 3000, "test": {"recall@10": 0.21, "ndcg@10": 0.105}}
    (bench / "recbole_cpu.json").write_text(json.dumps({
        "epoch_budget": 5, "dataset": "d", "protocol": "p", "ours": side, "ours_converged": None,
        "recbole": {**side, "seconds_per_epoch": 30.25, "recbole_version": "1.2.1"},
        "machine": {"machine": "x86_64", "cpu_threads": 2, "date": "2026-11-25"}}))
    text = build_report(path).read_text()
    assert "| RecBole 1.2.1 SASRec (5-epoch budget) | 5 | 3,000 | 30.25 |" in text
    assert "| llmrec SASRec (5-epoch budget) | 5 | 3,000 | 1.50 |" in text
    # time per training target, computed from the file: 1.5 s / 3000 and 30.25 s / 3000 per 1,000
    assert "Per 1,000 training targets: 0.500 s (ours) vs 10.083 s (RecBole)." in text
    assert "Stopped by the 5-epoch cap before early stopping: ours and RecBole; equal work, not convergence" in text
    assert "**Not run yet**: never-run (" in text
    assert "| opt-40m | 40,000,000 | lora | 300,000 | CPU (2 threads) | 7.00 |" in text
    examples = json.loads((path.parent.parent / "runs" / "mixed.seed0" / "cost_train.json").read_text())["examples_per_epoch"]
    assert f"| 7.00 | {fmt(examples / 7.0)} |" in text  # s per epoch of the reference run at the measured rate
    assert "opt-40m 2.00×" in text
    assert (tmp_path / "figures" / "model_size_cost.png").read_bytes()[:8] == PNG


def test_the_new_item_offset_reranks_the_head_as_evaluation_does_and_the_report_shows_it(analysed, monkeypatch):
    import numpy as np
    import pandas as pd

    import lab.new_item_offset as offsets_module
    from lab.new_item_offset import measure_experiment, parse_knobs, part_ndcg, setting_label

    path, _ = analysed
    calls, calibrate = [], offsets_module.calibrated_offsets_of_rows
    monkeypatch.setattr(offsets_module, "calibrated_offsets_of_rows",
                        lambda *args: calls.append(args[-2:]) or calibrate(*args))
    measured, chosen = measure_experiment(path, "new-items", [0.0, 1000.0], [5, 10], [10.0, 20.0])
    (run, record), = measured
    assert sorted(calls) == [(5, 10.0), (5, 20.0), (10, 10.0), (10, 20.0)]  # once per (window, prior strength)
    folder = path.parent / "runs" / "new-items"
    ranks = pd.read_parquet(folder / "ranks_test.parquet")
    offset_ranks = pd.read_parquet(folder / "offset_test.parquet")
    assert offset_ranks[["user_idx", "target"]].equals(ranks[["user_idx", "target"]])  # the evaluator's rows, in order
    assert (offset_ranks["rank_seqhead_offset_0"] == ranks["rank_seqhead"]).all()  # no offset: the evaluator's ranks
    new = offset_ranks["group"] == "new"
    assert new.any() and record["unknown_items"] > 0
    lifted = offset_ranks["rank_seqhead_offset_1000"]
    assert (lifted[new] <= offset_ranks["rank_seqhead_offset_0"][new]).all()  # new targets move up, warm ones down
    assert (lifted[~new] >= offset_ranks["rank_seqhead_offset_0"][~new]).all()
    assert (lifted[~new] > ranks["rank_seqhead"][~new]).any()
    for cal in ("0+cal", "0+cal:w5:p20"):  # offset 0 with calibration: only ever lifts new items
        calibrated = offset_ranks[f"rank_seqhead_offset_{cal}"]
        assert (calibrated[new] <= offset_ranks["rank_seqhead_offset_0"][new]).all()
        assert (calibrated[~new] >= offset_ranks["rank_seqhead_offset_0"][~new]).all()
    assert (offset_ranks["rank_seqhead_offset_1000+cal:w5:p10"] == lifted).all()  # above any calibrated offset
    # the grid: every floor alone and with calibration at every (window, prior strength); the params' own is "+cal"
    assert sorted(record["offsets"]) == sorted(["0", "1000"] + [setting_label(o, True, w, p, own=(10, 10.0))
                                                                for o in (0.0, 1000.0) for w in (5, 10)
                                                                for p in (10.0, 20.0)])
    assert "0+cal" in record["offsets"] and "0+cal:w10:p20" in record["offsets"]
    assert [(c["window"], c["prior_strength"]) for c in record["calibration"]["combinations"]] == sorted(calls)
    assert record["calibration"]["window"] == 10 and record["calibration"]["prior_strength"] == 10.0
    # the window's warm targets are a sample of 40: each stands for its share of the window's warm events
    split = json.loads((path.parent / "data-new-items" / "prepared" / "manifest.json").read_text())["time_split"]
    weight = split["test_warm_events"] / (split["test_rows"] - split["test_groups"]["new"])
    assert record["warm_weight"] == pytest.approx(weight) and weight > 1
    # chosen: the highest whole-window NDCG@10, computed here from the ranks written
    def whole_window(label: str) -> float:
        r = offset_ranks[f"rank_seqhead_offset_{label}"].to_numpy()
        gain = np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0)
        return float((gain[new].sum() + weight * gain[~new].sum()) / (new.sum() + weight * (~new).sum()))
    values = {label: whole_window(label) for label in record["offsets"]}
    for label, value in values.items():
        assert part_ndcg(record, label, "window") == pytest.approx(value)
    assert chosen in values and values[chosen] == pytest.approx(max(values.values()))
    text = build_report(path).read_text()
    new_items = _section(text, "New items")
    assert "The sequence head of `new-items` with an offset added to the score" in new_items
    assert "The config serves the LM (`index.model`), to which no offset applies." in new_items  # the base's index
    # offset, calibration, NDCG@10 window, new and warm, then the intervals
    assert re.search(r"^\| 0(?: \(chosen here\))? \| no \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [+-]\d\.\d{4} \(", new_items,
                     flags=re.M)
    for cal in ("window 10, prior 10", "window 5, prior 20"):
        assert re.search(rf"^\| 0(?: \(chosen here\))? \| {cal} \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [^|]+\| [^|]+\| "
                         r"[+-]\d\.\d{4} \(", new_items, flags=re.M), cal
    assert re.search(r"^\| 1000 [^|]*\| no \| [\d.]+ \| [\d.]+ \| [\d.]+ \| [^|]+\| [^|]+\| [+-]\d\.\d{4} \(",
                     new_items, flags=re.M)
    offset, calibrated, window, prior = parse_knobs(chosen, (10, 10.0))
    marked = re.findall(r"^\| ([^|]*) \(chosen here\) \| ([^|]+) \| ([\d.]+) \|", new_items, flags=re.M)
    assert marked == [(f"{offset:g}", f"window {window}, prior {prior:g}" if calibrated else "no",
                       f"{values[chosen]:.4f}")]  # one row, the rule's, with its whole-window NDCG@10
    assert "the setting with the highest whole-window NDCG@10 (every target of the window, new and warm" in new_items
    assert "warm targets are a sample: each counts as" in new_items


def test_prepare_data_restores_a_runs_missing_data_root_as_it_was(analysed):
    """A fresh clone has no prepared data (not in git): the report refuses until `prepare-data` has made it, and
    the data made again leaves the runs on it current (the same split, the same fingerprint)."""
    from lab.experiments import prepare_data, unprepared_roots
    from llmrec_core.data.layout import DataLayout

    path, _ = analysed
    assert unprepared_roots(path) == []
    root = load_params(path, experiment="new-items").data_root
    (DataLayout(root).prepared / "manifest.json").unlink()
    assert unprepared_roots(path) == [root]
    assert prepare_data(path, log=lambda m: None) == [root]
    assert unprepared_roots(path) == [] and prepare_data(path, log=lambda m: None) == []
    assert {status for run, status, _ in analyses_status(path, ["new-items", "new-items-head-la"])} == {"current"}
