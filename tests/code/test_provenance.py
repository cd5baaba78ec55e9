"""Provenance: a code change in what produced a result changes its hash; elsewhere it does not."""
import shutil

from llmrec_core.provenance import EXPERIMENT_CODE, LM_TRAINING_CODE, PACKAGE, code_hash, git_state, provenance


def _copy(tmp_path):
    root = tmp_path / "llmrec_core"
    shutil.copytree(PACKAGE, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_code_hash_follows_the_evaluator_and_the_trainer_but_not_the_cli(tmp_path):
    root = _copy(tmp_path)
    before = code_hash(EXPERIMENT_CODE, root)
    assert before == code_hash(EXPERIMENT_CODE) and len(before) == 16  # same bytes, same hash
    (root / "cli.py").write_text((root / "cli.py").read_text() + "\n# a comment\n")
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
