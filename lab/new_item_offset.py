"""The serving offset of new items (`index.new_item_offset` and its calibration, `index.new_item_offset_calibration`
with `index.new_item_offset_window` and `index.new_item_offset_prior_strength`): measured over finished runs, and
chosen on a tuning window.

The sequence head over the fine-tuned LM ranks new items (title only: no ID embedding) about as well among
themselves as the untuned LM does, but scores them below the warm items, whose ID embeddings carry most of their
score (the report's section on new items shows by how much). An offset added to the score of every item the head
has no ID embedding for (model/new_item_offsets.py: `new_item_offset` for every user, and with calibration more for
users whose recent items are new) lifts new items through the whole ranking and changes neither the order among
new items nor the order among warm ones; what it costs on warm targets is only the competition for the top slots.

`measure_offsets` ranks a finished run's test targets at every setting of a grid of the four knobs: each floor
offset alone, and with calibration at each (window, prior strength), through the evaluator's own functions (the
same rows, histories and exclusions as `llmrec evaluate`, so the ranks pair with every model's), and writes
`offset_test.parquet` (a rank column per setting) and `offset_test.json` (metrics per setting, the calibration's
mean offset per (window, prior strength), provenance) in the run folder. `choose_setting` picks the setting with the
highest whole-window NDCG@10 (every target of the window, new and warm together, as a deployment meets them; mean
over the runs), so what an offset gains on new targets is weighed against what it costs warm ones.

Choose only on a tuning window: an experiment whose test window lies before the window that confirms the choice,
never on the window that is reported (there the choice would be fitted to the targets it is judged on).

Records measured before the offset had one name call it a "boost" (`boost_test.json`, `boost_test.parquet`, the
record's "boosts", rank columns `rank_seqhead_boost_<setting>`); `read_offsets` reads them through LEGACY_NAMES.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llmrec_core.config import Params, load_params
from llmrec_core.data.layout import DataLayout
from llmrec_core.data.settings import SettingData, load_setting
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
# A setting's four knobs: (new_item_offset, new_item_offset_calibration, new_item_offset_window,
# new_item_offset_prior_strength); the last two None without calibration.
Knobs = tuple[float, bool, int | None, float | None]
_CALIBRATED = re.compile(r"(?P<offset>.+?)\+cal(?::w(?P<window>\d+):p(?P<prior>[^:]+))?")


def with_offset(score: ScoreFn, unknown: np.ndarray, offset: float | np.ndarray) -> ScoreFn:
    """`score` plus `offset` on the columns of unknown items: one number, or one per row (indexed like the rows)."""
    flags = torch.from_numpy(unknown.astype(np.float32))
    per_row = torch.as_tensor(np.asarray(offset, dtype=np.float32).reshape(-1, 1))

    def scored(rows: np.ndarray, start: int, end: int) -> torch.Tensor:
        offsets = per_row if per_row.numel() == 1 else per_row[torch.from_numpy(rows)]
        return score(rows, start, end) + offsets * flags[start:end]
    return scored


def setting_label(offset: float, calibrated: bool, window: int | None = None, prior_strength: float | None = None,
                  own: tuple[int | None, float | None] = (None, None)) -> str:
    """A measured setting's key in RECORD: the floor offset alone ("3"); with calibration at the run's own window
    and prior strength (`own`: its params', as RECORD's "calibration" names them) or with none given, "3+cal"
    (as records before the grid of windows and prior strengths were written); at another, "3+cal:w5:p20"."""
    if not calibrated:
        return f"{offset:g}"
    if window is None or (window, prior_strength) == own:
        return f"{offset:g}+cal"
    return f"{offset:g}+cal:w{int(window)}:p{prior_strength:g}"


def parse_knobs(label: str, own: tuple[int | None, float | None] = (None, None)) -> Knobs:
    """A label's four knobs (`setting_label` backwards): "+cal" alone is calibration at `own` window and prior
    strength (RECORD's "calibration", `own_knobs`)."""
    match = _CALIBRATED.fullmatch(label)
    if match is None:
        return float(label), False, None, None
    if match["window"] is None:
        return float(match["offset"]), True, own[0], own[1]
    return float(match["offset"]), True, int(match["window"]), float(match["prior"])


def own_knobs(record: dict) -> tuple[int | None, float | None]:
    """The window and prior strength that RECORD's plain "+cal" labels were calibrated with (the run's params')."""
    calibration = record.get("calibration") or {}
    return calibration.get("window"), calibration.get("prior_strength")


def settings_in_order(record: dict) -> list[str]:
    """RECORD's settings: the offsets alone first, then each (window, prior strength) of calibration; by offset."""
    own = own_knobs(record)

    def key(label: str) -> tuple:
        offset, calibrated, window, prior = parse_knobs(label, own)
        return calibrated, window or 0, prior or 0.0, offset
    return sorted(record[SETTINGS], key=key)


def offset_column(label: str) -> str:
    return f"{COLUMN_PREFIX}{label}"


def calibrated_offsets_of_rows(params: Params, score: ScoreFn, histories: pd.Series, unknown: np.ndarray,
                               temperature: float, window: int, prior_strength: float,
                               chunk_rows: int = 1024) -> np.ndarray:
    """Each row's calibrated offset of new items (`index.new_item_offset_calibration` on, `new_item_offset` 0, at
    this `window` and `prior_strength`), from its scores over the whole catalogue and its last `window` items, as
    serving computes it."""
    cfg = params.index.model_copy(update={"new_item_offset_calibration": True, "new_item_offset": 0.0,
                                          "new_item_offset_window": window,
                                          "new_item_offset_prior_strength": prior_strength})
    recent, lengths = recent_flags(history_matrix(histories, window), unknown)
    out = np.zeros(len(histories))
    for start in range(0, len(histories), chunk_rows):
        rows = np.arange(start, min(start + chunk_rows, len(histories)))
        scores = score(rows, 0, len(unknown)).numpy()
        out[rows] = new_item_offsets(cfg, scores, unknown, recent[rows], lengths[rows], temperature)
    return out


def rank_grid(params: Params, score: ScoreFn, unknown: np.ndarray, temperature: float, rows: pd.DataFrame,
              histories: pd.Series, data: SettingData, offsets: list[float], windows: list[int],
              prior_strengths: list[float]) -> tuple[dict[str, np.ndarray], dict[str, dict], list[dict]]:
    """`rows`' target ranks at every setting of the grid: each of `offsets` alone and, at each (window, prior
    strength), with calibration (the larger of the offset and the calibrated one, computed once per combination):
    ({label: ranks}, {label: `breakdown`}, the calibration's mean offset per combination)."""
    own = (params.index.new_item_offset_window, params.index.new_item_offset_prior_strength)
    floors = sorted(set(offsets))
    per_row: dict[str, float | np.ndarray] = {setting_label(o, False): o for o in floors}
    combinations = []
    for window in sorted(set(windows)):
        for prior in sorted(set(prior_strengths)):
            calibrated = calibrated_offsets_of_rows(params, score, histories, unknown, temperature, window, prior)
            combinations.append({"window": window, "prior_strength": prior, "mean_offset": float(calibrated.mean()),
                                 # and how often it is above each offset measured:
                                 "share_above": {f"{o:g}": float((calibrated > o).mean()) for o in floors}})
            per_row.update({setting_label(o, True, window, prior, own): np.maximum(o, calibrated) for o in floors})
    ranks, results = {}, {}
    for label, offset in per_row.items():
        ranks[label] = rank_rows(params, with_offset(score, unknown, offset), rows, data)
        results[label] = breakdown(rows, ranks[label], params.eval.ks)
    return ranks, results, combinations


def measure_offsets(params: Params, offsets: list[float], windows: list[int], prior_strengths: list[float]) -> dict:
    """Rank the run's test targets with its sequence head at every setting of `rank_grid`; writes RANKS and RECORD
    in the run folder and returns the record."""
    check_request(params, offsets, windows, prior_strengths)
    prepared = DataLayout(params.data_root).prepared
    data = load_setting(prepared, params.train.setting, params.train.domain)
    rows = select_rows(data, "test", None, params.eval.seed)
    model = load_sasrec(params, len(data.items), "seqhead")
    histories = pd.Series(sasrec_histories(rows, data, params.train.setting), dtype=object)
    with torch.no_grad():
        score = vector_scores(model.user_vectors(history_matrix(histories, model.max_len)), model.item_vectors())
    unknown = unknown_items(model)
    ranked, results, combinations = rank_grid(params, score, unknown, score_temperature(model), rows, histories, data,
                                              offsets, windows, prior_strengths)
    columns = rows[["user_idx", "target", "domain", "group", "history_len"]].reset_index(drop=True)
    ranks = pd.concat([columns, pd.DataFrame({offset_column(label): r for label, r in ranked.items()})], axis=1)
    run_dir = run_folder(params)
    ranks.to_parquet(run_dir / RANKS, index=False)
    manifest = prepared / "manifest.json"
    time_split = json.loads(manifest.read_text()).get("time_split") if manifest.is_file() else None
    own = {"window": params.index.new_item_offset_window, "prior_strength": params.index.new_item_offset_prior_strength}
    record = {"split": "test", "run_finished_at": (read_stamp(params) or {}).get("finished_at"),
              "unknown_items": int(unknown.sum()), "targets": int(len(rows)),
              "warm_weight": warm_weight(time_split),
              # "+cal" labels: calibration at the params' own window and prior strength
              "calibration": {**own, "combinations": combinations},
              SETTINGS: results, "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
              "provenance": provenance(OFFSET_CODE)}
    (run_dir / RECORD).write_text(json.dumps(record, indent=2))
    return record


def check_request(params: Params, offsets: list[float], windows: list[int], prior_strengths: list[float]) -> None:
    """An offset applies to a sequence head's scores; an offset is >= 0, a window >= 1 item, a prior strength > 0."""
    if not offsets or any(o < 0 for o in offsets):
        raise UserError("give one or more offsets >= 0 (--offset 0 --offset 2 ...)")
    if not windows or any(w < 1 for w in windows):
        raise UserError("give one or more calibration windows >= 1 item (--window 5 --window 10 ...)")
    if not prior_strengths or any(p <= 0 for p in prior_strengths):
        raise UserError("give one or more prior strengths > 0 (--prior-strength 5 --prior-strength 10 ...)")
    if "seqhead" not in params.eval.models:
        raise UserError(f"run {params.train.run_dir.name} has no sequence head (eval.models: "
                        f"{', '.join(params.eval.models)}); the offset applies to the head's scores")


def warm_weight(time_split: dict | None) -> float:
    """How many of a window's warm events each warm target ranked stands for: 1, or more where the warm targets were
    a sample (`prepare.time_split.warm_test_sample`; the manifest's "time_split" says how many there were)."""
    if not time_split or "test_warm_events" not in time_split:
        return 1.0
    ranked = time_split["test_rows"] - time_split["test_groups"].get("new", 0)
    return time_split["test_warm_events"] / ranked if ranked else 1.0


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


def part_ndcg(record: dict, setting: str, part: str) -> float | None:
    """A setting's NDCG@10 on one part of the window's targets: "new", "warm" (every target not new), or "window":
    all of them, new and warm together, each warm target weighted by RECORD's "warm_weight" (1 where absent: a
    record written before it, or `warm_weight`'s default) so that a sample of warm targets counts as every warm event
    of the window. None where the record does not say (no such targets, or no "overall" in its breakdown)."""
    result = record[SETTINGS].get(setting) or {}
    overall, new = result.get("overall") or {}, (result.get("by_group") or {}).get("new") or {}
    if part == "new":
        return new.get("ndcg@10")
    if "ndcg@10" not in overall:
        return None
    new_count, new_sum = new.get("count", 0), new.get("count", 0) * new.get("ndcg@10", 0.0)
    warm_count, warm_sum = overall["count"] - new_count, overall["count"] * overall["ndcg@10"] - new_sum
    if part == "warm":
        return warm_sum / warm_count if warm_count else None
    weight = record.get("warm_weight", 1.0)
    return overall["ndcg@10"] if weight == 1.0 else (new_sum + weight * warm_sum) / (new_count + weight * warm_count)


def mean_ndcg(records: list[dict], setting: str, part: str) -> float | None:
    """`part_ndcg` averaged over the runs' records; None where a run lacks it."""
    values = [part_ndcg(r, setting, part) for r in records]
    return None if not values or None in values else float(np.mean(values))


def choose_setting(records: list[dict]) -> str | None:
    """The setting (label) with the highest whole-window NDCG@10 (`part_ndcg`'s "window": every target of the
    window, new and warm together) averaged over one experiment's runs (`records`); ties go to the smaller offset,
    then no calibration before calibration, then the smaller window, then the smaller prior strength. None where no
    setting has the number in every run."""
    if not records:
        return None
    own = own_knobs(records[0])
    means = {label: m for label in records[0][SETTINGS] if (m := mean_ndcg(records, label, "window")) is not None}

    def key(label: str) -> tuple:
        offset, calibrated, window, prior = parse_knobs(label, own)
        return -means[label], offset, calibrated, window or 0, prior or 0.0
    return min(means, key=key) if means else None


def serving_lines(setting: str, own: tuple[int | None, float | None]) -> list[str]:
    """The params lines that serve `setting` (`own`: the window and prior strength its "+cal" means)."""
    offset, calibrated, window, prior = parse_knobs(setting, own)
    lines = ["index:", f"  new_item_offset: {offset:g}", f"  new_item_offset_calibration: {str(calibrated).lower()}"]
    if calibrated:
        lines += [f"  new_item_offset_window: {window}", f"  new_item_offset_prior_strength: {prior:g}"]
    return lines


def measure_experiment(path: Path, name: str, offsets: list[float], windows: list[int],
                       prior_strengths: list[float]) -> tuple[list[tuple[str, dict]], str | None]:
    """`measure_offsets` on every run (seed) of experiment `name`: ([(run, record)], the setting `choose_setting`
    picks over them)."""
    runs = [(run, load_params(path, experiment=run)) for run in select_runs(load_params(path), [name])]
    for run, params in runs:  # every refusal before any run is measured
        check_request(params, offsets, windows, prior_strengths)
        if not has_results(params):
            raise UserError(f"run {run} has no results for these params and data (`llmrec-lab analyses --params "
                            f"{path} --status`): run it first")
    measured = [(run, measure_offsets(params, offsets, windows, prior_strengths)) for run, params in runs]
    return measured, choose_setting([r for _, r in measured])
