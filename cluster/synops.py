"""Synaptic-operation counts (section 4, "Sparsity in backpropagated gradient"; docs/design.md §5).

A spike (or error spike) of value s is |s| events; each event costs one
accumulation (ACC) per synapse it crosses. Per layer l and batch (one name for one meaning,
the same in the chips' reports, the Parquet tables and the README):

* ``spikes``                 = Σ |Sˡ|, the spikes layer l's neurons emit (l < L);
* ``error_spikes``           = Σ |Zˡ|, the error spikes layer l's U compartments emit (Eq. (6)),
  before the S′ gate: what a link into the chip holding layer l carries backward;
* ``error_spikes_delivered`` = Σ |Eˡ| = Σ |S′ ⊙ Zˡ|, the δ that pass the gate (Eq. (7)) and
  reach synapses: the ones that cost ``acc_backward`` and ``acc_update``;
* ``input_macs``             = [x ≠ 0] · fan-out of layer 0: the SNN's multiply-accumulates, since
  the float input is multiplied in (0 for l ≥ 1);
* ``acc_forward``  = Σ |Sˡ⁻¹| · fan-out of each neuron of layer l−1 into layer l (0 for l = 0);
* ``acc_backward`` = Σ |Eˡ| · fan-in of each neuron of l (errors sent down to l−1; l ≥ 1);
* ``acc_update``   = Σ |Eˡ| · fan-in (each δ updates the ω of its incoming synapses, Eq. (8));
* ``macs``         = the equivalent ANN's MACs for the same pass: connections × B.

These are the equivalent ANN's counts: the fewest spikes that carry its values (n_min, Eq. (21)).
The event simulator (``cluster.events``) reports the spikes it actually sends beside them
(``spikes`` against ``spikes_min``, ``error_spikes`` against ``error_spikes_min``).

Border taps of a convolution count only where a connection exists: an input
neuron near the border of a valid convolution feeds fewer outputs, and an output
of a padded convolution has fewer inputs than Ci·k·k. Float gradients have no
spikes: there an event is a nonzero error value, the ANN's own sparsity.
Relative synaptic operations = ACC / MAC (figures 1 and 2).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import Fan, kind_of, matmul
from .topology import Topology

COUNTERS: tuple[str, ...] = ("spikes", "error_spikes", "error_spikes_delivered", "input_macs", "acc_forward",
                             "acc_backward", "acc_update", "macs")
_SPIKES, _EMITTED, _DELIVERED, _INPUT_MACS, _ACC_F, _ACC_B, _ACC_U, _MACS = range(len(COUNTERS))


def layer_fan(layer: Any) -> Fan:
    """Connectivity of one layer (:meth:`cluster.layers` kinds' ``fan``)."""
    return kind_of(layer).fan(layer)


def topology_fans(topo: Topology) -> list[Fan]:
    return [layer_fan(layer) for layer in topo.layers]


def _events(xp: Any, A: Any, kind: str) -> Any:
    """Events per position: A itself for spike counts known ≥ 0 (ReLU and pooling outputs),
    |A| for signed error spikes, [A ≠ 0] for the float input and float errors."""
    if kind == "nonneg":
        return A
    if kind == "abs":
        return xp.abs(A)
    return A != 0


def _weighted_events(xp: Any, A: Any, fan: np.ndarray, fan_dev: Any, kind: str) -> tuple[Any, Any]:
    """(Σ events(A), Σ events(A) · fan). A is CHWB (C, H, W, B) against a (H, W) fan, or
    any shape against a scalar fan. Sums per position are exact in float32 while
    C · B · max|A| < 2²⁴; the totals are taken in float64."""
    ev = _events(xp, A, kind)
    if fan.ndim == 0:
        total = ev.sum(dtype=np.float64)
        return total, total * float(fan)
    assert A.ndim == 4, f"array of shape {A.shape} against a fan of shape {fan.shape}"
    C, H, W, B = ev.shape
    if ev.dtype.kind != "f":
        ev = ev.astype(np.float32)
    # Σ over the batch as a matrix-vector product: 7× faster than sum(axis=(0, 3)) (measured).
    per_pos = matmul(ev.reshape(-1, B), xp.ones(B, dtype=ev.dtype)).reshape(C, H, W)
    per_pos = per_pos.astype(np.float64).sum(axis=0)
    return per_pos.sum(), (per_pos * fan_dev).sum()


class SynopCounter:
    """Accumulates COUNTERS per layer over batches, on the array backend (no device sync per batch).

    ``add(x_chwb, S_list, E_list, batch)`` after each training step (or ``measure`` in a
    worker thread and ``accumulate`` in order); ``totals()`` gives a host
    (L+1, len(COUNTERS)) float64 array and resets.
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

    def measure_layer(self, l: int, below: Any, S_l: Any | None, E_l: Any | None, batch: int,
                      emitted: Any = None) -> list[Any]:
        """The COUNTERS row of layer l for one (micro-)batch.

        below: what layer l received (the CHWB float input for l = 0, else Sˡ⁻¹); S_l: its
        spikes (None for the output layer); E_l: its errors or None; emitted: Σ |Zˡ|, its U
        compartments' error spikes before the gate, where known (:func:`cluster.network.backward`).
        Pure: thread-safe.
        """
        xp, layer, fan = self.xp, self.topo.layers[l], self.fans[l]
        row: list[Any] = [0.0] * len(COUNTERS)
        # Hidden outputs are ReLU or pooling of ReLU outputs: S ≥ 0, so |S| = S.
        _, fwd = _weighted_events(xp, below, fan.fan_out, self._fan_out_dev[l], "nonzero" if l == 0 else "nonneg")
        row[_INPUT_MACS if l == 0 else _ACC_F] = fwd
        if S_l is not None:
            row[_SPIKES] = _events(xp, S_l, "nonneg").sum(dtype=np.float64)
        row[_MACS] = float(fan.connections * batch)
        if emitted is not None:
            row[_EMITTED] = emitted
        if E_l is not None:
            row[_DELIVERED], weighted = _weighted_events(xp, E_l, fan.fan_in, self._fan_in_dev[l],
                                                         "abs" if self.spike else "nonzero")
            if l > 0:
                row[_ACC_B] = weighted
            if layer.trainable:
                row[_ACC_U] = weighted
        return row

    def measure(self, x: Any, S: list[Any], E: list[Any] | None, batch: int,
                emitted: dict[int, Any] | None = None) -> list[list[Any]]:
        """The counts of one (micro-)batch, (L+1) rows of COUNTERS, without touching the totals.

        x: CHWB float input; S[l]: layer outputs (S[L] = Vᴸ is not a spike count); E[l]: errors
        or None; emitted: {l: Σ |Zˡ|} (:attr:`cluster.network.BackwardPass.emitted`). Pure: safe
        to call from several threads at once.
        """
        L = len(self.topo.layers) - 1
        return [self.measure_layer(l, x if l == 0 else S[l - 1], S[l] if l < L else None,
                                   None if E is None else E[l], batch, (emitted or {}).get(l))
                for l in range(L + 1)]

    def accumulate_row(self, l: int, row: list[Any]) -> None:
        acc = self._acc[l]
        for i, v in enumerate(row):
            acc[i] = acc[i] + v

    def accumulate(self, rows: list[list[Any]]) -> None:
        for acc, row in zip(self._acc, rows):
            for i, v in enumerate(row):
                acc[i] = acc[i] + v

    def add(self, x: Any, S: list[Any], E: list[Any] | None, batch: int, emitted: dict[int, Any] | None = None) -> None:
        """measure() then accumulate()."""
        self.accumulate(self.measure(x, S, E, batch, emitted))

    def totals(self) -> np.ndarray:
        out = np.array([[float(v) for v in row] for row in self._acc], dtype=np.float64)
        self.reset()
        return out


def spike_bound(topo: Topology, params: dict[int, tuple[Any, Any]], x_max: float, theta_ff: float) -> list[float]:
    """n_max of Eq. (21) per hidden layer: ⌊N_in · w_max · n_max of the layer below / Θff⌋, the most
    spikes one neuron can emit in one sample (before the first layer, n_max is the input's largest
    value x_max). N_in: the layer's largest fan-in; w_max: its largest |weight| (pooling: Θff/k²).
    Biases are left out, as in the paper, so a neuron with a large bias can exceed it."""
    bounds, below = [], float(x_max)
    for l, layer in enumerate(topo.layers[:-1]):
        n_in = float(np.max(layer_fan(layer).fan_in))
        w_max = float(np.max(np.abs(params[l][0]))) if layer.trainable else theta_ff / layer.size ** 2  # type: ignore[union-attr]
        below = float(np.floor(n_in * w_max * below / theta_ff))
        bounds.append(below)
    return bounds


def spike_histogram(S: list[Any], topo: Topology) -> list[np.ndarray]:
    """Per hidden layer: how many (neuron, sample) pairs hold 0, 1, 2, ... spikes (Σ |S| per neuron
    per sample, the equivalent ANN's spike counts: the fewest the spiking network can send)."""
    return [np.bincount(np.abs(np.asarray(S[l])).astype(np.int64).ravel()) for l in range(len(topo.layers) - 1)]
