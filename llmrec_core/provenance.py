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
LM_TRAINING_CODE = ("cost.py", "data/layout.py", "data/settings.py", "evaluate", "model", "train")
SASREC_TRAINING_CODE = ("cost.py", "data/layout.py", "data/settings.py", "evaluate", "baselines")
# What an experiment's metrics depend on: both trainers, the evaluator and the index it builds.
EXPERIMENT_CODE = tuple(sorted({*LM_TRAINING_CODE, *SASREC_TRAINING_CODE, "serve/index.py"}))


def _files(scopes: tuple[str, ...], root: Path) -> list[Path]:
    found = set()
    for scope in scopes:
        path = root / scope
        found.update(path.rglob("*.py") if path.is_dir() else [path] if path.is_file() else [])
    return sorted(found)


@lru_cache(maxsize=None)
def code_hash(scopes: tuple[str, ...], root: Path = PACKAGE) -> str:
    """sha256 over the relative path and bytes of every .py file in `scopes` under `root` (16 hex digits)."""
    digest = hashlib.sha256()
    for path in _files(scopes, root):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


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
    """What to store in a run record: git commit, whether the `scopes` sources were uncommitted, and their hash."""
    return {**git_state(scopes), "code_hash": code_hash(scopes)}


def fingerprint(config: dict, data_manifest: Path, scopes: tuple[str, ...] = ()) -> str:
    """What a result was made from: a config, the prepared data's manifest and (optionally) source code.
    Values left at their defaults are expected to be left out of `config` by the caller, so that adding an
    option does not make finished runs stale."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    digest.update(data_manifest.read_bytes() if data_manifest.is_file() else b"")
    if scopes:
        digest.update(code_hash(scopes).encode())
    return digest.hexdigest()[:16]
