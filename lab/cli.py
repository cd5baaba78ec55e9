"""The `llmrec-lab` command line: the analyses beside the product (experiments, the report, tuning).

It imports the product (llmrec_core) and is never imported by it; errors go through the product CLI's one
error path."""
from __future__ import annotations

import sys
from pathlib import Path

import typer

from llmrec_core.cli import ParamsOption, Typer, _fail, _load, _table, console
from llmrec_core.config import ConfigError

app = Typer(help="The llmrec lab: run the analyses set of a params file, build its report, tune heads and offsets.",
            no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@app.command()
def analyses(params: Path = ParamsOption,
             only: list[str] = typer.Option([], "--only", help="Run just this experiment (repeatable)."),
             force: bool = typer.Option(False, "--force", help="Rerun experiments that are up to date."),
             rerun_earlier_code: bool = typer.Option(False, "--rerun-earlier-code",
                                                     help="Also rerun runs whose params and data are unchanged but "
                                                          "whose code changed since the commit they were made at."),
             no_index: bool = typer.Option(False, "--no-index", help="Skip the serving index (e.g. on a training "
                                                                      "box without faiss; `llmrec index` builds it later)."),
             status: bool = typer.Option(False, "--status", help="Only say which runs are current, made with earlier "
                                                                  "code, stale or not run (and why); run nothing.")) -> None:
    """Train, evaluate and index every run of `experiments` that is stale or not run (skipping current ones and,
    unless --rerun-earlier-code, those made with earlier code), for `llmrec-lab report`. A run is stale when its
    params or prepared data changed since it finished."""
    from .experiments import analyses_status, run_analyses

    _load(params)
    if status:  # a table of runs, nothing trained
        try:
            rows = analyses_status(params, only or None)
        except (ValueError, ConfigError) as e:
            _fail(str(e))
        _table("runs", ["run", "status", "why"], [list(r) for r in rows])
        return
    try:
        stamps = run_analyses(params, only or None, force, log=lambda m: console.print(m, highlight=False),
                              index=not no_index, rerun_earlier_code=rerun_earlier_code)
    except (FileExistsError, FileNotFoundError, ValueError, ConfigError) as e:
        _fail(str(e))
    _table("experiments", ["experiment", "models", "finished", "seconds"],
           [[s["name"], ", ".join(s["models"]), s["finished_at"], s["seconds"]] for s in stamps])


@app.command("prepare-data")
def prepare_data(params: Path = ParamsOption) -> None:
    """Run the data stages (ingest, validate, prepare) for the params file's data and every experiment's own data
    root that has none prepared: what `analyses` and `report` read, and what a fresh clone lacks."""
    from .experiments import prepare_data as prepare_all

    _load(params)
    try:
        done = prepare_all(params, log=lambda m: console.print(m, highlight=False))
    except (FileNotFoundError, ValueError, ConfigError) as e:
        _fail(str(e))
    console.print(f"prepared {len(done)} data root(s)" + (f": {', '.join(map(str, done))}" if done else
                                                           " (every one was already prepared)"))


@app.command()
def report(params: Path = ParamsOption,
           out: Path = typer.Option(None, "--out", help="Markdown file to write (default: report.out).")) -> None:
    """Write the analyses report (markdown + PNG plots) from the experiments' metrics and cost files."""
    from .experiments import unprepared_roots
    from .report.build import build_report

    _load(params)
    if missing := unprepared_roots(params):  # without them the report would misread the runs' splits and staleness
        _fail(f"no prepared data in {', '.join(map(str, missing))}: run `llmrec-lab prepare-data --params {params}` "
              "first")
    try:
        path = build_report(params, out)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    console.print(f"wrote {path}")


@app.command("new-item-offset")
def new_item_offset(params: Path = ParamsOption,
                    experiment: str = typer.Option(..., "--experiment", "-e",
                                                   help="A finished experiment with the sequence head on a time split "
                                                        "that is a tuning window: its test window lies before the "
                                                        "window that confirms the choice, never the one reported."),
                    offset: list[float] = typer.Option([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0], "--offset",
                                                       help="A floor offset to measure (repeatable)."),
                    window: list[int] = typer.Option([5, 10, 20], "--window",
                                                     help="A calibration window in items to measure (repeatable)."),
                    prior_strength: list[float] = typer.Option([5.0, 10.0, 20.0], "--prior-strength",
                                                               help="A calibration prior strength in items to measure "
                                                                    "(repeatable).")) -> None:
    """Rank an experiment's test targets with its sequence head at every setting of new items' offset: each floor
    offset (index.new_item_offset) alone and with calibration (index.new_item_offset_calibration) at each window
    (index.new_item_offset_window) and prior strength (index.new_item_offset_prior_strength); print whole-window,
    new- and warm-target NDCG@10 (means over the runs) and the params that serve the setting with the highest
    whole-window NDCG@10 (every target of the window, new and warm together). Run it on a tuning window (an
    experiment whose test window lies before the window that confirms it), never on the window that is reported."""
    from .new_item_offset import measure_experiment, mean_ndcg, own_knobs, parse_knobs, serving_lines, settings_in_order

    _load(params)
    try:
        measured, chosen = measure_experiment(params, experiment, offset, window, prior_strength)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    records = [r for _, r in measured]
    own = own_knobs(records[0])
    rows = []
    for label in settings_in_order(records[0]):
        value, calibrated, w, p = parse_knobs(label, own)
        rows.append([f"{value:g}", f"window {w}, prior {p:g}" if calibrated else "no",
                     *(_mean_text(mean_ndcg(records, label, part)) for part in ("window", "new", "warm")),
                     "chosen" if label == chosen else ""])
    _table(f"{experiment}: NDCG@10 of the sequence head by offset of new items (mean of {len(records)} runs)",
           ["offset", "calibration", "whole window", "new targets", "warm targets", ""], rows)
    if chosen is not None:
        console.print(f"chosen: the highest whole-window NDCG@10 on {experiment} (mean of {len(records)} runs). "
                      f"Serve it with these params (chosen on a tuning window only, never on the window reported):",
                      highlight=False)
        console.print("\n".join(serving_lines(chosen, own)), highlight=False, markup=False)


def _mean_text(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "–"


@app.command("tune-heads")
def tune_heads(params: Path = ParamsOption,
               model: str = typer.Option("sasrec", "--model", help="sasrec or seqhead."),
               experiment: str = typer.Option(None, "--experiment", "-e",
                                              help="Tune on top of this run of `experiments` (e.g. seqhead-tuned-lm.seed0)."),
               runs: Path = typer.Option(None, "--runs", help="Where the grid's runs go (default: beside train.run_dir)."),
               fixed: list[str] = typer.Option([], "--set", "-S", help="A fixed override for every grid point "
                                               "(repeatable), e.g. seqhead.hidden=128."),
               grid: list[str] = typer.Option([], "--grid", help="KEY=V1,V2,...: grid this key of the model's section "
                                              "(or model.pretrained_mix, for the head) instead of the default grid "
                                              "(repeatable)."),
               missing_only: bool = typer.Option(False, "--missing-only", help="Keep the points the tuning file already "
                                                 "holds; train only the grid's others."),
               search: bool = typer.Option(False, "--search", help="Run the model's whole sequence of grids (width x "
                                           "dropout, logit adjustment, max_len, and lr for SASRec), each on top of the "
                                           "best point before it: the head's tuning budget and rule; resumable.")) -> None:
    """Tune SASRec's or the sequence head's few knobs on the validation split (never the test split); writes
    `<report.benchmarks_dir>/<model>_tuning*.json`, which the report shows beside the values in use."""
    from .tune_heads import search as run_search
    from .tune_heads import tune_heads as tune

    _load(params)
    log = lambda m: console.print(m, highlight=False)  # noqa: E731
    try:
        if search:
            if grid:
                _fail("--search runs its own grids: leave out --grid")
            chosen = run_search(params, model, experiment, runs, fixed, log=log)
            _table("chosen on validation", ["key", "value"], [[k, v] for k, v in chosen.items()])
            return
        tune(params, model, experiment, runs, fixed, grid, missing_only, log=log)
    except (FileNotFoundError, ValueError, ConfigError) as e:
        _fail(str(e))


def main() -> None:  # pragma: no cover
    """The `llmrec-lab` command (and `python -m lab`)."""
    app(prog_name="llmrec-lab")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
