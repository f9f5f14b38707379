"""Least-squares fits of the CPU outside the chips (machine_cpu_seconds − the chips' cpu_seconds) of
recorded host runs against calls, seconds, object-store messages and node-seconds, each fit's
measured/fitted range and how many runs it holds within ±15 %. Run from the repository root:

    python docs/measurements/plan-fit-runs.py DIR [PART ...]

DIR holds hosts-runs.py's output directories (default parts: scaling, validate).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

COLUMNS = ("calls", "seconds", "object-store messages", "MB", "node-seconds")
FITS = [(0,), (0, 1), (0, 2), (0, 1, 2), (0, 3), (0, 1, 3), (0, 4), (0, 2, 4)]


def table(run: Path, name: str, epoch: int | None = None) -> list[dict]:
    rows = pq.read_table(run / f"{name}.parquet").to_pylist()
    return rows if epoch is None else [r for r in rows if r["epoch"] == epoch]


if __name__ == "__main__":
    root = Path(sys.argv[1])
    X, y = [], []
    for part in sys.argv[2:] or ["scaling", "validate"]:
        for run in sorted(p for p in (root / part).iterdir() if (p / "metrics.parquet").exists()):
            m = table(run, "metrics")[-1]
            chips, links = table(run, "chips", m["epoch"]), table(run, "traffic", m["epoch"])
            big = sum(r["messages"] for r in links if r["messages"] and r["bytes"] / r["messages"] > 100 * 1024)
            nodes = len({n for r in chips for n in str(r["node"]).split(",")})
            X.append([m["calls"], m["seconds"], big, sum(r["bytes"] for r in links) / 1e6, nodes * m["seconds"]])
            y.append(m["machine_cpu_seconds"] - sum(r["cpu_seconds"] for r in chips))
    A, b = np.array(X, float), np.array(y)
    print(f"{len(b)} runs")
    for cols in FITS:
        coef, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
        ratio = b / (A[:, cols] @ coef)
        terms = ", ".join(f"{COLUMNS[c]} {v:.4g}" for c, v in zip(cols, coef))
        print(f"{terms}: measured/fitted {ratio.min():.2f}-{ratio.max():.2f}, "
              f"{int(((ratio > 0.85) & (ratio < 1.15)).sum())} of {len(b)} within ±15 %")
