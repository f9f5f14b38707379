"""Layer products of the equivalent ANN: convolution, average pooling, dense.

Layout. Inside the engine, maps are held channel-first over the batch,
``(C, B, H, W)`` ("CBHW"), so that a convolution is one matrix product
``W (Co, Ci·k·k) @ cols (Ci·k·k, B·Ho·Wo)`` whose result is already CBHW: no
transposes on the hot path. Dense layers take ``(B, N)`` with N in (C, H, W)
order (DESIGN §2); :func:`flatten` converts at the conv-to-dense boundary.

These functions compute the *linear* parts: W ⋆ S (Eqs. (10), (15)) forward and
Wᵀ ⋆ E (Eqs. (11), (18)) backward, and the increment sums Σ E ⊗ S (Eq. (14)).
Rounding and gating live in :mod:`cluster.kernels`.
"""

from __future__ import annotations

from typing import Any

from .topology import Conv, Dense, Pool


def _as_strided(xp: Any) -> Any:
    return xp.lib.stride_tricks.as_strided


def im2col(xp: Any, S: Any, layer: Conv) -> Any:
    """Patches of a CBHW map: (Ci, B, H, W) -> cols (Ci·k·k, B·Ho·Wo), zero padded.

    Row order is (ci, kh, kw), matching W.reshape(Co, Ci·k·k); the copy's
    innermost axis is Wo, contiguous in the source, so it streams.
    """
    k, p = layer.kernel, layer.padding
    if p:
        S = xp.pad(S, ((0, 0), (0, 0), (p, p), (p, p)))
    S = xp.ascontiguousarray(S)
    C, B, H, W = S.shape
    Ho, Wo = H - k + 1, W - k + 1
    sc, sb, sh, sw = S.strides
    view = _as_strided(xp)(S, shape=(C, k, k, B, Ho, Wo), strides=(sc, sh, sw, sb, sh, sw))
    return view.reshape(C * k * k, B * Ho * Wo)  # reshape of a strided view copies


def col2im(xp: Any, cols: Any, layer: Conv, batch: int) -> Any:
    """Adjoint of :func:`im2col`: cols (Ci·k·k, B·Ho·Wo) -> (Ci, B, H, W), summing overlaps.

    Taps that fall into the zero padding are dropped: they have no neuron.
    """
    k, p = layer.kernel, layer.padding
    Ci, H, W = layer.in_shape
    _, Ho, Wo = layer.out_shape
    out = xp.zeros((Ci, batch, H + 2 * p, W + 2 * p), dtype=cols.dtype)
    c6 = cols.reshape(Ci, k, k, batch, Ho, Wo)
    for i in range(k):
        for j in range(k):
            out[:, :, i:i + Ho, j:j + Wo] += c6[:, i, j]
    if p:
        out = out[:, :, p:p + H, p:p + W]
    return out


def conv_forward(xp: Any, layer: Conv, W: Any, b: Any, S_prev: Any) -> tuple[Any, Any]:
    """W ⋆ Sˡ⁻¹ + bˡ for a CBHW input.

    W: (Co, Ci, k, k); b: (Co,); S_prev: (Ci, B, H, W). Returns (pre (Co, B, Ho, Wo), cols),
    cols kept for the weight increment.
    """
    B = S_prev.shape[1]
    cols = im2col(xp, S_prev, layer)
    pre = W.reshape(W.shape[0], -1) @ cols
    pre += b[:, None]
    _, Ho, Wo = layer.out_shape
    return pre.reshape(W.shape[0], B, Ho, Wo), cols


def conv_backward_input(xp: Any, layer: Conv, W: Any, E: Any) -> Any:
    """Transposed convolution Wᵀ ⋆ E (Eq. (11)): E (Co, B, Ho, Wo) -> (Ci, B, H, W)."""
    Co, B = E.shape[0], E.shape[1]
    dcols = W.reshape(Co, -1).T @ E.reshape(Co, -1)
    return col2im(xp, dcols, layer, B)


def conv_increment_sums(W: Any, E: Any, cols: Any) -> tuple[Any, Any]:
    """(Σ E ⊗ Sˡ⁻¹, Σ E) over batch and positions (Eq. (14) without −η): shapes of W and b."""
    Co = E.shape[0]
    E2 = E.reshape(Co, -1)
    return (E2 @ cols.T).reshape(W.shape), E2.sum(axis=1)


def pool_forward(xp: Any, layer: Pool, S_prev: Any) -> Any:
    """Mean of each k×k window, stride k (a linear IF layer with weights Θff/k²): CBHW -> CBHW.

    Rows and columns beyond the last whole window have no pooling neuron (floor).
    """
    k = layer.size
    C, B, H, W = S_prev.shape
    Ho, Wo = H // k, W // k
    win = S_prev[:, :, :Ho * k, :Wo * k].reshape(C, B, Ho, k, Wo, k)
    return win.sum(axis=(3, 5)) / (k * k)


def pool_backward_input(xp: Any, layer: Pool, E: Any, scale: float) -> Any:
    """Wᵀ ⋆ E for pooling, each input neuron receiving ``scale`` × its window's E: CBHW -> CBHW."""
    k = layer.size
    C, H, W = layer.in_shape
    B, Ho, Wo = E.shape[1], E.shape[2], E.shape[3]
    up = xp.broadcast_to((E * scale)[:, :, :, None, :, None], (C, B, Ho, k, Wo, k))
    if Ho * k == H and Wo * k == W:
        return up.reshape(C, B, H, W)
    out = xp.zeros((C, B, H, W), dtype=E.dtype)
    out[:, :, :Ho * k, :Wo * k] = up.reshape(C, B, Ho * k, Wo * k)
    return out


def flatten(xp: Any, S: Any) -> Any:
    """CBHW map -> (B, C·H·W) rows in (C, H, W) order, the order dense weights expect."""
    C, B, H, W = S.shape
    return xp.ascontiguousarray(S.transpose(1, 0, 2, 3)).reshape(B, C * H * W)


def unflatten(xp: Any, S: Any, shape: tuple[int, int, int]) -> Any:
    """Inverse of :func:`flatten`: (B, C·H·W) -> (C, B, H, W)."""
    C, H, W = shape
    return xp.ascontiguousarray(S.reshape(S.shape[0], C, H, W).transpose(1, 0, 2, 3))


def dense_forward(W: Any, b: Any, S_prev: Any) -> Any:
    """W Sˡ⁻¹ + bˡ: W (N_out, N_in), b (N_out,), S_prev (B, N_in) -> (B, N_out)."""
    pre = S_prev @ W.T
    pre += b
    return pre


def dense_backward_input(W: Any, E: Any) -> Any:
    """Wᵀ E (Eq. (11)): E (B, N_out) -> (B, N_in)."""
    return E @ W


def dense_increment_sums(E: Any, S_prev: Any) -> tuple[Any, Any]:
    """(Σ_batch E ⊗ Sˡ⁻¹ (N_out, N_in), Σ_batch E (N_out,)), Eq. (14) without −η."""
    return E.T @ S_prev, E.sum(axis=0)


__all__ = [
    "Conv", "Dense", "Pool", "im2col", "col2im", "conv_forward", "conv_backward_input",
    "conv_increment_sums", "pool_forward", "pool_backward_input", "flatten", "unflatten",
    "dense_forward", "dense_backward_input", "dense_increment_sums",
]
