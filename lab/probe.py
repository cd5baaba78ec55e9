"""Behaviour probes: prove that a change to experiment code leaves a finished run's results unchanged.

A run's code hash changes with any edit of the code its results depend on, a pure refactor included, and
a stale run costs its full training to redo. A probe is a short, deterministic replay of an experiment
through the same commands (`train`, `train_sasrec`, `evaluate`): 2 optimizer steps of the LM, 2 epochs of
SASRec and of the sequence head (validating after each), then the validation split ranked by every model.
Its digest covers every trained tensor, every loss and validation figure, and each validation target's rank.

Probe an experiment with the code its runs were made from (a git worktree of their commit) and again with
the changed code (`llmrec-lab analyses --probe`): when the two digests are equal, the runs count as current
(experiments.run_status); when they differ, the change altered behaviour and the runs stay "earlier code".
Records live in each run folder's `probes.json`, keyed by the code hash of the code that ran the probe.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from safetensors.numpy import load_file

from llmrec_core.config import Params, load_params
from llmrec_core.provenance import EXPERIMENT_CODE, code_hash, git_state

PROBES = "probes.json"
# What a probe changes in an experiment's config: short, but through every branch a full run takes
# (training steps, validation, keeping the best weights, the evaluator on every model).
PROBE_OVERRIDES = ("train.max_steps=2", "train.epochs=1", "train.checkpoint_every=1000000",
                   "eval.max_valid_users=64", "sasrec.epochs=2", "sasrec.eval_every=1",
                   "seqhead.epochs=2", "seqhead.eval_every=1")
SCRATCH = ".probe"


def probe_params(path: Path, run: str) -> Params:
    """The run's params with PROBE_OVERRIDES, writing into a scratch folder inside the run's folder."""
    params = load_params(path, experiment=run)
    scratch = params.resolve(params.train.run_dir) / SCRATCH
    return load_params(path, experiment=run, overrides=[
        *PROBE_OVERRIDES, f"train.run_dir={scratch}", f"sasrec.run_dir={scratch / 'sasrec'}",
        f"seqhead.run_dir={scratch / 'seqhead'}"])


def _update_tensors(digest, folder: Path) -> None:
    for path in sorted(folder.rglob("weights.safetensors")):
        tensors = load_file(path)
        for name in sorted(tensors):
            value = np.ascontiguousarray(tensors[name])
            digest.update(f"{path.relative_to(folder)}:{name}:{value.dtype}:{value.shape}".encode())
            digest.update(value.tobytes())


def _trajectory(folder: Path) -> list:
    """Losses and validation figures of every trainer, in a fixed order (times and costs left out)."""
    out = []
    for path in sorted(folder.rglob("train_metrics.json")):
        record = json.loads(path.read_text())
        out.append([str(path.relative_to(folder)), record.get("epochs"), record.get("evals"),
                    record.get("best_valid_ndcg@10")])
    return out


def probe_digest(folder: Path) -> tuple[str, dict]:
    """(sha256 of what the probe produced, the validation NDCG@10 per model for people to read)."""
    digest = hashlib.sha256()
    _update_tensors(digest, folder)
    digest.update(json.dumps(_trajectory(folder), sort_keys=True).encode())
    metrics = json.loads((folder / "metrics_valid.json").read_text())["models"]
    digest.update(json.dumps(metrics, sort_keys=True).encode())
    ranks = pd.read_parquet(folder / "ranks_valid.parquet")
    digest.update(",".join(ranks.columns).encode())
    digest.update(pd.util.hash_pandas_object(ranks, index=False).to_numpy().tobytes())  # by value, strings included
    readable = {model: round(values["overall"].get("ndcg@10", 0.0), 6) for model, values in metrics.items()}
    return digest.hexdigest()[:16], readable


def probe_machine() -> dict:
    """What a digest depends on besides the code: its bits come from the math kernels, which torch picks by CPU
    model and instruction set, and from the thread count, so probes only compare on one machine."""
    import platform

    import torch

    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    isa = sorted(f for f in fields.get("flags", "").split() if f.startswith(("avx", "fma", "amx", "sse4")))
    return {"cpu": fields.get("model name", platform.processor() or platform.machine()), "isa": " ".join(isa),
            "threads": torch.get_num_threads(), "torch": torch.__version__}


def read_probes(run_dir: Path) -> dict:
    """{code hash: probe record} of a run folder."""
    path = run_dir / PROBES
    return json.loads(path.read_text()) if path.is_file() else {}


def record_probe(run_dirs: list[Path], digest: str, readable: dict, probed_run: str, seconds: float) -> dict:
    """Write a probe made with the code in this tree into each run folder's probes.json (under its code hash)."""
    record = {"digest": digest, "valid_ndcg@10": readable, "probed_run": probed_run, "overrides": list(PROBE_OVERRIDES),
              **git_state(EXPERIMENT_CODE), "made_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "seconds": round(seconds, 1), "machine": probe_machine()}
    current = code_hash(EXPERIMENT_CODE)
    for run_dir in run_dirs:
        run_dir.mkdir(parents=True, exist_ok=True)
        probes = read_probes(run_dir)
        probes[current] = record
        (run_dir / PROBES).write_text(json.dumps(probes, indent=2))
    return record


def probes_agree(run_dir: Path, old_hash: str, new_hash: str) -> tuple[bool, str]:
    """Whether probes made with both code hashes exist, were made alike, and produced the same digest. Equal
    digests from two machines prove the same as from one; different ones prove nothing there."""
    probes = read_probes(run_dir)
    old, new = probes.get(old_hash), probes.get(new_hash)
    if old is None or new is None:
        missing = [h for h, p in ((old_hash, old), (new_hash, new)) if p is None]
        return False, f"no probe with code {', '.join(missing)} (`llmrec-lab analyses --probe`)"
    if old["overrides"] != new["overrides"]:
        return False, "the two probes were made with different probe settings"
    if old["digest"] != new["digest"]:
        differ = f"probe digests differ ({old['digest']} vs {new['digest']})"
        if None in (old.get("machine"), new.get("machine")):
            return False, (f"{differ}: the change alters results, or a probe without a named machine ran on "
                           "another one (probe both codes on this machine)")
        if old["machine"] != new["machine"]:
            return False, (f"{differ}, but the probes ran on different machines or thread counts, whose kernels "
                           "round differently: probe both codes on this machine")
        return False, f"{differ}: the change alters results"
    return True, f"probes of code {old_hash} and {new_hash} agree (digest {new['digest']})"
