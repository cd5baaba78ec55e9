"""Splits and data settings on the real MovieLens-100K, checked against straightforward loops."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from llmrec_core.data.ingest import ingest
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.event_filter import kcore_mask
from llmrec_core.data.prepare import prepare
from llmrec_core.data.splits import item_groups
from llmrec_core.data.settings import load_setting
from llmrec_core.data.validate import validate


@pytest.fixture
def ml100k_prepared(ml100k_dir, write_params):
    src = {"name": "ml-100k", "format": "recbole", "domain_from": "first_genre",
           "interactions": str(ml100k_dir / "ml-100k.inter"), "items": str(ml100k_dir / "ml-100k.item")}
    params = write_params([src], data={"top_domains": 5}, prepare={"max_history": 5})
    ingest(params)
    validate(params)
    manifest = prepare(params)
    out = DataLayout(params.data_root).prepared
    tables = {name: pd.read_parquet(out / f"{name}.parquet") for name in
              ("items", "events", "sequences_mixed", "sequences_in_domain", "eval_mixed", "eval_in_domain", "dropped")}
    return manifest, {**tables, "prepared": out}


def test_five_largest_first_genres(ml100k_prepared):
    manifest, t = ml100k_prepared
    assert list(manifest["domains"]) == ["Drama", "Action", "Comedy", "Crime", "Adventure"]
    assert manifest["interactions_in"] == manifest["interactions_kept"] + len(t["dropped"]) == 100_000


def test_kcore_holds_on_the_output(ml100k_prepared):
    _, t = ml100k_prepared
    assert t["events"].groupby("user_idx").size().min() >= 5
    assert t["events"].groupby("item_idx").size().min() >= 5


def test_every_setting_has_the_same_targets(ml100k_prepared):
    _, t = ml100k_prepared
    key = ["user_idx", "split", "target", "domain", "group"]
    mixed = t["eval_mixed"][key].sort_values(key).reset_index(drop=True)
    in_domain = t["eval_in_domain"][key].sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(mixed, in_domain)
    assert (t["eval_mixed"]["split"].value_counts() == t["events"]["user_idx"].nunique()).all()


def test_histories_match_a_plain_loop(ml100k_prepared):
    _, t = ml100k_prepared
    events = t["events"]
    for user in [0, 1, 17, 500, events["user_idx"].max()]:
        ev = events[events["user_idx"] == user]
        items, domains, splits = ev["item_idx"].tolist(), ev["domain"].tolist(), ev["split"].tolist()
        assert splits[-2:] == ["valid", "test"] and set(splits[:-2]) <= {"train"}
        seq = t["sequences_mixed"].set_index("user_idx").loc[user, "items"].tolist()
        assert seq == items[:-2]
        for split, pos in (("valid", len(items) - 2), ("test", len(items) - 1)):
            row = t["eval_mixed"].query("user_idx == @user and split == @split").iloc[0]
            assert row["target"] == items[pos] and row["history"].tolist() == items[:pos][-5:]
            assert row["history_len"] == pos
            same = [i for i, d in zip(items[:pos], domains[:pos]) if d == domains[pos]]
            row = t["eval_in_domain"].query("user_idx == @user and split == @split").iloc[0]
            assert row["history"].tolist() == same[-5:] and row["history_len"] == len(same)
        dom_seqs = t["sequences_in_domain"].query("user_idx == @user")
        for _, r in dom_seqs.iterrows():
            assert r["items"].tolist() == [i for i, d, s in zip(items, domains, splits) if d == r["domain"] and s == "train"]


def test_item_ids_are_contiguous_per_domain(ml100k_prepared):
    manifest, t = ml100k_prepared
    items = t["items"]
    assert (items["item_idx"] == np.arange(len(items))).all()
    assert items["domain"].tolist() == sorted(items["domain"], key=list(manifest["domains"]).index)


def test_groups(ml100k_prepared):
    _, t = ml100k_prepared
    items = t["items"]
    train = t["events"][t["events"]["split"] == "train"]
    counts = train["item_idx"].value_counts().reindex(items["item_idx"], fill_value=0).to_numpy()
    assert (items["train_count"].to_numpy() == counts).all()
    tail, head = items[items["group"] == "tail"], items[items["group"] == "head"]
    assert tail["train_count"].max() <= head["train_count"].min()
    assert abs(len(tail) + (items["group"] == "cold").sum() - 0.8 * len(items)) <= 1


def test_kcore_is_iterative():
    # u2 keeps item b alive only until u2 is removed; then b falls below 2 and u1 loses it too.
    users = np.array([0, 0, 0, 1, 1, 2])
    items = np.array([0, 1, 2, 0, 2, 1])
    keep = kcore_mask(users, items, min_user=2, min_item=2)
    assert keep.tolist() == [True, False, True, True, True, False]


def test_item_groups_marks_cold_and_tail():
    groups = item_groups(np.array([0, 5, 1, 9, 2]), tail_fraction=0.6)
    assert groups.tolist() == ["cold", "head", "tail", "head", "tail"]


def test_the_mixed_setting_counts_every_training_event(ml100k_prepared):
    _, t = ml100k_prepared
    counts = load_setting(t["prepared"], "mixed").train_counts()
    assert counts.shape == (len(t["items"]),) and counts.sum() > 0
    assert (counts == t["items"]["train_count"].to_numpy()).all()


def test_the_manifest_lists_the_sample_seed_only_with_a_sample(ml100k_prepared):
    """The manifest's bytes are in every run's fingerprint: an option that changes nothing (the seed of a sample
    not taken) must not be listed, or adding the option would have made every run stale."""
    from llmrec_core.config import load_params
    from llmrec_core.data.manifest import _prepare_params

    manifest, _ = ml100k_prepared
    assert "user_sample_seed" not in manifest["params"] and "user_sample" not in manifest["params"]
    sampled = load_params(Path(__file__).resolve().parents[2] / "params.yaml",
                          ["prepare.user_sample=100", "prepare.user_sample_seed=3"])
    assert _prepare_params(sampled)["user_sample_seed"] == 3
