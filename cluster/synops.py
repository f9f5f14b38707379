"""Synaptic-operation counts (section 4, "Sparsity in backpropagated gradient"; DESIGN §5).

A spike (or error spike) of value s is |s| events; each event costs one
accumulation (ACC) per synapse it crosses. Per layer l and batch:

* ``acc_forward``  = Σ |Sˡ⁻¹| · fan-out of each neuron of layer l−1 into layer l
  (layer 0: the float input is multiplied in, so it counts [x ≠ 0] · fan-out MACs);
* ``acc_backward`` = Σ |Eˡ| · fan-in of each neuron of l (errors sent down to l−1; l ≥ 1);
* ``acc_update``   = Σ |Eˡ| · fan-in (each δ updates the ω of its incoming synapses, Eq. (8));
* ``macs``         = the equivalent ANN's MACs for the same pass: connections × B.

Border taps of a convolution count only where a connection exists: an input
neuron near the border of a valid convolution feeds fewer outputs, and an output
of a padded convolution has fewer inputs than Ci·k·k. Float gradients have no
spikes: there an event is a nonzero error value, the ANN's own sparsity.
Relative synaptic operations = ACC / MAC (figures 1 and 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .topology import Conv, Dense, Pool, Topology

COUNTERS: tuple[str, ...] = ("spikes", "error_spikes", "acc_forward", "acc_backward", "acc_update", "macs")


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


@dataclass(frozen=True)
class Fan:
    """Connectivity of one layer: fan-out of its input neurons, fan-in of its outputs.

    fan_out: (H_in, W_in) per input position (multiply by nothing: channels included),
    or a scalar for a dense layer. fan_in: (H_out, W_out) per output position, or a scalar.
    connections: synapses per sample (the ANN's MACs per sample).
    """

    fan_out: np.ndarray
    fan_in: np.ndarray
    connections: int


def layer_fan(layer: Any) -> Fan:
    if isinstance(layer, Conv):
        Ci, H, W = layer.in_shape
        Co, Ho, Wo = layer.out_shape
        fh, gh = _taps(H, Ho, layer.kernel, layer.padding)
        fw, gw = _taps(W, Wo, layer.kernel, layer.padding)
        fan_out = Co * np.outer(fh, fw)
        fan_in = Ci * np.outer(gh, gw)
        return Fan(fan_out, fan_in, int(Co * fan_in.sum()))
    if isinstance(layer, Pool):
        C, H, W = layer.in_shape
        _, Ho, Wo = layer.out_shape
        fan_out = np.zeros((H, W), dtype=np.int64)
        fan_out[:Ho * layer.size, :Wo * layer.size] = 1  # rows past the last window feed nothing
        fan_in = np.full((Ho, Wo), layer.size ** 2, dtype=np.int64)
        return Fan(fan_out, fan_in, int(C * fan_in.sum()))
    assert isinstance(layer, Dense)
    return Fan(np.asarray(layer.out_features), np.asarray(layer.in_features),
               layer.in_features * layer.out_features)


def topology_fans(topo: Topology) -> list[Fan]:
    return [layer_fan(layer) for layer in topo.layers]


def _weighted_events(xp: Any, A: Any, fan: np.ndarray, fan_dev: Any, spike: bool) -> Any:
    """Σ events(A) · fan. A is CBHW (C, B, H, W) against a (H, W) fan, or any shape against a scalar."""
    ev = xp.abs(A) if spike else (A != 0).astype(A.dtype)
    if fan.ndim == 0:
        return ev.sum() * float(fan)
    if A.ndim == 4:
        return (ev.sum(axis=(0, 1)) * fan_dev).sum()
    # A dense map flattened (B, C·H·W) feeding a conv cannot happen (topology forbids it).
    raise AssertionError(f"array of shape {A.shape} against a fan of shape {fan.shape}")


class SynopCounter:
    """Accumulates COUNTERS per layer over batches, on the array backend (no device sync per batch).

    ``add(x_cbhw, S_list, E_list, batch)`` after each training step; ``totals()`` gives
    a host (L+1, len(COUNTERS)) float64 array and resets.
    """

    def __init__(self, xp: Any, topo: Topology, spike_errors: bool) -> None:
        self.xp = xp
        self.topo = topo
        self.spike = spike_errors
        self.fans = topology_fans(topo)
        self._fan_out_dev = [xp.asarray(f.fan_out, dtype=np.float64) if f.fan_out.ndim else None
                             for f in self.fans]
        self._fan_in_dev = [xp.asarray(f.fan_in, dtype=np.float64) if f.fan_in.ndim else None
                            for f in self.fans]
        self._acc: list[list[Any]] = []
        self.reset()

    def reset(self) -> None:
        self._acc = [[0.0] * len(COUNTERS) for _ in self.topo.layers]

    def add(self, x: Any, S: list[Any], E: list[Any] | None, batch: int) -> None:
        """x: CBHW float input; S[l]: layer outputs (S[L] = Vᴸ is skipped); E[l]: errors or None."""
        xp = self.xp
        L = len(self.topo.layers) - 1
        for l, (layer, fan) in enumerate(zip(self.topo.layers, self.fans)):
            row = self._acc[l]
            below = x if l == 0 else S[l - 1]
            spike_in = l > 0  # the float input is an event where x != 0
            row[2] = row[2] + _weighted_events(xp, below, fan.fan_out, self._fan_out_dev[l], spike_in)
            row[5] = row[5] + float(fan.connections * batch)
            if l < L:
                row[0] = row[0] + xp.abs(S[l]).sum()
            if E is not None and E[l] is not None:
                ev = xp.abs(E[l]).sum() if self.spike else (E[l] != 0).sum()
                row[1] = row[1] + ev
                weighted = _weighted_events(xp, E[l], fan.fan_in, self._fan_in_dev[l], self.spike)
                if l > 0:
                    row[3] = row[3] + weighted
                if layer.trainable:
                    row[4] = row[4] + weighted

    def totals(self) -> np.ndarray:
        out = np.array([[float(v) for v in row] for row in self._acc], dtype=np.float64)
        self.reset()
        return out
