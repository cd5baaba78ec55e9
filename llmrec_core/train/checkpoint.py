"""One checkpoint dict that resumes a run: trainable weights, optimizer, scheduler, RNG, data position."""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..model.bundle import trainable_state


def save_checkpoint(path: Path, model, optimizer, scheduler, state: dict) -> None:
    """Write weights, optimizer, scheduler, RNG and `state` to `path` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "model": trainable_state(model),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng_torch": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "state": state,
    }
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a kill during the write leaves the previous checkpoint intact


def load_checkpoint(path: Path, model, optimizer, scheduler) -> dict:
    """Restore a checkpoint into the model, optimizer, scheduler and RNG; returns its `state`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    missing = set(payload["model"]) - set(model.state_dict())
    if missing:
        raise ValueError(f"{path}: checkpoint does not match the model ({len(missing)} unknown tensors)")
    model.load_state_dict(payload["model"], strict=False)
    optimizer.load_state_dict(payload["optimizer"])
    scheduler.load_state_dict(payload["scheduler"])
    torch.set_rng_state(payload["rng_torch"])
    if payload["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(payload["rng_cuda"])
    return payload["state"]


def saved_fingerprint(path: Path) -> str | None:
    """The fingerprint of the params and data a checkpoint was trained from."""
    return torch.load(path, map_location="cpu", weights_only=True)["state"].get("fingerprint")


def decide_resume(ckpt_path: Path, resume: bool | str, current: str, outputs: list[Path]) -> bool:
    """Whether to continue `ckpt_path`. resume=True insists (and refuses a checkpoint made with other
    params or data); resume="auto" continues a matching checkpoint and otherwise starts over,
    removing the stale checkpoint and `outputs`; resume=False refuses to overwrite a checkpoint."""
    if not ckpt_path.exists():
        return False
    if not resume:
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue it, or remove {ckpt_path.parent} "
                              "to start over")
    saved = saved_fingerprint(ckpt_path)
    if saved == current:
        return True
    if resume == "auto":
        for path in [ckpt_path, *outputs]:
            path.unlink(missing_ok=True)
        return False
    raise ValueError(f"{ckpt_path} was trained with other params or data (fingerprint {saved} != {current}); "
                     "remove it or use --auto-resume to start over")
