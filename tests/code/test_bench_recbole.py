"""The pure logic of benchmarks/bench_recbole.py (RecBole side by side, ml-1m sanity check) and its driver."""
import importlib.util
import math
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = _module("bench_recbole")
driver = _module("recbole_driver")


def test_the_matched_batch_is_the_smallest_whose_epoch_takes_our_updates():
    # ml-100k as one domain: 96,458 targets; ours 2,4xx windows of 50 in batches of 128 = 19 updates
    assert bench.updates_per_epoch(2400, 128) == 19
    assert bench.matched_batch_size(96458, 19) == 5077
    for targets in (1, 7, 999, 96458, 834449):
        for updates in (1, 3, 19, 754):
            batch = bench.matched_batch_size(targets, updates)
            assert bench.updates_per_epoch(targets, batch) <= updates
            assert batch == 1 or bench.updates_per_epoch(targets, batch - 1) > updates


def test_recbole_arms_leave_recboles_defaults_alone_but_what_ce_and_our_stopping_rule_need(tmp_path):
    defaults = bench.recbole_config("d", tmp_path, "cpu")
    for knob in ("train_batch_size", "learning_rate", "hidden_dropout_prob", "epochs", "stopping_step", "eval_step"):
        assert knob not in defaults  # RecBole's own value applies
    assert defaults["train_neg_sample_args"] is None and defaults["valid_metric"] == "NDCG@10"
    assert defaults["gpu_id"] == ""  # RecBole runs on the CPU
    matched = bench.recbole_config("d", tmp_path, "cuda", max_epochs=2, train_batch_size=5077)
    assert matched["train_batch_size"] == 5077 and matched["epochs"] == 2 and matched["gpu_id"] == "0"
    assert {k: v for k, v in matched.items() if k not in ("train_batch_size", "epochs", "gpu_id")} == \
        {k: v for k, v in defaults.items() if k != "gpu_id"}


def test_stated_defaults_are_recbole_1_2_1s_own_files():
    props = REPO / ".bench-venv" / "recbole" / "lib"
    found = sorted(props.glob("python3*/site-packages/recbole/properties")) if props.is_dir() else []
    if not found:
        pytest.skip("RecBole's virtualenv (.bench-venv/recbole) is not installed")
    merged = {}
    for name in ("overall.yaml", "model/SASRec.yaml", "dataset/sample.yaml", "quick_start_config/sequential.yaml"):
        merged.update(yaml.safe_load((found[0] / name).read_text()))
    for knob, value in bench.RECBOLE_DEFAULTS.items():
        if knob == "eval_args":  # sequential.yaml replaces split, order and mode; group_by stays overall's
            assert {**merged[knob], "group_by": "user"} == value
        else:
            assert merged[knob] == value, knob


def test_recbole_protocol_metrics_truncate_at_10():
    got = bench.recbole_protocol_metrics([0, 1, 9, 10])
    assert got["recall@10"] == 0.75
    assert math.isclose(got["ndcg@10"], (1 + 1 / math.log2(3) + 1 / math.log2(11)) / 4)
    assert math.isclose(got["mrr@10"], (1 + 0.5 + 0.1) / 4)  # rank 10 (the 11th) counts 0, not 1/11


def test_best_epochs_follow_each_sides_tie_rule():
    evals = [{"epoch": 2, "valid_ndcg@10": 0.1}, {"epoch": 4, "valid_ndcg@10": 0.2}, {"epoch": 6, "valid_ndcg@10": 0.2}]
    assert bench.best_epoch(evals) == 4  # ours keeps a strict gain
    assert driver.best_epoch([(1, 0.1), (2, 0.2), (3, 0.2), (4, 0.1)]) == 3  # RecBole takes a tie as the new best
    assert bench.best_epoch([]) is None and driver.best_epoch([]) is None


def test_a_finished_arm_is_not_run_again_unless_what_it_ran_changed(tmp_path):
    calls = []

    def run():
        calls.append(1)
        return {"epochs_run": len(calls)}

    assert bench.cached_arm(tmp_path, "a", {"batch": 1}, run)["epochs_run"] == 1
    assert bench.cached_arm(tmp_path, "a", {"batch": 1}, run)["epochs_run"] == 1
    assert bench.cached_arm(tmp_path, "a", {"batch": 2}, run)["epochs_run"] == 2
    assert len(calls) == 2


