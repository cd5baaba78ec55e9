"""Full ranking excludes everything a user rated before the target, whatever window the model sees."""
import numpy as np
import pyarrow.parquet as pq

from llmrec_core.data.layout import DataLayout
from llmrec_core.data.settings import load_setting


def test_seen_items_are_the_whole_past_in_every_setting(sample_prepared):
    params = sample_prepared("seen")
    prepared = DataLayout(params.data_root).prepared
    seqs = pq.read_table(prepared / "sequences_mixed.parquet").to_pandas().set_index("user_idx")["items"]
    mixed = load_setting(prepared, "mixed").eval_rows
    valid_target = mixed[mixed["split"] == "valid"].set_index("user_idx")["target"]
    longer = 0
    for row in mixed.itertuples():
        expected = list(seqs[row.user_idx]) + ([valid_target[row.user_idx]] if row.split == "test" else [])
        assert list(row.seen) == expected
        assert set(row.history) <= set(row.seen)  # (a repeat target may be in both; ranking never excludes it)
        longer += len(row.seen) > len(row.history)
    assert longer > 0  # some users have more past than the model's window
    by_key = {(r.user_idx, r.split): list(r.seen) for r in mixed.itertuples()}
    for setting, domain in (("s2piao", None), ("single_domain", "Books"), ("leave_one_domain_out", "Books")):
        rows = load_setting(prepared, setting, domain).eval_rows
        assert len(rows) and all(list(r.seen) == by_key[(r.user_idx, r.split)] for r in rows.itertuples())
        assert all(np.asarray(r.seen).dtype == np.int64 for r in rows.head(5).itertuples())
