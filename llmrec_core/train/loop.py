"""Contrastive next-item training of the LM encoder (FPFT or LoRA) with accelerate.

A batch is a set of (history, target) prefixes. Candidates are the batch's targets (in-batch
negatives, deduplicated) plus `domain_negatives` items per row drawn from the target's domain;
the loss is softmax cross-entropy of the positive against them. `item_bank_negatives` adds a
softmax over every item of the target's domain against a bank of item vectors (item_bank.py).
`item_tower: cached` scores the candidates against those bank vectors too, so a step encodes and
back-propagates only the user sentences (the encoder is shared, so the items follow at each refresh).
Candidates the row's user rated before its target are masked (`mask_rated_negatives`): full ranking
excludes them, so training should not push them down. The order of examples and the negatives depend only on (seed, epoch, batch), and the checkpoint
holds the RNG state for dropout and the item bank, so a killed run resumed from its checkpoint
ends with the same weights.
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Params
from ..cost import CostMeter
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..evaluate.run import evaluate_encoder
from ..model.bundle import EncoderBundle, build_bundle, save_weights
from ..model.inference import encode_items
from ..model.text import TextTokens
from ..provenance import LM_TRAINING_CODE, fingerprint, non_default, provenance
from ..data.stage import run_folder_lock
from .checkpoint import decide_resume, load_checkpoint, save_checkpoint
from .examples import NegativePool, build_examples, histories, log_proposal, rated_columns
from .item_bank import ItemBank, bank_logits


def lm_bundle(params: Params, items: pd.DataFrame, tuning: str | None = None) -> EncoderBundle:
    """The LM of `params.model` as `train` configures it for training (`tuning`, default `train.tuning`: LoRA
    adapters or full fine-tuning with `train.frozen_layers` frozen), with `items`' tokens."""
    t = params.train
    return build_bundle(params.model, params.base_dir, items, tuning or t.tuning, t.lora, t.frozen_layers)