def test_keep_ratings_drops_low_ratings_and_keeps_the_typed_header(tmp_path):
    src = tmp_path / "x.inter"
    src.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                   "1\tA (1990)\t2\t10\n1\tB (1991)\t3\t11\n2\tA (1990)\t5\t12\n2\tC\t2.5\t13\n")
    assert bench.keep_ratings(src, tmp_path / "out" / "y.inter", 3) == 2
    lines = (tmp_path / "out" / "y.inter").read_text().splitlines()
    assert lines == ["user_id:token\titem_id:token\trating:float\ttimestamp:float",
                     "1\tB (1991)\t3\t11", "2\tA (1990)\t5\t12"]


@pytest.mark.slow  # five RecBole processes: minutes on 2 cores
def test_a_killed_recbole_arm_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tmp_path):
    import json
    import random
    import subprocess

    python = REPO / ".bench-venv" / "recbole" / "bin" / "python"
    if not python.is_file():
        pytest.skip("RecBole's virtualenv (.bench-venv/recbole) is not installed")
    rng = random.Random(0)
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    lines += [f"{u}\t{rng.randrange(40)}\t{t}" for u in range(60) for t in range(15)]

    def run(name: str, *stop_after: int) -> dict:
        folder = tmp_path / name
        (folder / "tiny").mkdir(parents=True)
        (folder / "tiny" / "tiny.inter").write_text("\n".join(lines) + "\n")
        config = {**bench.recbole_config("tiny", folder, "cpu", max_epochs=5, train_batch_size=128),
                  "eval_batch_size": 256}
        (folder / "config.json").write_text(json.dumps(config))
        argv = [str(python), str(REPO / "benchmarks" / "recbole_driver.py"), "config.json", "result.json"]
        for n in stop_after:  # each interrupted process ends as a kill would, leaving its last.pth
            killed = subprocess.run(argv + [str(n)], cwd=folder, capture_output=True, text=True)
            assert killed.returncode == 3, killed.stderr[-2000:]
            assert not (folder / "result.json").exists()
        done = subprocess.run(argv, cwd=folder, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads((folder / "result.json").read_text())

    whole, resumed = run("whole"), run("resumed", 2, 1)
    assert resumed["resumed_after_epochs"] == [2, 3] and whole["resumed_after_epochs"] == []
    assert resumed["epochs_run"] == whole["epochs_run"] == 5
    assert resumed["valid_ndcg@10"] == whole["valid_ndcg@10"]  # the same dropout masks and batch order
    assert resumed["best_epoch"] == whole["best_epoch"] and resumed["test"] == whole["test"]
    # the driver's own ranking of the best model's scores reproduces RecBole's test metrics; excluding each user's
    # earlier items (llmrec's protocol) can only lift a target, and here (users repeat items) it does
    mine, excluded = whole["test_recomputed"], whole["test_history_excluded"]
    assert mine["targets"] == excluded["targets"] == 60
    for k in ("ndcg@10", "recall@10", "mrr@10"):
        assert mine[k] == pytest.approx(whole["test"][k], abs=1e-4)
        assert excluded[k] >= mine[k]
    assert excluded["ndcg@10"] > mine["ndcg@10"]


def _side_by_side_without_data(tmp_path, monkeypatch):
    """The side by side over an empty prepared folder: our params, schedule, venv and export stubbed."""
    from types import SimpleNamespace

    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "manifest.json").write_text("{}")
    params = SimpleNamespace(data_root=tmp_path, sasrec=SimpleNamespace(model_dump=lambda mode: {}))
    monkeypatch.setattr(bench, "WORK", tmp_path)
    monkeypatch.setattr(bench, "our_params", lambda *a: params)
    monkeypatch.setattr(bench, "our_schedule", lambda p: {"targets_per_epoch": 1900, "updates_per_epoch": 19})
    monkeypatch.setattr(bench, "ensure_venv", lambda: tmp_path / "python")
    monkeypatch.setattr(bench, "export_inter", lambda *a: None)


