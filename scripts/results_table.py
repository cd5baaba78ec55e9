"""Write a results table (markdown) from evaluation metrics files; every number is read, none typed.

  python scripts/results_table.py OUT.md TITLE label=path/to/metrics_test.json:model [...]

Each column source is `label=<metrics_test.json>:<model key>[@<cost_train.json>]`; the optional cost
file of the model's training run gives the machine, date and training cost.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def main(out: str, title: str, specs: list[str]) -> None:
    columns = []
    for spec in specs:
        label, _, rest = spec.partition("=")
        rest, _, cost = rest.partition("@")
        path, _, model = rest.rpartition(":")
        metrics = json.loads(Path(path).read_text())
        columns.append((label, metrics["models"][model], Path(cost) if cost else None, metrics))
    first = columns[0][3]
    scopes = [("overall", lambda r: r["overall"])]
    scopes += [(d, (lambda d: lambda r: r["by_domain"].get(d, {}))(d)) for d in columns[0][1]["by_domain"]]
    scopes += [(f"{g} items", (lambda g: lambda r: r["by_group"].get(g, {}))(g)) for g in ("cold", "tail", "head")
               if g in columns[0][1]["by_group"]]
    lines = [f"# {title}", "",
             f"Test split, {first['protocol']} ranking against every item of the target's domain (history excluded), "
             f"setting `{first['setting']}`, {first['users']} test users.", ""]
    header = "| scope | targets | " + " | ".join(f"{c[0]} R@10 | {c[0]} N@10" for c in columns) + " |"
    lines += [header, "|" + " --- |" * (2 + 2 * len(columns))]
    for scope, get in scopes:
        count = get(columns[0][1]).get("count", 0)
        cells = " | ".join(f"{get(c[1]).get('recall@10', float('nan')):.4f} | {get(c[1]).get('ndcg@10', float('nan')):.4f}"
                           for c in columns)
        lines.append(f"| {scope} | {count} | {cells} |")
    lines += ["", "## Training runs", "", "| column | device | date | params (trainable) | samples/s | train s |",
              "| --- | --- | --- | ---: | ---: | ---: |"]
    for label, _, cost_path, _ in columns:
        if cost_path is not None:
            c = json.loads(cost_path.read_text())
            lines.append(f"| {label} | {c['device']} ({c['device_count']} threads) | {c['date']} | "
                         f"{c['parameters_total']:,} ({c['parameters_trainable']:,}) | {c['samples_per_s']} | "
                         f"{c['seconds_by_phase'].get('train', '')} |")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
