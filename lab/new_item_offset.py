"""The serving offset of new items (`index.new_item_offset`, `index.new_item_offset_calibration`): measured over
finished runs, and chosen on a tuning window.

The sequence head over the fine-tuned LM ranks new items (title only: no ID embedding) about as well among
themselves as the untuned LM does, but scores them below the warm items, whose ID embeddings carry most of their
score (the report's section on new items shows by how much). An offset added to the score of every item the head
has no ID embedding for (model/new_item_offsets.py: `new_item_offset` for every user, and with calibration more for
users whose recent items are new) lifts new items through the whole ranking and changes neither the order among
new items nor the order among warm ones; what it costs on warm targets is only the competition for the top slots.

`measure_offsets` ranks a finished run's test targets at each offset, alone and with calibration, through the
evaluator's own functions (the same rows, histories and exclusions as `llmrec evaluate`, so the ranks pair with
every model's), and writes `offset_test.parquet` (a rank column per setting) and `offset_test.json` (metrics per
setting and provenance) in the run folder. `choose_offset` picks, on a tuning window before the test window, the
smallest offset at which the head ranks new-item targets at least as well as the untuned LM (text-only ranking,
which gains on warm items must not cost): the least cost on warm targets that keeps the text model's edge on new
items.

Records measured before the offset had one name call it a "boost" (`boost_test.json`, `boost_test.parquet`, the
record's "boosts", rank columns `rank_seqhead_boost_<setting>`); `read_offsets` reads them through LEGACY_NAMES.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec_core.config import Params, load_params
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.settings import load_setting
from llmrec_core.errors import UserError
from llmrec_core.evaluate.metrics import breakdown
from llmrec_core.evaluate.ranking import ScoreFn, rank_rows, select_rows, vector_scores
from llmrec_core.evaluate.sequence import sasrec_histories
from llmrec_core.evaluate.trained import load_sasrec
from llmrec_core.model.sequence import history_matrix
from llmrec_core.provenance import EXPERIMENT_CODE, provenance
from llmrec_core.model.new_item_offsets import new_item_offsets, recent_flags
from llmrec_core.model.sequence import score_temperature, unknown_items

from .experiments import has_results, read_stamp, run_folder, select_runs

# The product code a measurement runs (relative to llmrec_core/); this module itself is named by the commit.
OFFSET_CODE = (*EXPERIMENT_CODE, "serve/towers.py", "model/new_item_offsets.py")
RANKS, RECORD = "offset_test.parquet", "offset_test.json"
SETTINGS, COLUMN_PREFIX = "offsets", "rank_seqhead_offset_"  # RECORD's metrics per setting; RANKS' rank columns
# The names of records written when the offset was still called a boost: read as they are, never rewritten.
LEGACY_NAMES = {RANKS: "boost_test.parquet", RECORD: "boost_test.json", SETTINGS: "boosts",
                COLUMN_PREFIX: "rank_seqhead_boost_"}


def with_offset(score: ScoreFn, unknown: np.ndarray, offset: float | np.ndarray) -> ScoreFn:
    """`score` plus `offset` on the columns of unknown items: one number, or one per row (indexed like the rows)."""
    flags = torch.from_numpy(unknown.astype(np.float32))
    per_row = torch.as_tensor(np.asarray(offset, dtype=np.float32).reshape(-1, 1))

    def scored(rows: np.ndarray, start: int, end: int) -> torch.Tensor:
        offsets = per_row if per_row.numel() == 1 else per_row[torch.from_numpy(rows)]
        return score(rows, start, end) + offsets * flags[start:end]
    return scored


def setting_label(offset: float, calibrated: bool) -> str:
    """A measured setting's key in RECORD: the offset, and "+cal" where `index.new_item_offset_calibration` is on."""
    return f"{offset:g}+cal" if calibrated else f"{offset:g}"


def parse_setting(label: str) -> tuple[float, bool]:
    return float(label.removesuffix("+cal")), label.endswith("+cal")