def batch_loss(encoder: torch.nn.Module, tokens: TextTokens, hists: list[np.ndarray], targets: torch.Tensor,
               negatives: torch.Tensor | None, in_batch: bool, temperature: float, device,
               log_q: torch.Tensor | None = None, bank: ItemBank | None = None,
               rated: list[np.ndarray] | None = None,
               item_vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """`encoder` is the module accelerate prepared (DDP-wrapped when distributed), so gradients sync.
    `log_q` (per item, see `log_proposal`) is subtracted from every candidate's logit when given.
    `rated` (each row's whole past) masks the candidates a row's user already rated: they are not negatives.
    With a `bank`, the loss adds each row's softmax over every item of its target's domain (item_bank.py).
    With `item_vectors` (every item's cached vector), candidates are looked up there instead of encoded, and
    only the users' tokens count."""
    pool = targets if negatives is None else torch.cat([targets, negatives.flatten()])
    candidates = torch.unique(pool)  # deduplicated: an item that is two rows' target is one column
    positive = torch.searchsorted(candidates, targets)
    u_ids, u_mask = tokens.users(hists)
    users = encoder(u_ids.to(device), u_mask.to(device))
    if item_vectors is None:
        i_ids, i_mask = tokens.items(candidates.tolist())
        items = encoder(i_ids.to(device), i_mask.to(device))
        n_tokens = int(u_mask.sum() + i_mask.sum())
    else:
        items = item_vectors[candidates].to(device, users.dtype)
        n_tokens = int(u_mask.sum())
    logits = users @ items.T / temperature
    if log_q is not None:
        logits = logits - log_q[candidates].to(device)
    if not in_batch:  # each row sees only its own target and its own sampled negatives
        allowed = torch.zeros_like(logits, dtype=torch.bool)
        rows = torch.arange(len(targets))
        allowed[rows, positive] = True
        allowed[rows[:, None].expand_as(negatives), torch.searchsorted(candidates, negatives)] = True
        logits = logits.masked_fill(~allowed.to(device), float("-inf"))
    if rated is not None:
        logits = logits.masked_fill(rated_columns(candidates, rated, positive).to(device), float("-inf"))
    loss = F.cross_entropy(logits, positive.to(device))
    if bank is not None:
        loss = loss + F.cross_entropy(bank_logits(users, targets, hists, bank, temperature), targets.to(device))
    return loss, n_tokens


def _encode_bank(bundle, n_items: int, batch_size: int, by_length: bool = False) -> torch.Tensor:
    """Every item's vector in eval mode (no dropout, so the RNG a resumed run replays is untouched)."""
    was_training = bundle.encoder.training
    bundle.encoder.eval()
    vectors = encode_items(bundle, n_items, batch_size, by_length)
    bundle.encoder.train(was_training)
    return vectors


def train_fingerprint(params: Params) -> str:
    """What an LM checkpoint was trained from: model, train and prepare params, the prepared data and the training
    code."""
    config = {"model": non_default(params.model), "train": non_default(params.train, {"run_dir", "checkpoint_every"}),
              "prepare": non_default(params.prepare)}
    return fingerprint(config, DataLayout(params.data_root).prepared / "manifest.json", LM_TRAINING_CODE)


@dataclass
class TrainState:
    """Where a run is: what the checkpoint holds besides weights, optimizer and RNG, so a killed run resumes."""

    fingerprint: str
    epoch: int = 0
    batch: int = 0  # next batch of `epoch`
    global_step: int = 0
    best_ndcg: float = -1.0
    bad_epochs: int = 0
    done: bool = False
    last_loss: float | None = None
    epochs: list = field(default_factory=list)  # one record per finished epoch
    log: list = field(default_factory=list)  # (step, epoch, loss) per optimizer step
    item_bank: torch.Tensor | None = None  # item vectors of the bank loss, and when they were encoded
    bank_step: int = 0
    bank_epoch: int = -1

    def bank_due(self, cfg) -> bool:
        if self.item_bank is None:
            return True
        if cfg.item_bank_refresh_steps:
            return self.global_step - self.bank_step >= cfg.item_bank_refresh_steps
        return self.bank_epoch != self.epoch


@dataclass
class TrainRun:
    """What an epoch works with: the prepared engine (accelerate), the model and the setting's examples."""

    params: Params
    acc: object  # accelerate.Accelerator
    encoder: torch.nn.Module  # as accelerate prepared it
    bundle: object  # model.bundle.EncoderBundle (its encoder unwrapped)
    optimizer: torch.optim.Optimizer
    scheduler: object
    data: SettingData
    examples: object  # examples.Examples
    log_q: torch.Tensor | None
    batches_per_epoch: int
    ckpt_path: object  # pathlib.Path

    def save(self, state: TrainState) -> None:
        save_checkpoint(self.ckpt_path, self.acc.unwrap_model(self.encoder), self.optimizer, self.scheduler, vars(state))


def train_epoch(run: TrainRun, state: TrainState, counts: dict, started: float, show_progress: bool) -> None:
    """The batches of `state.epoch` from `state.batch` on (or up to `max_steps`); adds to `counts` (samples,
    tokens) and checkpoints every `checkpoint_every` steps."""
    cfg, acc, data, examples = run.params.train, run.acc, run.data, run.examples
    epoch, values = state.epoch, data.seq_values
    codes, known = data.item_domain_codes(), data.known_items()
    pool = NegativePool.of(data.domain_ranges, len(data.items), known)
    domain_codes, bank_known = torch.from_numpy(codes), None if known is None else torch.from_numpy(known)
    order = np.random.default_rng([cfg.seed, epoch]).permutation(len(examples))[acc.process_index::acc.num_processes]
    run.encoder.train()
    bar = tqdm(range(state.batch, run.batches_per_epoch), disable=not (show_progress and acc.is_main_process),
               desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=state.batch, total=run.batches_per_epoch,
               mininterval=0.1 if sys.stderr.isatty() else 20)  # logs (Prefect, DVC): a line per 20 s
    for b in bar:
        # checked before the batch, so a run resumed from a checkpoint taken at the limit takes no extra step
        if cfg.max_steps and state.global_step >= cfg.max_steps:
            break
        idx = order[b * cfg.batch_size: (b + 1) * cfg.batch_size]
        targets_np = values[examples.target_pos[idx]]
        targets = torch.from_numpy(targets_np)
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + b)
        negatives = None
        if cfg.domain_negatives:
            negatives = pool.sample(targets_np, codes[targets_np], cfg.domain_negatives, gen)
        hists = histories(values, examples, idx, run.params.prepare.max_history)
        rated = histories(values, examples, idx, None) if cfg.mask_rated_negatives else None
        bank, cached = None, cfg.item_tower == "cached"
        if cfg.item_bank_negatives or cached:
            if state.bank_due(cfg):  # cached: length-sorted (faster); the bank loss as its runs were made
                state.item_bank = _encode_bank(run.bundle, len(data.items), run.params.eval.batch_size, cached)
                state.bank_step, state.bank_epoch = state.global_step, epoch
            if cfg.item_bank_negatives:
                bank = ItemBank(state.item_bank, domain_codes, bank_known)
        with acc.accumulate(run.encoder):
            loss, n_tok = batch_loss(run.encoder, run.bundle.tokens, hists, targets, negatives, cfg.in_batch_negatives,
                                     run.params.model.temperature, acc.device, run.log_q, bank, rated,
                                     state.item_bank if cached else None)
            acc.backward(loss)
            run.optimizer.step()
            run.scheduler.step()
            run.optimizer.zero_grad()
        counts["samples"] += len(idx)
        counts["tokens"] += n_tok
        state.batch = b + 1
        if acc.sync_gradients:
            state.global_step += 1
            elapsed = time.perf_counter() - started
            bar.set_postfix(loss=f"{loss.item():.3f}", samples_s=f"{counts['samples'] / elapsed:.1f}", refresh=False)
            state.last_loss = round(float(loss.item()), 5)
            state.log.append((state.global_step, epoch + 1, state.last_loss))
            if state.global_step % cfg.checkpoint_every == 0 and acc.is_main_process:
                run.save(state)