def test_the_side_by_side_is_published_after_every_finished_arm(tmp_path, monkeypatch):
    """A run killed in a later arm (or one left for a GPU) still leaves the finished arms in the report's file."""
    from types import SimpleNamespace

    _side_by_side_without_data(tmp_path, monkeypatch)
    monkeypatch.setattr(bench, "cached_arm", lambda folder, name, spec, run: {"epochs_run": 5, "max_epochs": 300})
    monkeypatch.setattr(bench, "finished_arm", lambda folder, name, spec: None)
    published = []
    args = SimpleNamespace(max_epochs=None, user_sample=None, arms=None)
    name, final = bench.side_by_side(args, "cpu", lambda n, r: published.append((n, list(r["arms"]), r["pending"])))
    assert published == [("recbole", ["ours"], ["recbole_defaults", "recbole_matched"]),
                         ("recbole", ["ours", "recbole_defaults"], ["recbole_matched"]),
                         ("recbole", list(bench.ARMS), [])]
    assert name == "recbole" and final["pending"] == [] and final["capped"] == []


def test_an_arm_run_alone_publishes_the_arms_another_process_finished_meanwhile(tmp_path, monkeypatch):
    """`--arm recbole_matched` beside `--arm recbole_defaults`: the matched process runs only its arm, and its
    result file holds the defaults arm that the other process cached while it ran, not a stale view of it."""
    from types import SimpleNamespace

    _side_by_side_without_data(tmp_path, monkeypatch)
    args = SimpleNamespace(max_epochs=None, user_sample=None, arms=["recbole_matched"])
    folder, _, specs, _ = bench.side_by_side_arms(args, "cpu")
    ran = []

    def run_recbole(python, arm_folder, config):
        ran.append(arm_folder.name)  # meanwhile the other process finishes and caches the defaults arm
        bench.cached_arm(folder, "recbole_defaults", specs["recbole_defaults"], lambda: {"epochs_run": 30})
        return {"epochs_run": 80}

    monkeypatch.setattr(bench, "run_recbole", run_recbole)
    monkeypatch.setattr(bench, "side_by_side_result", lambda args, arms: {"arms": arms})
    published = []
    name, final = bench.side_by_side(args, "cpu", lambda n, r: published.append(r["arms"]))
    assert ran == ["recbole_matched"]  # neither ours nor the defaults arm ran here
    epochs = [{arm: result["epochs_run"] for arm, result in arms.items()} for arms in published]
    assert epochs == [{"recbole_defaults": 30, "recbole_matched": 80}]  # ours not finished: pending
    assert final["arms"] == published[-1]
    assert not list(folder.rglob(".*.partial"))  # every cache write replaced its file in one step


def test_recboles_venv_is_trusted_only_once_pip_finished_and_made_once(tmp_path, monkeypatch):
    calls = []

    def run(cmd, check):
        calls.append(cmd[1:3] if cmd[2] == "venv" else cmd[1:4])
        if cmd[2] == "venv":
            (tmp_path / "recbole" / "bin").mkdir(parents=True)
            (tmp_path / "recbole" / "bin" / "python").write_text("")
        elif fail_pip:
            raise bench.subprocess.CalledProcessError(1, cmd)

    monkeypatch.setattr(bench.subprocess, "run", run)
    fail_pip = True  # the first install is killed half way
    with pytest.raises(bench.subprocess.CalledProcessError):
        bench.ensure_venv(tmp_path / "recbole", ("recbole==1.2.1",))
    assert calls == [["-m", "venv"], ["-m", "pip", "install"]]
    fail_pip, calls[:] = False, []
    bench.ensure_venv(tmp_path / "recbole", ("recbole==1.2.1",))
    assert calls == [["-m", "pip", "install"]]  # the venv is kept, the install redone
    calls.clear()
    assert bench.ensure_venv(tmp_path / "recbole", ("recbole==1.2.1",)) == tmp_path / "recbole" / "bin" / "python"
    assert calls == []
    bench.ensure_venv(tmp_path / "recbole", ("recbole==1.2.2",))
    assert calls == [["-m", "pip", "install"]]  # other pins: installed again
