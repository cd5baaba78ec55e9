"""A run's trained models, found in its folders (`train.run_dir`, `<head>.run_dir`) and loaded through model/.

The one place that maps params to the weights a run wrote: evaluation, the sequence head's training (which reads
the fine-tuned LM's title vectors) and serving load them here, so model/ sees only its own config.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..config import Params
from ..model.bundle import EncoderBundle, build_bundle, tuned_encoder
from ..model.sequence import HeadEnsemble, SASRec, load_head


def lm_weights_path(params: Params) -> Path:
    """LLM-Rec's fine-tuned LM weights (`llmrec train` writes them to `train.run_dir`)."""
    return params.resolve(params.train.run_dir) / "weights.safetensors"


def lm_encoder(params: Params, items: pd.DataFrame, tuned: bool) -> EncoderBundle:
    """The LM of `params.model` in eval mode with `items`' tokens: LLM-Rec's fine-tuned LM (`tuned`, from
    `lm_weights_path`, mixed back toward pre-trained by `model.pretrained_mix`) or the LM as pre-trained. The one
    way evaluation, serving and the sequence head load it."""
    t = params.train
    bundle = build_bundle(params.model, params.base_dir, items, tuning=t.tuning if tuned else "fpft", lora=t.lora,
                          frozen_layers=t.frozen_layers)
    if tuned:
        return tuned_encoder(bundle, lm_weights_path(params), params.model.pretrained_mix)
    bundle.encoder.eval()
    return bundle


def load_sasrec(params: Params, n_items: int, head: str = "sasrec") -> SASRec | HeadEnsemble:
    """The trained SASRec or sequence head (`head`: sasrec | seqhead) of the run, in eval mode."""
    cfg = getattr(params, head)
    return load_head(params.resolve(cfg.run_dir) / "weights.safetensors", n_items, cfg, head)
