"""Bootstrap intervals and verdicts against cases whose answer is known."""
import math

import numpy as np
import pytest

from lab.report.stats import paired_interval, per_target, two_level_interval, unpaired_interval


def test_per_target_metrics_by_hand():
    ranks = np.array([0, 1, 9, 10])
    assert per_target(ranks, "recall@10").tolist() == [1, 1, 1, 0]
    assert np.allclose(per_target(ranks, "ndcg@10"), [1, 1 / math.log2(3), 1 / math.log2(11), 0])
    assert np.allclose(per_target(ranks, "mrr"), [1, 1 / 2, 1 / 10, 1 / 11])
    with pytest.raises(ValueError):
        per_target(ranks, "hits")


def test_a_constant_gain_holds_a_loss_does_not_and_noise_is_inconclusive():
    rng = np.random.default_rng(0)
    b = rng.random(500)
    gain = paired_interval(b + 0.1, b)
    assert gain.diff == pytest.approx(0.1) and gain.low == pytest.approx(0.1) and gain.verdict == "holds"
    assert paired_interval(b - 0.05, b).verdict == "does not hold"
    e = rng.normal(0, 0.2, 500)
    noise = paired_interval(b + (e - e.mean()), b)  # changes per target, none on average
    assert noise.low < 0 < noise.high and noise.verdict == "inconclusive at this budget"
    # unpaired: two clearly separated samples of different sizes, and two draws of one distribution
    assert unpaired_interval(rng.random(300) + 1, rng.random(200)).verdict == "holds"
    same = rng.random(300)
    assert unpaired_interval(same, same[::-1].copy()).verdict == "inconclusive at this budget"
    with pytest.raises(ValueError):
        paired_interval(b, b[:10])


def test_interval_covers_the_sampling_spread():
    # the mean of 400 coin flips: the 95% interval is about +-1.96 * 0.5 / 20 = +-0.049 wide around the mean
    flips = np.random.default_rng(1).integers(0, 2, 400).astype(float)
    ci = paired_interval(flips, np.zeros(400))
    assert 0.08 < ci.high - ci.low < 0.12 and ci.low < flips.mean() < ci.high


def test_a_cluster_bootstrap_of_singletons_is_the_target_bootstrap():
    rng = np.random.default_rng(1)
    a, b = rng.random(300), rng.random(300)
    assert paired_interval(a, b, seed=3) == paired_interval(a, b, seed=3, clusters=np.arange(300))


def test_resampling_users_widens_the_interval_when_a_users_targets_move_together():
    # 20 users with 30 targets each; a user's targets share one difference: 20 independent values, not 600
    rng = np.random.default_rng(2)
    users = np.repeat(np.arange(20), 30)
    diff = rng.normal(0.0, 1.0, 20)[users] + rng.normal(0.0, 0.01, 600)
    by_target = paired_interval(diff, np.zeros(600), seed=0)
    by_user = paired_interval(diff, np.zeros(600), seed=0, clusters=users)
    assert by_user.diff == pytest.approx(by_target.diff)
    assert (by_user.high - by_user.low) > 3 * (by_target.high - by_target.low)


def test_per_seed_differences_set_each_run_against_the_baselines_mean():
    import pandas as pd
    from types import SimpleNamespace

    from lab.report.collect import Arm, per_seed_differences

    def run(model, ranks):
        return SimpleNamespace(ranks=pd.DataFrame({"user_idx": [0, 1], "target": [5, 6], "domain": ["d", "d"],
                                                   "group": ["new", "new"], f"rank_{model}": ranks}))

    ours = Arm.of("ours", "llmrec", [run("llmrec", [0, 20]), run("llmrec", [20, 20])])  # NDCG@10 0.5, then 0
    base = Arm.of("base", "zero_shot", [run("zero_shot", [1, 20])])  # (1 / log2(3) + 0) / 2
    diffs = per_seed_differences(ours, base, "ndcg@10")
    assert diffs == pytest.approx([0.5 - 0.5 / math.log2(3), -0.5 / math.log2(3)])
    assert per_seed_differences(ours, Arm.of("none", "sasrec", [run("llmrec", [0, 0])]), "ndcg@10") is None


def test_the_two_level_interval_holds_seed_noise_that_averaging_over_seeds_hides():
    rng = np.random.default_rng(1)
    base = rng.random(900)
    a = np.stack([base + 0.02 + shift for shift in (-0.03, 0.0, 0.03)])  # three runs that disagree by seed
    b = np.stack([base, base, base])
    averaged = paired_interval(a.mean(axis=0), b.mean(axis=0))
    both = two_level_interval(a, b)
    assert averaged.low > 0 and averaged.verdict == "holds"  # over targets alone the gain looks certain ...
    assert both.low < 0 < both.high and both.verdict.startswith("inconclusive")  # ... not once seeds are redrawn
    assert both.diff == pytest.approx(0.02) and both.targets == 900


def test_the_two_level_interval_of_one_seed_per_arm_is_the_paired_interval():
    rng = np.random.default_rng(2)
    a, b = rng.random(500), rng.random(500)
    one = two_level_interval(a[None], b[None], resamples=4000)
    paired = paired_interval(a, b, resamples=4000)
    assert one.diff == pytest.approx(paired.diff)
    assert one.low == pytest.approx(paired.low, abs=0.01) and one.high == pytest.approx(paired.high, abs=0.01)
    with pytest.raises(ValueError, match="same, non-empty targets"):
        two_level_interval(np.zeros((2, 3)), np.zeros((2, 4)))


def test_drawing_users_instead_of_targets_widens_the_interval_when_a_users_targets_move_together():
    rng = np.random.default_rng(3)
    per_user = rng.normal(0.01, 0.1, size=(2, 200))  # two seeds of A's gain over B, one value per user
    a, b = np.repeat(per_user, 10, axis=1), np.zeros((2, 2000))  # each user's 10 targets: the same value
    users = np.repeat(np.arange(200), 10)
    by_target, by_user = two_level_interval(a, b), two_level_interval(a, b, clusters=users)
    one_per_user = two_level_interval(per_user, np.zeros((2, 200)))
    assert by_user.diff == by_target.diff == pytest.approx(per_user.mean())
    assert by_user.high - by_user.low > 2 * (by_target.high - by_target.low)  # 10 copies are not 10 users
    assert by_user.low == pytest.approx(one_per_user.low, abs=0.004)
    assert by_user.high == pytest.approx(one_per_user.high, abs=0.004)
    # one target per user: the very same draws as without clusters
    assert two_level_interval(per_user, np.zeros((2, 200)), clusters=np.arange(200)) == one_per_user
    with pytest.raises(ValueError, match="one cluster label per target"):
        two_level_interval(a, b, clusters=users[:-1])
