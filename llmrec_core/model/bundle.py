"""Build the LM encoder and its cached item/user tokens from its config, and save/load tuned weights."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from ..config import LoraSettings, ModelConfig
from .encoder import (RecEncoder, apply_lora, freeze_lower_layers, load_backbone, load_tokenizer,
                      resolve_model_path)
from .text import TextTokens


@dataclass
class EncoderBundle:
    """The LM encoder with the tokens of every catalogue title, and where the model came from."""

    encoder: RecEncoder
    tokens: TextTokens
    model_path: Path


def build_bundle(cfg: ModelConfig, base_dir: Path, items: pd.DataFrame, tuning: str = "fpft",
                 lora: LoraSettings | None = None, frozen_layers: int | None = None) -> EncoderBundle:
    """The encoder of `cfg` (a path relative to `base_dir`), with LoRA adapters (`lora`) when `tuning` is lora, else
    with its lowest `frozen_layers` frozen; and the tokens of `items`' titles."""
    path = resolve_model_path(cfg.name_or_path, base_dir)
    tokenizer = load_tokenizer(path)
    encoder = RecEncoder(load_backbone(path, cfg.gradient_checkpointing), cfg.pooling, cfg.projection_dim)
    if tuning == "lora":
        lora = lora or LoraSettings()
        encoder = apply_lora(encoder, lora.r, lora.alpha, lora.dropout, lora.target_modules)
    elif frozen_layers is not None:
        freeze_lower_layers(encoder.backbone, frozen_layers)
    tokens = TextTokens(tokenizer, items["title"].tolist(), items["domain"].tolist(), cfg.item_template, cfg.separator,
                        cfg.item_max_tokens, cfg.user_max_tokens)
    return EncoderBundle(encoder, tokens, path)


def tuned_encoder(bundle: EncoderBundle, weights: Path, pretrained_mix: float = 0.0) -> EncoderBundle:
    """`bundle` with the tuned `weights` loaded (moved `pretrained_mix` of the way back to the pre-trained ones,
    `mix_pretrained`), in eval mode."""
    before = {k: v.clone() for k, v in bundle.encoder.state_dict().items()} if pretrained_mix else None
    load_weights(bundle.encoder, weights)
    if pretrained_mix:
        mix_pretrained(bundle.encoder, before, pretrained_mix)
    bundle.encoder.eval()
    return bundle


@torch.no_grad()
def mix_pretrained(encoder: torch.nn.Module, before: dict[str, torch.Tensor], share: float) -> None:
    """WiSE-FT (Wortsman et al., 2022): the tuned weights moved `share` of the way back to the pre-trained ones
    (`before`: the encoder's state before the tuned weights were loaded). Fine-tuning on a small budget narrows
    what the LM knows about text that training never showed; the mix keeps part of it for items training
    never saw. For LoRA the adapter's update B·A is scaled by 1 − share (B alone), which is the same mix of the
    merged weights."""
    for name, param in encoder.named_parameters():
        if "lora_B" in name:
            param.mul_(1.0 - share)
        elif "lora_A" not in name:  # weights that did not train are equal to `before`: the mix leaves them
            param.lerp_(before[name].to(param.dtype), share)


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that train: all for full fine-tuning (less any frozen lower layers), the adapter for LoRA."""
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in names}


def save_weights(encoder: torch.nn.Module, path: Path) -> None:
    """The tuned weights only (all of them for FPFT, the adapter for LoRA), as safetensors."""
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in trainable_state(encoder).items()}, str(tmp))
    tmp.replace(path)


def load_weights(encoder: torch.nn.Module, path: Path) -> None:
    """Load tuned weights (save_weights' file) into `encoder`; refuses weights of another model."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no trained weights; run `llmrec train` first")
    state = load_file(str(path))
    unknown = set(state) - set(encoder.state_dict())
    if unknown:
        raise ValueError(f"{path}: weights do not match the configured model ({sorted(unknown)[:3]} ...)")
    encoder.load_state_dict(state, strict=False)
