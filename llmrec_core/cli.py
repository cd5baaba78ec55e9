"""The `llmrec` command line: one subcommand per pipeline stage, all driven by params.yaml."""
from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .config import ConfigError, Params, load_params

app = typer.Typer(help="LLM-Rec: domain-agnostic sequential recommendation with language models.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
console = Console(width=None if sys.stdout.isatty() else 120)
ParamsOption = typer.Option(Path("params.yaml"), "--params", "-p", help="The params file (one config source).")


def _load(path: Path) -> Params:
    try:
        return load_params(path)
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
def ingest(params: Path = ParamsOption) -> None:
    """Read every configured source into contract Parquet (bad records are quarantined)."""
    from .data.ingest import ingest as run
    from .data.sources import InputError

    p = _load(params)
    try:
        counts = run(p)
    except InputError as e:
        _fail(str(e))
    _table("ingest", ["source", "items", "items quarantined", "interactions", "interactions quarantined"],
           [[c.source, c.items, c.items_quarantined, c.interactions, c.interactions_quarantined] for c in counts])


@app.command()
def validate(params: Path = ParamsOption) -> None:
    """Check items and interactions with great-expectations; quarantine failing rows."""
    from .data.validate import ValidationFailed, validate as run

    p = _load(params)
    try:
        reports = run(p)
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
def prepare(params: Path = ParamsOption) -> None:
    """Filter, split and build the data settings (Single Domain, S2PIAO, Mixed)."""
    from .data.prepare import PreparationError, prepare as run

    p = _load(params)
    try:
        manifest = run(p)
    except (PreparationError, FileNotFoundError) as e:
        _fail(str(e))
    print_manifest(manifest)


def print_manifest(m: dict) -> None:
    console.print(f"{m['interactions_kept']:,} of {m['interactions_in']:,} interactions kept; "
                  f"{m['users']:,} users, {m['items']:,} items")
    if m["dropped"]:
        _table("dropped in preparation", ["reason", "events"], [[k, v] for k, v in m["dropped"].items()])
    _table("domains", ["domain", "users", "items", "interactions", "test cold", "test tail", "test head"],
           [[d, v["users"], v["items"], v["interactions"], *(v["test_groups"].get(g, 0) for g in ("cold", "tail", "head"))]
            for d, v in m["domains"].items()])
    s = m["settings"]
    rows = [["Mixed", "all", s["mixed"]["train_examples"], s["mixed"]["test_targets"], s["mixed"]["test_without_history"]],
            ["S2PIAO", "all", s["s2piao"]["train_examples"], s["s2piao"]["test_targets"], s["s2piao"]["test_without_history"]]]
    rows += [["Single Domain", d, v["train_examples"], v["test_targets"], v["test_without_history"]]
             for d, v in s["single_domain"].items()]
    rows += [["Leave-one-domain-out", d, v["train_examples"], v["test_targets"], "-"]
             for d, v in s["leave_one_domain_out"].items()]
    _table("data settings", ["setting", "domain", "train examples", "test targets", "test w/o history"], rows)


def main() -> None:  # pragma: no cover
    app(prog_name="llmrec")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
