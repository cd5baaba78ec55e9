"""Contrastive next-item training of the LM encoder (FPFT or LoRA) with accelerate.

A batch is a set of (history, target) prefixes. Candidates are the batch's targets (in-batch
negatives, deduplicated) plus `domain_negatives` items per row drawn from the target's domain;
the loss is softmax cross-entropy of the positive against them. `item_bank_negatives` adds a
softmax over every item of the target's domain against a bank of item vectors (item_bank.py).
Candidates the row's user rated before its target are masked (`mask_rated_negatives`): full ranking
excludes them, so training should not push them down. The order of examples and the negatives depend only on (seed, epoch, batch), and the checkpoint
holds the RNG state for dropout and the item bank, so a killed run resumed from its checkpoint
ends with the same weights.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import Params
from ..cost import CostMeter
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..evaluate.run import encode_items, evaluate_encoder
from ..model.bundle import build_bundle, save_weights
from ..model.text import TextTokens
from ..provenance import LM_TRAINING_CODE, fingerprint, provenance
from .checkpoint import decide_resume, load_checkpoint, save_checkpoint
from .examples import build_examples, histories, log_proposal, rated_columns, sample_domain_negatives
from .item_bank import ItemBank, bank_logits


def batch_loss(encoder: torch.nn.Module, tokens: TextTokens, hists: list[np.ndarray], targets: torch.Tensor,
               negatives: torch.Tensor | None, in_batch: bool, temperature: float, device,
               log_q: torch.Tensor | None = None, bank: ItemBank | None = None,
               rated: list[np.ndarray] | None = None) -> tuple[torch.Tensor, int]:
    """`encoder` is the module accelerate prepared (DDP-wrapped when distributed), so gradients sync.
    `log_q` (per item, see `log_proposal`) is subtracted from every candidate's logit when given.
    `rated` (each row's whole past) masks the candidates a row's user already rated: they are not negatives.
    With a `bank`, the loss adds each row's softmax over every item of its target's domain (item_bank.py)."""
    pool = targets if negatives is None else torch.cat([targets, negatives.flatten()])
    candidates = torch.unique(pool)  # deduplicated: an item that is two rows' target is one column
    positive = torch.searchsorted(candidates, targets)
    u_ids, u_mask = tokens.users(hists)
    i_ids, i_mask = tokens.items(candidates.tolist())
    users = encoder(u_ids.to(device), u_mask.to(device))
    items = encoder(i_ids.to(device), i_mask.to(device))
    n_tokens = int(u_mask.sum() + i_mask.sum())
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


def _domain_tensors(data: SettingData, targets: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    codes = data.item_domain_codes()[targets]
    ranges = np.asarray(list(data.domain_ranges.values()), dtype=np.int64)
    return torch.from_numpy(ranges[codes, 0]), torch.from_numpy(ranges[codes, 1] - ranges[codes, 0])


def _bank_due(state: dict, cfg, epoch: int) -> bool:
    if state.get("item_bank") is None:
        return True
    if cfg.item_bank_refresh_steps:
        return state["global_step"] - state["bank_step"] >= cfg.item_bank_refresh_steps
    return state["bank_epoch"] != epoch


def _encode_bank(bundle, n_items: int, batch_size: int) -> torch.Tensor:
    """Every item's vector in eval mode (no dropout, so the RNG a resumed run replays is untouched)."""
    was_training = bundle.encoder.training
    bundle.encoder.eval()
    vectors = encode_items(bundle, n_items, batch_size)
    bundle.encoder.train(was_training)
    return vectors


def train_fingerprint(params: Params) -> str:
    # values left at their defaults are not part of it, so a new option does not orphan a checkpoint
    train_cfg = params.train.model_dump(exclude={"run_dir", "checkpoint_every"}, exclude_defaults=True)
    config = {"model": params.model.model_dump(exclude_defaults=True), "train": train_cfg,
              "prepare": params.prepare.model_dump(exclude_defaults=True)}
    return fingerprint(config, DataLayout(params.data_root).prepared / "manifest.json", LM_TRAINING_CODE)


def train(params: Params, resume: bool | str = False, show_progress: bool = True) -> dict:
    """resume: False (refuse an existing checkpoint), True (continue it), "auto" (continue if it matches)."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from transformers import get_linear_schedule_with_warmup

    cfg = params.train
    run_dir = params.resolve(cfg.run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    current = train_fingerprint(params)
    resume = decide_resume(ckpt_path, resume, current, [run_dir / "weights.safetensors"])
    precision = cfg.mixed_precision
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() else "no"
    # cpu=True without CUDA lets `accelerate launch --multi_gpu` / torchrun processes form a gloo group.
    acc = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.grad_accum,
                      cpu=not torch.cuda.is_available(),
                      # backbones carry heads the pooled vector never uses (e.g. BERT's pooler)
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    torch.manual_seed(cfg.seed)
    meter = CostMeter(params.cost)

    with meter.phase("load"):
        data = load_setting(DataLayout(params.data_root).prepared, cfg.setting, cfg.domain)
        bundle = build_bundle(params, data.items)
    examples = build_examples(data.seq_offsets, cfg.max_examples_per_user)
    if not len(examples):
        raise ValueError(f"setting {cfg.setting} ({cfg.domain or 'all domains'}) has no training examples")
    log_q = None
    if cfg.logq_correction:
        log_q = torch.from_numpy(log_proposal(data.seq_values[examples.target_pos], data.item_domain_codes(),
                                              cfg.domain_negatives)).float()
    world, rank = acc.num_processes, acc.process_index
    batches_per_epoch = len(examples) // (cfg.batch_size * world) or 1
    steps_per_epoch = max(1, batches_per_epoch // cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    trainable = [p for p in bundle.encoder.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)

    state = {"epoch": 0, "batch": 0, "global_step": 0, "best_ndcg": -1.0, "bad_epochs": 0, "epochs": [],
             "done": False, "fingerprint": current, "log": [], "last_loss": None}
    if resume:
        state = load_checkpoint(ckpt_path, bundle.encoder, optimizer, scheduler)
        state.setdefault("last_loss", None)
        finished = state["done"] or state["epoch"] >= cfg.epochs
        if finished and (run_dir / "train_metrics.json").is_file():  # keep the record of the run that did the work
            acc.print(f"{ckpt_path}: this run already finished; nothing to do")
            return json.loads((run_dir / "train_metrics.json").read_text())
        acc.print(f"resuming from {ckpt_path}: epoch {state['epoch']}, batch {state['batch']}")
    encoder, optimizer, scheduler = acc.prepare(bundle.encoder, optimizer, scheduler)
    device = acc.device
    values = data.seq_values
    domain_codes = torch.from_numpy(data.item_domain_codes())
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "params.json").write_text(params.model_dump_json(indent=2))

    samples = tokens = 0
    train_start = time.perf_counter()
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(examples))[rank::world]
        encoder.train()
        bar = tqdm(range(state["batch"], batches_per_epoch), disable=not (show_progress and acc.is_main_process),
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", initial=state["batch"], total=batches_per_epoch,
                   mininterval=0.1 if sys.stderr.isatty() else 20)  # logs (Prefect, DVC): a line per 20 s
        with meter.phase("train"):
            for b in bar:
                # checked before the batch, so a run resumed from a checkpoint taken at the limit takes no extra step
                if cfg.max_steps and state["global_step"] >= cfg.max_steps:
                    break
                idx = order[b * cfg.batch_size: (b + 1) * cfg.batch_size]
                targets_np = values[examples.target_pos[idx]]
                targets = torch.from_numpy(targets_np)
                gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 100_003 + b)
                negatives = None
                if cfg.domain_negatives:
                    start, size = _domain_tensors(data, targets_np)
                    negatives = sample_domain_negatives(targets, start, size, cfg.domain_negatives, gen)
                hists = histories(values, examples, idx, params.prepare.max_history)
                rated = histories(values, examples, idx, None) if cfg.mask_rated_negatives else None
                bank = None
                if cfg.item_bank_negatives:
                    if _bank_due(state, cfg, epoch):
                        state["item_bank"] = _encode_bank(bundle, len(data.items), params.eval.batch_size)
                        state["bank_step"], state["bank_epoch"] = state["global_step"], epoch
                    bank = ItemBank(state["item_bank"], domain_codes)
                with acc.accumulate(encoder):
                    loss, n_tok = batch_loss(encoder, bundle.tokens, hists, targets, negatives, cfg.in_batch_negatives,
                                             params.model.temperature, device, log_q, bank, rated)
                    acc.backward(loss)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                samples += len(idx)
                tokens += n_tok
                state["batch"] = b + 1
                if acc.sync_gradients:
                    state["global_step"] += 1
                    elapsed = time.perf_counter() - train_start
                    bar.set_postfix(loss=f"{loss.item():.3f}", samples_s=f"{samples / elapsed:.1f}", refresh=False)
                    state["last_loss"] = round(float(loss.item()), 5)
                    state["log"].append((state["global_step"], epoch + 1, state["last_loss"]))
                    if state["global_step"] % cfg.checkpoint_every == 0 and acc.is_main_process:
                        save_checkpoint(ckpt_path, acc.unwrap_model(encoder), optimizer, scheduler, state)
        step_limit = bool(cfg.max_steps and state["global_step"] >= cfg.max_steps)
        with meter.phase("validate"):
            metrics = evaluate_encoder(params, bundle, data, split="valid", max_users=params.eval.max_valid_users)
        ndcg = metrics["overall"].get("ndcg@10", 0.0)
        # a run resumed from a checkpoint taken at the epoch's last batch runs no batch: the loss is the saved one
        state["epochs"].append({"epoch": epoch + 1, "last_loss": state["last_loss"], "valid_ndcg@10": ndcg,
                                "valid_recall@10": metrics["overall"].get("recall@10", 0.0)})
        acc.print(f"epoch {epoch + 1}: loss {state['last_loss']}  valid NDCG@10 {ndcg:.4f}")
        if ndcg > state["best_ndcg"]:
            state["best_ndcg"], state["bad_epochs"] = ndcg, 0
            if acc.is_main_process:
                save_weights(acc.unwrap_model(encoder), run_dir / "weights.safetensors")
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= cfg.patience:
                state["done"] = True
        state["epoch"] += 1
        state["batch"] = 0
        state["done"] = state["done"] or step_limit
        if acc.is_main_process:
            save_checkpoint(ckpt_path, acc.unwrap_model(encoder), optimizer, scheduler, state)

    train_seconds = meter.seconds("train")
    record = meter.record(
        model=acc.unwrap_model(encoder), kind="train", samples=samples, tokens=tokens, seconds=train_seconds,
        extra={"setting": cfg.setting, "domain": cfg.domain, "tuning": cfg.tuning, "model": params.model.name_or_path,
               "examples_per_epoch": len(examples), "global_steps": state["global_step"], "world_size": world,
               "batch_size": cfg.batch_size * world * cfg.grad_accum, "examples_seen": state["global_step"] *
               cfg.batch_size * world * cfg.grad_accum, "user_max_tokens": params.model.user_max_tokens,
               "seed": cfg.seed, "provenance": provenance(LM_TRAINING_CODE)},
    )
    summary = {"epochs": state["epochs"], "best_valid_ndcg@10": state["best_ndcg"], "cost": record,
               "fingerprint": current, "provenance": record["provenance"]}
    if acc.is_main_process:
        (run_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
        (run_dir / "cost_train.json").write_text(json.dumps(record, indent=2))
        lines = ["step,epoch,loss", *(f"{s},{e},{l}" for s, e, l in state["log"])]
        (run_dir / "train_log.csv").write_text("\n".join(lines) + "\n")
    return summary

