"""SASRec baseline: padding and causality, learning on the sample, resume."""
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from llmrec_core.model.sequence import SASRec, pad_left
from llmrec_core.train.sequence import train_sasrec, training_windows
from llmrec_core.config import SasrecConfig
from llmrec_core.evaluate.run import evaluate


def test_pad_left_takes_the_last_items_of_each_row():
    values = np.array([5, 6, 7, 8, 9, 10])
    got = pad_left(values, np.array([0, 3, 5]), np.array([3, 2, 1]), width=2)
    # ids are shifted by one (0 is padding)
    assert got.tolist() == [[7, 8], [9, 10], [0, 11]]


def test_outputs_ignore_padding_and_the_future():
    torch.manual_seed(0)
    model = SASRec(50, SasrecConfig(hidden=16, heads=2, layers=2, dropout=0.0), max_len=6).eval()
    short = torch.tensor([[0, 0, 0, 3, 4, 5]])
    less_pad = torch.tensor([[0, 3, 4, 5]])  # the same items with two fewer padding positions
    longer = torch.tensor([[0, 0, 9, 3, 4, 5]])  # one more, older item
    future = torch.tensor([[0, 0, 0, 3, 4, 17]])  # a different last item
    with torch.no_grad():
        h_short, h_long, h_future = model(short), model(longer), model(future)
        # positions are counted from the right, so only padding differs: real positions must not see it
        assert torch.allclose(h_short[0, -3:], model(less_pad)[0, -3:], atol=1e-5)
        assert not torch.isnan(h_short).any()
        # position 4 (item 4) sees 3, 4 only: a later item must not change it
        assert torch.allclose(h_short[0, 4], h_future[0, 4], atol=1e-6)
        # an extra older item changes what the last position sees
        assert not torch.allclose(h_short[0, -1], h_long[0, -1], atol=1e-4)


def test_training_windows_cover_every_position_once():
    from types import SimpleNamespace

    # sequences of 2, 1, 7 and 5 items (ids 0..14); windows of max_len 3 (+1 target)
    values = np.arange(15)
    data = SimpleNamespace(seq_values=values, seq_offsets=np.array([0, 2, 3, 10, 15]))
    windows = training_windows(data, max_len=3)
    inputs, targets = windows[:, :-1], windows[:, 1:]
    predicted = targets[(inputs > 0) & (targets > 0)] - 1
    # every item after the first of its sequence is a target exactly once
    assert sorted(predicted.tolist()) == [1, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14]
    # ids + 1, left-padded; a sequence's windows end at its last item and step back by max_len
    assert windows.tolist() == [[0, 0, 1, 2], [7, 8, 9, 10], [4, 5, 6, 7], [12, 13, 14, 15], [0, 0, 11, 12]]


def test_logit_adjustment_adds_the_scaled_log_prior_to_the_training_logits_only():
    from llmrec_core.data.settings import SettingData
    from llmrec_core.train.sequence import log_prior, window_loss

    # items 0..3 occur 5, 2, 0 and 1 times in training: add-one smoothed shares 6/12, 3/12, 1/12, 2/12
    data = SettingData(items=pd.DataFrame({"item_idx": range(4)}), domain_ranges={"d": (0, 4)},
                       seq_values=np.array([0, 0, 0, 0, 0, 1, 1, 3]), seq_offsets=np.array([0, 8]),
                       eval_rows=pd.DataFrame())
    assert np.allclose(log_prior(data), np.log([0.5, 0.25, 1 / 12, 1 / 6]))
    torch.manual_seed(0)
    model = SASRec(4, SasrecConfig(hidden=8, heads=2, layers=1, dropout=0.0), max_len=3).eval()
    batch = torch.tensor([[0, 1, 2, 4], [1, 2, 3, 1]])  # windows of ids + 1: 5 targets
    offset = torch.from_numpy(1.5 * log_prior(data)).float()
    with torch.no_grad():
        hidden = model(batch[:, :-1])
        valid = (batch[:, :-1] > 0) & (batch[:, 1:] > 0)
        logits = hidden[valid] @ model.item_vectors().T
        targets = batch[:, 1:][valid] - 1
        plain, n = window_loss(model, batch)
        adjusted, _ = window_loss(model, batch, offset=offset)
        # by hand: -log softmax(logits + 1.5 log prior)[target], averaged over the 5 targets
        by_hand = -(torch.log_softmax(logits + offset, dim=1)[torch.arange(n), targets]).mean()
    assert n == 5 and torch.isclose(adjusted, by_hand, atol=1e-6)
    assert torch.isclose(plain, torch.nn.functional.cross_entropy(logits, targets), atol=1e-6)
    assert not torch.isclose(plain, adjusted)
    # an unknown item is no column of the softmax, adjusted or not
    unknown = torch.tensor([False, False, True, False])
    masked, _ = window_loss(model, batch[:1, [0, 1, 2, 1]], unknown, offset)
    assert torch.isfinite(masked)


