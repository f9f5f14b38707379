"""The README's result tables, made from the measurement files they cite.

A generated table sits in README.md between ``<!-- table NAME -->`` and ``<!-- /table -->``; NAME
is a key of :data:`TABLES`, which names the files under ``docs/measurements`` the table is made
from and how. So a table cannot drift from its evidence:

    python -m launch.tools.readme_tables           # rewrite every generated table from its files
    python -m launch.tools.readme_tables --check   # exit 1 naming each table that differs (CI runs
                                                   # this through tests/test_readme.py)

The paper's own figures in a table are quoted from the paper (Table 1), not measured.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MEASUREMENTS = REPO / "docs" / "measurements"
PAPER_TABLE1 = {"spike": (99.52, 99.38, 0.06), "float": (99.48, 99.36, 0.06)}  # max, mean, std over 20 runs
BLOCK = re.compile(r"(<!-- table (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _seeds(seeds: list[int]) -> str:
    """0-6 for a run of consecutive seeds, else the list."""
    s = sorted(seeds)
    return f"{s[0]}-{s[-1]}" if len(s) > 2 and s == list(range(s[0], s[-1] + 1)) else ", ".join(map(str, s))


def _groups(path: Path, paper: bool) -> str:
    """`spikegrad report`'s summary groups (a list of {gradient, seeds (a count), max, mean, std})."""
    groups = {g["gradient"]: g for g in json.loads(path.read_text())}
    rows = []
    for name in ("spike", "float"):
        g = groups[name]
        row = [name, str(g["seeds"]), f"{g['max']:.2f} %", f"{g['mean']:.2f} ± {g['std']:.2f} %"]
        if paper:
            m, mean, std = PAPER_TABLE1[name]
            row.append(f"{m:.2f} [{mean:.2f} ± {std:.2f}] %")
        rows.append(row)
    header = ["gradient", "seeds", "max", "mean ± std"] + (["paper (20 runs): max [mean ± std]"] if paper else [])
    return _table(header, rows)


def table1_momentum(paths: list[Path]) -> str:
    return _groups(paths[0], paper=True)


def table1_five_epochs(paths: list[Path]) -> str:
    return _groups(paths[0], paper=False)


def table1_algorithm3(paths: list[Path]) -> str:
    """From the sweep's record: {gradient: {seeds: [...], accuracies: [...]}}; max, mean and the
    sample standard deviation recomputed from the accuracies themselves."""
    res = json.loads(paths[0].read_text())
    rows = []
    for name in ("spike", "float"):
        acc = res[name]["accuracies"]
        m, mean, std = PAPER_TABLE1[name]
        rows.append(["Algorithm 3, lr 2e-4", name, _seeds(res[name]["seeds"]), str(len(acc)), f"{max(acc):.2f} %",
                     f"{statistics.fmean(acc):.2f} ± {statistics.stdev(acc):.2f} %",
                     f"{m:.2f} [{mean:.2f} ± {std:.2f}] %"])
    return _table(["protocol", "gradient", "seeds", "runs", "max", "mean ± std", "paper (20 runs)"], rows)


def redundancy_by_input(paths: list[Path]) -> str:
    """`spikegrad verify --json` outputs (the JSON object is the last line of each file)."""
    rows = []
    for p in paths:
        r = json.loads(p.read_text().strip().splitlines()[-1])
        rows.append([f"`{r['order']}`", r["input"], f"{r['samples']:,}", f"{100 * r['exact_fraction']:.4f} %",
                     f"{r['max_abs_sde_no_residual']:.8f}", f"{r['spikes'] / 1e6:.3f} M",
                     f"{r['spikes_min'] / 1e6:.3f} M", f"{r['redundancy']:.4f}", f"{r['seconds_snn']:.0f}"])
    return _table(["order", "input", "images", "S, E, ω exact", "max \\|SDE\\| without residual", "n", "n_min",
                   "(n − n_min)/n_min", "SNN seconds"], rows)


_INPUT_RUNS = [f"verify-mnist-sgd-s0-10000-{o}-{i}-2026-12-01.txt" for o in ("waves", "layered")
               for i in ("whole", "continuous")]
_INPUT_RUNS += [f"verify-mnist-sgd-s0-2000-random-{i}-2026-12-01.txt" for i in ("whole", "continuous")]
TABLES: dict[str, tuple[list[str], Callable[[list[Path]], str]]] = {
    "table1-momentum": (["mnist-table1-shift2-e15-2026-11-29.json"], table1_momentum),
    "table1-five-epochs": (["mnist-table1-2026-11-29.json"], table1_five_epochs),
    "table1-algorithm3": (["mnist-table1-sgd-2026-12-01.json"], table1_algorithm3),
    "redundancy-by-input": (_INPUT_RUNS, redundancy_by_input),
}


def render(name: str) -> str:
    files, make = TABLES[name]
    return make([MEASUREMENTS / f for f in files])


def update(text: str) -> tuple[str, list[str]]:
    """README text with every generated table made anew; the names of those that changed."""
    changed: list[str] = []

    def one(m: re.Match) -> str:
        name = m["name"]
        if name not in TABLES:
            raise SystemExit(f"readme_tables: README names an unknown table {name!r} (known: {', '.join(TABLES)})")
        body = render(name)
        if body != m["body"]:
            changed.append(name)
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(one, text), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m launch.tools.readme_tables", description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its files")
    ap.add_argument("--readme", default=str(REPO / "README.md"))
    a = ap.parse_args(argv)
    path = Path(a.readme)
    new, changed = update(path.read_text())
    if a.check:
        for name in changed:
            print(f"readme_tables: table {name!r} differs from {', '.join(TABLES[name][0])}", file=sys.stderr)
        return 1 if changed else 0
    if changed:
        path.write_text(new)
    print(f"readme_tables: {len(changed)} table(s) rewritten: {', '.join(changed) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
