"""Training behaviour on the embedded sample with a tiny random-init BERT (fast on CPU)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from llmrec_core.evaluate.run import evaluate
from llmrec_core.model.bundle import load_weights
from llmrec_core.train.loop import lm_bundle
from llmrec_core.model.encoder import pool
from llmrec_core.train.loop import train

FAST = {"batch_size": 16, "domain_negatives": 2, "checkpoint_every": 5, "max_examples_per_user": 1, "lr": 1e-3}


def _model(tiny_bert):
    return {"name_or_path": str(tiny_bert), "user_max_tokens": 48, "item_max_tokens": 16}


def test_loss_falls_and_metrics_are_written(tiny_bert, sample_prepared):
    params = sample_prepared("fpft", model=_model(tiny_bert), max_steps=40, **FAST)
    summary = train(params, show_progress=False)
    run = params.resolve(params.train.run_dir)
    assert (run / "weights.safetensors").is_file() and (run / "cost_train.json").is_file()
    assert summary["cost"]["parameters_trainable"] == summary["cost"]["parameters_total"]
    out = evaluate(params, ("llmrec", "popularity"))
    assert set(out["models"]) == {"llmrec", "popularity"}
    assert out["models"]["llmrec"]["overall"]["count"] == out["users"] > 0
    first = _loss_at(params, tiny_bert, steps=1)
    assert summary["epochs"][0]["last_loss"] < first


def _loss_at(params, tiny_bert, steps):
    import yaml

    from llmrec_core.config import load_params
    path = params.base_dir / "params-fpft.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["train"].update(max_steps=steps, run_dir=str(params.base_dir / "runs" / "one-step"))
    path2 = params.base_dir / "params-one.yaml"
    path2.write_text(yaml.safe_dump(doc))
    return train(load_params(path2), show_progress=False)["epochs"][0]["last_loss"]


def test_lora_changes_only_adapter_weights(tiny_bert, sample_prepared):
    params = sample_prepared("lora", model=_model(tiny_bert), tuning="lora", max_steps=5, **FAST)
    before = load_file(str(tiny_bert / "model.safetensors"))
    summary = train(params, show_progress=False)
    saved = load_file(str(params.resolve(params.train.run_dir) / "weights.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert summary["cost"]["parameters_trainable"] < summary["cost"]["parameters_total"] / 5
    bundle = lm_bundle(params, __import__("pandas").DataFrame({"title": ["x"], "domain": ["d"]}))
    base = {k.split("base_model.model.")[-1].replace(".base_layer", ""): v
            for k, v in bundle.encoder.backbone.state_dict().items() if "lora_" not in k}
    for name, tensor in before.items():
        assert torch.equal(base[name], tensor), name  # the frozen base is bit-identical


def test_killed_run_resumes_to_the_same_weights(tiny_bert, sample_prepared):
    full = sample_prepared("straight", model=_model(tiny_bert), max_steps=30, **FAST)
    train(full, show_progress=False)
    killed = sample_prepared("killed", model=_model(tiny_bert), max_steps=30, **FAST)
    path = killed.base_dir / "params-killed.yaml"
    proc = subprocess.Popen([sys.executable, "-m", "llmrec_core", "train", "--params", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
    ckpt = killed.resolve(killed.train.run_dir) / "checkpoint.pt"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    state = torch.load(ckpt, weights_only=True)["state"]
    assert 0 < state["global_step"] < 30 and not state["done"]
    train(killed, resume=True, show_progress=False)
    a = load_file(str(full.resolve(full.train.run_dir) / "weights.safetensors"))
    b = load_file(str(killed.resolve(killed.train.run_dir) / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("uses", [{"item_bank_negatives": True}, {"item_tower": "cached"}], ids=["bank", "cached"])
def test_item_bank_run_interrupted_between_refreshes_resumes_to_the_same_weights(tiny_bert, sample_prepared,
                                                                                 monkeypatch, uses):
    """The bank (the bank loss's vectors, or the cached item tower) is re-encoded at steps 0, 2, 4; the run dies
    at step 4 and resumes from the checkpoint of step 3, whose bank (from step 2) must be restored rather than
    re-encoded from step-3 weights."""
    import llmrec_core.train.loop as loop

    name = next(iter(uses))
    bank = {**FAST, "checkpoint_every": 3, "item_bank_refresh_steps": 2, **uses}
    full = sample_prepared(f"{name}-straight", model=_model(tiny_bert), max_steps=6, **bank)
    straight = train(full, show_progress=False)
    assert straight["epochs"][0]["last_loss"] > 0
    killed = sample_prepared(f"{name}-killed", model=_model(tiny_bert), max_steps=6, **bank)
    real, calls = loop.batch_loss, []

    def dies_at_step_five(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "batch_loss", dies_at_step_five)
    with pytest.raises(KeyboardInterrupt):
        train(killed, show_progress=False)
    monkeypatch.setattr(loop, "batch_loss", real)
    ckpt = killed.resolve(killed.train.run_dir) / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=True)["state"]
    assert state["global_step"] == 3 and state["bank_step"] == 2
    train(killed, resume=True, show_progress=False)
    a = load_file(str(full.resolve(full.train.run_dir) / "weights.safetensors"))
    b = load_file(str(killed.resolve(killed.train.run_dir) / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_existing_run_needs_resume(tiny_bert, sample_prepared):
    params = sample_prepared("twice", model=_model(tiny_bert), max_steps=2, **FAST)
    train(params, show_progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(params, show_progress=False)


def test_last_token_pooling_for_decoders():
    hidden = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    assert pool(hidden, mask, "last").flatten().tolist() == [1.0, 5.0]
    assert pool(hidden, mask, "mean").flatten().tolist() == [0.5, 4.0]


def test_decoder_model_trains_with_last_pooling(tmp_path, tiny_bert, sample_prepared):
    from transformers import GPT2Config, GPT2Model
    import shutil
    d = tmp_path / "tiny-gpt2"
    GPT2Model(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=30522, n_positions=128)).save_pretrained(
        d, safe_serialization=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tiny_bert / f, d / f)
    params = sample_prepared("gpt2", model={**_model(tiny_bert), "name_or_path": str(d), "pooling": "last"},
                             tuning="lora", max_steps=3, **FAST)
    summary = train(params, show_progress=False)
    assert summary["cost"]["parameters_trainable"] < summary["cost"]["parameters_total"]
    # LoRA's B matrices start at zero: a nonzero one means gradients reached the decoder through last pooling
    saved = load_file(str(params.resolve(params.train.run_dir) / "weights.safetensors"))
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    assert summary["epochs"][0]["last_loss"] is not None and summary["epochs"][0]["valid_ndcg@10"] >= 0


def test_auto_resume_continues_a_matching_run_and_restarts_a_changed_one(tiny_bert, sample_prepared):
    params = sample_prepared("auto", model=_model(tiny_bert), max_steps=2, **FAST)
    first = train(params, show_progress=False)
    run = params.resolve(params.train.run_dir)
    mtime = (run / "weights.safetensors").stat().st_mtime_ns
    again = train(params, resume="auto", show_progress=False)  # finished, same params: nothing to do
    assert (run / "weights.safetensors").stat().st_mtime_ns == mtime
    assert again == json.loads(json.dumps(first)) and again["cost"]["samples_per_s"] > 0  # the record of the run that did the work
    changed = sample_prepared("auto", model=_model(tiny_bert), max_steps=3, **FAST)
    with pytest.raises(ValueError, match="other params"):
        train(changed, resume=True, show_progress=False)
    summary = train(changed, resume="auto", show_progress=False)  # other params: starts over
    assert summary["cost"]["global_steps"] == 3 and summary["cost"]["samples_per_s"] > 0


def _dies_in_validation(monkeypatch, params):
    """Run `params` until its first validation, which dies; return the checkpoint's state."""
    import llmrec_core.train.loop as loop

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "evaluate_encoder", killed)
    with pytest.raises(KeyboardInterrupt):
        train(params, show_progress=False)
    monkeypatch.undo()
    return torch.load(params.resolve(params.train.run_dir) / "checkpoint.pt", weights_only=True)["state"]


