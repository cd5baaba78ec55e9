"""Build the encoder and its cached item/user tokens from params, and save/load tuned weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..config import Params
from ..train.checkpoint import trainable_state
from .encoder import RecEncoder, apply_lora, load_backbone, load_tokenizer, resolve_model_path
from .text import TextTokens


@dataclass
class EncoderBundle:
    encoder: RecEncoder
    tokens: TextTokens
    model_path: Path


def build_bundle(params: Params, items: pd.DataFrame, tuning: str | None = None) -> EncoderBundle:
    m = params.model
    path = resolve_model_path(m.name_or_path, params.base_dir)
    tokenizer = load_tokenizer(path)
    encoder = RecEncoder(load_backbone(path, m.gradient_checkpointing), m.pooling, m.projection_dim)
    if (tuning or params.train.tuning) == "lora":
        lora = params.train.lora
        encoder = apply_lora(encoder, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    tokens = TextTokens(tokenizer, items["title"].tolist(), items["domain"].tolist(), m.item_template, m.separator,
                        m.item_max_tokens, m.user_max_tokens)
    return EncoderBundle(encoder, tokens, path)


def save_weights(encoder: torch.nn.Module, path: Path) -> None:
    """The tuned weights only (all of them for FPFT, the adapter for LoRA), as safetensors."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in trainable_state(encoder).items()}, str(tmp))
    tmp.replace(path)


def load_weights(encoder: torch.nn.Module, path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained weights; run `llmrec train` first")
    state = load_file(str(path))
    unknown = set(state) - set(encoder.state_dict())
    if unknown:
        raise ValueError(f"{path}: weights do not match the configured model ({sorted(unknown)[:3]} ...)")
    encoder.load_state_dict(state, strict=False)
