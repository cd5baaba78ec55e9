"""Model versions and the champion that serves.

MLflow's model registry keeps the list (a SQLite file, `<registry.dir>/registry.db`): one registered model
(`registry.model_name`), one model version per trained candidate with its validation metrics, data version, params
and commit as tags, and the alias `champion` on the version that serves. Each version's files (the weights its
served model needs, its index and its params) are copied to `<registry.dir>/versions/<n>/`; the pipeline tracks the
whole folder with DVC, so versions and their artefacts reach the DVC remote with `dvc push`.

A candidate goes live only if, scored as it would serve on its validation split, it is not worse than the champion
scored the same way on the same rows (`registry.metric`, within `registry.tolerance`). Every decision, kept or
promoted, is recorded on the version (tags `decision`, `reason`) and in `<registry.dir>/decisions.jsonl`.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from filelock import FileLock

from .config import Params, RegistryConfig
from .data.layout import DataLayout
from .errors import UserError
from .provenance import file_sha256, git_state

CHAMPION = "champion"
SNAPSHOT_SECTIONS = ("prepare", "model", "train", "sasrec", "seqhead", "eval", "index")
RUN_FOLDERS = {"train": "lm", "seqhead": "seqhead", "sasrec": "sasrec"}  # where a version keeps each model's files


class RegistryError(UserError):
    """A registry operation that cannot be done (unknown version, nothing to roll back to, missing files)."""


@dataclass(frozen=True)
class Version:
    """One registered model version: its number, where its files are, and what was recorded with it."""

    number: int
    folder: Path
    tags: dict
    created: str

    @property
    def kind(self) -> str:
        return self.tags.get("kind", "?")


@dataclass(frozen=True)
class Decision:
    """What the gate decided for a candidate, and why."""

    version: int
    promoted: bool
    reason: str
    metric: str
    candidate: float
    champion: float | None
    champion_version: int | None


def decide(candidate: float, champion: float | None, tolerance: float, metric: str) -> tuple[bool, str]:
    """The gate: promote if there is no champion, or if the candidate is at least the champion minus `tolerance`."""
    if champion is None:
        return True, "no champion yet"
    if candidate >= champion - tolerance:
        return True, f"{metric} {candidate:.4f} >= champion's {champion:.4f} - tolerance {tolerance:g}"
    return False, f"{metric} {candidate:.4f} < champion's {champion:.4f} - tolerance {tolerance:g}: the champion keeps serving"


def data_version(params: Params) -> str:
    """sha256 over the prepared data's files (names and bytes): the data a model was trained and validated on."""
    prepared = DataLayout(params.data_root).prepared
    if not prepared.is_dir():
        raise FileNotFoundError(f"{prepared}: no prepared data; run `llmrec prepare` first")
    digest = hashlib.sha256()
    for path in sorted(p for p in prepared.rglob("*") if p.is_file()):
        digest.update(path.relative_to(prepared).as_posix().encode() + b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def served_models(params: Params) -> list[str]:
    """The run folders (params sections) whose weights serving `index.model` loads."""
    if params.index.model == "llmrec":
        return ["train"]
    return ["train", "seqhead"] if params.seqhead.item_vectors == "tuned" else ["seqhead"]


def snapshot(params: Params) -> dict:
    """The params sections a version serves with; a local model directory becomes an absolute path."""
    sections = {name: getattr(params, name).model_dump(mode="json") for name in SNAPSHOT_SECTIONS}
    local = params.resolve(Path(params.model.name_or_path))
    if local.exists():
        sections["model"]["name_or_path"] = str(local)
    return sections


def version_params(live: Params, folder: Path) -> Params:
    """`live` (its data, services and registry) serving the version in `folder`: the version's own model, index and
    serving settings, its run folders inside `folder`."""
    sections = json.loads((folder / "params.json").read_text())
    raw = live.model_dump(mode="json")
    raw.update({name: sections[name] for name in SNAPSHOT_SECTIONS})
    for section, sub in RUN_FOLDERS.items():
        raw[section]["run_dir"] = str(folder / sub)
    return Params.model_validate({**raw, "base_dir": live.base_dir})


class ModelRegistry:
    """The registry of `params.registry`: versions, the champion, and the switches between them."""

    def __init__(self, params: Params):
        cfg: RegistryConfig = params.registry
        self.params, self.cfg = params, cfg
        self.dir = params.resolve(cfg.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.dir / ".lock"))
        self._client = None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient  # imported here: it takes seconds and only the registry needs it
            from mlflow.exceptions import MlflowException

            for name in ("mlflow", "alembic"):  # creating the tables is not news
                logging.getLogger(name).setLevel(logging.WARNING)

            uri = f"sqlite:///{self.dir / 'registry.db'}"
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            try:
                self._client.get_registered_model(self.cfg.model_name)
            except MlflowException:
                self._client.create_registered_model(self.cfg.model_name, description="llmrec recommenders")
        return self._client

    def _version(self, mv) -> Version:
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(mv.creation_timestamp / 1000))
        return Version(int(mv.version), self.dir / "versions" / str(mv.version), dict(mv.tags), created)

    def versions(self) -> list[Version]:
        found = self.client.search_model_versions(f"name='{self.cfg.model_name}'")
        return sorted((self._version(mv) for mv in found), key=lambda v: v.number)

    def get(self, number: int) -> Version:
        from mlflow.exceptions import MlflowException

        try:
            return self._version(self.client.get_model_version(self.cfg.model_name, str(number)))
        except MlflowException:
            raise RegistryError(f"no model version {number} in {self.dir} (see `llmrec models`)") from None

    def champion(self) -> Version | None:
        aliases = self.client.get_registered_model(self.cfg.model_name).aliases
        return self.get(int(aliases[CHAMPION])) if CHAMPION in aliases else None

    def history(self) -> list[int]:
        """The versions that served, oldest first (the last is the champion)."""
        tags = self.client.get_registered_model(self.cfg.model_name).tags
        return json.loads(tags.get("champion_history", "[]"))

    def _serve(self, number: int, why: str) -> Version:
        version = self.get(number)
        if not (version.folder / "params.json").is_file():
            raise RegistryError(f"version {number}'s files are missing from {version.folder} (`dvc pull` them)")
        self.client.set_registered_model_alias(self.cfg.model_name, CHAMPION, str(number))
        history = self.history() + [number]
        self.client.set_registered_model_tag(self.cfg.model_name, "champion_history", json.dumps(history[-100:]))
        self._log({"event": why, "version": number})
        return version

    def promote(self, number: int) -> Version:
        """Make `number` the champion (by hand: no gate)."""
        with self.lock:
            return self._serve(number, "promote")

    def rollback(self) -> Version:
        """Serve the version that served before the current champion."""
        with self.lock:
            history = self.history()
            current = history[-1] if history else None
            earlier = [n for n in history[:-1] if n != current]
            if not earlier:
                raise RegistryError("no earlier champion to roll back to")
            return self._serve(earlier[-1], "rollback")

    def register(self, params: Params, scores) -> Decision:
        """Copy the pipeline's trained model into a new version, gate it against the champion and record the
        decision. `scores(params) -> dict` gives a recommender's validation metrics as it serves (the candidate's
        params, or a version's)."""
        with self.lock:
            champion = self.champion()
            if champion is not None and self._unchanged(params, champion):
                reason = f"the pipeline's model is the champion's (version {champion.number}): nothing new to register"
                value = float(champion.tags.get("valid_served", "nan"))
                return Decision(champion.number, False, reason, self.cfg.metric, value, value, champion.number)
            staging = self.dir / "versions" / f".staging-{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            self._copy_run(params, staging)
            candidate = scores(params)
            champion_metrics = scores(version_params(params, champion.folder)) if champion else None
            metric = self.cfg.metric
            cand_value = candidate["overall"][metric]
            champ_value = champion_metrics["overall"][metric] if champion_metrics else None
            promoted, reason = decide(cand_value, champ_value, self.cfg.tolerance, metric)
            (staging / "validation_served.json").write_text(json.dumps(candidate, indent=2))
            tags = {"kind": params.index.model, "data_version": data_version(params),
                    "commit": git_state().get("commit") or "unknown", "params_sha256": _params_sha(staging),
                    "metric": metric, "valid_served": f"{cand_value:.6f}", "decision": "promoted" if promoted else "kept champion",
                    "reason": reason, "champion_at_registration": str(champion.number) if champion else "none"}
            mv = self.client.create_model_version(self.cfg.model_name, source=str(self.dir / "versions"),
                                                  tags={k: str(v) for k, v in tags.items()},
                                                  description=f"{params.index.model} trained in {params.train.run_dir}")
            folder = self.dir / "versions" / str(mv.version)
            shutil.rmtree(folder, ignore_errors=True)
            staging.rename(folder)
            self.client.update_model_version(self.cfg.model_name, str(mv.version), description=str(folder))
            decision = Decision(int(mv.version), promoted, reason, metric, cand_value, champ_value,
                                champion.number if champion else None)
            self._log({"event": "register", **asdict(decision)})
            if promoted:
                self._serve(decision.version, "gate")
            return decision

    def _unchanged(self, params: Params, version: Version) -> bool:
        """Whether the run folders hold exactly the weights `version` serves, with its serving params (a rerun of
        the pipeline that changed nothing)."""
        if json.loads((version.folder / "params.json").read_text()) != json.loads(json.dumps(snapshot(params))):
            return False
        for section in served_models(params):
            run = params.resolve(getattr(params, section).run_dir) / "weights.safetensors"
            kept = version.folder / RUN_FOLDERS[section] / "weights.safetensors"
            if not run.is_file() or not kept.is_file() or file_sha256(run) != file_sha256(kept):
                return False
        return True

    def _copy_run(self, params: Params, folder: Path) -> None:
        """The served model's weights, its index and the params, into `folder` (run folders as RUN_FOLDERS)."""
        from .serve.recommend import index_dir

        for section in served_models(params):
            source = params.resolve(getattr(params, section).run_dir) / "weights.safetensors"
            if not source.is_file():
                raise FileNotFoundError(f"{source}: no trained weights to register (run the pipeline first)")
            (folder / RUN_FOLDERS[section]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, folder / RUN_FOLDERS[section] / "weights.safetensors")
        index = index_dir(params)
        if not (index / "items.faiss").is_file():
            raise FileNotFoundError(f"{index}: no index to register (run `llmrec index` first)")
        served = "seqhead" if params.index.model == "seqhead" else "train"
        shutil.copytree(index, folder / RUN_FOLDERS[served] / "index")
        for name in ("metrics_valid.json", "metrics_test.json", "train_metrics.json"):
            source = params.resolve(params.train.run_dir) / name
            if source.is_file():
                shutil.copy2(source, folder / name)
        (folder / "params.json").write_text(json.dumps(snapshot(params), indent=2))

    def _log(self, record: dict) -> None:
        record = {"at": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        with open(self.dir / "decisions.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())


def _params_sha(folder: Path) -> str:
    return hashlib.sha256((folder / "params.json").read_bytes()).hexdigest()[:16]


def serving_params(params: Params) -> tuple[Params, Version | None]:
    """What `llmrec serve` serves: the registry's champion when there is one, else the pipeline's run folders."""
    if not (params.resolve(params.registry.dir) / "registry.db").is_file():
        return params, None
    champion = ModelRegistry(params).champion()
    return (version_params(params, champion.folder), champion) if champion else (params, None)
