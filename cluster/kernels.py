"""Fused elementwise kernels of the equivalent ANN, each with a NumPy twin.

``round`` is round-half-away-from-zero (Eq. (15): "boundary cases rounded away
from zero"), never NumPy's half-to-even ``np.round``. CUDA's ``round()`` is
half-away-from-zero too, so the CuPy kernels use it directly.

* :func:`relu_activation`: Sˡ = max(0, round(Ŝˡ)) and S′ˡ = [Ŝˡ > 0]
  (Eqs. (4), (5), (13), (15)); the derivative mask uses Ŝ, not S, so a neuron
  with 0 < Ŝ < 0.5 emits no spike but still passes error (Eq. (5): x > 0 or V > 0).
* :func:`error_gate`: Eˡ = S′ˡ ⊙ round(Ẑˡ) (Eqs. (7), (12), (18)).

The twins are the reference: tests run both on the same inputs and demand
bitwise-equal outputs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np


def round_half_away(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """round(x), ties away from zero, exact for every float (Eq. (15)).

    ``floor(|x| + 0.5)`` would be wrong for x = 0.5 − ulp, where the sum rounds up
    to 1.0; ``x − trunc(x)`` is exact, so the tie test on it is too.
    """
    frac = x - np.trunc(x)  # computed before ``out`` (which may alias x) is written
    t = np.trunc(x, out=out)
    t += frac >= 0.5
    t -= frac <= -0.5
    return t


def relu_activation_numpy(S_hat: np.ndarray, out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """NumPy twin: (S, S′) from Ŝ, same dtype and shape as Ŝ. S ≥ 0 integer-valued, S′ ∈ {0, 1}."""
    mask = (S_hat > 0).astype(S_hat.dtype)
    S = np.maximum(S_hat, 0, out=out)
    t = np.floor(S)  # S >= 0 here, so floor == trunc and S - t is the exact fraction
    S -= t
    t += S >= 0.5
    return t, mask


def error_gate_numpy(Z_hat: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """NumPy twin: E = S′ ⊙ round(Ẑ), in place on Ẑ (a temporary the caller owns)."""
    E = round_half_away(Z_hat, out=Z_hat)
    if mask is not None:
        E *= mask
    return E


@lru_cache(maxsize=None)
def _cupy_kernels() -> tuple[Any, Any, Any]:
    import cupy  # noqa: PLC0415  (only on the GPU backend)

    relu = cupy.ElementwiseKernel(
        "T s_hat",
        "T S, T mask",
        """
        T r = round(s_hat);           // CUDA round(): ties away from zero, Eq. (15)
        S = r > (T)0 ? r : (T)0;      // ReLU after rounding, Eq. (13)
        mask = s_hat > (T)0 ? (T)1 : (T)0;   // S' from S_hat, Eq. (5)
        """,
        "spikegrad_relu_activation",
    )
    gate = cupy.ElementwiseKernel(
        "T z_hat, T mask",
        "T E",
        "E = round(z_hat) * mask;     // Eqs. (7), (18)",
        "spikegrad_error_gate",
    )
    rnd = cupy.ElementwiseKernel("T x", "T y", "y = round(x);", "spikegrad_round")
    return relu, gate, rnd


def relu_activation(xp: Any, S_hat: Any, out: Any = None) -> tuple[Any, Any]:
    """(S, S′) = (max(0, round(Ŝ)), [Ŝ > 0]) on the backend of ``xp``; shapes and dtype of Ŝ."""
    if xp is np:
        return relu_activation_numpy(S_hat, out=out)
    relu, _, _ = _cupy_kernels()
    S = xp.empty_like(S_hat) if out is None else out
    mask = xp.empty_like(S_hat)
    relu(S_hat, S, mask)
    return S, mask


def error_gate(xp: Any, Z_hat: Any, mask: Any | None) -> Any:
    """E = S′ ⊙ round(Ẑ) (mask None: a linear layer, S′ = 1); may overwrite Ẑ."""
    if xp is np:
        return error_gate_numpy(Z_hat, mask)
    _, gate, rnd = _cupy_kernels()
    if mask is None:
        return rnd(Z_hat, Z_hat)
    return gate(Z_hat, mask, Z_hat)


def round_any(xp: Any, x: Any) -> Any:
    """round(x), ties away from zero, on either backend; may overwrite x."""
    if xp is np:
        return round_half_away(x, out=x)
    _, _, rnd = _cupy_kernels()
    return rnd(x, x)