def settings_in_order(record: dict) -> list[str]:
    """RECORD's settings, plain ones first, each by offset."""
    return sorted(record[SETTINGS], key=lambda label: parse_setting(label)[::-1])


def offset_column(label: str) -> str:
    return f"{COLUMN_PREFIX}{label}"


def calibrated_offsets_of_rows(params: Params, score: ScoreFn, histories: pd.Series, unknown: np.ndarray,
                               temperature: float, chunk_rows: int = 1024) -> np.ndarray:
    """Each row's calibrated offset of new items (`index.new_item_offset_calibration` on, `new_item_offset` 0), from
    its scores over the whole catalogue and its last `index.new_item_offset_window` items, as serving computes it."""
    cfg = params.index.model_copy(update={"new_item_offset_calibration": True, "new_item_offset": 0.0})
    recent, lengths = recent_flags(history_matrix(histories, cfg.new_item_offset_window), unknown)
    out = np.zeros(len(histories))
    for start in range(0, len(histories), chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, len(histories)))
        scores = score(rows, 0, len(unknown)).numpy()
        out[rows] = new_item_offsets(cfg, scores, unknown, recent[rows], lengths[rows], temperature)
    return out


def measure_offsets(params: Params, offsets: list[float]) -> dict:
    """Rank the run's test targets with its sequence head at each offset, alone and with calibration
    (`index.new_item_offset_calibration`, with the params' window and prior strength); writes RANKS and RECORD in
    the run folder and returns the record."""
    check_request(params, offsets)
    data = load_setting(DataLayout(params.data_root).prepared, params.train.setting, params.train.domain)
    rows = select_rows(data, "test", None, params.eval.seed)
    model = load_sasrec(params, len(data.items), "seqhead")
    histories = pd.Series(sasrec_histories(rows, data, params.train.setting), dtype=object)
    with torch.no_grad():
        score = vector_scores(model.user_vectors(history_matrix(histories, model.max_len)), model.item_vectors())
    unknown = unknown_items(model)
    calibrated = calibrated_offsets_of_rows(params, score, histories, unknown, score_temperature(model))
    ranks = rows[["user_idx", "target", "domain", "group", "history_len"]].copy()
    results = {}
    for offset in sorted(set(offsets)):
        for label, per_row in ((setting_label(offset, False), offset),
                               (setting_label(offset, True), np.maximum(offset, calibrated))):
            ranks[offset_column(label)] = rank_rows(params, with_offset(score, unknown, per_row), rows, data)
            results[label] = breakdown(rows, ranks[offset_column(label)].to_numpy(), params.eval.ks)
    run_dir = run_folder(params)
    ranks.to_parquet(run_dir / RANKS, index=False)
    cfg = params.index
    calibration = {"window": cfg.new_item_offset_window, "prior_strength": cfg.new_item_offset_prior_strength,
                   "mean_offset": float(calibrated.mean()),  # and how often it is above each offset measured:
                   "share_above": {f"{o:g}": float((calibrated > o).mean()) for o in sorted(set(offsets))}}
    record = {"split": "test", "run_finished_at": (read_stamp(params) or {}).get("finished_at"),
              "unknown_items": int(unknown.sum()), "targets": int(len(rows)), "calibration": calibration,
              SETTINGS: results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "provenance": provenance(OFFSET_CODE)}
    (run_dir / RECORD).write_text(json.dumps(record, indent=2))
    return record


def check_request(params: Params, offsets: list[float]) -> None:
    """An offset applies to a sequence head's scores, and an offset is >= 0."""
    if not offsets or any(o < 0 for o in offsets):
        raise UserError("give one or more offsets >= 0 (--offset 0 --offset 2 ...)")
    if "seqhead" not in params.eval.models:
        raise UserError(f"run {params.train.run_dir.name} has no sequence head (eval.models: "
                        f"{', '.join(params.eval.models)}); the offset applies to the head's scores")


