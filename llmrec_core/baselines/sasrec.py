"""SASRec (Kang & McAuley, 2018): the ID-based sequential baseline, in the same harness and splits.

A causal self-attention encoder over item-id embeddings; the last position's state scores every item
by dot product with the (shared) item embeddings, which are scaled by sqrt(hidden) on input as in the
paper. Trained with cross-entropy over all items of the setting (RecBole's `loss_type: CE`) at every
position of every training sequence: a sequence longer than `max_len + 1` is cut into windows of
`max_len + 1` items that end at its last item and step back by `max_len`, so each training target is
predicted exactly once per epoch, from up to `max_len` earlier items. Evaluation reads up to `max_len`
items of the user's past in the setting. Sequences are left-padded; padded positions attend only to
themselves, so no real position ever sees padding and no row of the attention is empty.

The same network is LLM-Rec's sequence head (`seqhead`, UniSRec-style) when it is given `text`, the
pre-trained LM's vector of every item title: an item's embedding is then a learned projection of its
text vector plus, with `item_ids`, an ID embedding that starts at zero and is dropped per item with
probability `id_dropout` in training. Only items seen in training have an ID embedding (`known`): any
other item, a new one included, is ranked by its title alone, and ID dropout keeps that ranking trained.
"""
from __future__ import annotations

import json
import math
import time

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import Params, SasrecConfig
from ..cost import CostMeter
from ..data.layout import DataLayout
from ..data.settings import SettingData, load_setting
from ..evaluate.metrics import breakdown
from ..evaluate.ranking import vector_scores
from ..provenance import SASREC_TRAINING_CODE, fingerprint, provenance
from ..train.checkpoint import decide_resume, load_checkpoint, save_checkpoint


