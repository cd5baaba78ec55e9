"""WiSE-FT (`model.pretrained_mix`): the LM that evaluation and serving load is the tuned one moved a share of
the way back to the pre-trained weights, for full fine-tuning and for LoRA."""
import pytest
import torch

from llmrec_core.config import ModelConfig
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.settings import load_setting
from llmrec_core.evaluate.trained import lm_encoder, lm_weights_path
from llmrec_core.model.bundle import save_weights
from llmrec_core.train.loop import lm_bundle
from llmrec_core.model.inference import encode_items


def _params(sample_prepared, tiny_bert, run: str, mix: float, tuning: str = "fpft"):
    return sample_prepared(run, model={"name_or_path": str(tiny_bert), "pretrained_mix": mix}, tuning=tuning)


def _write_tuned_weights(params, items) -> dict[str, torch.Tensor]:
    """Weights as `llmrec train` saves them, each trained tensor moved by a seeded random step."""
    bundle = lm_bundle(params, items)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in bundle.encoder.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.05)
    path = lm_weights_path(params)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(bundle.encoder, path)
    return {k: v.clone() for k, v in bundle.encoder.state_dict().items()}


def test_full_fine_tuning_mixes_every_weight_with_the_pretrained_one(sample_prepared, tiny_bert):
    params = _params(sample_prepared, tiny_bert, "mix-fpft", 0.25)
    items = load_setting(DataLayout(params.data_root).prepared, "mixed").items
    tuned = _write_tuned_weights(params, items)
    pretrained = lm_bundle(params, items, tuning="fpft").encoder.state_dict()
    mixed = lm_encoder(params, items, tuned=True).encoder.state_dict()
    name = "backbone.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[name], pretrained[name])
    torch.testing.assert_close(mixed[name], 0.75 * tuned[name] + 0.25 * pretrained[name])

    unmixed = _params(sample_prepared, tiny_bert, "mix-fpft", 0.0)
    torch.testing.assert_close(lm_encoder(unmixed, items, tuned=True).encoder.state_dict()[name], tuned[name])
    # share 1 is the pre-trained LM: the same item vectors as the untuned model
    back = _params(sample_prepared, tiny_bert, "mix-fpft", 1.0)
    torch.testing.assert_close(encode_items(lm_encoder(back, items, tuned=True), len(items), 64),
                               encode_items(lm_encoder(back, items, tuned=False), len(items), 64))


def test_lora_scales_the_adapters_update_and_share_one_removes_it(sample_prepared, tiny_bert):
    params = _params(sample_prepared, tiny_bert, "mix-lora", 0.5, "lora")
    items = load_setting(DataLayout(params.data_root).prepared, "mixed").items
    tuned = _write_tuned_weights(params, items)
    mixed = lm_encoder(params, items, tuned=True).encoder.state_dict()
    b = [k for k in tuned if "lora_B" in k]
    a = [k for k in tuned if "lora_A" in k]
    assert b and a and any(tuned[k].abs().sum() > 0 for k in b)
    for k in b:
        torch.testing.assert_close(mixed[k], 0.5 * tuned[k])
    for k in a:
        torch.testing.assert_close(mixed[k], tuned[k])
    back = _params(sample_prepared, tiny_bert, "mix-lora", 1.0, "lora")
    torch.testing.assert_close(encode_items(lm_encoder(back, items, tuned=True), len(items), 64),
                               encode_items(lm_encoder(back, items, tuned=False), len(items), 64))


def test_a_projection_has_no_pretrained_weights_to_mix_with():
    with pytest.raises(ValueError, match="projection"):
        ModelConfig(projection_dim=16, pretrained_mix=0.5)
    assert ModelConfig(pretrained_mix=0.5).pretrained_mix == 0.5
    with pytest.raises(ValueError):
        ModelConfig(pretrained_mix=1.5)
