"""Fused elementwise kernels of the equivalent ANN, each with a NumPy twin.

``round`` is round-half-away-from-zero (Eq. (15): "boundary cases rounded away
from zero"), never NumPy's half-to-even ``np.round``. CUDA's ``round()`` is
half-away-from-zero too, so the CuPy kernels use it directly.

* :func:`activation`: Ŝ = (pre + b) / Θff, Sˡ = max(0, round(Ŝ)) and
  S′ˡ = [Ŝ > 0] in one pass (Eqs. (4), (5), (10), (13), (15)). The derivative
  mask uses Ŝ, not S: a neuron with 0 < Ŝ < 0.5 emits no spike but still passes
  error (Eq. (5): V > 0 or x > 0).
* :func:`error_gate`: Eˡ = S′ˡ ⊙ round(Ẑ / Θbp) (Eqs. (7), (11), (12), (18));
  for float gradients the round is dropped.

The NumPy twins walk the array in cache-sized blocks, so their several passes
run from cache rather than from memory (measured: 2.5× faster than whole-array
passes on a 2.2 M-element map). Tests run both twins on the same inputs and
demand equal outputs.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np

# Elements per block: 256 Ki float32 = 1 MiB. Smaller blocks stay in cache better on one thread,
# but each block is a few NumPy calls that hold the GIL: with the local engine's two worker threads,
# 64 Ki blocks trained mnist at batch 256 about 5 % slower than 256 Ki ones (8 paired rounds,
# docs/measurements/bench-train-torch-2026-12-01.md).
BLOCK = 1 << 18


def _round_block(c: np.ndarray) -> None:
    """In place: c ← round(c), ties away from zero, exact for every float.

    ``floor(|x| + 0.5)`` would be wrong for x = 0.5 − ulp (the sum rounds up to
    1.0); ``x − trunc(x)`` is exact, so the tie test on it is too.
    """
    t = np.trunc(c)
    d = c - t
    t += d >= 0.5
    t -= d <= -0.5
    c[...] = t


def round_half_away(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """round(x), ties away from zero (Eq. (15)); ``out`` may be x itself.

    The blocks walk a flat view, so a strided ``out`` is computed in a contiguous copy first.
    """
    work = out if out is not None and out.flags.c_contiguous else np.array(x, copy=True, order="C")
    if work is out and out is not x:
        np.copyto(out, x)
    flat = work.reshape(-1)
    for i in range(0, flat.size, BLOCK):
        _round_block(flat[i:i + BLOCK])
    if out is not None and work is not out:
        np.copyto(out, work)
        return out
    return work


def _row_blocks(rows: int, cols: int) -> int:
    return max(1, BLOCK // max(1, cols))


def activation_numpy(pre: np.ndarray, bias: np.ndarray, theta_ff: float) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin of :func:`activation`, in place on ``pre``.

    pre: (R, C) float, C-contiguous, the product W ⋆ S; bias: (R, 1) or (1, C),
    broadcast over pre. Returns (S, mask): S is ``pre`` overwritten with
    max(0, round((pre + b)/Θff)) (integer-valued floats ≥ 0), mask the bool [Ŝ > 0].
    """
    R, C = pre.shape
    assert pre.flags.c_contiguous, "activation works in place on a C-contiguous product"
    mask = np.empty(pre.shape, dtype=bool)
    step = _row_blocks(R, C)
    per_row = bias.shape[0] == R and R > 1
    for r in range(0, R, step):
        blk, m = pre[r:r + step], mask[r:r + step]
        blk += bias[r:r + step] if per_row else bias
        blk /= theta_ff  # a division, as the reference does: Θff need not be a power of 2
        if blk.shape[1] <= BLOCK:
            np.greater(blk, 0, out=m)
            np.maximum(blk, 0, out=blk)
            t = np.floor(blk)  # blk >= 0 now, so floor == trunc and blk - t is the exact fraction
            blk -= t
            np.add(t, blk >= 0.5, out=blk)
        else:  # a single row longer than a block: walk it
            for c in range(0, blk.shape[1], BLOCK):
                sub, ms = blk[:, c:c + BLOCK], m[:, c:c + BLOCK]
                np.greater(sub, 0, out=ms)
                np.maximum(sub, 0, out=sub)
                t = np.floor(sub)
                sub -= t
                np.add(t, sub >= 0.5, out=sub)
    return pre, mask


