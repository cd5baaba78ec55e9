"""Negative sampling, the sampled-softmax (logQ) correction and item-bank logits, against hand-computed values."""
import numpy as np
import pytest
import torch

from llmrec_core.config import TrainConfig
from llmrec_core.train.examples import log_proposal, rated_columns, sample_domain_negatives
from llmrec_core.train.item_bank import ItemBank, bank_logits


def test_log_proposal_adds_target_share_and_domain_negative_share():
    # items 0-2 in domain 0, items 3-4 in domain 1; targets: item 0 twice, item 1 once, item 3 once
    codes = np.array([0, 0, 0, 1, 1])
    targets = np.array([0, 0, 1, 3])
    q = np.exp(log_proposal(targets, codes, domain_negatives=2))
    # target share + 2 negatives per row * P(row's target in the item's domain) / domain size
    expected = np.array([2 / 4, 1 / 4, 0, 1 / 4, 0]) + 2 * np.array([3 / 4 / 3] * 3 + [1 / 4 / 2] * 2)
    np.testing.assert_allclose(q, expected)
    assert q[0] > q[1] > q[2]  # the frequent target is the most likely in-batch negative


def test_log_proposal_without_domain_negatives_is_the_target_share():
    q = np.exp(log_proposal(np.array([1, 1, 2, 0]), np.array([0, 0, 0]), domain_negatives=0))
    np.testing.assert_allclose(q, [0.25, 0.5, 0.25])


def test_domain_negatives_stay_in_domain_and_skip_the_target():
    targets = torch.tensor([3, 10, 11])
    start, size = torch.tensor([0, 10, 10]), torch.tensor([5, 2, 2])
    neg = sample_domain_negatives(targets, start, size, 50, torch.Generator().manual_seed(0))
    for row, t in enumerate(targets.tolist()):
        assert set(neg[row].tolist()) <= set(range(start[row], start[row] + size[row])) - {t}


def test_logq_correction_needs_in_batch_negatives():
    with pytest.raises(ValueError, match="logq_correction"):
        TrainConfig(logq_correction=True, in_batch_negatives=False)


def test_item_bank_logits_cover_the_target_domain_and_mask_the_history():
    # items 0-2 in domain 0, items 3-4 in domain 1
    bank = ItemBank(torch.eye(5)[:, :4] * 0.5, torch.tensor([0, 0, 0, 1, 1]))
    users = torch.tensor([[1.0, 2.0, 3.0, 0.0], [0.0, 0.0, 0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([1, 3])
    hists = [np.array([0, 1]), np.array([], dtype=np.int64)]  # row 0 already rated 0 and (again) its target 1
    logits = bank_logits(users, targets, hists, bank, temperature=0.5)
    inf = float("inf")
    # row 0: item 0 is history (masked), items 1 and 2 score user . 0.5 e_i / 0.5, domain 1 masked
    # row 1: domain 0 masked; item 3 scores 1, item 4 has no component on the 4 dims (eye[:, :4])
    expected = torch.tensor([[-inf, 2.0, 3.0, -inf, -inf], [-inf, -inf, -inf, 1.0, 0.0]])
    assert torch.equal(logits, expected)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    assert users.grad is not None and users.grad.abs().sum() > 0 and not bank.vectors.requires_grad


def test_rated_columns_mask_what_each_user_rated_before_the_target_but_never_the_target():
    candidates = torch.tensor([2, 5, 7, 9])  # sorted, as torch.unique returns them
    positive = torch.tensor([1, 3, 0])  # row targets: 5, 9, 2
    rated = [np.array([7, 2, 5]), np.array([1, 3]), np.array([], dtype=np.int64)]  # row 0 re-rates its target 5
    mask = rated_columns(candidates, rated, positive)
    assert mask.tolist() == [[True, False, True, False],  # 2 and 7 rated; 5 is the target, kept
                             [False, False, False, False],  # 1 and 3 are not candidates
                             [False, False, False, False]]


def test_batch_loss_with_rated_masking_equals_the_loss_over_unrated_candidates_only():
    from llmrec_core.train.loop import batch_loss

    vectors = torch.nn.functional.normalize(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), dim=-1)

    class Lookup(torch.nn.Module):  # "tokens" are item ids; a user is the mean of its history's vectors
        def forward(self, ids, mask):
            return (vectors[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    class Tokens:
        def users(self, hists):
            width = max(len(h) for h in hists)
            ids = torch.tensor([list(h) + [0] * (width - len(h)) for h in hists])
            return ids, (torch.arange(width)[None] < torch.tensor([len(h) for h in hists])[:, None]).long()

        def items(self, ids):
            return torch.tensor(list(ids))[:, None], torch.ones(len(ids), 1, dtype=torch.long)

    hists = [np.array([1]), np.array([3])]
    targets = torch.tensor([2, 1])
    rated = [np.array([0, 1]), np.array([3, 2])]  # row 1 rated 2, row 0's target: a false negative for row 1
    loss, _ = batch_loss(Lookup(), Tokens(), hists, targets, None, True, 1.0, "cpu", rated=rated)
    users = torch.stack([vectors[1], vectors[3]])
    # row 0: candidates {1, 2}, item 1 rated -> only the positive 2 remains: loss 0
    # row 1: candidates {1, 2}, item 2 rated -> only the positive 1 remains: loss 0
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    unmasked, _ = batch_loss(Lookup(), Tokens(), hists, targets, None, True, 1.0, "cpu")
    logits = users @ vectors[[1, 2]].T
    assert unmasked.item() == pytest.approx(torch.nn.functional.cross_entropy(logits, torch.tensor([1, 0])).item(),
                                            rel=1e-5)


def test_batch_loss_with_cached_item_vectors_scores_the_cache_and_back_propagates_only_the_users():
    from llmrec_core.train.loop import batch_loss

    table = torch.nn.Parameter(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)))

    class Lookup(torch.nn.Module):  # "tokens" are item ids; a user is the mean of its history's vectors
        def forward(self, ids, mask):
            return (table[ids] * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)

    class Tokens:
        def users(self, hists):
            return torch.tensor([list(h) for h in hists]), torch.ones(len(hists), len(hists[0]), dtype=torch.long)

        def items(self, ids):
            raise AssertionError("a cached item tower must not encode items")

    cache = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))  # stale vectors, unlike `table`
    hists, targets, negatives = [np.array([0, 1]), np.array([1, 3])], torch.tensor([2, 4]), torch.tensor([[5], [5]])
    loss, n_tokens = batch_loss(Lookup(), Tokens(), hists, targets, negatives, True, 0.5, "cpu", item_vectors=cache)
    users = torch.stack([table[[0, 1]].mean(0), table[[1, 3]].mean(0)]).detach()
    expected = torch.nn.functional.cross_entropy(users @ cache[[2, 4, 5]].T / 0.5, torch.tensor([0, 1]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert n_tokens == 4  # the users' tokens only
    loss.backward()
    touched = table.grad.abs().sum(1) > 0
    assert touched.tolist() == [True, True, False, True, False, False]  # history rows only, never a candidate
