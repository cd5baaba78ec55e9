"""Training SASRec and LLM-Rec's sequence head (model/sequence.py): full-softmax next-item cross-entropy at every
position of every training window, validating every `eval_every` epochs and keeping the best weights; one
checkpoint dict resumes a killed run."""
from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from ..config import Params
from ..cost import CostMeter
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..evaluate.ranking import select_rows
from ..evaluate.sequence import evaluate_sasrec
from ..evaluate.trained import lm_encoder, lm_weights_path
from ..model.inference import best_device, encode_items
from ..model.sequence import HeadEnsemble, SASRec, build_head, head_members, member_seeds, pad_left
from ..provenance import SASREC_TRAINING_CODE, fingerprint, non_default, provenance
from ..data.stage import run_folder_lock
from .checkpoint import decide_resume, load_checkpoint, save_checkpoint


def training_windows(data: SettingData, max_len: int) -> np.ndarray:
    """Windows of `max_len + 1` items (ids + 1, left-padded) covering every position of every training
    sequence once as a target: each sequence's windows end at its last item and step back by `max_len`."""
    offsets = data.seq_offsets
    lengths = np.diff(offsets)
    targets = np.clip(lengths - 1, 0, None)  # positions 1 .. n-1 of a sequence are targets
    per_seq = -(-targets // max_len)  # ceil
    seq = np.repeat(np.arange(len(lengths)), per_seq)
    back = np.arange(per_seq.sum()) - np.repeat(np.cumsum(per_seq) - per_seq, per_seq)  # 0, 1, .. within a sequence
    ends = offsets[1:][seq] - back * max_len
    starts = np.maximum(offsets[:-1][seq], ends - max_len - 1)
    return pad_left(data.seq_values, starts, ends - starts, max_len + 1)


def tuned_lm_digest(params: Params) -> str:
    """sha256 (16 hex digits) of LLM-Rec's fine-tuned LM weights, whose title vectors a head with
    `seqhead.item_vectors: tuned` reads; a clear error when the LM has not been trained."""
    path = lm_weights_path(params)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: `seqhead.item_vectors: tuned` reads LLM-Rec's fine-tuned LM; "
                                "run `llmrec train` (the LM) first")
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def item_text_vectors(params: Params, items: pd.DataFrame) -> torch.Tensor:
    """Every item title's vector from the LM the sequence head reads (`seqhead.item_vectors`): as pre-trained,
    or LLM-Rec's fine-tuned one."""
    bundle = lm_encoder(params, items, params.seqhead.item_vectors == "tuned")
    bundle.encoder.to(best_device())
    return encode_items(bundle, len(items), params.eval.batch_size)


def head_fingerprint(params: Params, head: str) -> str:
    """What a head's checkpoint was trained from: its config, the setting, the prepared data and the code."""
    cfg, setting = getattr(params, head), params.train
    # epochs and patience may grow on resume: the learning rate is constant, so the path so far is the same
    config = {head: non_default(cfg, {"run_dir", "epochs", "patience"}), "setting": [setting.setting, setting.domain],
              "prepare": non_default(params.prepare)}
    if head == "seqhead":  # its item vectors come from the LM
        config["model"] = non_default(params.model)
        if cfg.item_vectors == "tuned":  # ... as LLM-Rec fine-tuned it: a retrained LM makes the head stale
            config["lm_weights"] = tuned_lm_digest(params)
    return fingerprint(config, DataLayout(params.data_root).prepared / "manifest.json", SASREC_TRAINING_CODE)


def log_prior(data: SettingData) -> np.ndarray:
    """log of each item's share of the training events (add-one smoothed): the prior of logit adjustment."""
    counts = data.train_counts() + 1.0
    return np.log(counts / counts.sum())