class SASRec(nn.Module):
    def __init__(self, n_items: int, cfg: SasrecConfig, max_len: int, text: torch.Tensor | None = None,
                 known: torch.Tensor | None = None):
        super().__init__()
        self.max_len, self.heads, self.scale = max_len, cfg.heads, math.sqrt(cfg.hidden)
        self.id_dropout = getattr(cfg, "id_dropout", 0.0) if text is not None else 0.0
        self.items = None
        if text is None or getattr(cfg, "item_ids", False):
            self.items = nn.Embedding(n_items + 1, cfg.hidden, padding_idx=0)  # id 0 is padding
            if text is None:
                nn.init.normal_(self.items.weight, std=0.02)
            else:
                nn.init.zeros_(self.items.weight)
        self.text_proj = None
        if text is not None:
            self.register_buffer("text", F.normalize(text.float(), dim=-1))
            self.text_proj = nn.Linear(text.shape[1], cfg.hidden)
            if self.items is not None:  # 1.0 for items with an ID embedding (seen in training), else 0.0
                self.register_buffer("known", torch.ones(n_items, 1) if known is None else known.float().reshape(-1, 1))
        self.positions = nn.Embedding(max_len, cfg.hidden)
        layer = nn.TransformerEncoderLayer(cfg.hidden, cfg.heads, cfg.hidden * 4, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.dropout = nn.Dropout(cfg.dropout)
        nn.init.normal_(self.positions.weight, std=0.02)

    def item_table(self) -> torch.Tensor:
        """[n_items + 1, H] item embeddings, row 0 padding. In training, a fresh ID dropout per call: use one
        table for a step's inputs and outputs."""
        if self.text_proj is None:
            return self.items.weight
        vectors = self.text_proj(self.text)
        if self.items is not None:
            ids = self.items.weight[1:] * self.known
            if self.training and self.id_dropout:
                ids = ids * (torch.rand(len(ids), 1, device=ids.device) >= self.id_dropout)
            vectors = vectors + ids
        return torch.cat([vectors.new_zeros(1, vectors.shape[1]), vectors])

    def forward(self, seq: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """seq: [B, L] item ids + 1, left-padded with 0 -> hidden states [B, L, H]."""
        L = seq.shape[1]
        pad = seq == 0
        table = self.item_table() if table is None else table
        x = F.embedding(seq, table, padding_idx=0) * self.scale + self.positions.weight[-L:]
        x = self.dropout(x).masked_fill(pad[..., None], 0.0)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        future = torch.ones(L, L, dtype=torch.bool, device=seq.device).triu(1)
        blocked = future | (pad[:, None, :] & ~eye)  # True = may not attend
        h = self.blocks(x, mask=blocked.repeat_interleave(self.heads, dim=0))
        return self.norm(h)

    def item_vectors(self) -> torch.Tensor:
        return self.item_table()[1:]

    @torch.no_grad()
    def user_vectors(self, seqs: np.ndarray, batch_size: int = 1024) -> torch.Tensor:
        table = self.item_table()
        out = [self(torch.from_numpy(seqs[s: s + batch_size]).to(table.device), table)[:, -1].cpu()
               for s in range(0, len(seqs), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, table.shape[1])


def pad_left(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray, width: int) -> np.ndarray:
    """The last `width` items of each ragged row as ids + 1, left-padded with 0 (vectorised)."""
    ends = starts + lengths
    pos = ends[:, None] - width + np.arange(width)[None, :]
    valid = pos >= starts[:, None]
    return np.where(valid, values[np.clip(pos, 0, None)] + 1, 0).astype(np.int64)


def history_matrix(histories: pd.Series, width: int) -> np.ndarray:
    arrays = [np.asarray(h, dtype=np.int64) for h in histories]
    lengths = np.fromiter((len(a) for a in arrays), dtype=np.int64, count=len(arrays))
    values = np.concatenate(arrays) if lengths.sum() else np.zeros(1, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return pad_left(values, starts, lengths, width)


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


def sasrec_histories(rows: pd.DataFrame, data: SettingData, setting: str) -> list[np.ndarray]:
    """What SASRec reads for each eval row: the user's whole past in the setting, of which the model keeps the
    last `max_len` (the rows' `history` is only the LM's window). Per-domain settings see the target's domain."""
    if setting not in ("s2piao", "single_domain"):
        return list(rows["seen"])
    ranges = data.domain_ranges
    bounds = np.array([ranges[d] for d in rows["domain"]], dtype=np.int64).reshape(-1, 2)
    return [s[(s >= lo) & (s < hi)] for s, (lo, hi) in zip(rows["seen"], bounds)]


def evaluate_sasrec(model: SASRec, rows: pd.DataFrame, data: SettingData, params: Params,
                    return_ranks: bool = False):
    from ..evaluate.run import rank_rows

    was_training = model.training
    model.eval()
    histories = pd.Series(sasrec_histories(rows, data, params.train.setting), dtype=object)
    users = model.user_vectors(history_matrix(histories, model.max_len))
    with torch.no_grad():
        ranks = rank_rows(params, vector_scores(users, model.item_vectors().detach().cpu()), rows, data)
    model.train(was_training)
    result = breakdown(rows, ranks, params.eval.ks)
    return (result, ranks) if return_ranks else result


HEADS = ("sasrec", "seqhead")  # the ID baseline, and LLM-Rec's sequence head over the LM's item vectors


def item_text_vectors(params: Params, items: pd.DataFrame) -> torch.Tensor:
    """Every item title's vector from the pre-trained (untuned) LM of `model`: what the sequence head reads."""
    from ..evaluate.run import best_device, encode_items
    from ..model.bundle import build_bundle

    bundle = build_bundle(params, items, tuning="fpft")
    bundle.encoder.eval().to(best_device())
    return encode_items(bundle, len(items), params.eval.batch_size)


def load_sasrec(params: Params, n_items: int, head: str = "sasrec") -> SASRec:
    cfg = getattr(params, head)
    path = params.resolve(cfg.run_dir) / "weights.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run `llmrec train --model {head}` first")
    state = load_file(path)
    model = SASRec(n_items, cfg, cfg.max_len, state.get("text"))
    model.load_state_dict(state)
    return model.eval()


def train_sasrec(params: Params, resume: bool | str = False, show_progress: bool = True,
                 head: str = "sasrec") -> dict:
    """Train SASRec (`head="sasrec"`) or LLM-Rec's sequence head (`head="seqhead"`) with its config section."""
    from ..evaluate.run import best_device, select_rows

    cfg, setting = getattr(params, head), params.train
    run_dir = params.resolve(cfg.run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    # epochs and patience may grow on resume: the learning rate is constant, so the path so far is the same
    config = {head: cfg.model_dump(exclude={"run_dir", "epochs", "patience"}, exclude_defaults=True),
              "setting": [setting.setting, setting.domain], "prepare": params.prepare.model_dump(exclude_defaults=True)}
    code = SASREC_TRAINING_CODE
    if head == "seqhead":  # its item vectors come from the LM
        config["model"] = params.model.model_dump(exclude_defaults=True)
        code = tuple(sorted({*code, "model"}))
    current = fingerprint(config, DataLayout(params.data_root).prepared / "manifest.json", code)
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
        known = torch.from_numpy(np.bincount(data.seq_values, minlength=len(data.items)) > 0)
        torch.manual_seed(cfg.seed)  # the same initial weights whatever encoding drew
    device = best_device()
    model = SASRec(len(data.items), cfg, cfg.max_len, text, known).to(device)
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
        order = np.random.default_rng([cfg.seed, epoch]).permutation(len(windows))
        model.train()
        with meter.phase("train"):
            for s in range(0, len(order), cfg.batch_size):
                batch = torch.from_numpy(windows[order[s: s + cfg.batch_size]]).to(device)
                inputs, targets = batch[:, :-1], batch[:, 1:]
                valid = (inputs > 0) & (targets > 0)
                table = model.item_table()  # one ID dropout draw for the step's inputs and outputs
                hidden = model(inputs, table)[valid]
                loss = F.cross_entropy(hidden @ table[1:].T, targets[valid] - 1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                samples += int(valid.sum())
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

    targets_per_epoch = int(((windows[:, :-1] > 0) & (windows[:, 1:] > 0)).sum())
    seconds_per_epoch = meter.seconds("train") / max(state["epoch"] - first_epoch, 1)
    record = meter.record(model, kind="train", samples=samples, seconds=meter.seconds("train"),
                          extra={"model": head, "setting": setting.setting, "domain": setting.domain,
                                 "epochs_run": state["epoch"], "seconds_per_epoch": round(seconds_per_epoch, 3),
                                 "targets_per_epoch": targets_per_epoch, "max_len": cfg.max_len, "seed": cfg.seed,
                                 "seconds_per_1k_targets": round(1000 * seconds_per_epoch / max(targets_per_epoch, 1), 4),
                                 "provenance": provenance(code)})
    summary = {"evals": state["evals"], "best_valid_ndcg@10": state["best_ndcg"], "cost": record,
               "wall_s": round(time.perf_counter() - started, 2), "fingerprint": current,
               "provenance": record["provenance"]}
    (run_dir / "train_metrics.json").write_text(json.dumps(summary, indent=2))
    (run_dir / "cost_train.json").write_text(json.dumps(record, indent=2))
    return summary
