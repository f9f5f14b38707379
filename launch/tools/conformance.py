"""``spikegrad conformance CASE.npz --out OUT.npz``: one training step, every array of docs/design.md §4.

A case holds ``topology`` (str), ``theta_ff``, ``theta_bp``, ``alpha``, ``eta`` (scalars),
``x`` (B, C, H, W) float64, ``y`` (B,) int and ``W0, b0, W1, b1, ...`` for the trainable
layers in order. The answer holds ``S{l}`` (B, N_l) for l < L, ``V`` (B, classes),
``E{l}`` (B, N_l) for every l, and ``dW{t}``, ``db{t}`` = −η Σ E ⊗ S (no 1/α).
Computed in float64 on NumPy (or CuPy with ``--backend cupy``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from cluster.backend import get_backend, to_device, to_host
from cluster.errors import SpikeGradError
from cluster.network import StepConfig, backward, export_layer, forward
from cluster.topology import parse_topology

from ..files import read_npz, write_atomic

SCALARS = ("theta_ff", "theta_bp", "alpha", "eta")


def load_case(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a case file without pickle; a missing or malformed one is a SpikeGradError."""

    path = Path(path)
    if not path.is_file():
        raise SpikeGradError(f"case file {path} does not exist")
    return read_npz(path, "case file")


def _check_case(case: dict[str, np.ndarray], name: str) -> tuple[Any, StepConfig, float]:
    missing = [k for k in ("topology", "x", "y", *SCALARS) if k not in case]
    if missing:
        raise SpikeGradError(f"case {name}: missing arrays {missing}; a case holds topology, "
                             f"{', '.join(SCALARS)}, x, y and W0, b0, ...")
    if case["topology"].dtype.kind != "U" or case["topology"].shape != ():
        raise SpikeGradError(f"case {name}: topology must be one string, got {case['topology'].dtype} "
                             f"{case['topology'].shape}")
    topo = parse_topology(str(case["topology"]))
    for k in SCALARS:
        if case[k].shape != ():
            raise SpikeGradError(f"case {name}: {k} must be a scalar, got shape {case[k].shape}")
    numbers = [k for k in case if k != "topology" and k != "y"]
    for k in numbers:
        a = case[k]
        if a.dtype.kind not in "iuf":
            raise SpikeGradError(f"case {name}: {k} must hold real numbers, got {a.dtype}")
        if not np.isfinite(a).all():
            raise SpikeGradError(f"case {name}: {k} must be finite, got {int((~np.isfinite(a)).sum())} NaN or "
                                 f"infinite values")
    if min(float(case[k]) for k in SCALARS) <= 0:
        raise SpikeGradError(f"case {name}: {', '.join(SCALARS)} must be > 0, got "
                             f"{', '.join(str(float(case[k])) for k in SCALARS)}")
    x, y = case["x"], case["y"]
    if x.ndim == 4 and x.shape[0] == 0:
        raise SpikeGradError(f"case {name}: x holds no samples (batch 0)")
    if x.ndim != 4 or tuple(x.shape[1:]) != topo.input_shape:
        raise SpikeGradError(f"case {name}: x must be (B, {', '.join(map(str, topo.input_shape))}) "
                             f"for topology {topo.text!r}, got {x.shape}")
    if y.shape != (x.shape[0],) or y.dtype.kind not in "iu":
        raise SpikeGradError(f"case {name}: y must be ({x.shape[0]},) integers, got {y.shape} {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= topo.num_classes):
        raise SpikeGradError(f"case {name}: labels must lie in 0..{topo.num_classes - 1}, "
                             f"got {int(y.min())}..{int(y.max())}")
    for t, l in enumerate(topo.trainable):
        layer, w_shape = topo.layers[l], topo.weight_shape(l)
        for key, shape in ((f"W{t}", w_shape), (f"b{t}", (w_shape[0],))):
            if key not in case:
                raise SpikeGradError(f"case {name}: missing {key} for layer {l} ({layer.token()})")
            if case[key].shape != shape:
                raise SpikeGradError(f"case {name}: {key} for layer {l} ({layer.token()}) must have "
                                     f"shape {shape}, got {case[key].shape}")
    extra = [k for k in case if k.startswith(("W", "b")) and k[1:].isdigit()
             and int(k[1:]) >= len(topo.trainable)]
    if extra:
        raise SpikeGradError(f"case {name}: {extra} have no layer; topology {topo.text!r} has "
                             f"{len(topo.trainable)} trainable layers")
    cfg = StepConfig(theta_ff=float(case["theta_ff"]), theta_bp=float(case["theta_bp"]),
                     alpha=float(case["alpha"]), gradient="spike")
    return topo, cfg, float(case["eta"])


def run_case(case: dict[str, np.ndarray], backend: str = "numpy", name: str = "case") -> dict[str, np.ndarray]:
    """One training step on a case; returns the docs/design.md §4 arrays as float64 host arrays."""
    topo, cfg, eta = _check_case(case, name)
    be = get_backend(backend)
    xp = be.xp
    params = {l: (to_device(be, case[f"W{t}"], np.float64), to_device(be, case[f"b{t}"], np.float64))
              for t, l in enumerate(topo.trainable)}
    x = to_device(be, case["x"], np.float64)
    y = to_device(be, case["y"].astype(np.int64))
    fp = forward(xp, topo, params, x, cfg)
    # Snapshot S before backward: nothing below mutates it, but exports must not alias.
    out: dict[str, np.ndarray] = {}
    L = len(topo.layers) - 1
    for l in range(L):
        out[f"S{l}"] = to_host(export_layer(xp, fp.layers[l].S)).astype(np.float64)
    out["V"] = to_host(fp.V).astype(np.float64)
    bp = backward(xp, topo, params, fp, y, cfg)
    for l in range(L + 1):
        out[f"E{l}"] = to_host(export_layer(xp, bp.E[l])).astype(np.float64)
    for t, l in enumerate(topo.trainable):
        gW, gb = bp.sums[l]
        out[f"dW{t}"] = -eta * to_host(gW).astype(np.float64)
        out[f"db{t}"] = -eta * to_host(gb).astype(np.float64)
    return out


def write_npz_atomic(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write an .npz next to its destination, then rename: a reader never sees half a file."""

    path = Path(path)
    if path.is_dir():
        raise SpikeGradError(f"--out expected a file to write, got the directory {path}")
    kwds: dict[str, Any] = arrays  # numpy's stub types **kwds of savez as allow_pickle: bool too
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # as a run's --out, the folder is made
        write_atomic(path, lambda f: np.savez(f, **kwds))
    except OSError as exc:
        raise SpikeGradError(f"--out {path}: cannot write it ({exc.strerror or exc})") from None


def compare(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 1e-9) -> list[str]:
    """Names and worst deviations of arrays that differ; empty when all agree within atol."""
    problems = []
    for k, e in expected.items():
        if k not in got:
            problems.append(f"{k}: missing")
        elif got[k].shape != e.shape:
            problems.append(f"{k}: shape {got[k].shape}, expected {e.shape}")
        else:
            d = float(np.max(np.abs(got[k] - e))) if e.size else 0.0
            if not d <= atol:
                problems.append(f"{k}: max |difference| {d:.3g}")
    return problems