FAST = {"epochs": 15, "eval_every": 5, "patience": 3, "hidden": 32, "batch_size": 256, "max_len": 20}


def test_sasrec_learns_the_sample_and_beats_popularity(sample_prepared):
    params = sample_prepared("sasrec", sasrec=FAST)
    summary = train_sasrec(params, show_progress=False)
    assert summary["evals"][-1]["loss"] < summary["evals"][0]["loss"] + 1e-9
    out = evaluate(params, ("sasrec", "popularity"))
    sas, pop = out["models"]["sasrec"]["overall"], out["models"]["popularity"]["overall"]
    assert sas["count"] == pop["count"] == out["users"]
    assert sas["recall@10"] > pop["recall@10"]


def test_sasrec_resume_matches_uninterrupted_run(sample_prepared):
    full = sample_prepared("sasrec-full", sasrec={**FAST, "epochs": 6, "eval_every": 3, "patience": 9})
    train_sasrec(full, show_progress=False)
    part = sample_prepared("sasrec-part", sasrec={**FAST, "epochs": 3, "eval_every": 3, "patience": 9})
    train_sasrec(part, show_progress=False)
    with pytest.raises(FileExistsError):
        train_sasrec(part, show_progress=False)
    resumed = sample_prepared("sasrec-part", sasrec={**FAST, "epochs": 6, "eval_every": 3, "patience": 9})
    train_sasrec(resumed, resume=True, show_progress=False)
    a = load_file(str(full.resolve(full.sasrec.run_dir) / "weights.safetensors"))
    b = load_file(str(resumed.resolve(resumed.sasrec.run_dir) / "weights.safetensors"))
    ca = torch.load(full.resolve(full.sasrec.run_dir) / "checkpoint.pt", weights_only=True)["model"]
    cb = torch.load(resumed.resolve(resumed.sasrec.run_dir) / "checkpoint.pt", weights_only=True)["model"]
    assert a.keys() == b.keys()
    for name in ca:
        assert torch.equal(ca[name], cb[name]), name


def test_sequence_head_ranks_items_unseen_in_training_by_their_text_alone():
    from llmrec_core.config import SeqHeadConfig

    torch.manual_seed(0)
    text = torch.randn(5, 12)
    known = torch.tensor([True, True, True, False, False])  # items 3 and 4 never occur in training
    model = SASRec(5, SeqHeadConfig(hidden=8, heads=2, layers=1, dropout=0.0, id_dropout=0.5), 4, text, known)
    with torch.no_grad():
        model.items.weight.normal_()  # as if trained: every row non-zero, the unseen items' rows too
    model.eval()
    text_only = model.text_proj(torch.nn.functional.normalize(text, dim=-1))
    vectors = model.item_vectors()
    assert torch.allclose(vectors[3:], text_only[3:])  # no ID term for unseen items
    assert torch.allclose(vectors[:3], text_only[:3] + model.items.weight[1:4])
    # ID dropout acts in training only, per item, and never touches the text term
    model.train()
    dropped = model.item_vectors() - text_only
    kept = torch.isclose(dropped, model.items.weight[1:] * known[:, None].float(), atol=1e-6).all(1)
    zeroed = dropped.abs().sum(1) < 1e-6
    assert (kept | zeroed).all() and zeroed[3:].all()


def test_sequence_head_learns_the_sample_and_beats_popularity(sample_prepared):
    params = sample_prepared("seqhead", seqhead=FAST)
    summary = train_sasrec(params, show_progress=False, head="seqhead")
    assert summary["cost"]["model"] == "seqhead"
    out = evaluate(params, ("seqhead", "popularity"))
    head, pop = out["models"]["seqhead"]["overall"], out["models"]["popularity"]["overall"]
    assert head["count"] == pop["count"] == out["users"]
    assert head["recall@10"] > pop["recall@10"]


def _ensemble_config(**overrides):
    from llmrec_core.config import SeqHeadConfig

    return SeqHeadConfig(**{"hidden": 8, "heads": 2, "layers": 1, "dropout": 0.0, "id_dropout": 0.0,
                            "members": 3, "seed": 4, **overrides})


