"""Provenance: a code change in what produced a result changes its hash; elsewhere it does not."""
import json
import shutil
import subprocess

import pytest

from llmrec_core.provenance import (EARLIER_EXPERIMENT_CODES, EXPERIMENT_CODE, LM_TRAINING_CODE, PACKAGE, code_hash,
                                    code_hash_at, git_state, provenance)


def _copy(tmp_path):
    root = tmp_path / "llmrec_core"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_code_hash_follows_the_evaluator_and_the_trainer_but_not_the_report(tmp_path):
    root = _copy(tmp_path)
    before = code_hash(EXPERIMENT_CODE, root)
    assert before == code_hash(EXPERIMENT_CODE) and len(before) == 16  # same bytes, same hash
    (root / "report" / "build.py").write_text((root / "report" / "build.py").read_text() + "\n# a comment\n")
    assert code_hash.__wrapped__(EXPERIMENT_CODE, root) == before
    for changed in ("evaluate/metrics.py", "train/loop.py"):
        path = root / changed
        original = path.read_text()
        path.write_text(original + "\nX = 1\n")
        assert code_hash.__wrapped__(EXPERIMENT_CODE, root) != before, changed
        assert code_hash.__wrapped__(LM_TRAINING_CODE, root) != code_hash(LM_TRAINING_CODE), changed
        path.write_text(original)
    # a new file in a hashed package counts too
    (root / "evaluate" / "extra.py").write_text("Y = 2\n")
    assert code_hash.__wrapped__(EXPERIMENT_CODE, root) != before


def test_provenance_names_the_commit():
    state = git_state()
    record = provenance(EXPERIMENT_CODE)
    assert record["code_hash"] == code_hash(EXPERIMENT_CODE)
    if state["commit"] is not None:  # a git checkout (CI clones one)
        assert len(record["commit"]) == 40 and isinstance(record["dirty"], bool)


def _head_tree(monkeypatch):
    """Pretend this tree is HEAD's (a developer's tree may hold uncommitted code)."""
    import llmrec_core.analyses as analyses
    import llmrec_core.provenance as prov

    def at_head(scopes, root=PACKAGE):
        return code_hash_at("HEAD", scopes)

    monkeypatch.setattr(prov, "code_hash", at_head)
    monkeypatch.setattr(analyses, "code_hash", at_head)