def test_checkpoint_at_max_steps_then_kill_in_validation_takes_no_extra_step(tiny_bert, sample_prepared, monkeypatch):
    limit = {**FAST, "checkpoint_every": 2}
    straight = train(sample_prepared("limit-straight", model=_model(tiny_bert), max_steps=4, **limit),
                     show_progress=False)
    params = sample_prepared("limit-killed", model=_model(tiny_bert), max_steps=4, **limit)
    state = _dies_in_validation(monkeypatch, params)
    assert state["global_step"] == 4 and not state["done"]
    resumed = train(params, resume=True, show_progress=False)
    assert resumed["cost"]["global_steps"] == straight["cost"]["global_steps"] == 4
    assert resumed["epochs"][0]["last_loss"] == straight["epochs"][0]["last_loss"]
    a = load_file(str(params.base_dir / "runs" / "limit-straight" / "weights.safetensors"))
    b = load_file(str(params.resolve(params.train.run_dir) / "weights.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_at_the_epochs_last_batch_then_kill_in_validation_resumes(tiny_bert, sample_prepared,
                                                                              monkeypatch):
    from llmrec_core.data.layout import DataLayout
    from llmrec_core.data.settings import load_setting
    from llmrec_core.train.examples import build_examples

    probe = sample_prepared("epoch-end", model=_model(tiny_bert), **FAST)
    data = load_setting(DataLayout(probe.data_root).prepared, "mixed")
    batches = len(build_examples(data.seq_offsets, FAST["max_examples_per_user"])) // FAST["batch_size"]
    params = sample_prepared("epoch-end", model=_model(tiny_bert), **{**FAST, "checkpoint_every": batches,
                                                                     "max_steps": None})
    state = _dies_in_validation(monkeypatch, params)
    assert state["batch"] == batches and state["global_step"] == batches and state["epoch"] == 0
    summary = train(params, resume=True, show_progress=False)  # runs no batch, validates, finishes
    assert summary["epochs"][0]["last_loss"] == state["last_loss"] is not None
    assert summary["cost"]["global_steps"] == batches
    assert (params.resolve(params.train.run_dir) / "weights.safetensors").is_file()


def test_frozen_lower_layers_keep_their_pretrained_weights_and_the_rest_trains(tiny_bert, sample_prepared):
    params = sample_prepared("frozen", model=_model(tiny_bert), frozen_layers=1, max_steps=5, **FAST)
    before = load_file(str(tiny_bert / "model.safetensors"))
    summary = train(params, show_progress=False)
    saved = load_file(str(params.resolve(params.train.run_dir) / "weights.safetensors"))
    frozen = [k for k in before if k.startswith(("embeddings.", "encoder.layer.0."))]
    assert frozen and not any(f"backbone.{k}" in saved for k in frozen)  # only what trains is saved
    upper = [k for k in saved if ".layer.1." in k]
    assert upper and any(not torch.equal(saved[k], before[k.removeprefix("backbone.")]) for k in upper)
    assert summary["cost"]["parameters_trainable"] < summary["cost"]["parameters_total"]
    bundle = lm_bundle(params, __import__("pandas").DataFrame({"title": ["x"], "domain": ["d"]}))
    load_weights(bundle.encoder, params.resolve(params.train.run_dir) / "weights.safetensors")
    state = bundle.encoder.backbone.state_dict()
    assert all(torch.equal(state[k], before[k]) for k in frozen)  # evaluation gets the pre-trained lower layers
    assert all(torch.equal(bundle.encoder.state_dict()[k], v) for k, v in saved.items())


def test_freezing_finds_the_blocks_of_a_decoder_and_refuses_too_many():
    from transformers import GPT2Config, GPT2Model

    from llmrec_core.model.encoder import freeze_lower_layers
    model = GPT2Model(GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=100, n_positions=32))
    freeze_lower_layers(model, 2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if n.startswith(("h.2.", "ln_f."))}
    with pytest.raises(ValueError, match="only 3 blocks"):
        freeze_lower_layers(GPT2Model(GPT2Config(n_embd=16, n_layer=3, n_head=2, vocab_size=100)), 4)
