"""The out-of-core event filter (DuckDB + numpy) against a plain pandas reference of the same rules."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from llmrec_core.config import load_params
from llmrec_core.data.contract import INTERACTIONS
from llmrec_core.data.event_filter import PreparationError, engine, filter_events, kcore_mask, user_sample_mask

PARAMS = "params.yaml"


def reference_filter(inter: pd.DataFrame, domains: list[str], cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rules written the obvious way in pandas: (kept events, dropped events with reasons), both in order."""
    dropped = []

    def drop(frame, mask, reason):
        dropped.append(frame.loc[mask].assign(reason=reason))
        return frame.loc[~mask]

    inter = drop(inter, ~inter["domain"].isin(domains).to_numpy(), "domain not selected")
    user_code = pd.factorize(inter["user_id"], sort=True)[0]
    file_code = pd.factorize(inter["source_file"])[0]
    order = np.lexsort((inter["source_line"].to_numpy(), file_code, inter["timestamp"].to_numpy(), user_code))
    inter = inter.iloc[order].reset_index(drop=True)
    if cfg.user_sample is not None:  # the users of smallest seeded hash, one id at a time
        key = f"llmrec-users{cfg.user_sample_seed:04d}"
        ids = sorted(set(inter["user_id"]), key=lambda uid: pd.util.hash_array(np.array([uid], dtype=object),
                                                                               hash_key=key, categorize=False)[0])
        chosen = set(ids[:cfg.user_sample])
        inter = drop(inter, ~inter["user_id"].isin(chosen).to_numpy(),
                     f"user outside the sample (prepare.user_sample: {len(chosen)} of {len(ids)} users, "
                     f"seed {cfg.user_sample_seed})")
    inter = drop(inter, inter.duplicated(["user_id", "item_id", "timestamp"]).to_numpy(), "duplicate event")
    if cfg.drop_consecutive_repeats:
        same = (inter["user_id"].to_numpy()[1:] == inter["user_id"].to_numpy()[:-1]) & \
               (inter["item_id"].to_numpy()[1:] == inter["item_id"].to_numpy()[:-1])
        inter = drop(inter, np.concatenate([[False], same]), "consecutive repeat of the same item")
    key = inter["user_id"] if cfg.kcore_scope == "mixed" else inter["user_id"] + "|" + inter["domain"]
    keep = kcore_mask(pd.factorize(key)[0], pd.factorize(inter["item_id"])[0], cfg.min_user_interactions,
                      cfg.min_item_interactions)
    inter = drop(inter, ~keep, f"k-core ({cfg.kcore_scope}: user>={cfg.min_user_interactions}, "
                               f"item>={cfg.min_item_interactions})")
    size = inter.groupby("user_id")["user_id"].transform("size").to_numpy()
    inter = drop(inter, size < 3, "user has fewer than 3 events (no train/valid/test split)")
    return inter, pd.concat(dropped, ignore_index=True)


def random_events(seed: int, n: int = 3000) -> pd.DataFrame:
    """Few users, items and timestamps, two files, three domains: many ties, duplicates and repeats."""
    rng = np.random.default_rng(seed)
    users = np.array(["u10", "u2", "U3", "ü4", "u5", "u'6", "u7", "u8"])
    return pd.DataFrame({
        "user_id": users[rng.integers(0, len(users), n)],
        "item_id": np.char.add("i", rng.integers(0, 40, n).astype(str)),
        "domain": np.array(["A", "B", "C"])[rng.integers(0, 3, n)],
        "timestamp": rng.integers(0, 60, n).astype(np.int64),
        "rating": 5.0,
        "source_file": np.array(["f2.csv", "f1.csv"])[rng.integers(0, 2, n)],
        "source_line": np.arange(n, dtype=np.int64),
    })


@pytest.mark.parametrize("seed,overrides", [
    (0, []),
    (1, ["prepare.kcore_scope=per_domain", "prepare.min_item_interactions=3"]),
    (2, ["data.top_domains=2", "prepare.min_user_interactions=40"]),
    (3, ["prepare.drop_consecutive_repeats=false"]),
    (4, ["prepare.user_sample=5", "prepare.user_sample_seed=7"]),
])
def test_filter_matches_the_pandas_reference(tmp_path, seed, overrides):
    inter = random_events(seed)
    path = tmp_path / "interactions.parquet"
    pq.write_table(pa.Table.from_pandas(inter, schema=INTERACTIONS, preserve_index=False), path,
                   row_group_size=700)  # several row groups: input order must survive a parallel scan
    params = load_params(PARAMS, [f"data.root={tmp_path}", "data.domains=[]", *overrides])
    with engine(tmp_path / "engine", memory_mb=256, threads=2) as con:
        kept = filter_events(con, path, params, tmp_path / "dropped.parquet")
    want_kept, want_dropped = reference_filter(inter, kept.domains, params.prepare)

    got = pd.DataFrame({"user_id": np.asarray(kept.user_ids.to_pylist(), dtype=object)[kept.user],
                        "item_id": kept.item_ids[kept.item],
                        "domain": np.asarray(kept.domains, dtype=object)[kept.domain],
                        "timestamp": kept.timestamp})
    assert len(want_kept) > 0
    pd.testing.assert_frame_equal(got, want_kept[got.columns].reset_index(drop=True).astype(got.dtypes.to_dict()),
                                  check_dtype=False)
    dropped = pq.read_table(tmp_path / "dropped.parquet").to_pandas()
    columns = ["user_id", "item_id", "domain", "timestamp", "source_file", "source_line", "reason"]
    assert dropped[columns].astype(str).values.tolist() == want_dropped[columns].astype(str).values.tolist()
    assert kept.dropped == dict(want_dropped["reason"].value_counts())
    assert len(got) + len(dropped) == kept.rows_in == len(inter)


def test_a_named_domain_without_events_is_an_error(tmp_path):
    path = tmp_path / "interactions.parquet"
    pq.write_table(pa.Table.from_pandas(random_events(0), schema=INTERACTIONS, preserve_index=False), path)
    params = load_params(PARAMS, [f"data.root={tmp_path}", "data.domains=[A, Z]"])
    with engine(tmp_path / "engine", memory_mb=256) as con, pytest.raises(PreparationError, match="Z"):
        filter_events(con, path, params, tmp_path / "dropped.parquet")
    assert not (tmp_path / "engine").exists()  # the scratch database is removed even after an error


def test_user_sample_depends_on_ids_and_seed_only():
    ids = np.array([f"user{k}" for k in range(1000)], dtype=object)
    chosen = set(ids[user_sample_mask(ids, 100, seed=3)])
    shuffled = np.random.default_rng(0).permutation(ids)
    assert set(shuffled[user_sample_mask(shuffled, 100, seed=3)]) == chosen and len(chosen) == 100
    assert set(ids[user_sample_mask(ids, 100, seed=4)]) != chosen  # another seed, another sample
    assert user_sample_mask(ids, 5000, seed=3).all()  # a sample larger than the users keeps them all
