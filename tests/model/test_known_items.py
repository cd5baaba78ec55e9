"""The new-item protocol's training side: items first seen after the cutoff do not exist for training, so no
trainer may use them as negatives or softmax columns (hand-built catalogues; evaluation still ranks them)."""
import numpy as np
import pandas as pd
import torch

from llmrec_core.config import SasrecConfig
from llmrec_core.data.settings import SettingData
from llmrec_core.model.sequence import SASRec
from llmrec_core.train.examples import NegativePool, log_proposal, sample_domain_negatives
from llmrec_core.train.item_bank import ItemBank, bank_logits
from llmrec_core.train.sequence import train_epoch

RANGES = {"a": (0, 6), "b": (6, 10)}  # items 0-5 in domain a, 6-9 in domain b
KNOWN = np.array([1, 0, 1, 1, 0, 1, 1, 1, 0, 1], dtype=bool)  # items 1, 4 and 8 are new


def test_the_setting_marks_new_items_unknown_and_leave_one_out_data_has_none():
    items = pd.DataFrame({"group": np.where(KNOWN, "head", "new")})
    assert np.array_equal(SettingData(items, RANGES, None, None, None).known_items(), KNOWN)
    assert SettingData(items.assign(group="tail"), RANGES, None, None, None).known_items() is None


def test_negatives_come_only_from_known_items_of_the_target_domain_and_never_the_target():
    pool = NegativePool.of(RANGES, 10, KNOWN)
    targets = np.array([0, 3, 7, 9])
    codes = np.array([0, 0, 1, 1])
    drawn = pool.sample(targets, codes, 200, torch.Generator().manual_seed(0))
    for row, target in enumerate(targets):
        lo, hi = list(RANGES.values())[codes[row]]
        allowed = {i for i in range(lo, hi) if KNOWN[i]} - {target}
        assert set(drawn[row].tolist()) == allowed  # every allowed item drawn at least once in 200, nothing else


def test_without_unknown_items_the_pool_draws_exactly_what_plain_domain_sampling_draws():
    targets = np.array([0, 3, 7, 9])
    codes = np.array([0, 0, 1, 1])
    pooled = NegativePool.of(RANGES, 10, None).sample(targets, codes, 5, torch.Generator().manual_seed(3))
    plain = sample_domain_negatives(torch.from_numpy(targets), torch.tensor([0, 0, 6, 6]), torch.tensor([6, 6, 4, 4]),
                                    5, torch.Generator().manual_seed(3))
    assert torch.equal(pooled, plain)


def test_log_proposal_spreads_domain_negatives_over_known_items_only():
    codes = np.array([0, 0, 0, 1, 1])
    known = np.array([1, 1, 0, 1, 1], dtype=bool)
    q = np.exp(log_proposal(np.array([0, 0, 1, 3]), codes, 2, known))
    # domain 0 has 2 known items: 2 negatives * 3/4 of rows / 2; the unknown item 2 is never a candidate
    np.testing.assert_allclose(q[[0, 1, 3, 4]], [2 / 4 + 0.75, 1 / 4 + 0.75, 1 / 4 + 0.25, 0.25])
    assert q[2] < 1e-9


def test_the_item_bank_masks_unknown_items():
    bank = ItemBank(torch.eye(4), torch.tensor([0, 0, 0, 0]), torch.tensor([True, False, True, True]))
    logits = bank_logits(torch.ones(1, 4), torch.tensor([0]), [np.array([], dtype=np.int64)], bank, 1.0)
    assert torch.isinf(logits[0, 1]) and torch.isfinite(logits[0, [0, 2, 3]]).all()


def test_sasrec_gives_unknown_items_no_gradient():
    torch.manual_seed(0)
    cfg = SasrecConfig(hidden=8, heads=2, layers=1, dropout=0.0, batch_size=4)
    model = SASRec(10, cfg, max_len=4)
    windows = np.array([[0, 1, 3, 4, 6], [0, 0, 7, 8, 10], [2, 3, 4, 5, 6]])  # ids + 1; new items are 1, 4, 8 (ids 2, 5, 9)
    windows = windows[(~np.isin(windows, [2, 5, 9])).all(1)]  # training sequences hold no new item
    before = model.items.weight.detach().clone()
    unknown = torch.from_numpy(~KNOWN)
    train_epoch(model, torch.optim.Adam(model.parameters(), lr=0.1), windows, cfg, 0, torch.device("cpu"), unknown)
    after = model.items.weight.detach()
    new_rows = torch.tensor([2, 5, 9])  # item ids + 1
    assert torch.equal(after[new_rows], before[new_rows])  # untrained, as a model trained at the cutoff has them
    assert not torch.equal(after[[1, 4, 7]], before[[1, 4, 7]])  # known items learned