def error_gate_numpy(Z: np.ndarray, mask: np.ndarray | None, theta_bp: float, rounding: bool,
                     count: list | None = None) -> np.ndarray:
    """NumPy twin of :func:`error_gate`, in place on ``Z`` (a temporary the caller owns).

    Z: any shape, C-contiguous, the product (Wˡ⁺¹)ᵀ ⋆ Eˡ⁺¹; mask: bool of Z's shape or None
    (S′ = 1). Returns E = mask ⊙ round(Z / Θbp) (or without the round for float gradients).
    count: when a list, the error spikes the U compartments emit, before the S′ gate, are appended:
    Σ |round(Z / Θbp)| (float gradients: the nonzero values).
    """
    Z = np.ascontiguousarray(Z)  # blocks walk a flat view: a strided input must be copied first
    flat = Z.reshape(-1)
    mflat = None if mask is None else np.ascontiguousarray(mask).reshape(-1)
    total = 0.0
    buf = np.empty(min(flat.size, BLOCK), dtype=flat.dtype) if count is not None and rounding else None
    for i in range(0, flat.size, BLOCK):
        c = flat[i:i + BLOCK]
        c /= theta_bp
        if rounding:
            _round_block(c)
        if count is not None:
            total += _abs_sum(c, buf) if buf is not None else float(np.count_nonzero(c))
        if mflat is not None:
            c *= mflat[i:i + BLOCK]
    if count is not None:
        count.append(total)
    return Z


_ROW = 512  # values summed per row by BLAS in _abs_sum


def _abs_sum(c: np.ndarray, buf: np.ndarray) -> float:
    """Σ |c| of a block of integer-valued floats, into ``buf`` (no allocation): rows of 512 summed by a
    matrix-vector product (4x faster than a float64 reduction, measured), exact while a row's sum
    stays below 2²⁴ in float32 (error spike counts are small integers); the row sums in float64."""
    a = np.abs(c, out=buf[:c.size])
    rows = c.size // _ROW
    total = float(np.add.reduce(a[rows * _ROW:], dtype=np.float64))
    if rows:
        total += float((a[:rows * _ROW].reshape(rows, _ROW) @ np.ones(_ROW, dtype=a.dtype)).sum(dtype=np.float64))
    return total


@cache
def _cupy_kernels() -> tuple[Any, Any, Any, Any]:
    import cupy  # noqa: PLC0415  (only on the GPU backend)

    act = cupy.ElementwiseKernel(
        "T pre, T bias, T theta",
        "T S, bool mask",
        """
        T s_hat = (pre + bias) / theta;   // Eq. (10); same operation order as the twin
        T r = round(s_hat);                // CUDA round(): ties away from zero, Eq. (15)
        S = r > (T)0 ? r : (T)0;           // ReLU after rounding, Eq. (13)
        mask = s_hat > (T)0;               // S' from S_hat, Eq. (5)
        """,
        "spikegrad_activation",
    )
    gate = cupy.ElementwiseKernel(
        "T z, bool mask, T theta",
        "T E",
        "E = round(z / theta) * (T)mask;   // Eqs. (7), (18)",
        "spikegrad_error_gate",
    )
    gate_float = cupy.ElementwiseKernel(
        "T z, bool mask, T theta",
        "T E",
        "E = (z / theta) * (T)mask;",
        "spikegrad_error_gate_float",
    )
    rnd = cupy.ElementwiseKernel("T x", "T y", "y = round(x);", "spikegrad_round")
    return act, gate, gate_float, rnd


def activation(xp: Any, pre: Any, bias: Any, theta_ff: float) -> tuple[Any, Any]:
    """(S, S′) = (max(0, round((pre + b)/Θff)), [(pre + b)/Θff > 0]), in place on ``pre``.

    pre: (R, C) float; bias: (R, 1) or (1, C). S has pre's dtype, S′ is bool.
    """
    if xp is np:
        return activation_numpy(pre, bias, theta_ff)
    act, _, _, _ = _cupy_kernels()
    mask = xp.empty(pre.shape, dtype=bool)
    act(pre, bias, pre.dtype.type(theta_ff), pre, mask)
    return pre, mask


def error_gate(xp: Any, Z: Any, mask: Any | None, theta_bp: float, rounding: bool = True,
               count: list | None = None) -> Any:
    """E = S′ ⊙ round(Z / Θbp) (``rounding`` False: S′ ⊙ Z / Θbp); mask None means S′ = 1. Overwrites Z.

    count: when a list, Σ |round(Z / Θbp)| (the error spikes emitted before the gate; float
    gradients: the nonzero values) is appended, a float on NumPy, a device scalar on CuPy."""
    if xp is np:
        return error_gate_numpy(Z, mask, theta_bp, rounding, count)
    _, gate, gate_float, rnd = _cupy_kernels()
    if count is not None:
        z = Z / Z.dtype.type(theta_bp)
        count.append(xp.abs(rnd(z, z)).sum(dtype=np.float64) if rounding else xp.count_nonzero(z).astype(np.float64))
    if mask is None:
        mask = xp.ones((), dtype=bool)
    return (gate if rounding else gate_float)(Z, mask, Z.dtype.type(theta_bp), Z)


def round_any(xp: Any, x: Any) -> Any:
    """round(x), ties away from zero, on either backend; overwrites x."""
    if xp is np:
        return round_half_away(x, out=x)
    _, _, _, rnd = _cupy_kernels()
    return rnd(x, x)
