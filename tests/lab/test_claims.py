"""The registered claims: the file loads, and a verdict needs enough runs made after registration."""
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from lab.claims import Claim, arm_matrix, judge, load_claims

REGISTERED = datetime(2026, 12, 1)


def _ranks(rng, n: int, shift: int, model: str) -> pd.DataFrame:
    ranks = np.clip(rng.integers(0, 30, n) - shift, 0, None)
    return pd.DataFrame({"user_idx": np.arange(n), "target": np.arange(n) % 50,
                         "group": np.where(np.arange(n) % 3 == 0, "tail", "head"), f"rank_{model}": ranks})


def _two_arms(rng, n: int, shift: int, finished: datetime = datetime(2026, 12, 2)) -> dict:
    """Five runs a side, finished after registration: ea's seqhead ranks `shift` places better than eb's sasrec."""
    return {"ea": [(_ranks(rng, n, shift, "seqhead"), finished) for _ in range(5)],
            "eb": [(_ranks(rng, n, 0, "sasrec"), finished) for _ in range(5)]}


def _claim(targets: str = "all") -> Claim:
    return Claim("x", "A beats B", {"experiment": "ea", "model": "seqhead"}, {"experiment": "eb", "model": "sasrec"},
                 "ndcg@10", targets)


def test_the_committed_claims_file_loads():
    claims, min_seeds = load_claims()
    assert {"head-vs-sasrec", "head-vs-sasrec-ens4", "served-head-vs-lm-cold", "mpnet-vs-minilm"} <= {c.id for c in claims}
    assert min_seeds["ml-100k"] >= 5 and min_seeds["ml-1m"] >= 3


def test_a_claim_is_pending_until_it_has_enough_runs_made_after_registration():
    rng = np.random.default_rng(0)
    before, after = datetime(2026, 11, 1), datetime(2026, 12, 2)
    runs = {"ea": [(_ranks(rng, 400, 8, "seqhead"), after) for _ in range(3)] + [(_ranks(rng, 400, 8, "seqhead"), before)],
            "eb": [(_ranks(rng, 400, 0, "sasrec"), after) for _ in range(5)]}
    verdict = judge(_claim(), runs, 5, REGISTERED)
    assert verdict.verdict == "pending" and "3 of the 5" in verdict.why and "1 earlier" in verdict.why
    assert judge(_claim(), runs, 5, None).verdict == "pending"  # an uncommitted claim decides nothing


def test_a_registered_claim_with_its_runs_gets_the_rules_verdict():
    better = _two_arms(np.random.default_rng(1), 600, 10)
    verdict = judge(_claim(), better, 5, REGISTERED)
    assert verdict.verdict == "holds" and verdict.interval.low > 0 and verdict.seeds == (5, 5)
    worse = {"ea": [(r.rename(columns={"rank_sasrec": "rank_seqhead"}), t) for r, t in better["eb"]],
             "eb": [(r.rename(columns={"rank_seqhead": "rank_sasrec"}), t) for r, t in better["ea"]]}
    assert judge(_claim(), worse, 5, REGISTERED).verdict == "does not hold"
    tail = arm_matrix([r for r, _ in better["ea"]], "seqhead", "ndcg@10", "tail")
    assert len(tail) == 200 and (tail["group"] == "tail").all()
    with pytest.raises(ValueError):
        arm_matrix([better["ea"][0][0], better["ea"][1][0].iloc[::-1]], "seqhead", "ndcg@10", "all")


def test_arms_that_score_identically_are_inconclusive_and_say_so():
    rng = np.random.default_rng(3)
    after = datetime(2026, 12, 2)
    same = [(_ranks(rng, 300, 4, "seqhead"), after) for _ in range(5)]
    runs = {"ea": same, "eb": [(r.rename(columns={"rank_seqhead": "rank_sasrec"}), t) for r, t in same]}
    verdict = judge(_claim(), runs, 5, REGISTERED)
    assert verdict.verdict == "inconclusive" and verdict.why.startswith("A and B rank every target identically")
    runs["ea"][0][0].loc[0, "rank_seqhead"], runs["eb"][0][0].loc[0, "rank_sasrec"] = 50, 0  # one target apart
    assert "identically" not in judge(_claim(), runs, 5, REGISTERED).why


def test_a_claim_on_targets_the_split_does_not_have_is_not_applicable_not_pending():
    runs = _two_arms(np.random.default_rng(2), 90, 5)
    verdict = judge(_claim("cold"), runs, 5, REGISTERED)  # every target is tail or head
    assert verdict.verdict == "not applicable" and "no cold targets" in verdict.why and verdict.seeds == (5, 5)


def test_the_report_shows_every_claim_on_every_registered_dataset(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from lab.report import sections_claims

    monkeypatch.setattr(sections_claims, "CONFIGS", tmp_path)  # no configs/ml-1m.yaml: its claims wait for runs
    text = sections_claims.registered_claims(SimpleNamespace(params_path="configs/ml-100k.yaml", runs=[]))
    claims, min_seeds = load_claims()
    rows = [line for line in text.splitlines() if line.startswith("| ") and "pending" in line]
    assert len(rows) == len(claims) * len(min_seeds)
    for dataset in min_seeds:
        assert sum(f"| {dataset} |" in row for row in rows) == len(claims)
    other = sections_claims.registered_claims(SimpleNamespace(params_path="configs/sample.yaml", runs=[]))
    assert "every section of this report is exploratory" in other


def test_a_pending_claims_runs_are_withheld_from_the_exploratory_sections_until_it_is_decided(monkeypatch):
    """One of three ml-1m seeds of `confirm-ens4` finished: its test numbers must not show anywhere but the claims'
    section; with all three (or on a dataset no claim is registered for) nothing is withheld."""
    from lab.report import sections_claims

    after = datetime(2027, 1, 1)  # later than every registration
    made = {"confirm-ens4": [(None, after)], "confirm": [(None, after)] * 3}
    monkeypatch.setattr(sections_claims, "claim_runs", lambda runs: made)
    assert sections_claims.withheld_experiments("ml-1m", []) == {
        "confirm-ens4": "1 of the 3 runs `head-vs-sasrec-ens4` needs"}
    made["confirm-ens4"] = [(None, after)] * 3
    assert sections_claims.withheld_experiments("ml-1m", []) == {}
    made["confirm-ens4"] = [(None, datetime(2026, 1, 1))] * 3  # before registration: they do not count
    assert "0 of the 3 runs" in sections_claims.withheld_experiments("ml-1m", [])["confirm-ens4"]
    made["confirm-ens4"] = [(None, after)]
    assert sections_claims.withheld_experiments("sample", []) == {}


def test_where_users_have_several_targets_the_interval_drawing_users_is_shown_beside_the_verdict():
    runs = _two_arms(np.random.default_rng(4), 600, 10)
    one_each = judge(_claim(), runs, 5, REGISTERED)
    assert one_each.by_user is None and "drawing users" not in one_each.why  # leave-one-out: one target per user
    for arm in runs.values():
        for ranks, _ in arm:
            ranks["user_idx"] = np.arange(600) // 20  # a time split: 30 users, 20 targets each
    several = judge(_claim(), runs, 5, REGISTERED)
    assert several.interval == one_each.interval and several.verdict == one_each.verdict  # the registered rule
    assert "drawing users instead (30 users)" in several.why
    assert several.by_user.high - several.by_user.low != several.interval.high - several.interval.low
