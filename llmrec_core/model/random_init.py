"""Random-init decoders of standard sizes, for cost measurements only (no quality claims).

Offline there are no pre-trained weights beyond ~135M, so cost across sizes is measured with
OPT-style configs of the usual shapes and random weights, saved like any local model directory
(safetensors + MiniLM's tokenizer, whose 30,522-token vocabulary sets the embedding size).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

# name: (hidden, layers, heads, ffn) -- OPT's published shapes, plus a ~40M one below OPT-125M
OPT_SHAPES = {
    "opt-40m": (512, 8, 8, 2048),
    "opt-125m": (768, 12, 12, 3072),
    "opt-350m": (1024, 24, 16, 4096),
    "opt-1.3b": (2048, 24, 32, 8192),
}


def write_random_opt(name: str, out: Path, seed: int = 0) -> Path:
    import torch
    from transformers import AutoTokenizer, OPTConfig, OPTModel

    from .encoder import resolve_model_path

    if name not in OPT_SHAPES:
        raise ValueError(f"unknown size {name!r}; have {', '.join(OPT_SHAPES)}")
    hidden, layers, heads, ffn = OPT_SHAPES[name]
    tokenizer_dir = resolve_model_path("minilm")
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / f).is_file():
            shutil.copy(tokenizer_dir / f, out / f)
    config = OPTConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                       num_attention_heads=heads, ffn_dim=ffn, word_embed_proj_dim=hidden,
                       max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id,
                       bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    torch.manual_seed(seed)
    OPTModel(config).save_pretrained(out, safe_serialization=True)
    (out / "origin.json").write_text(json.dumps({"weights": "random-init", "source": f"OPT shape {name}"}, indent=2))
    return out
