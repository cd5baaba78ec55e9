"""The serving offset of new items: which items it lifts, how much (for every user, and with calibration), the grid
of its knobs that is measured and how a setting is chosen from it, that serving applies it exactly, and that records of either name are read."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from llmrec_core.config import IndexConfig, SasrecConfig
from llmrec_core.model.sequence import build_head
import lab.new_item_offset as offsets_module
from lab.new_item_offset import (check_request, choose_setting, mean_ndcg, parse_knobs, part_ndcg, rank_grid,
                                 read_offsets, serving_lines, setting_label, settings_in_order, with_offset)
from llmrec_core.errors import UserError
from llmrec_core.serve.index import ItemIndex
from llmrec_core.serve.recommend import Recommender
from llmrec_core.model.new_item_offsets import (calibrated_offsets, log_mass, new_item_offsets, recent_flags,
                                                recent_new_share)
from llmrec_core.model.sequence import unknown_items


def _head(members: int, known: torch.Tensor | None, item_ids: bool = True):
    cfg = SasrecConfig(hidden=8, heads=2, layers=1, members=members)
    cfg = SimpleNamespace(**cfg.model_dump(), item_ids=item_ids, id_dropout=0.0)
    return build_head(6, cfg, torch.randn(6, 4), known)


def test_unknown_items_are_those_without_an_id_embedding():
    known = torch.tensor([1, 1, 0, 1, 0, 1], dtype=torch.bool)
    for members in (1, 3):
        assert unknown_items(_head(members, known)).tolist() == [False, False, True, False, True, False]
    assert not unknown_items(_head(1, None)).any()  # every item seen in training
    assert not unknown_items(_head(1, known, item_ids=False)).any()  # text only: nothing to lift


def test_offset_adds_to_unknown_columns_only():
    scores = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, 0.5, 0.5, 0.5]])
    score = with_offset(lambda rows, start, end: scores[rows][:, start:end], np.array([False, True, False, True]), 2.5)
    assert score(np.array([0, 1]), 1, 4).tolist() == [[4.5, 3.0, 6.5], [3.0, 0.5, 3.0]]
    per_row = with_offset(lambda rows, start, end: scores[rows][:, start:end], np.array([False, True, False, True]),
                      np.array([1.0, 10.0]))  # one offset per row, indexed like the rows
    assert per_row(np.array([1, 0]), 0, 4).tolist() == [[0.5, 10.5, 0.5, 10.5], [1.0, 3.0, 3.0, 5.0]]


def test_the_expected_share_of_new_items_shrinks_the_recent_share_toward_the_catalogue():
    recent = np.array([[False, True, True, False], [False, False, False, False], [False, False, False, False]])
    share = recent_new_share(recent, np.array([4, 4, 0]), prior_share=0.1, prior_strength=2.0)
    np.testing.assert_allclose(share, [(2 + 0.2) / 6, 0.2 / 6, 0.1])  # no history: the catalogue's share


def test_recent_flags_read_the_last_items_of_a_padded_history():
    unknown = np.array([False, True, False, True])
    padded = np.array([[0, 0, 1, 2], [3, 4, 2, 1], [0, 0, 0, 0]])  # ids + 1, 0 = padding
    recent, lengths = recent_flags(padded, unknown)
    assert recent.tolist() == [[False, False, False, True], [False, True, True, False], [False] * 4]
    assert lengths.tolist() == [2, 4, 0]


def test_log_mass_is_exact_on_every_item_and_scales_a_sample_up():
    scores = np.array([[0.0, np.log(3.0)], [1.0, 1.0]])
    np.testing.assert_allclose(log_mass(scores, 1.0), [np.log(4.0), 1 + np.log(2.0)])
    np.testing.assert_allclose(log_mass(scores * 2, 2.0), [np.log(4.0), 1 + np.log(2.0)])  # scores / temperature
    np.testing.assert_allclose(log_mass(scores, 1.0, total=10), [np.log(4.0 * 5), 1 + np.log(10.0)])


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_the_calibrated_offset_gives_new_items_the_expected_share_of_the_softmax(temperature):
    rng = np.random.default_rng(0)
    scores, unknown = rng.normal(0, 3, (5, 40)), rng.random(40) < 0.25
    share = np.array([0.01, 0.1, 0.3, 0.5, 0.9])
    c = calibrated_offsets(log_mass(scores[:, unknown], temperature), log_mass(scores[:, ~unknown], temperature),
                           share, temperature)
    lifted = (scores + c[:, None] * unknown) / temperature
    p = np.exp(lifted - lifted.max(1, keepdims=True))
    np.testing.assert_allclose((p[:, unknown].sum(1) / p.sum(1)), share, rtol=1e-9)


def test_new_item_offsets_are_the_fixed_offset_or_the_larger_of_it_and_calibration():
    rng = np.random.default_rng(2)
    scores, unknown = np.tile(rng.normal(0, 3, (1, 30)), (3, 1)), np.arange(30) < 6  # one user's scores, 3 histories
    recent = np.array([[True] * 10, [False] * 10, [True] * 5 + [False] * 5])
    lengths = np.array([10, 10, 10])
    off = IndexConfig(new_item_offset=1.5)
    assert new_item_offsets(off, scores, unknown, recent, lengths, 1.0).tolist() == [1.5] * 3
    on = IndexConfig(new_item_offset=0.0, new_item_offset_calibration=True, new_item_offset_prior_strength=10.0)
    raw = new_item_offsets(on, scores, unknown, recent, lengths, 1.0)
    share = recent_new_share(recent, lengths, 0.2, 10.0)
    expected = np.maximum(0.0, calibrated_offsets(log_mass(scores[:, unknown], 1.0), log_mass(scores[:, ~unknown], 1.0),
                                                  share, 1.0))
    np.testing.assert_allclose(raw, expected)
    fixed = new_item_offsets(on.model_copy(update={"new_item_offset": 2.0}), scores, unknown, recent, lengths, 1.0)
    np.testing.assert_allclose(fixed, np.maximum(2.0, raw))
    assert raw[0] > raw[2] > raw[1]  # the more of a user's recent items are new, the more new items get
    sample = np.arange(0, 30, 2)  # a sample of the catalogue estimates the same masses, scaled to all items
    est = new_item_offsets(on, scores[:, sample], unknown, recent, lengths, 1.0, sample_rows=sample)
    assert est.shape == (3,) and np.isfinite(est).all()


OWN = (10, 10.0)  # the params' window and prior strength: what a plain "+cal" label means


def _record(window_by_setting: dict[str, float], new: float = 0.5, warm_weight: float | None = None) -> dict:
    """A record whose settings have this whole-window NDCG@10 (its only targets: 4 new, 6 warm, the new ones at
    `new`)."""
    settings = {label: {"overall": {"ndcg@10": v, "count": 10}, "by_group": {"new": {"ndcg@10": new, "count": 4}}}
                for label, v in window_by_setting.items()}
    return {"calibration": {"window": OWN[0], "prior_strength": OWN[1]}, "offsets": settings,
            **({"warm_weight": warm_weight} if warm_weight is not None else {})}


def test_labels_round_trip_through_the_parse_functions():
    grid = [(o, False, None, None) for o in (0.0, 0.5, 3.0, 1000.0)]
    grid += [(o, True, w, p) for o in (0.0, 3.0, 1000.0) for w in (5, 10, 20) for p in (2.5, 10.0, 20.0)]
    for knobs in grid:
        label = setting_label(*knobs, own=OWN)
        assert parse_knobs(label, OWN) == knobs, label
    assert setting_label(3.0, False) == "3" and setting_label(3.0, True, 10, 10.0, own=OWN) == "3+cal"
    assert setting_label(3.0, True, 5, 20.0, own=OWN) == "3+cal:w5:p20"
    assert setting_label(3.0, True, 10, 20.0, own=OWN) == "3+cal:w10:p20"  # own window, another prior strength
    # a record's "+cal" (every record measured before the grid) is calibration at that record's own knobs
    assert parse_knobs("3+cal", (20, 5.0)) == (3.0, True, 20, 5.0)
    assert parse_knobs("8", OWN) == (8.0, False, None, None)


def test_settings_are_listed_offsets_alone_first_then_by_window_and_prior_strength():
    record = _record(dict.fromkeys(["3+cal:w5:p20", "10", "2", "0+cal", "1+cal:w5:p5", "0+cal:w5:p20", "3+cal"], 0.1))
    assert settings_in_order(record) == ["2", "10", "1+cal:w5:p5", "0+cal:w5:p20", "3+cal:w5:p20", "0+cal", "3+cal"]


def test_choose_setting_is_the_highest_mean_whole_window_ndcg_over_runs():
    a = _record({"0": 0.10, "2": 0.20, "2+cal": 0.14, "4": 0.08, "1+cal:w5:p20": 0.12})
    b = _record({"0": 0.12, "2": 0.10, "2+cal": 0.19, "4": 0.30, "1+cal:w5:p20": 0.18})
    assert choose_setting([a]) == "2" and choose_setting([b]) == "4"  # each run alone picks otherwise
    assert choose_setting([a, b]) == "4"  # means: 0.11, 0.15, 0.165, 0.19, 0.15
    c = _record({"0": 0.10, "2": 0.20, "2+cal": 0.14, "4": 0.08, "1+cal:w5:p20": 0.20})
    assert choose_setting([a, c]) == "2"  # 0.20 over 0.16; not the new targets' NDCG, which is the same everywhere
    assert mean_ndcg([a, b], "2+cal", "window") == pytest.approx(0.165)
    assert choose_setting([]) is None


def test_choose_setting_breaks_ties_by_offset_then_calibration_then_window_then_prior_strength():
    tied = ["3+cal:w5:p5", "2+cal:w20:p5", "2+cal:w5:p20", "2+cal:w5:p10", "2+cal", "2", "4"]
    assert choose_setting([_record(dict.fromkeys(tied, 0.2))]) == "2"  # the smaller offset, then no calibration
    tied.remove("2")
    assert choose_setting([_record(dict.fromkeys(tied, 0.2))]) == "2+cal:w5:p10"  # the smaller window, then prior
    tied.remove("2+cal:w5:p10")
    assert choose_setting([_record(dict.fromkeys(tied, 0.2))]) == "2+cal:w5:p20"  # "+cal" is window 10
    assert choose_setting([_record(dict.fromkeys(["2+cal", "2+cal:w20:p5"], 0.2))]) == "2+cal"
    assert choose_setting([_record({**dict.fromkeys(tied, 0.2), "7": 0.2001})]) == "7"  # ties only


def test_the_whole_window_counts_a_sample_of_warm_targets_as_every_warm_event():
    # 4 new targets at 0.5 and 6 warm at 0.1: overall 0.26 (the record's "overall")
    plain, sampled = _record({"0": 0.26}), _record({"0": 0.26}, warm_weight=3.0)
    assert part_ndcg(plain, "0", "new") == 0.5 and part_ndcg(plain, "0", "warm") == pytest.approx(0.1)
    assert part_ndcg(plain, "0", "window") == 0.26
    assert part_ndcg(sampled, "0", "window") == pytest.approx((4 * 0.5 + 18 * 0.1) / 22)
    assert part_ndcg({"offsets": {"0": {"by_group": {"new": {"ndcg@10": 0.5, "count": 4}}}}}, "0", "window") is None


def test_serving_lines_say_every_knob_of_the_setting():
    assert serving_lines("3", OWN) == ["index:", "  new_item_offset: 3", "  new_item_offset_calibration: false"]
    assert serving_lines("0.5+cal:w5:p20", OWN) == [
        "index:", "  new_item_offset: 0.5", "  new_item_offset_calibration: true", "  new_item_offset_window: 5",
        "  new_item_offset_prior_strength: 20"]
    assert serving_lines("2+cal", OWN)[-2:] == ["  new_item_offset_window: 10", "  new_item_offset_prior_strength: 10"]


def test_a_request_names_a_bad_knob():
    params = SimpleNamespace(eval=SimpleNamespace(models=["seqhead"]), train=SimpleNamespace(run_dir=Path("r")))
    check_request(params, [0.0], [5], [10.0])
    for offsets, windows, priors, says in (([-1.0], [5], [10.0], "offsets >= 0"), ([0.0], [0], [10.0], "windows >= 1"),
                                           ([0.0], [5], [0.0], "prior strengths > 0"), ([0.0], [], [1.0], "windows")):
        with pytest.raises(UserError, match=says):
            check_request(params, offsets, windows, priors)


def test_the_grid_ranks_every_knob_and_calibrates_once_per_window_and_prior_strength(monkeypatch):
    rng = np.random.default_rng(4)
    n_rows, n_items = 12, 9
    table = torch.tensor(rng.normal(0, 1, (n_rows, n_items)), dtype=torch.float32)
    unknown = np.arange(n_items) >= 6
    rows = pd.DataFrame({"target": rng.integers(0, n_items, n_rows), "domain": "d",
                         "group": np.where(np.arange(n_rows) < 4, "new", "head"), "history_len": 3})
    calls = []

    def calibrated(params, score, histories, unknown_, temperature, window, prior_strength):
        calls.append((window, prior_strength))
        return np.linspace(0, window / prior_strength, n_rows)  # a different offset per row and combination

    def ranks_of(params, score, rows_, data):  # 0-based rank of each row's target among all items
        scores = score(np.arange(n_rows), 0, n_items).numpy()
        return (scores > scores[np.arange(n_rows), rows_["target"].to_numpy()][:, None]).sum(1)

    monkeypatch.setattr(offsets_module, "calibrated_offsets_of_rows", calibrated)
    monkeypatch.setattr(offsets_module, "rank_rows", ranks_of)
    params = SimpleNamespace(index=IndexConfig(new_item_offset_window=10, new_item_offset_prior_strength=10.0),
                             eval=SimpleNamespace(ks=[10]))
    ranks, results, combinations = rank_grid(params, lambda r, s, e: table[r][:, s:e], unknown, 1.0, rows,
                                             pd.Series([[]] * n_rows), None, [2.0, 0.0, 2.0], [20, 5, 10], [10.0, 2.0])
    assert sorted(calls) == [(w, p) for w in (5, 10, 20) for p in (2.0, 10.0)]  # each combination once, no floor
    expected = {"0", "2"} | {setting_label(o, True, w, p, own=OWN) for o in (0.0, 2.0) for w, p in calls}
    assert set(ranks) == set(results) == expected and len(expected) == 2 + 2 * 6 and "2+cal" in expected
    assert [(c["window"], c["prior_strength"]) for c in combinations] == sorted(calls)
    assert combinations[0]["mean_offset"] == pytest.approx(2.5 / 2)  # window 5, prior 2: linspace(0, 2.5)
    for label in expected:  # each setting ranks with max(floor, that combination's calibrated offset)
        offset, on, window, prior = parse_knobs(label, OWN)
        per_row = np.maximum(offset, np.linspace(0, window / prior, n_rows)) if on else offset
        lifted = table.numpy() + np.asarray(per_row).reshape(-1, 1) * unknown
        target = lifted[np.arange(n_rows), rows["target"]]
        np.testing.assert_array_equal(ranks[label], (lifted > target[:, None]).sum(1))
        assert results[label]["overall"]["count"] == n_rows and results[label]["by_group"]["new"]["count"] == 4
    assert not np.array_equal(ranks["0"], ranks["0+cal:w20:p2"])  # calibration moved something


@pytest.mark.parametrize("kind", ["exact", "hnsw"])
@pytest.mark.parametrize("offset", [0.0, 0.3, 5.0, 100.0])
def test_serving_applies_the_offset_exactly(offset, kind):
    rng = np.random.default_rng(1)
    n = 400
    vectors = rng.standard_normal((n, 8)).astype(np.float32)
    catalog = pd.DataFrame({"item_id": [f"d:{i}" for i in range(n)], "domain": ["a"] * 200 + ["b"] * 200,
                            "title": [f"t{i}" for i in range(n)], "added": "prepared"})
    config = IndexConfig(kind=kind, hnsw_ef_construction=200, hnsw_ef_search=400, new_item_offset=offset)
    index = ItemIndex.build(vectors, catalog, {"tuned": False}, config)
    unknown = rng.random(n) < 0.1
    recommender = Recommender(SimpleNamespace(index=config), index, SimpleNamespace(unknown=unknown))
    user = rng.standard_normal((1, 8)).astype(np.float32)
    expected_all = user[0] @ vectors.T + offset * unknown
    for domain, pool in ((None, np.arange(n)), ("b", np.arange(200, 400))):
        ((ids, scores),) = recommender._search_batch(user, [15], [domain], np.array([offset]))
        best = pool[np.argsort(-expected_all[pool], kind="stable")[:15]]
        assert ids.tolist() == best.tolist()
        np.testing.assert_allclose(scores, expected_all[best], rtol=1e-5, atol=1e-5)
    if offset == 100.0:  # an offset beyond any score gap puts every unknown item first
        ((ids, _),) = recommender._search_batch(user, [int(unknown.sum())], [None], np.array([offset]))
        assert set(ids) == set(np.flatnonzero(unknown))


def test_a_large_catalogue_calibrates_on_a_sample_close_to_every_item():
    from llmrec_core.serve.towers import SeqHeadTower

    rng = np.random.default_rng(3)
    tower = SeqHeadTower.__new__(SeqHeadTower)  # only the table, the flags and the sample: no network needed
    tower.table, tower.unknown = rng.standard_normal((4000, 8)).astype(np.float32) * 0.3, np.arange(4000) < 600
    tower.temperature, tower._sample, tower.CALIBRATION_SAMPLE = 1.0, None, 400
    cfg = IndexConfig(new_item_offset_calibration=True, new_item_offset_prior_strength=10.0)
    vector = rng.standard_normal((1, 8)).astype(np.float32)
    history = pd.DataFrame({"row": [700, 5, 900, 10]})  # two of the last four items are new
    rows, vectors = tower._calibration_sample()
    assert len(rows) == 800 and tower.unknown[rows].sum() == 400 and vectors.shape == (800, 8)
    exact = new_item_offsets(cfg, vector @ tower.table.T, tower.unknown, np.array([[0, 1, 0, 1]], bool),
                             np.array([4]), 1.0)[0]
    assert tower.new_item_offset(cfg, vector, history) == pytest.approx(exact, abs=0.05)


def _run_folder(tmp_path, finished_at: str = "2026-01-01 00:00:00") -> SimpleNamespace:
    """Params-like: a run folder with its stamp (only what `read_offsets` reads)."""
    (tmp_path / "experiment.json").write_text(json.dumps({"finished_at": finished_at}))
    return SimpleNamespace(resolve=lambda path: path, train=SimpleNamespace(run_dir=tmp_path))


def test_records_written_as_a_boost_are_read_in_todays_names(tmp_path):
    params = _run_folder(tmp_path)
    assert read_offsets(params) is None  # never measured
    settings = {"0": {"ndcg@10": 0.1}, "3+cal": {"ndcg@10": 0.2}}
    (tmp_path / "boost_test.json").write_text(json.dumps({"run_finished_at": "2026-01-01 00:00:00",
                                                          "boosts": settings}))
    pd.DataFrame({"user_idx": [1], "rank_seqhead_boost_0": [4], "rank_seqhead_boost_3+cal": [2]}).to_parquet(
        tmp_path / "boost_test.parquet")
    record, ranks = read_offsets(params)
    assert record["offsets"] == settings and "boosts" not in record
    assert list(ranks.columns) == ["user_idx", "rank_seqhead_offset_0", "rank_seqhead_offset_3+cal"]
    assert ranks["rank_seqhead_offset_3+cal"].tolist() == [2]
    # a record in today's names wins over a legacy one; either is stale once the run is rerun
    (tmp_path / "offset_test.json").write_text(json.dumps({"run_finished_at": "2026-01-01 00:00:00",
                                                           "offsets": {"1": {}}}))
    pd.DataFrame({"user_idx": [1], "rank_seqhead_offset_1": [3]}).to_parquet(tmp_path / "offset_test.parquet")
    assert list(read_offsets(params)[0]["offsets"]) == ["1"]
    assert read_offsets(_run_folder(tmp_path, finished_at="2026-02-01 00:00:00")) is None

