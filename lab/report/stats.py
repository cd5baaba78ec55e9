"""Uncertainty for the report's claims: per-target metrics and bootstrap intervals of differences.

Every "A vs B" in the report is the mean over test targets of A's metric minus B's, with a 95%
bootstrap interval over targets. When both arms ranked the same targets (same users and items) the
bootstrap is paired (it resamples the per-target differences); otherwise, as when data settings test
different targets, each arm is resampled on its own. When users have several targets (the new-item
setting tests every event of a window), the paired bootstrap resamples users, not targets, since one
user's targets are not independent. A verdict comes from the interval alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LEVEL = 0.95
RESAMPLES = 2000
_BLOCK = 100  # resamples drawn at once: memory stays at _BLOCK x targets however large the test set


def per_target(ranks: np.ndarray, metric: str) -> np.ndarray:
    """Each target's value of `metric` ("ndcg@10", "recall@10", "mrr") from its 0-based rank."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if metric == "mrr":
        return 1.0 / (ranks + 1.0)
    name, _, k = metric.partition("@")
    hit = ranks < int(k)
    if name == "ndcg":
        return np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0)
    if name == "recall":
        return hit.astype(np.float64)
    raise ValueError(f"unknown metric {metric!r}")


@dataclass(frozen=True)
class Interval:
    """A 95% bootstrap interval of a difference of means (A minus B): paired over the same targets when `paired`."""

    diff: float  # mean of A minus mean of B
    low: float
    high: float
    targets: int  # targets of A (paired: of both)
    paired: bool

    @property
    def verdict(self) -> str:
        """Whether "A is better than B" holds: only an interval that excludes zero decides."""
        if self.low > 0:
            return "holds"
        if self.high < 0:
            return "does not hold"
        return "inconclusive at this budget"

    @property
    def relation(self) -> str:
        """"better than" / "worse than" / "not distinguishable from", from the interval."""
        return {"holds": "better than", "does not hold": "worse than"}.get(self.verdict, "not distinguishable from")

    def brief(self) -> str:
        """"+0.0123 (-0.0040 to +0.0290)": the difference and its interval, for table cells and verdict lines."""
        return f"{self.diff:+.4f} ({self.low:+.4f} to {self.high:+.4f})"

    def text(self) -> str:
        kind = "paired" if self.paired else "unpaired"
        return f"{self.diff:+.4f} (95% CI {self.low:+.4f} to {self.high:+.4f}, {kind}, {self.targets:,} targets)"


def _quantiles(means: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _resampled_means(values: np.ndarray, rng: np.random.Generator, resamples: int,
                     clusters: np.ndarray | None = None) -> np.ndarray:
    """Means over targets of `resamples` bootstrap resamples: of targets, or of whole `clusters` of targets
    (e.g. users) drawn with replacement, each mean then the ratio of the drawn sums and counts."""
    counts = None
    if clusters is not None:
        codes = np.unique(clusters, return_inverse=True)[1]
        values, counts = np.bincount(codes, weights=values), np.bincount(codes).astype(np.float64)
    n, out = len(values), []
    for start in range(0, resamples, _BLOCK):
        idx = rng.integers(0, n, size=(min(_BLOCK, resamples - start), n))
        out.append(values[idx].mean(axis=1) if counts is None else values[idx].sum(axis=1) / counts[idx].sum(axis=1))
    return np.concatenate(out)


def paired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = RESAMPLES,
                    clusters: np.ndarray | None = None) -> Interval:
    """A and B measured on the same targets, in the same order; `clusters` (e.g. user ids) resamples whole
    clusters of targets instead of single targets."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not len(a):
        raise ValueError("paired arms need the same, non-empty targets")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = _resampled_means(diff, rng, resamples, None if clusters is None else np.asarray(clusters))
    low, high = _quantiles(means)
    return Interval(float(diff.mean()), low, high, len(a), True)


def unpaired_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = RESAMPLES) -> Interval:
    """A and B measured on different targets: each resampled on its own."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if not len(a) or not len(b):
        raise ValueError("both arms need targets")
    rng = np.random.default_rng(seed)
    means = _resampled_means(a, rng, resamples) - _resampled_means(b, rng, resamples)
    low, high = _quantiles(means)
    return Interval(float(a.mean() - b.mean()), low, high, len(a), False)


def two_level_interval(a: np.ndarray, b: np.ndarray, seed: int = 0, resamples: int = RESAMPLES,
                       clusters: np.ndarray | None = None) -> Interval:
    """A and B as [seeds, targets] matrices over the same targets in the same order (each row one training run).
    Each resample draws each arm's seeds with replacement, then the targets (shared by both arms, so the
    comparison stays paired); an arm's mean is its drawn runs' mean over the drawn targets. The interval so holds
    training noise (which seeds ran) as well as sampling noise (which targets were asked); with one seed per arm
    it is the paired interval over targets. `clusters` (one label per target, e.g. its user) draws whole clusters
    instead of targets, for splits where one user has several targets that are not independent of each other."""
    a, b = np.atleast_2d(np.asarray(a, dtype=np.float64)), np.atleast_2d(np.asarray(b, dtype=np.float64))
    if a.shape[1] != b.shape[1] or not a.shape[1]:
        raise ValueError("both arms need the same, non-empty targets")
    (ka, n), kb = a.shape, b.shape[0]
    cluster_of = (np.arange(n) if clusters is None else np.unique(np.asarray(clusters), return_inverse=True)[1])
    if len(cluster_of) != n:
        raise ValueError("one cluster label per target")
    units = int(cluster_of.max()) + 1
    rng = np.random.default_rng(seed)
    block = max(1, min(_BLOCK, 5_000_000 // n))  # counts of drawn targets: block x n numbers at a time
    out = []
    for start in range(0, resamples, block):
        m = min(block, resamples - start)
        drawn = rng.multinomial(units, np.full(units, 1.0 / units), size=m)  # how often each target (cluster) is drawn
        targets = drawn if clusters is None else drawn[:, cluster_of]
        runs_a = rng.multinomial(ka, np.full(ka, 1.0 / ka), size=m)  # how often each of A's seeds is drawn
        runs_b = rng.multinomial(kb, np.full(kb, 1.0 / kb), size=m)
        weight = targets.sum(axis=1)  # n when targets are drawn; varies with the drawn clusters' sizes
        mean_a = ((runs_a @ a) * targets).sum(axis=1) / (ka * weight)
        mean_b = ((runs_b @ b) * targets).sum(axis=1) / (kb * weight)
        out.append(mean_a - mean_b)
    low, high = _quantiles(np.concatenate(out))
    return Interval(float(a.mean() - b.mean()), low, high, n, True)
