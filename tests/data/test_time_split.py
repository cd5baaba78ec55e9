"""The new-item setting (a time split) on the real MovieLens-100K, checked against straightforward loops."""
import numpy as np
import pandas as pd
import pytest

from llmrec_core.config import TimeSplitConfig
from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.prepare import prepare
from llmrec_core.data.settings import load_setting
from llmrec_core.data.validate import validate

DAY = 86_400


@pytest.fixture(scope="module")
def time_split(ml100k_dir, tmp_path_factory):
    import yaml

    from llmrec_core.config import load_params

    base = tmp_path_factory.mktemp("time-split")
    src = {"name": "ml-100k", "format": "recbole", "domain_from": "first_genre",
           "interactions": str(ml100k_dir / "ml-100k.inter"), "items": str(ml100k_dir / "ml-100k.item")}
    doc = {"data": {"sources": [src], "root": str(base / "data"), "top_domains": 5},
           "validation": {"results_dir": str(base / "gx")},
           "prepare": {"max_history": 5, "time_split": {"new_item_share": 0.1, "train_shift_days": 7,
                                                        "test_offset_days": 7, "window_days": 10}}}
    (base / "params.yaml").write_text(yaml.safe_dump(doc))
    params = load_params(base / "params.yaml")
    ingest(params)
    validate(params)
    manifest = prepare(params)
    out = DataLayout(params.data_root).prepared
    return manifest, out


def test_no_training_or_validation_event_at_or_after_the_cutoff(time_split):
    manifest, out = time_split
    t = manifest["time_split"]
    events = pd.read_parquet(out / "events.parquet")
    cutoff, (start, end) = t["cutoff"], t["window"]
    assert start == cutoff and end - start == 10 * DAY  # trained 7 days after T, tested from T + 7 days
    assert (events.loc[events["split"].isin(["train", "valid"]), "timestamp"] < cutoff).all()
    assert (events.loc[events["split"] == "test", "timestamp"].between(start, end - 1)).all()
    # the training sequences hold exactly the "train" events, in each user's time order
    data = load_setting(out, "mixed")
    train = events[events["split"] == "train"]
    assert len(data.seq_values) == len(train) == t["train_events"]
    assert np.array_equal(data.seq_values, train["item_idx"].to_numpy())  # events are user-major, time-ordered


def test_new_items_never_reach_training_and_are_grouped_new(time_split):
    manifest, out = time_split
    items = pd.read_parquet(out / "items.parquet")
    events = pd.read_parquet(out / "events.parquet")
    known = set(events.loc[events["timestamp"] < manifest["time_split"]["cutoff"], "item_idx"])
    new = set(items.loc[items["group"] == "new", "item_idx"])
    assert new and new == set(items["item_idx"]) - known
    assert len(new) == manifest["time_split"]["new_items"]
    data = load_setting(out, "mixed")
    assert not new & set(data.seq_values.tolist())
    valid = data.eval_rows[data.eval_rows["split"] == "valid"]
    assert not new & set(valid["target"].tolist())
    # T is where about 10% of the catalogue is still to appear (7 more days have passed at the cutoff)
    first = events.groupby("item_idx")["timestamp"].min()
    assert ((first >= manifest["time_split"]["cutoff"] - 7 * DAY).mean() == pytest.approx(0.1, abs=0.01))


def test_each_test_row_sees_its_users_whole_past(time_split):
    manifest, out = time_split
    events = pd.read_parquet(out / "events.parquet")
    data = load_setting(out, "mixed")
    test = data.eval_rows[data.eval_rows["split"] == "test"].reset_index(drop=True)
    assert len(test) == manifest["time_split"]["test_rows"] > 0
    by_user = {u: g["item_idx"].to_numpy() for u, g in events.groupby("user_idx")}
    position = events.groupby("user_idx").cumcount().to_numpy()
    test_events = events[events["split"] == "test"]
    for row, pos in zip(test.itertuples(), position[test_events.index]):
        past = by_user[row.user_idx][:pos]
        assert by_user[row.user_idx][pos] == row.target
        assert np.array_equal(row.seen, past) and row.history_len == len(past) > 0
        assert np.array_equal(row.history, past[-5:])
    groups = pd.read_parquet(out / "items.parquet")["group"].to_numpy()
    assert (test["group"].to_numpy() == groups[test["target"].to_numpy()]).all()
    assert manifest["settings"] == {"mixed": manifest["settings"]["mixed"]}  # the only setting defined


def test_a_test_window_before_the_training_cutoff_is_refused():
    with pytest.raises(ValueError, match="test_offset_days must be >= train_shift_days"):
        TimeSplitConfig(train_shift_days=14, test_offset_days=7)


def test_a_warm_sample_keeps_every_new_item_event_and_the_pasts(time_split, tmp_path):
    import shutil

    from llmrec_core.data.time_split import apply_time_split

    manifest, out = time_split
    full = pd.read_parquet(out / "eval_mixed.parquet")
    full = full[full["split"] == "test"]
    new_rows = int((full["group"] == "new").sum())
    warm_rows = len(full) - new_rows
    assert new_rows > 0 and warm_rows > 100
    cfg = TimeSplitConfig(new_item_share=0.1, train_shift_days=7, test_offset_days=7, window_days=10,
                          warm_test_sample=100, sample_seed=3)
    samples = []
    for copy in ("a", "b"):
        shutil.copytree(out, tmp_path / copy)
        block = apply_time_split(tmp_path / copy, cfg, 5, 0.8)
        rows = pd.read_parquet(tmp_path / copy / "eval_mixed.parquet")
        samples.append(rows[rows["split"] == "test"])
    test = samples[0]
    assert block["test_warm_events"] == warm_rows and block["test_rows"] == len(test) == new_rows + 100
    assert block["test_groups"]["new"] == new_rows and block["config"]["warm_test_sample"] == 100
    key = ["user_idx", "target", "history_len"]
    assert test[key].equals(samples[1][key])  # seeded: the same sample twice
    # every new-item row, and 100 of the warm ones, each exactly as without the sample (its whole past kept)
    joined = test.merge(full, on=key, suffixes=("", "_full"), validate="one_to_one")
    assert len(joined) == len(test) and (test["group"] == "new").sum() == new_rows
    assert all(np.array_equal(a, b) for a, b in zip(joined["seen"], joined["seen_full"]))
    # a split without a sample records what data prepared before the option existed records
    assert TimeSplitConfig(window_days=10).record() == {"new_item_share": 0.1, "train_shift_days": 0.0,
                                                        "test_offset_days": 0.0, "window_days": 10.0}
