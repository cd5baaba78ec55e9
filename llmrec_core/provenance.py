"""Which code produced a result: the git commit, whether the tree was dirty, and a hash of the sources.

A run's fingerprint holds the hash of the source files that decide its outcome, so a change to the loss
or the evaluator makes a finished run stale, while a change to the report or the CLI does not. The git
commit and dirty flag are recorded beside it for people; the hash is what decides staleness (it also
works outside a git checkout, e.g. in the Docker image).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from functools import lru_cache
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent

# Sources, relative to llmrec_core/, whose change can change a trained LM's weights. Training validates
# every epoch to decide which weights are kept, so the evaluator is part of it. config.py is left out:
# the config values themselves are in every fingerprint (and a new option must not orphan finished runs).
# SASRec and the sequence head share the LM's packages (model/sequence.py, train/sequence.py, evaluate/sequence.py).
LM_TRAINING_CODE = ("cost.py", "data/layout.py", "data/settings.py", "evaluate", "model", "train")
SASREC_TRAINING_CODE = LM_TRAINING_CODE
# What an experiment's metrics depend on: both trainers and the evaluator. The serving index it also builds
# decides no metric (evaluation ranks every item exactly), so serve/ is not part of it.
EXPERIMENT_CODE = tuple(sorted({*LM_TRAINING_CODE, *SASREC_TRAINING_CODE}))


def _in_scopes(relative: str, scopes: tuple[str, ...]) -> bool:
    """Whether a file (path relative to llmrec_core/) is Python source that a scope names, or lies under one."""
    return relative.endswith(".py") and any(relative == s or relative.startswith(s.rstrip("/") + "/")
                                            for s in scopes)


def _files(scopes: tuple[str, ...], root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if _in_scopes(p.relative_to(root).as_posix(), scopes))


def _digest(files: list[tuple[str, bytes]]) -> str:
    digest = hashlib.sha256()
    for relative, content in sorted(files):
        digest.update(relative.encode() + b"\0" + content + b"\0")
    return digest.hexdigest()[:16]


@lru_cache(maxsize=None)
def code_hash(scopes: tuple[str, ...], root: Path = PACKAGE) -> str:
    """sha256 over the relative path and bytes of every .py file in `scopes` under `root` (16 hex digits)."""
    return _digest([(path.relative_to(root).as_posix(), path.read_bytes()) for path in _files(scopes, root)])


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in blocks (weights can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state(scopes: tuple[str, ...] = (".",)) -> dict:
    """{"commit": HEAD's sha, "dirty": whether the `scopes` sources differ from it}. $LLMREC_SOURCE_COMMIT, when set,
    names the commit instead, with dirty unknown (None): for a tree copied to another machine (a Docker image, a
    training box), whose .git is missing or is not the source's. The code hash still says what the code was."""
    if os.environ.get("LLMREC_SOURCE_COMMIT"):
        return {"commit": os.environ["LLMREC_SOURCE_COMMIT"], "dirty": None}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--", *(str(PACKAGE / s) for s in scopes))
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def provenance(scopes: tuple[str, ...]) -> dict:
    """What to store in a run record: git commit, whether the `scopes` sources were uncommitted, their hash and
    the scopes themselves."""
    return {**git_state(scopes), "code_hash": code_hash(scopes), "code_scope": list(scopes)}


def non_default(section, exclude: set[str] = frozenset()) -> dict:
    """A config section's values that differ from their defaults, as JSON values. Fingerprints are taken over
    these, so that a new option (whose default keeps today's behaviour) orphans no finished run or checkpoint."""
    return section.model_dump(mode="json", exclude=set(exclude), exclude_defaults=True)


def fingerprint(config: dict, data_manifest: Path, scopes: tuple[str, ...] = (), code: str | None = None) -> str:
    """What a result was made from: a config, the prepared data's manifest and (optionally) source code: the
    code_hash of `scopes`, or `code`, a hash computed before. `config` holds `non_default` sections."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(data_manifest.read_bytes() if data_manifest.is_file() else b"")
    code = code or (code_hash(scopes) if scopes else None)
    if code:
        digest.update(code.encode())
    return digest.hexdigest()[:16]