def window_loss(model: SASRec, batch: torch.Tensor, unknown: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
    """Full-softmax cross-entropy of every target of a batch of windows, and how many targets. `unknown` (bool per
    item) marks items that do not exist at training time: no column of the softmax. `offset` (per item) is added
    to the logits in training only: `logit_adjustment` times the log prior (Menon et al., 2021), so the scores
    used at inference are fit to rank as if every item were equally frequent, which lifts tail items."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    valid = (inputs > 0) & (targets > 0)
    table = model.item_table()  # one ID dropout draw for the step's inputs and outputs
    logits = model(inputs, table)[valid] @ table[1:].T
    if offset is not None:
        logits = logits + offset
    if unknown is not None:
        logits = logits.masked_fill(unknown, float("-inf"))
    return F.cross_entropy(logits, targets[valid] - 1), int(valid.sum())


def train_epoch(model: SASRec | HeadEnsemble, optimizer: torch.optim.Optimizer, windows: np.ndarray, cfg,
                epoch: int, device: torch.device, unknown: torch.Tensor | None = None,
                offset: torch.Tensor | None = None) -> tuple[int, torch.Tensor]:
    """One pass over the training windows (`window_loss` per batch): each network (an ensemble's members too, see
    `member_seeds`) in its own (seed, epoch) order and with its own loss, as if it trained alone. Returns (targets
    trained on, summed over networks; the last batch's loss, averaged over them)."""
    members = head_members(model)
    orders = [np.random.default_rng([seed, epoch]).permutation(len(windows)) for seed in member_seeds(cfg)]
    model.train()
    samples = 0
    for s in range(0, len(windows), cfg.batch_size):
        optimizer.zero_grad()
        losses = []
        for member, order in zip(members, orders):
            batch = torch.from_numpy(windows[order[s: s + cfg.batch_size]]).to(device)
            loss, n_targets = window_loss(member, batch, unknown, offset)
            loss.backward()
            losses.append(loss.detach())
            samples += n_targets
        optimizer.step()
    return samples, torch.stack(losses).mean()


def train_sasrec(params: Params, resume: bool | str = False, show_progress: bool = True,
                 head: str = "sasrec") -> dict:
    """Train SASRec (`head="sasrec"`) or LLM-Rec's sequence head (`head="seqhead"`) with its config section on the
    prepared data's `train.setting`; writes weights.safetensors (the best validation), checkpoint.pt,
    train_metrics.json and cost_train.json to the head's `run_dir`. One training per run folder: a second one is
    refused (StageBusy) with the holder's pid, host and command."""
    with run_folder_lock(params.resolve(getattr(params, head).run_dir), f"llmrec train --model {head}"):
        return _train_head(params, resume, show_progress, head)


def _train_head(params: Params, resume: bool | str, show_progress: bool, head: str) -> dict:
    cfg, setting = getattr(params, head), params.train
    run_dir = params.resolve(cfg.run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    current = head_fingerprint(params, head)
    resume = decide_resume(ckpt_path, resume, current, [run_dir / "weights.safetensors"])
    torch.manual_seed(cfg.seed)
    meter = CostMeter(params.cost)
    with meter.phase("load"):
        data = load_setting(DataLayout(params.data_root).prepared, setting.setting, setting.domain)
        windows = training_windows(data, cfg.max_len)
        valid_rows = select_rows(data, "valid", params.eval.max_valid_users, params.eval.seed)
    if not len(windows):
        raise ValueError(f"setting {setting.setting} has no training sequence of two or more items")
    text = known = None
    if head == "seqhead":
        with meter.phase("encode_items"):
            text = item_text_vectors(params, data.items)
        known = torch.from_numpy(data.train_counts() > 0)
        torch.manual_seed(cfg.seed)  # the same initial weights whatever encoding drew
    device = best_device()
    known_at_training = data.known_items()
    unknown = None if known_at_training is None else torch.from_numpy(~known_at_training).to(device)
    offset = (torch.from_numpy(cfg.logit_adjustment * log_prior(data)).float().to(device)
              if cfg.logit_adjustment else None)
    model = build_head(len(data.items), cfg, text, known).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant; kept for the checkpoint
    state = {"epoch": 0, "best_ndcg": -1.0, "bad_evals": 0, "evals": [], "done": False, "fingerprint": current}
    if resume:
        state = load_checkpoint(ckpt_path, model, optimizer, scheduler)
        if (state["done"] or state["epoch"] >= cfg.epochs) and (run_dir / "train_metrics.json").is_file():
            return json.loads((run_dir / "train_metrics.json").read_text())  # finished: keep its record
    first_epoch = state["epoch"]
    run_dir.mkdir(parents=True, exist_ok=True)

    samples, started = 0, time.perf_counter()
    while not state["done"] and state["epoch"] < cfg.epochs:
        epoch = state["epoch"]
        with meter.phase("train"):
            samples_done, loss = train_epoch(model, optimizer, windows, cfg, epoch, device, unknown, offset)
        samples += samples_done
        state["epoch"] = epoch + 1
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.epochs:
            with meter.phase("validate"):
                ndcg = evaluate_sasrec(model, valid_rows, data, params)["overall"].get("ndcg@10", 0.0)
            state["evals"].append({"epoch": state["epoch"], "loss": float(loss.item()), "valid_ndcg@10": ndcg})
            if show_progress:
                print(f"{head} epoch {state['epoch']}: loss {loss.item():.4f}  valid NDCG@10 {ndcg:.4f}", flush=True)
            if ndcg > state["best_ndcg"]:
                state["best_ndcg"], state["bad_evals"] = ndcg, 0
                save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                          run_dir / "weights.safetensors")
            else:
                state["bad_evals"] += 1
                state["done"] = state["bad_evals"] >= cfg.patience
        save_checkpoint(ckpt_path, model, optimizer, scheduler, state)

    return head_records(model, head, params, windows, state, meter, samples, first_epoch,
                        time.perf_counter() - started, current)


def head_records(model: SASRec | HeadEnsemble, head: str, params: Params, windows: np.ndarray, state: dict,
                 meter: CostMeter, samples: int, first_epoch: int, wall_s: float, run_fingerprint: str) -> dict:
    """The head's summary (validations, cost per epoch and per 1k targets) written with its cost record."""
    cfg, setting = getattr(params, head), params.train
    targets_per_epoch = int(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum())
    seconds_per_epoch = meter.seconds("train") / max(state["epoch"] - first_epoch, 1)
    record = meter.record(model, kind="train", samples=samples, seconds=meter.seconds("train"),
                          extra={"model": head, "setting": setting.setting, "domain": setting.domain,
                                 "epochs_run": state["epoch"], "seconds_per_epoch": round(seconds_per_epoch, 3),
                                 "targets_per_epoch": targets_per_epoch, "max_len": cfg.max_len, "seed": cfg.seed,
                                 "seconds_per_1k_targets": round(1000 * seconds_per_epoch / max(targets_per_epoch, 1), 4),
                                 "provenance": provenance(SASREC_TRAINING_CODE)})
    summary = {"evals": state["evals"], "best_valid_ndcg@10": state["best_ndcg"], "cost": record,
               "wall_s": round(wall_s, 2), "fingerprint": run_fingerprint, "provenance": record["provenance"]}
    run_dir = params.resolve(cfg.run_dir)
    (run_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "cost_train.json").write_text(json.dumps(record, indent=2))
    return summary