def end_epoch(run: TrainRun, state: TrainState, meter: CostMeter) -> None:
    """Validate, keep the weights when validation NDCG@10 improved, stop on patience or the step limit, and
    checkpoint the start of the next epoch."""
    cfg, acc = run.params.train, run.acc
    step_limit = bool(cfg.max_steps and state.global_step >= cfg.max_steps)
    with meter.phase("validate"):
        metrics = evaluate_encoder(run.params, run.bundle, run.data, split="valid",
                                   max_users=run.params.eval.max_valid_users)
    ndcg = metrics["overall"].get("ndcg@10", 0.0)
    # a run resumed from a checkpoint taken at the epoch's last batch runs no batch: the loss is the saved one
    state.epochs.append({"epoch": state.epoch + 1, "last_loss": state.last_loss, "valid_ndcg@10": ndcg,
                         "valid_recall@10": metrics["overall"].get("recall@10", 0.0)})
    acc.print(f"epoch {state.epoch + 1}: loss {state.last_loss}  valid NDCG@10 {ndcg:.4f}")
    if ndcg > state.best_ndcg:
        state.best_ndcg, state.bad_epochs = ndcg, 0
        if acc.is_main_process:
            save_weights(acc.unwrap_model(run.encoder), run.params.resolve(cfg.run_dir) / "weights.safetensors")
    else:
        state.bad_epochs += 1
        if state.bad_epochs >= cfg.patience:
            state.done = True
    state.epoch += 1
    state.batch = 0
    state.done = state.done or step_limit
    if acc.is_main_process:
        run.save(state)


def accelerator(cfg):
    """accelerate's engine for `cfg` (train config): precision, gradient accumulation, CPU or GPU."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    # cpu=True without CUDA lets `accelerate launch --multi_gpu` / torchrun processes form a gloo group.
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum,
                       cpu=not torch.cuda.is_available(),
                       # backbones carry heads the pooled vector never uses (e.g. BERT's pooler)
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def train(params: Params, resume: bool | str = False, show_progress: bool = True) -> dict:
    """Fine-tune the LM of `params.model` on the prepared data's `train.setting`; writes weights.safetensors (the
    best validation epoch), checkpoint.pt, train_metrics.json, cost_train.json and train_log.csv to `train.run_dir`.
    resume: False (refuse an existing checkpoint), True (continue it), "auto" (continue if it matches).
    One training per run folder: a second one is refused (StageBusy) with the holder's pid, host and command."""
    with run_folder_lock(params.resolve(params.train.run_dir), "llmrec train"):
        return _train(params, resume, show_progress)


