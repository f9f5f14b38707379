"""Layer products of the equivalent ANN: convolution, average pooling, dense.

Layout. Inside the engine, maps are held channel-first with the batch
innermost, ``(C, H, W, B)`` ("CHWB"), so that a convolution is one matrix product
``W (Co, Ci·k·k) @ cols (Ci·k·k, Ho·Wo·B)`` whose result is already CHWB (no
transposes on the hot path), and the im2col copy moves contiguous runs of Wo·B values.
Dense layers take ``(B, N)`` with N in (C, H, W) order (docs/design.md §2); :func:`flatten`
converts at the conv-to-dense boundary.

These functions compute the *linear* parts: W ⋆ S (Eqs. (10), (15)) forward and
Wᵀ ⋆ E (Eqs. (11), (18)) backward, and the increment sums Σ E ⊗ S (Eq. (14)).
Rounding and gating live in :mod:`cluster.kernels`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .kernels import error_gate
from .topology import Conv, Dense, Pool


def _as_strided(xp: Any) -> Any:
    return xp.lib.stride_tricks.as_strided


def im2col(xp: Any, S: Any, layer: Conv) -> Any:
    """Patches of a CHWB map: (Ci, H, W, B) -> cols (Ci·k·k, Ho·Wo·B), zero padded.

    Row order is (ci, kh, kw), matching W.reshape(Co, Ci·k·k). With the batch innermost,
    each (ci, kh, kw, ho) row of the copy is one contiguous run of Wo·B values.
    """
    k, p = layer.kernel, layer.padding
    if p:
        S = xp.pad(S, ((0, 0), (p, p), (p, p), (0, 0)))
    S = xp.ascontiguousarray(S)
    C, H, W, B = S.shape
    Ho, Wo = H - k + 1, W - k + 1
    sc, sh, sw, sb = S.strides
    view = _as_strided(xp)(S, shape=(C, k, k, Ho, Wo, B), strides=(sc, sh, sw, sh, sw, sb))
    return view.reshape(C * k * k, Ho * Wo * B)  # reshape of a strided view copies


def col2im(xp: Any, cols: Any, layer: Conv, batch: int) -> Any:
    """Adjoint of :func:`im2col`: cols (Ci·k·k, Ho·Wo·B) -> (Ci, H, W, B), summing overlaps.

    Taps that fall into the zero padding are dropped: they have no neuron.
    """
    k, p = layer.kernel, layer.padding
    Ci, H, W = layer.in_shape
    _, Ho, Wo = layer.out_shape
    out = xp.zeros((Ci, H + 2 * p, W + 2 * p, batch), dtype=cols.dtype)
    c6 = cols.reshape(Ci, k, k, Ho, Wo, batch)
    for i in range(k):
        for j in range(k):
            out[:, i:i + Ho, j:j + Wo, :] += c6[:, i, j]
    if p:
        out = xp.ascontiguousarray(out[:, p:p + H, p:p + W, :])
    return out


def conv_forward(xp: Any, layer: Conv, W: Any, S_prev: Any) -> tuple[Any, Any]:
    """W ⋆ Sˡ⁻¹ for a CHWB input (the bias is added by the activation kernel).

    W: (Co, Ci, k, k); S_prev: (Ci, H, W, B). Returns (pre (Co, Ho·Wo·B), cols (Ci·k·k, Ho·Wo·B)),
    cols kept for the weight increment.
    """
    cols = im2col(xp, S_prev, layer)
    return matmul(W.reshape(W.shape[0], -1), cols), cols


# Below this share of error columns (positions × samples with any nonzero error), the products
# of the backward pass run on the nonzero columns only: trained on MNIST, 5-6 % of the columns
# carry errors (measured), SpikeGrad's gradient sparsity.
SPARSE_COLUMNS = 0.5


_mode = threading.local()  # set by dense_products(): what a CUDA graph capture needs (cluster.graph)


@contextmanager
def dense_products(gemm: Callable[[Any, Any], Any] | None = None) -> Iterator[None]:
    """Within this block (this thread only) the backward products skip no columns, and every
    matrix product goes through ``gemm`` where one is given (:func:`matmul`).

    Skipping error-free columns needs their count on the host, which a CUDA graph capture cannot
    wait for; dense products give the same sums (the skipped columns add exact zeros). ``gemm``
    lets the capture call cuBLAS itself (CuPy's own products refuse to run while a stream captures).
    """
    before = (getattr(_mode, "dense", False), getattr(_mode, "gemm", None))
    _mode.dense, _mode.gemm = True, gemm
    try:
        yield
    finally:
        _mode.dense, _mode.gemm = before


def matmul(a: Any, b: Any) -> Any:
    """a @ b, or the ``gemm`` of an enclosing :func:`dense_products` block."""
    gemm = getattr(_mode, "gemm", None)
    return a @ b if gemm is None else gemm(a, b)


def _active_columns(xp: Any, E2: Any) -> Any | None:
    """Indices of the columns of E2 (Co, N) with a nonzero error, or None when too many are active
    (or inside :func:`dense_products`)."""
    if getattr(_mode, "dense", False):
        return None
    # Dense errors (early in training) skip the full count: every 16th column, if well past the
    # threshold, decides. Either path gives the same sums (skipped columns add exact zeros; with
    # float gradients, up to the order of float summation).
    if E2.shape[1] >= 1024 and (E2[:, ::16] != 0).any(axis=0).mean() > SPARSE_COLUMNS + 0.2:
        return None
    active = xp.flatnonzero((E2 != 0).any(axis=0))
    return active if active.size < SPARSE_COLUMNS * E2.shape[1] else None


def conv_backward_input(xp: Any, layer: Conv, W: Any, E: Any) -> Any:
    """Transposed convolution Wᵀ ⋆ E (Eq. (11)): E (Co, Ho, Wo, B) -> (Ci, H, W, B).

    Columns without error contribute nothing: with few active ones only those are multiplied.
    """
    Co, B = E.shape[0], E.shape[-1]
    E2 = E.reshape(Co, -1)
    Wt = W.reshape(Co, -1).T
    active = _active_columns(xp, E2)
    if active is None:
        dcols = matmul(Wt, E2)
    else:
        dcols = xp.zeros((Wt.shape[0], E2.shape[1]), dtype=E2.dtype)
        dcols[:, active] = matmul(Wt, E2[:, active])
    return col2im(xp, dcols, layer, B)


def conv_increment_sums(W: Any, E: Any, cols: Any, xp: Any = None) -> tuple[Any, Any]:
    """(Σ E ⊗ Sˡ⁻¹, Σ E) over batch and positions (Eq. (14) without −η): shapes of W and b.

    Computed as (cols @ Eᵀ)ᵀ: OpenBLAS runs this orientation about 10 % faster than
    E @ colsᵀ for these skinny shapes (measured), and the result is the same sum. Columns
    without error add exact zeros and are skipped when few are active.
    """
    Co = E.shape[0]
    E2 = E.reshape(Co, -1)
    active = None if xp is None else _active_columns(xp, E2)
    if active is not None:
        return matmul(cols[:, active], E2[:, active].T).T.reshape(W.shape), E2.sum(axis=1)
    return matmul(cols, E2.T).T.reshape(W.shape), E2.sum(axis=1)


def pool_forward(xp: Any, layer: Pool, S_prev: Any) -> Any:
    """Mean of each k×k window, stride k (a linear IF layer with weights Θff/k²): CHWB -> CHWB.

    Rows and columns beyond the last whole window have no pooling neuron (floor).
    Summed with k² strided adds: a 6-D reshape-and-sum is 15× slower in NumPy (measured).
    """
    k = layer.size
    C, H, W, B = S_prev.shape
    Ho, Wo = H // k, W // k
    total: Any = None
    for i in range(k):
        for j in range(k):
            tap = S_prev[:, i:Ho * k:k, j:Wo * k:k, :]
            total = tap.copy() if total is None else xp.add(total, tap, out=total)
    total /= k * k
    return total


def pool_backward_input(xp: Any, layer: Pool, E: Any, scale: float) -> Any:
    """Wᵀ ⋆ E for pooling, each input neuron receiving ``scale`` × its window's E: CHWB -> CHWB."""
    k = layer.size
    C, H, W = layer.in_shape
    Ho, Wo, B = E.shape[1], E.shape[2], E.shape[3]
    Es = E if scale == 1.0 else E * scale  # 1.0: already scaled and rounded (PoolKind.gated_error_below)
    out = (xp.empty if (Ho * k == H and Wo * k == W) else xp.zeros)((C, H, W, B), dtype=E.dtype)
    for i in range(k):
        for j in range(k):
            out[:, i:Ho * k:k, j:Wo * k:k, :] = Es
    return out


def flatten(xp: Any, S: Any) -> Any:
    """CHWB map -> (B, C·H·W) rows in (C, H, W) order: a transposed view, no copy
    (BLAS takes the transposed operand as it is)."""
    B = S.shape[-1]
    return S.reshape(-1, B).T


def dense_error_to_map(W: Any, E: Any, shape: tuple[int, int, int]) -> Any:
    """Wᵀ E for a dense layer fed by a map, straight into CHWB: E (B, N_out) -> (C, H, W, B)."""
    C, H, Wd = shape
    return matmul(W.T, E.T).reshape(C, H, Wd, E.shape[0])


def dense_forward(W: Any, S_prev: Any) -> Any:
    """W Sˡ⁻¹: W (N_out, N_in), S_prev (B, N_in) -> (B, N_out) (the bias is added by the caller)."""
    return matmul(S_prev, W.T)


def dense_backward_input(W: Any, E: Any) -> Any:
    """Wᵀ E (Eq. (11)): E (B, N_out) -> (B, N_in)."""
    return matmul(E, W)


def dense_increment_sums(E: Any, S_prev: Any) -> tuple[Any, Any]:
    """(Σ_batch E ⊗ Sˡ⁻¹ (N_out, N_in), Σ_batch E (N_out,)), Eq. (14) without −η."""
    return matmul(E.T, S_prev), E.sum(axis=0)


# -- layer kinds: everything the engine, the chips and the counters need from a layer type -------
#
# ``kind_of(layer)`` gives the row of :data:`KINDS` for a parsed layer (``layer.kind``). Each kind
# has: ``relu`` (IF neurons with S′, or a linear IF layer), ``linear`` (W ⋆ S, its bias, the cache
# for the increments), ``layout``, ``error_below`` (Wᵀ ⋆ E), ``gated_error_below`` (S′ ⊙ round(Wᵀ ⋆
# E / Θbp), the step the engine runs), ``increments`` and ``fan``; for layers spread over chips
# (actors.slices) ``slice`` and ``needs``, and for trainable kinds ``on_input``, ``columns`` and
# ``increment_cache`` (the weight copies kept below a split layer). network.py,
# synops.py and the chips dispatch through it and never ask a layer's type. A new layer type is a
# token in the topology grammar (cluster/topology.py) and one class here (plus the event simulator).


@dataclass(frozen=True)
class Fan:
    """Connectivity of one layer: fan-out of its input neurons, fan-in of its outputs.

    fan_out: (H_in, W_in) per input position (channels included), or a scalar for a dense layer.
    fan_in: (H_out, W_out) per output position, or a scalar. connections: synapses per sample
    (the ANN's MACs per sample).
    """

    fan_out: np.ndarray
    fan_in: np.ndarray
    connections: int


def _taps(n_in: int, n_out: int, k: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Per axis: (outputs fed by each input position (n_in,), inputs feeding each output (n_out,))."""
    fed = np.zeros(n_in, dtype=np.int64)
    feeding = np.zeros(n_out, dtype=np.int64)
    for o in range(n_out):
        for kk in range(k):
            i = o + kk - p
            if 0 <= i < n_in:
                fed[i] += 1
                feeding[o] += 1
    return fed, feeding


class ConvKind:
    """Convolution with ReLU IF neurons: W ⋆ S (Eq. (15)), Wᵀ ⋆ E (Eq. (18)), Σ E ⊗ S (Eq. (14))."""

    relu = True

    @staticmethod
    def linear(xp: Any, layer: Conv, params: tuple[Any, Any], S_prev: Any) -> tuple[Any, Any, Any]:
        """(pre (Co, Ho·Wo·B), bias broadcastable to it, im2col cache)."""
        pre, cols = conv_forward(xp, layer, params[0], S_prev)
        return pre, params[1][:, None], cols

    @staticmethod
    def layout(S: Any, layer: Conv) -> Any:
        Co, Ho, Wo = layer.out_shape
        return S.reshape(Co, Ho, Wo, -1)

    @staticmethod
    def error_below(xp: Any, layer: Conv, params: tuple[Any, Any], E: Any, below: Any, theta_ff: float) -> Any:
        return conv_backward_input(xp, layer, params[0], E)

    @staticmethod
    def gated_error_below(xp: Any, layer: Conv, params: tuple[Any, Any], E: Any, below: Any, mask: Any | None,
                          theta_ff: float, theta_bp: float, rounding: bool, count: list | None = None) -> Any:
        """S′ ⊙ round(Wᵀ ⋆ E / Θbp) for the layer below (Eqs. (7), (11), (18)), in its layout; ``count``:
        as for :func:`cluster.kernels.error_gate` (the error spikes emitted below, before the gate)."""
        return error_gate(xp, conv_backward_input(xp, layer, params[0], E), mask, theta_bp, rounding, count)

    @staticmethod
    def increments(xp: Any, layer: Conv, params: tuple[Any, Any], E: Any, cache: Any) -> tuple[Any, Any]:
        return conv_increment_sums(params[0], E, cache, xp)

    # -- slices (a layer spread over chips, cluster.mapping): units are output channels -----------
    @staticmethod
    def slice(layer: Conv, lo: int, hi: int) -> Conv:
        """Output channels lo..hi-1: a convolution of hi − lo kernels on the same input."""
        _, Ho, Wo = layer.out_shape
        return replace(layer, out_channels=hi - lo, out_shape=(hi - lo, Ho, Wo))

    @staticmethod
    def needs(layer: Conv, lo: int, hi: int, below: int) -> tuple[int, int]:
        """Units of the layer below that output channels lo..hi-1 connect to: all ``below`` of them."""
        return 0, below

    @staticmethod
    def on_input(layer: Conv, lo: int, hi: int) -> Conv:
        """The synapses from input channels lo..hi-1 only: every kernel, those input channels."""
        _, H, W = layer.in_shape
        return replace(layer, in_shape=(hi - lo, H, W))

    @staticmethod
    def columns(W: Any, layer: Conv, lo: int, hi: int) -> Any:
        """The weights of :meth:`on_input`'s synapses: W[:, lo:hi] (a view)."""
        return W[:, lo:hi]

    @staticmethod
    def increment_cache(xp: Any, layer: Conv, S_prev: Any) -> Any:
        """What :meth:`increments` needs of the input: its im2col patches."""
        return im2col(xp, S_prev, layer)

    @staticmethod
    def fan(layer: Conv) -> Fan:
        Ci, H, W = layer.in_shape
        Co, Ho, Wo = layer.out_shape
        fh, gh = _taps(H, Ho, layer.kernel, layer.padding)
        fw, gw = _taps(W, Wo, layer.kernel, layer.padding)
        fan_in = Ci * np.outer(gh, gw)
        return Fan(Co * np.outer(fh, fw), fan_in, int(Co * fan_in.sum()))


class PoolKind:
    """Average pooling: a linear IF layer with weights Θff/k² (S = round(Ŝ), S′ = 1; not trainable)."""

    relu = False

    @staticmethod
    def linear(xp: Any, layer: Pool, params: None, S_prev: Any) -> tuple[Any, Any, Any]:
        return pool_forward(xp, layer, S_prev), None, None

    @staticmethod
    def layout(S: Any, layer: Pool) -> Any:
        return S

    @staticmethod
    def error_below(xp: Any, layer: Pool, params: None, E: Any, below: Any, theta_ff: float) -> Any:
        return pool_backward_input(xp, layer, E, theta_ff / layer.size ** 2)

    @staticmethod
    def gated_error_below(xp: Any, layer: Pool, params: None, E: Any, below: Any, mask: Any | None,
                          theta_ff: float, theta_bp: float, rounding: bool, count: list | None = None) -> Any:
        """S′ ⊙ round(Wᵀ ⋆ E / Θbp) for the layer below (Eqs. (7), (11)), rounded on the pooled grid:
        every input of a window receives the same value (E Θff/k²), so its rounding is done once per
        window, k² times fewer, and then copied out; the values are those of rounding after the copy
        (and the error spikes emitted, ``count``, k² times those of the pooled grid)."""
        pooled: list | None = [] if count is not None else None
        Z = error_gate(xp, E * (theta_ff / layer.size ** 2), None, theta_bp, rounding, pooled)
        if count is not None and pooled:
            count.append(pooled[0] * layer.size ** 2)
        out = pool_backward_input(xp, layer, Z, 1.0)
        if mask is not None:
            out *= mask
        return out

    @staticmethod
    def increments(xp: Any, layer: Pool, params: None, E: Any, cache: Any) -> tuple[Any, Any]:
        raise TypeError("pooling has no weights")

    @staticmethod
    def slice(layer: Pool, lo: int, hi: int) -> Pool:
        """Channels lo..hi-1: pooling of those channels of the input only."""
        _, H, W = layer.in_shape
        _, Ho, Wo = layer.out_shape
        return replace(layer, in_shape=(hi - lo, H, W), out_shape=(hi - lo, Ho, Wo))

    @staticmethod
    def needs(layer: Pool, lo: int, hi: int, below: int) -> tuple[int, int]:
        """A pooling channel connects only to the same channel below."""
        return lo, hi

    @staticmethod
    def fan(layer: Pool) -> Fan:
        C, H, W = layer.in_shape
        _, Ho, Wo = layer.out_shape
        fan_out = np.zeros((H, W), dtype=np.int64)
        fan_out[:Ho * layer.size, :Wo * layer.size] = 1  # rows past the last window feed nothing
        fan_in = np.full((Ho, Wo), layer.size ** 2, dtype=np.int64)
        return Fan(fan_out, fan_in, int(C * fan_in.sum()))


class DenseKind:
    """Fully connected ReLU IF neurons on rows (B, N); a map below is flattened in (C, H, W) order."""

    relu = True

    @staticmethod
    def linear(xp: Any, layer: Dense, params: tuple[Any, Any], S_prev: Any) -> tuple[Any, Any, Any]:
        S_prev = flatten(xp, S_prev) if S_prev.ndim == 4 else S_prev
        return dense_forward(params[0], S_prev), params[1][None, :], S_prev

    @staticmethod
    def layout(S: Any, layer: Dense) -> Any:
        return S

    @staticmethod
    def error_below(xp: Any, layer: Dense, params: tuple[Any, Any], E: Any, below: Any, theta_ff: float) -> Any:
        if below.is_map:
            return dense_error_to_map(params[0], E, below.out_shape)
        return dense_backward_input(params[0], E)

    @classmethod
    def gated_error_below(cls, xp: Any, layer: Dense, params: tuple[Any, Any], E: Any, below: Any,
                          mask: Any | None, theta_ff: float, theta_bp: float, rounding: bool,
                          count: list | None = None) -> Any:
        """S′ ⊙ round(Wᵀ E / Θbp) for the layer below (Eqs. (7), (11)), in its layout (``count``: as for conv)."""
        return error_gate(xp, cls.error_below(xp, layer, params, E, below, theta_ff), mask, theta_bp, rounding,
                          count)

    @staticmethod
    def increments(xp: Any, layer: Dense, params: tuple[Any, Any], E: Any, cache: Any) -> tuple[Any, Any]:
        return dense_increment_sums(E, cache)

    @staticmethod
    def slice(layer: Dense, lo: int, hi: int) -> Dense:
        """Neurons lo..hi-1: a dense layer of hi − lo neurons on the same input."""
        return replace(layer, out_features=hi - lo, out_shape=(hi - lo, 1, 1))

    @staticmethod
    def needs(layer: Dense, lo: int, hi: int, below: int) -> tuple[int, int]:
        return 0, below

    @staticmethod
    def on_input(layer: Dense, lo: int, hi: int) -> Dense:
        """The synapses from input units lo..hi-1 (channels of a map below, else neurons)."""
        _, H, W = layer.in_shape
        return replace(layer, in_shape=(hi - lo, H, W))

    @staticmethod
    def columns(W: Any, layer: Dense, lo: int, hi: int) -> Any:
        """W's columns of input units lo..hi-1 (a map's channels are runs of H·W columns, (C, H, W) order)."""
        _, H, Wd = layer.in_shape
        return W[:, lo * H * Wd:hi * H * Wd]

    @staticmethod
    def increment_cache(xp: Any, layer: Dense, S_prev: Any) -> Any:
        return flatten(xp, S_prev) if S_prev.ndim == 4 else S_prev

    @staticmethod
    def fan(layer: Dense) -> Fan:
        return Fan(np.asarray(layer.out_features), np.asarray(layer.in_features),
                   layer.in_features * layer.out_features)


KINDS: dict[str, Any] = {"conv": ConvKind, "pool": PoolKind, "dense": DenseKind}


def kind_of(layer: Any) -> Any:
    """The :data:`KINDS` row of a parsed layer."""
    return KINDS[layer.kind]


__all__ = [
    "Conv", "Dense", "Pool", "im2col", "col2im", "conv_forward", "conv_backward_input",
    "conv_increment_sums", "pool_forward", "pool_backward_input", "flatten", "dense_error_to_map",
    "dense_forward", "dense_backward_input", "dense_increment_sums", "Fan", "KINDS", "kind_of",
]