def read_offsets(params: Params) -> tuple[dict, pd.DataFrame] | None:
    """(RECORD, RANKS) of a run, in today's names also where LEGACY_NAMES wrote them, or None where the offset was not
    measured on the run as it stands (a rerun since makes them stale: they ranked with the earlier weights)."""
    run_dir = run_folder(params)
    if (run_dir / RECORD).is_file() and (run_dir / RANKS).is_file():
        record, ranks = json.loads((run_dir / RECORD).read_text()), pd.read_parquet(run_dir / RANKS)
    elif (run_dir / LEGACY_NAMES[RECORD]).is_file() and (run_dir / LEGACY_NAMES[RANKS]).is_file():
        record, ranks = _in_todays_names(json.loads((run_dir / LEGACY_NAMES[RECORD]).read_text()),
                                         pd.read_parquet(run_dir / LEGACY_NAMES[RANKS]))
    else:
        return None
    if record.get("run_finished_at") != (read_stamp(params) or {}).get("finished_at"):
        return None
    return record, ranks


def _in_todays_names(record: dict, ranks: pd.DataFrame) -> tuple[dict, pd.DataFrame]:
    """A record and its ranks as LEGACY_NAMES wrote them, with SETTINGS and COLUMN_PREFIX's names."""
    record = {(SETTINGS if key == LEGACY_NAMES[SETTINGS] else key): value for key, value in record.items()}
    old = LEGACY_NAMES[COLUMN_PREFIX]
    return record, ranks.rename(columns=lambda c: COLUMN_PREFIX + c.removeprefix(old) if c.startswith(old) else c)


def group_ndcg(record: dict, setting: str, group: str = "new") -> float | None:
    return ((record[SETTINGS][setting].get("by_group") or {}).get(group) or {}).get("ndcg@10")


def choose_offset(records: list[dict], reference_new_ndcg: float, calibrated: bool) -> str | None:
    """The smallest offset (as recorded, with calibration as `calibrated` says) whose new-target NDCG@10, averaged
    over the runs' `records`, reaches `reference_new_ndcg` (the untuned LM's on the same targets); None if none
    does."""
    for label in settings_in_order(records[0]):
        if parse_setting(label)[1] != calibrated:
            continue
        values = [group_ndcg(r, label) for r in records]
        if None not in values and float(np.mean(values)) >= reference_new_ndcg:
            return label
    return None


def chosen_offset(records: list[dict], run_dirs: list[Path], calibrated: bool) -> str | None:
    """`choose_offset` over one experiment's runs, against the mean of their untuned LM's new-target NDCG@10; None
    where a run did not rank with the untuned LM."""
    references = [untuned_new_ndcg(d) for d in run_dirs]
    if not records or None in references:
        return None
    return choose_offset(records, float(np.mean(references)), calibrated)


def untuned_new_ndcg(run_dir: Path) -> float | None:
    """The untuned LM's NDCG@10 on new-item targets in a run's metrics_test.json, where the run ranked with it."""
    path = run_dir / "metrics_test.json"
    models = json.loads(path.read_text()).get("models", {}) if path.is_file() else {}
    return (((models.get("zero_shot") or {}).get("by_group") or {}).get("new") or {}).get("ndcg@10")


def measure_experiment(path: Path, name: str, offsets: list[float]) -> tuple[list[tuple[str, dict]], str | None]:
    """`measure_offsets` on every run (seed) of experiment `name`: ([(run, record)], the offset `choose_offset` picks
    where the runs also ranked the untuned LM, else None)."""
    runs = [(run, load_params(path, experiment=run)) for run in select_runs(load_params(path), [name])]
    for run, params in runs:  # every refusal before any run is measured
        check_request(params, offsets)
        if not has_results(params):
            raise UserError(f"run {run} has no results for these params and data (`llmrec-lab analyses --params "
                            f"{path} --status`): run it first")
    measured = [(run, measure_offsets(params, offsets)) for run, params in runs]
    calibrated = load_params(path).index.new_item_offset_calibration
    return measured, chosen_offset([r for _, r in measured], [run_folder(p) for _, p in runs], calibrated)