def _train(params: Params, resume: bool | str, show_progress: bool) -> dict:
    from transformers import get_linear_schedule_with_warmup

    cfg = params.train
    run_dir = params.resolve(cfg.run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    current = train_fingerprint(params)
    resume = decide_resume(ckpt_path, resume, current, [run_dir / "weights.safetensors"])
    acc = accelerator(cfg)
    torch.manual_seed(cfg.seed)
    meter = CostMeter(params.cost)

    with meter.phase("load"):
        data = load_setting(DataLayout(params.data_root).prepared, cfg.setting, cfg.domain)
        bundle = lm_bundle(params, data.items)
    examples = build_examples(data.seq_offsets, cfg.max_examples_per_user)
    if not len(examples):
        raise ValueError(f"setting {cfg.setting} ({cfg.domain or 'all domains'}) has no training examples")
    log_q = None
    if cfg.logq_correction:
        log_q = torch.from_numpy(log_proposal(data.seq_values[examples.target_pos], data.item_domain_codes(),
                                              cfg.domain_negatives, data.known_items())).float()
    world = acc.num_processes
    batches_per_epoch = len(examples) // (cfg.batch_size * world) or 1
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    trainable = [p for p in bundle.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    state = TrainState(fingerprint=current)
    if resume:
        state = TrainState(**load_checkpoint(ckpt_path, bundle.encoder, optimizer, scheduler))
        finished = state.done or state.epoch >= cfg.epochs
        if finished and (run_dir / "train_metrics.json").is_file():  # keep the record of the run that did the work
            acc.print(f"{ckpt_path}: this run already finished; nothing to do")
            return json.loads((run_dir / "train_metrics.json").read_text())
        acc.print(f"resuming from {ckpt_path}: epoch {state.epoch}, batch {state.batch}")
    encoder, optimizer, scheduler = acc.prepare(bundle.encoder, optimizer, scheduler)
    run = TrainRun(params, acc, encoder, bundle, optimizer, scheduler, data, examples, log_q, batches_per_epoch,
                   ckpt_path)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.json").write_text(params.model_dump_json(indent=2))

    counts, started = {"samples": 0, "tokens": 0}, time.perf_counter()
    while not state.done and state.epoch < cfg.epochs:
        with meter.phase("train"):
            train_epoch(run, state, counts, started, show_progress)
        end_epoch(run, state, meter)

    return train_records(run, state, meter, counts, current)


def train_records(run: TrainRun, state: TrainState, meter: CostMeter, counts: dict, run_fingerprint: str) -> dict:
    """The run's summary (validation per epoch, cost) written with its cost record and loss log; returned."""
    params, cfg, acc = run.params, run.params.train, run.acc
    world, run_dir = acc.num_processes, run.params.resolve(cfg.run_dir)
    record = meter.record(
        model=acc.unwrap_model(run.encoder), kind="train", samples=counts["samples"], tokens=counts["tokens"],
        seconds=meter.seconds("train"),
        extra={"setting": cfg.setting, "domain": cfg.domain, "tuning": cfg.tuning, "model": params.model.name_or_path,
               "examples_per_epoch": len(run.examples), "global_steps": state.global_step, "world_size": world,
               "batch_size": cfg.batch_size * world * cfg.grad_accum, "examples_seen": state.global_step *
               cfg.batch_size * world * cfg.grad_accum, "user_max_tokens": params.model.user_max_tokens,
               "seed": cfg.seed, "provenance": provenance(LM_TRAINING_CODE)},
    )
    summary = {"epochs": state.epochs, "best_valid_ndcg@10": state.best_ndcg, "cost": record,
               "fingerprint": run_fingerprint, "provenance": record["provenance"]}
    if acc.is_main_process:
        (run_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
        (run_dir / "cost_train.json").write_text(json.dumps(record, indent=2))
        lines = ["step,epoch,loss", *(f"{s},{e},{l}" for s, e, l in state.log)]
        (run_dir / "train_log.csv").write_text("\n".join(lines) + "\n")
    return summary