def _stamp(params, code: str, commit: str = "HEAD", config: dict | None = None) -> None:
    from llmrec_core.analyses import STAMP, experiment_config
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.provenance import fingerprint

    run_dir = params.resolve(params.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = DataLayout(params.data_root).prepared / "manifest.json"
    stamp = {"name": "x", "fingerprint": fingerprint(config or experiment_config(params), manifest, code=code),
             "provenance": {"commit": commit, "dirty": False, "code_hash": code}}
    (run_dir / STAMP).write_text(json.dumps(stamp))


@pytest.mark.skipif(git_state()["commit"] is None, reason="needs a git checkout")
def test_restamp_carries_a_run_over_a_narrower_code_scope_only_when_git_proves_it(tmp_path, monkeypatch):
    from llmrec_core.analyses import restamp, run_status
    from llmrec_core.config import load_params

    _head_tree(monkeypatch)
    params = load_params("params.yaml", [f"train.run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=PACKAGE).stdout.strip()
    wider = next(scope for scope in EARLIER_EXPERIMENT_CODES if "serve/index.py" in scope)  # a file that still exists
    old = code_hash_at(head, wider)
    assert old and old != code_hash_at(head, EXPERIMENT_CODE)

    _stamp(params, "0" * 16, head)  # a hash that is not the commit's: the code was not that commit's
    assert restamp(params)[0] == "kept stale"
    _stamp(params, old, head, config={"train": {"lr": 1.0}})  # other params
    assert restamp(params) == ("kept stale", "params or prepared data changed")
    # a commit whose evaluator differs from today's
    commits = subprocess.run(["git", "log", "--format=%H", "--", "llmrec_core/evaluate"], capture_output=True,
                             text=True, cwd=PACKAGE.parent).stdout.split()
    older = next((c for c in commits[1:] if code_hash_at(c, EXPERIMENT_CODE) != code_hash_at(head, EXPERIMENT_CODE)),
                 None)
    if older is not None:
        _stamp(params, code_hash_at(older, wider), older)
        outcome, why = restamp(params)
        assert outcome == "kept stale" and "changed since commit" in why and "no probe" in why

    _stamp(params, old, head)
    assert run_status(params)[0] == "stale"
    assert restamp(params)[0] == "restamped"
    assert run_status(params)[0] == "current"
    stamp = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert stamp["restamped"]["code_hash"] == old and stamp["provenance"]["commit"] == head
    assert stamp["provenance"]["code_scope"] == list(EXPERIMENT_CODE)


@pytest.mark.skipif(git_state()["commit"] is None, reason="needs a git checkout")
def test_restamp_carries_a_run_over_a_code_change_only_when_probes_of_both_codes_agree(tmp_path, monkeypatch):
    from llmrec_core.analyses import restamp, run_status
    from llmrec_core.config import load_params
    from llmrec_core.probe import PROBE_OVERRIDES, PROBES, probe_machine

    _head_tree(monkeypatch)
    params = load_params("params.yaml", [f"train.run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}"])
    head = code_hash_at("HEAD", EXPERIMENT_CODE)
    commits = subprocess.run(["git", "log", "--format=%H", "--", "llmrec_core/evaluate"], capture_output=True,
                             text=True, cwd=PACKAGE.parent).stdout.split()
    older = next((c for c in commits[1:] if code_hash_at(c, EXPERIMENT_CODE) != head), None)
    if older is None:
        pytest.skip("no commit in this clone's history with other experiment code")
    old = code_hash_at(older, EARLIER_EXPERIMENT_CODES[0])  # a record without code_scope: earlier scopes are tried
    now = head  # what this tree counts as (_head_tree)

    def probes(old_digest: str, new_digest: str) -> None:
        record = {"overrides": list(PROBE_OVERRIDES)}
        (tmp_path / "run" / PROBES).write_text(json.dumps({old: {**record, "digest": old_digest},
                                                           now: {**record, "digest": new_digest}}))

    _stamp(params, old, older)
    probes("aaaa", "bbbb")  # the change altered what the probe produced
    outcome, why = restamp(params)
    assert outcome == "kept stale" and "digests differ" in why and "a probe without a named machine" in why
    here = probe_machine()
    elsewhere = {**here, "isa": here["isa"] + " avx512f"}
    record = {"overrides": list(PROBE_OVERRIDES)}
    (tmp_path / "run" / PROBES).write_text(json.dumps({old: {**record, "digest": "aaaa", "machine": elsewhere},
                                                       now: {**record, "digest": "bbbb", "machine": here}}))
    outcome, why = restamp(params)  # other kernels round differently: no verdict on the change
    assert outcome == "kept stale" and "different machines" in why and "alters" not in why
    (tmp_path / "run" / PROBES).write_text(json.dumps({old: {**record, "digest": "aaaa", "machine": here},
                                                       now: {**record, "digest": "bbbb", "machine": here}}))
    assert restamp(params)[1].endswith("the change alters results")  # one machine: the change did it
    probes("aaaa", "aaaa")
    assert restamp(params)[0] == "restamped"
    assert run_status(params)[0] == "current"
    stamp = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert stamp["restamped"]["by"] == "probe" and stamp["restamped"]["code_hash"] == old

    # carried over again: the record now holds the hash of HEAD's code (committed after `older`); a later change
    # whose probes agree carries it on, while a carried-over hash that no commit has is refused
    import llmrec_core.analyses as analyses

    later = "f" * 16
    monkeypatch.setattr(analyses, "code_hash", lambda scopes, root=PACKAGE: later)
    monkeypatch.setattr(analyses, "run_status", lambda p: ("stale", "code changed"))
    record = {"overrides": list(PROBE_OVERRIDES)}
    (tmp_path / "run" / PROBES).write_text(json.dumps({now: {**record, "digest": "aaaa"},
                                                       later: {**record, "digest": "aaaa"}}))
    stamp["provenance"]["code_hash"] = "e" * 16
    (tmp_path / "run" / "experiment.json").write_text(json.dumps(stamp))
    assert restamp(params)[0] == "kept stale"  # no commit's code has that hash
    stamp["provenance"]["code_hash"] = now
    (tmp_path / "run" / "experiment.json").write_text(json.dumps(stamp))
    outcome, why = restamp(params)
    assert outcome == "restamped" and now in why and later in why
    assert json.loads((tmp_path / "run" / "experiment.json").read_text())["restamped"]["earlier"][0]["by"] == "probe"


def test_a_runs_fingerprint_takes_only_the_sections_its_models_read(tmp_path):
    from llmrec_core.analyses import experiment_fingerprint
    from llmrec_core.config import load_params

    def fingerprint_with(*overrides):
        return experiment_fingerprint(load_params("params.yaml", [f"data.root={tmp_path}", *overrides]))

    lm_only = fingerprint_with("eval.models=[llmrec]")
    assert fingerprint_with("eval.models=[llmrec]", "seqhead.hidden=128", "sasrec.lr=0.01") == lm_only
    assert fingerprint_with("eval.models=[llmrec]", "train.lr=0.001") != lm_only
    assert fingerprint_with("eval.models=[llmrec]", "model.temperature=0.1") != lm_only

    head = fingerprint_with("eval.models=[seqhead]")
    assert fingerprint_with("eval.models=[seqhead]", "seqhead.hidden=128") != head
    assert fingerprint_with("eval.models=[seqhead]", "train.lr=0.001") == head  # over the pre-trained LM
    assert fingerprint_with("eval.models=[seqhead]", "model.item_max_tokens=16") != head  # which encodes its items
    tuned = ("eval.models=[seqhead]", "seqhead.item_vectors=tuned")
    assert fingerprint_with(*tuned, "train.lr=0.001") != fingerprint_with(*tuned)  # over the LM it fine-tunes

    sasrec = fingerprint_with("eval.models=[sasrec]")
    assert fingerprint_with("eval.models=[sasrec]", "model.temperature=0.1", "train.lr=0.001") == sasrec
    assert fingerprint_with("eval.models=[sasrec]", "train.setting=s2piao") != sasrec  # every model reads the setting
    assert fingerprint_with("eval.models=[sasrec]", "sasrec.lr=0.01") != sasrec


@pytest.mark.skipif(git_state()["commit"] is None, reason="needs a git checkout")
def test_restamp_carries_a_run_fingerprinted_with_every_section_when_its_params_still_give_that_fingerprint(
        tmp_path, monkeypatch):
    from llmrec_core.analyses import legacy_experiment_config, restamp, run_status
    from llmrec_core.config import load_params

    _head_tree(monkeypatch)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=PACKAGE).stdout.strip()
    code = code_hash_at(head, EXPERIMENT_CODE)
    base = [f"train.run_dir={tmp_path / 'run'}", f"data.root={tmp_path / 'data'}", "eval.models=[llmrec]"]
    params = load_params("params.yaml", base)

    # stamped when the fingerprint took every section, with other params than today's
    _stamp(params, code, head, config=legacy_experiment_config(load_params("params.yaml", [*base, "train.lr=0.001"])))
    assert run_status(params)[0] == "stale"
    assert restamp(params) == ("kept stale", "params or prepared data changed")

    _stamp(params, code, head, config=legacy_experiment_config(params))  # ... with today's
    assert run_status(params)[0] == "stale"
    outcome, why = restamp(params)
    assert outcome == "restamped" and "every section" in why
    assert run_status(params)[0] == "current"
    # a change to a section the run's models do not read leaves it current
    assert run_status(load_params("params.yaml", [*base, "seqhead.hidden=128"]))[0] == "current"
    assert run_status(load_params("params.yaml", [*base, "train.lr=0.001"]))[0] == "stale"
