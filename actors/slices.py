"""Pieces of layers: cutting a chip's slice of a layer into the messages its neighbours need, joining
the pieces it receives, and the whole layers' state from the chips' slices (:class:`actors.chip.Chip`,
:class:`cluster.mapping.Plan`).

A piece is units lo..hi-1 of a layer array: output channels of a CHWB map (C, H, W, B), columns
of (B, N) rows. With the event wire a piece also carries its phases of waves (float64, the same
layout), cut and placed the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from cluster.errors import SpikeGradError
from cluster.events import FORWARD_STANDARD
from cluster.layers import kind_of
from cluster.mapping import Plan


def units(A: Any, lo: int, hi: int) -> Any:
    """Units lo..hi-1 of a layer array: channels of a CHWB map, columns of (B, N) rows."""
    return A[lo:hi] if A.ndim == 4 else A[:, lo:hi]


def join(xp: Any, parts: list[Any]) -> Any:
    """Pieces of consecutive units, in order, as one layer array."""
    if len(parts) == 1:
        return parts[0]
    return xp.concatenate(parts, axis=0 if parts[0].ndim == 4 else 1)


def cut(phases: list, a: int, b: int) -> list:
    """Units a..b-1 of every wave of some phases (float64 layer layout), samples without a spike dropped."""
    out = []
    for tag, waves in phases:
        kept = []
        for cols, d in waves:
            piece = units(d, a, b)
            has = (piece.reshape(-1, piece.shape[-1]) != 0).any(axis=0) if piece.ndim == 4 else (piece != 0).any(axis=1)
            if has.any():
                kept.append((cols[has], piece[..., has] if piece.ndim == 4 else piece[has]))
        out.append((tag, kept))
    return out


def place(phases: list, offset: int, total: int) -> list:
    """Waves of some units placed at ``offset`` among ``total`` units (zeros elsewhere)."""
    out = []
    for tag, waves in phases:
        placed = []
        for cols, d in waves:
            n = d.shape[0] if d.ndim == 4 else d.shape[1]
            if (offset, n) == (0, total):
                placed.append((cols, d))
                continue
            full = np.zeros((total, *d.shape[1:]) if d.ndim == 4 else (d.shape[0], total))
            if d.ndim == 4:
                full[offset:offset + n] = d
            else:
                full[:, offset:offset + n] = d
            placed.append((cols, full))
        out.append((tag, placed))
    return out


def merge(parts: list[list], backward: bool) -> list:
    """Phases from several pieces as one: each phase's waves from every piece, in piece order; phases
    in the global order (forward: the standard phase, then residual phases bottom-up; backward:
    top-down)."""
    waves: dict[int, list] = {}
    for phases in parts:
        for tag, ws in phases:
            waves.setdefault(tag, []).extend(ws)
    order = sorted(waves, key=lambda t: (t != FORWARD_STANDARD, -t if backward else t))
    return [(t, waves[t]) for t in order]


def returns(msgs: list[Any]) -> Any:
    """A call's results as Ray's ``num_returns = max(1, len(msgs))`` expects them."""
    if not msgs:
        return None
    return msgs[0] if len(msgs) == 1 else tuple(msgs)


def results(value: Any, n: int) -> list[Any]:
    """The inverse of :func:`returns`: a call's ``n`` results as a list."""
    if n == 0:
        return []
    return [value] if n == 1 else list(value)


def assemble_state(plan: Plan, parts: list[dict]) -> dict[int, tuple[np.ndarray, ...]]:
    """Whole layers' (W, b, vW, vb) from the chips' :meth:`actors.chip.Chip.state`, in chip order."""
    out = {}
    for l, layer in enumerate(plan.topo.layers):
        if layer.trainable:
            rows = [parts[p.chip][l] for p in plan.owners[l]]
            out[l] = tuple(np.concatenate([r[i] for r in rows], axis=0) for i in range(4))
    return out


def check_copies(plan: Plan, state: dict[int, tuple[np.ndarray, ...]], copies: list[dict]) -> int:
    """Every chip's weight copies (:meth:`actors.chip.Chip.copy_state`, in chip order) against the owners'
    weights and velocities: bit for bit. Returns the number of values compared; raises
    :class:`SpikeGradError` naming the chip and layer where a copy differs."""
    compared = 0
    for chip, held in enumerate(copies):
        for l, lo, hi in plan.copies(chip):
            layer = plan.topo.layers[l]
            if l not in held:
                raise SpikeGradError(f"chip {chip} reported no copy of layer {l}'s weights")
            for what, i, copy in (("weights", 0, held[l][0]), ("velocities", 2, held[l][1])):
                owner = np.asarray(kind_of(layer).columns(state[l][i], layer, lo, hi))
                if copy.shape != owner.shape or not np.array_equal(copy, owner):
                    differ = int(np.count_nonzero(copy != owner)) if copy.shape == owner.shape else copy.size
                    raise SpikeGradError(f"chip {chip}'s copy of layer {l}'s {what} (input units {lo}-{hi}) differs "
                                         f"from the owners' at {differ} of {owner.size} values")
                compared += owner.size
    return compared