def test_ensemble_scores_are_the_sum_of_its_members_scores():
    from llmrec_core.model.sequence import HeadEnsemble, build_head

    torch.manual_seed(0)
    text = torch.randn(6, 12)
    cfg = _ensemble_config()
    model = build_head(6, cfg, text).eval()
    assert isinstance(model, HeadEnsemble) and len(model.members) == 3
    seqs = np.array([[0, 0, 1, 2], [3, 4, 5, 6], [0, 0, 0, 2]])
    users, items = model.user_vectors(seqs), model.item_vectors().detach()
    assert users.shape == (3, 24) and items.shape == (6, 24)
    with torch.no_grad():
        summed = sum(m.user_vectors(seqs) @ m.item_vectors().T for m in model.members)
        torch.testing.assert_close(users @ items.T, summed)
        # serving reads histories through forward() with a table of item vectors: the same user vectors
        table = torch.cat([torch.zeros(1, 24), items])
        torch.testing.assert_close(model(torch.from_numpy(seqs), table)[:, -1], users)
        torch.testing.assert_close(model.text_vectors(text), items)  # no ID embedding moved yet
    # member k of K starts as a single network of seed `seed * K + k` (seed 4: 12, 13, 14)
    for k, member in enumerate(model.members):
        torch.manual_seed(12 + k)
        alone = SASRec(6, cfg, cfg.max_len, text)
        for name, value in member.state_dict().items():
            assert torch.equal(alone.state_dict()[name], value), (k, name)
    assert not torch.equal(model.members[0].text_proj.weight, model.members[1].text_proj.weight)
    # the title vectors are stored once
    assert [k for k in model.state_dict() if k.endswith("text")] == ["text"]


def test_ensemble_members_train_as_they_would_alone():
    """Without dropout the only difference between members is their seed: after an epoch side by side, member k
    equals a single network of seed `seed * K + k` trained alone for that epoch (its own order, its own Adam state)."""
    from llmrec_core.model.sequence import build_head
    from llmrec_core.train.sequence import train_epoch

    torch.manual_seed(0)
    text = torch.randn(9, 12)
    windows = np.random.default_rng(0).integers(0, 10, size=(20, 5))
    cfg = _ensemble_config(members=2, max_len=4, batch_size=6)
    torch.manual_seed(cfg.seed)
    ensemble = build_head(9, cfg, text)
    optimizer = torch.optim.Adam(ensemble.parameters(), lr=1e-2)
    samples, loss = train_epoch(ensemble, optimizer, windows, cfg, 0, torch.device("cpu"))
    alone_losses, alone_samples = [], 0
    for k, member in enumerate(ensemble.members):
        single = _ensemble_config(members=1, max_len=4, batch_size=6, seed=cfg.seed * 2 + k)
        torch.manual_seed(single.seed)
        alone = build_head(9, single, text)
        n, last = train_epoch(alone, torch.optim.Adam(alone.parameters(), lr=1e-2), windows, single, 0,
                              torch.device("cpu"))
        alone_losses.append(last)
        alone_samples += n
        for name, value in member.state_dict().items():
            torch.testing.assert_close(value, alone.state_dict()[name], msg=f"member {k}: {name}")
    assert samples == alone_samples
    torch.testing.assert_close(loss, torch.stack(alone_losses).mean())


def test_ensemble_head_trains_resumes_evaluates_and_serves(sample_prepared):
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.evaluate.trained import load_sasrec
    from llmrec_core.model.sequence import HeadEnsemble
    from llmrec_core.serve.towers import seqhead_tower

    config = {**FAST, "epochs": 4, "eval_every": 2, "patience": 9, "members": 2}
    params = sample_prepared("seqhead-ens", seqhead=config)
    summary = train_sasrec(params, show_progress=False, head="seqhead")
    assert summary["cost"]["epochs_run"] == 4
    weights = load_file(str(params.resolve(params.seqhead.run_dir) / "weights.safetensors"))
    assert "text" in weights and {k.split(".")[1] for k in weights if k.startswith("members.")} == {"0", "1"}
    # resumed after 2 epochs, it ends where the uninterrupted run did
    part = sample_prepared("seqhead-ens-part", seqhead={**config, "epochs": 2})
    train_sasrec(part, show_progress=False, head="seqhead")
    resumed = sample_prepared("seqhead-ens-part", seqhead=config)
    train_sasrec(resumed, resume=True, show_progress=False, head="seqhead")
    again = load_file(str(resumed.resolve(resumed.seqhead.run_dir) / "weights.safetensors"))
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)

    out = evaluate(params, ("seqhead", "popularity"))
    head, pop = out["models"]["seqhead"]["overall"], out["models"]["popularity"]["overall"]
    assert head["count"] == pop["count"] == out["users"] and head["recall@10"] > pop["recall@10"]
    items = pd.read_parquet(DataLayout(params.data_root).prepared / "items.parquet")
    model = load_sasrec(params, len(items), "seqhead")
    assert isinstance(model, HeadEnsemble)
    tower = seqhead_tower(params, len(items), items)
    assert tower.table.shape == (len(items), 2 * config["hidden"])
    history = pd.DataFrame({"row": [3, 7, 11], "title": items["title"].iloc[[3, 7, 11]].tolist(),
                            "domain": items["domain"].iloc[[3, 7, 11]].tolist()})
    expected = model.user_vectors(np.array([[0] * (config["max_len"] - 3) + [4, 8, 12]]))
    np.testing.assert_allclose(tower.user_vector(history), expected.numpy(), atol=1e-5)
