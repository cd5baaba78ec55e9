"""Cost accounting: parameters, wall time per phase, throughput, memory, device and money."""
from __future__ import annotations

import platform
import resource
import time
from contextlib import contextmanager

import numpy as np
import torch

from .config import CostConfig


def parameter_counts(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters) of a model."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def device_info() -> dict:
    """The device a cost record is for: GPU name and count, or the CPU and its thread count."""
    if torch.cuda.is_available():
        return {"device": torch.cuda.get_device_name(0), "device_count": torch.cuda.device_count(), "gpu": True}
    return {"device": f"CPU {platform.processor() or platform.machine()}", "device_count": torch.get_num_threads(),
            "gpu": False}


def peak_host_mb() -> float:
    """This process's peak resident memory so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class CostMeter:
    """Wall time per named phase of a job, turned into a cost record (`record`) with throughput and money."""

    def __init__(self, cfg: CostConfig):
        self.cfg = cfg
        self.phases: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def seconds(self, name: str) -> float:
        return self.phases.get(name, 0.0)

    def record(self, model, kind: str, samples: int = 0, tokens: int = 0, seconds: float = 0.0,
               extra: dict | None = None) -> dict:
        total, trainable = parameter_counts(model)
        info = device_info()
        wall = sum(self.phases.values())
        hours = wall / 3600 * (info["device_count"] if info["gpu"] else 1)
        price = self.cfg.price_per_gpu_hour if info["gpu"] else self.cfg.price_per_cpu_hour
        return {
            "kind": kind, "date": time.strftime("%Y-%m-%d %H:%M:%S"), **info,
            "parameters_total": total, "parameters_trainable": trainable,
            "seconds_by_phase": {k: round(v, 3) for k, v in self.phases.items()}, "seconds_total": round(wall, 3),
            "samples_per_s": round(samples / seconds, 2) if seconds else None,
            "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
            "peak_host_mb": round(peak_host_mb(), 1),
            "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if info["gpu"] else None,
            "device_hours": round(hours, 6), "gpu_hours": round(hours, 6) if info["gpu"] else 0.0,
            "money_estimate": round(hours * price, 6),
            "price_per_hour": price, **(extra or {}),
        }


def latency_percentiles(samples_s: list[float]) -> dict:
    """p50 and p95 in milliseconds of latencies given in seconds."""
    arr = np.asarray(samples_s) * 1000
    return {"p50_ms": round(float(np.percentile(arr, 50)), 2), "p95_ms": round(float(np.percentile(arr, 95)), 2)}
