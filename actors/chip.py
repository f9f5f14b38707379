"""A chip: one layer, or a group of consecutive layers, of the spiking network (DESIGN §5).

A chip is a plain class, testable without Ray; :mod:`actors.ray_chip` wraps it as a Ray
actor. It holds its layers' weights Wˡ, bˡ, the momentum velocities, the increment
accumulators ω (Eq. (8)) and its counters. Its protocol, per batch, in order:

=========  ================================================================================
phase      what happens
=========  ================================================================================
FORWARD    per micro-batch: spike counts Sˡ⁻¹ in (the float input x on the first chip),
           Ŝ, S, S′ for each of its layers, the top layer's spike counts out
           (the output chip keeps Vᴸ instead)
BACKWARD   per micro-batch, in reverse: integer error spike counts Z of its top layer in
           (the output chip makes Eᴸ from Vᴸ and the labels), Eˡ = S′ ⊙ Z, ω += Σ E ⊗ Sˡ⁻¹
           for each layer, and Zˡ⁻¹ = round((Wˡ)ᵀ ⋆ Eˡ / Θbp) out to the chip below
APPLY      once per batch (Algorithm 3): v ← μ v − η Σ ω (its own and its replicas'),
           w ← w + v, ω ← 0
=========  ================================================================================

What crosses a link backward is Zˡ⁻¹, the error spikes the boundary neurons' U
compartments emit (Eq. (6)): the synapses Wˡ live on the chip that owns layer l, so
the sum Σₖ wₖᵢ δₖ is taken there and only integer spike counts travel (floats only
for the float-gradient baseline). The receiving chip gates them with its S′ (Eq. (7)).

Event wire (``ChipConfig.wire == "events"``, ``spikegrad train --wire events``): when
training, chips exchange address events instead of counts. Each chip also runs its share
of the spiking network (:class:`cluster.events.Segment`, float64) on the events it
receives, and sends the events its top layer (forward) or its boundary U compartments
(backward) emit, phase by phase and wave by wave (:func:`actors.wire.encode_events`). The
receiving chip sums the events to the counts its equivalent ANN uses, so learning is the
count wire's; every S, E and Z of the spiking network is compared with the ANN's, and the
values that differ are counted (``report()["event_checks"]``). Evaluation uses counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, get_args

import numpy as np

from cluster.backend import cupy_available, get_backend, to_device, to_host
from cluster.errors import SpikeGradError
from cluster.events import FORWARD_STANDARD, Segment
from cluster.kernels import error_gate
from cluster.network import (
    LayerForward,
    StepConfig,
    backward_layers,
    error_events,
    forward_layers,
    sgd_update,
    to_chwb,
    top_error_spikes,
    top_potential,
)
from cluster.synops import COUNTERS, SynopCounter
from cluster.topology import parse_topology

from . import wire
from .allocator import resident_bytes


class ChipFailure(SpikeGradError):
    """A chip's process died, or a message it held was lost with it: the driver can restart the
    chips from the last checkpoint and replay (``launch.run.driver``)."""


class Phase(str, Enum):
    """The chip protocol's phases, in order; :class:`Chip` has one method named after each."""

    FORWARD = "forward"
    BACKWARD = "backward"
    APPLY = "apply"


Wire = Literal["counts", "events"]
WIRES: tuple[str, ...] = get_args(Wire)
Placement = Literal["pack", "spread"]   # how a pipeline's chips spread over Ray nodes (actors.pipeline)
PLACEMENTS: tuple[str, ...] = get_args(Placement)


@dataclass(frozen=True)
class ChipConfig:
    """What every chip of a run shares: topology, thresholds, learning rule, arrays."""

    topology: str
    step: StepConfig
    eta: float
    momentum: float
    dtype: str = "float32"
    backend: str = "numpy"    # numpy, cupy, or auto (CuPy where the chip's process has a GPU)
    frac_bits: int | None = None  # fixed-point weights on a 2⁻ᴷ grid (None: floating point)
    wire: Wire = "counts"     # training messages: "counts" per micro-batch, or "events" (address events)
    replicas: int = 1         # data-parallel copies of this chip: its ω goes to the other replicas - 1




def parse_chips(spec: str | None, n_layers: int) -> list[tuple[int, int]]:
    """``"0-1,2-3,4,5"`` -> [(0, 1), (2, 3), (4, 4), (5, 5)]; None: one layer per chip.

    The groups must cover layers 0..L once, in order.
    """
    if not spec:
        return [(l, l) for l in range(n_layers)]
    groups = []
    for part in spec.split(","):
        try:
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b) if b else int(a)
        except ValueError:
            raise SpikeGradError(f"bad --chips group {part!r}: expected 'N' or 'N-M', e.g. 0-1,2-3,4,5") from None
        groups.append((lo, hi))
    expected = 0
    for lo, hi in groups:
        if lo != expected or hi < lo:
            raise SpikeGradError(f"--chips {spec!r}: groups must cover layers 0..{n_layers - 1} in order; "
                                 f"expected a group starting at layer {expected}, got {lo}-{hi}")
        expected = hi + 1
    if expected != n_layers:
        raise SpikeGradError(f"--chips {spec!r}: groups cover layers 0..{expected - 1}, the network has "
                             f"0..{n_layers - 1}")
    return groups


class Chip:
    """Layers ``first..last`` of the network; see the module docstring for the protocol.

    params: {layer l: (W, b)} host arrays for its trainable layers (the run's initial weights).
    """

    def __init__(self, index: int, first: int, last: int, cfg: ChipConfig,
                 params: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self.index, self.first, self.last, self.cfg = index, first, last, cfg
        self.topo = parse_topology(cfg.topology)
        self.L = len(self.topo.layers) - 1
        self.layers = list(range(first, last + 1))
        # "auto": CuPy where this chip's process sees a CUDA device, else NumPy; the choice is
        # reported by ping() and logged by the driver, never made silently.
        self.backend = get_backend(("cupy" if cupy_available()[0] else "numpy") if cfg.backend == "auto"
                                   else cfg.backend)
        self.xp = self.backend.xp
        self.dtype = np.dtype(cfg.dtype)
        missing = [l for l in self.layers if self.topo.layers[l].trainable and l not in params]
        if missing:
            raise SpikeGradError(f"chip {index}: no initial weights for layers {missing}")
        # Copies: arrays that came through Ray's object store are read-only views of it.
        self.params = {l: (self._own(params[l][0]), self._own(params[l][1]))
                       for l in self.layers if self.topo.layers[l].trainable}
        self.velocity = {l: (self.xp.zeros_like(W), self.xp.zeros_like(b)) for l, (W, b) in self.params.items()}
        # Σ E ⊗ S over the batch so far (None: nothing yet)
        self.omega: dict[int, tuple[Any, Any] | None] = {l: None for l in self.params}
        self.pending: dict[tuple[int, int], tuple[Any, list[LayerForward], Segment | None]] = {}
        self.counter = SynopCounter(self.xp, self.topo, spike_errors=(cfg.step.gradient == "spike"))
        self.size_audit = False
        if cfg.wire not in WIRES:
            raise SpikeGradError(f"chip {index}: wire expected one of {WIRES}, got {cfg.wire!r}")
        if cfg.wire == "events" and cfg.step.gradient != "spike":
            raise SpikeGradError("--wire events needs spike gradients (error spikes); float gradients have no events")
        self.events = cfg.wire == "events"
        self.reset_counters()

    def _own(self, a: np.ndarray) -> Any:
        """A private, writable copy of a host array on this chip's backend."""
        return np.array(a, dtype=self.dtype) if self.xp is np else to_device(self.backend, a, self.dtype)

    # -- shapes ------------------------------------------------------------------------------
    @property
    def is_first(self) -> bool:
        return self.first == 0

    @property
    def is_output(self) -> bool:
        return self.last == self.L

    def _in_shape(self) -> tuple[int, ...]:
        return self.topo.layers[self.first].in_shape

    def _out_shape(self) -> tuple[int, ...]:
        return self.topo.layers[self.last].out_shape

    def _to_layout(self, values: np.ndarray, l_below: int) -> Any:
        """Wire rows (B, N) -> the layout of layer ``l_below``'s output (CHWB map or (B, N))."""
        v = to_device(self.backend, values, self.dtype)
        layer = self.topo.layers[l_below] if l_below >= 0 else None
        if layer is None or not layer.is_map:
            return v
        C, H, W = layer.out_shape
        return self.xp.ascontiguousarray(v.T).reshape(C, H, W, v.shape[0])

    def _to_rows(self, A: Any) -> np.ndarray:
        """A layer array (CHWB map or (B, N)) -> host rows (B, N) for the wire."""
        if A.ndim == 4:
            A = A.reshape(-1, A.shape[-1]).T
        return to_host(A)

    def _send(self, values: Any, kind: str, dst: int, batch: int, micro: int, shape: tuple,
              count: bool = True) -> Any:
        """Encode ``values`` for chip ``dst``; ``count`` False (evaluation) leaves the traffic counters alone."""
        t0 = time.perf_counter()
        rows = self._to_rows(values)
        if kind == "forward" or self.cfg.step.gradient == "spike":
            # Spike counts are integers: convert (and lay out by sample) in one pass, so the
            # wire only picks the narrowest type instead of proving float values integral.
            rows = rows.astype(np.int32, order="C")
        buf = wire.encode(rows, kind=kind, src=self.index, dst=dst, batch=batch, micro=micro, shape=shape)
        self.timing["encode"] += time.perf_counter() - t0
        if not count:
            return buf
        link = self.traffic.setdefault(dst, [0, 0, 0.0, 0])
        link[0] += 1
        link[1] += buf.size
        link[2] += float(np.abs(rows).sum())
        if self.size_audit:  # the smaller of the two encodings' payloads, for the benchmark
            link[3] += min(wire.encoded_sizes(rows).values())
        return buf

    # -- event mode (--wire events) -----------------------------------------------------------
    def _segment(self, batch_size: int) -> Segment:
        """This chip's layers in the event simulation (float64, NumPy), on its current weights."""
        params = {l: (to_host(W).astype(np.float64), to_host(b).astype(np.float64))
                  for l, (W, b) in self.params.items()}
        return Segment(self.topo, params, self.first, self.last, batch_size, self.cfg.step)

    def _wave_layout(self, rows: np.ndarray, l: int) -> np.ndarray:
        """Wire rows (k, N) of one wave -> float64 in the layout of layer l's output."""
        layer, r = self.topo.layers[l], rows.astype(np.float64)
        if not layer.is_map:
            return r
        C, H, W = layer.out_shape
        return np.ascontiguousarray(r.T).reshape(C, H, W, r.shape[0])

    def _receive_events(self, buf: Any, batch: int, micro: int, l: int, shape: tuple) -> tuple[np.ndarray, list]:
        """Address events in: their sum (the spike counts, (B, N)) and the phases of waves in
        the layout of layer l (the layer that emitted them)."""
        t0 = time.perf_counter()
        h, phases = wire.decode_events(buf, dst=self.index, shape=tuple(shape), batch=batch, micro=micro)
        self._check_samples(h.samples, "event", batch, micro)
        counts = np.zeros((h.samples, h.neurons), np.int64)
        out = []
        for tag, waves in phases:
            for cols, rows in waves:
                counts[cols] += rows
            out.append((tag, [(cols, self._wave_layout(rows, l)) for cols, rows in waves]))
        self.timing["decode"] += time.perf_counter() - t0
        return counts, out

    def _send_events(self, phases: list, dst: int, batch: int, micro: int, shape: tuple, samples: int) -> Any:
        t0 = time.perf_counter()
        rows = [(tag, [(cols, (d.reshape(-1, d.shape[-1]).T if d.ndim == 4 else d).astype(np.int8))
                       for cols, d in waves]) for tag, waves in phases]
        buf = wire.encode_events(rows, src=self.index, dst=dst, batch=batch, micro=micro, shape=tuple(shape),
                                 samples=samples)
        self.timing["encode"] += time.perf_counter() - t0
        link = self.traffic.setdefault(dst, [0, 0, 0.0, 0])
        link[0] += 1
        link[1] += buf.size
        link[2] += float(sum(int(np.abs(r).sum()) for _, w in rows for _, r in w))
        return buf

    def _check(self, sim: np.ndarray, ann: Any) -> None:
        """Count the values where the spiking network (sim) and the equivalent ANN differ."""
        a = to_host(ann)
        self.event_checks[0] += a.size
        self.event_checks[1] += int(np.count_nonzero(sim != a))

    def _input(self, inputs: Any, lo: int, hi: int | None, batch: int, micro: int,
               train: bool) -> tuple[Any, list | None]:
        """Layer 0's input: rows lo:hi of the batch's float images, checked; (CHWB on the backend, and
        with the event wire when training the simulation's one input wave, else None)."""
        x = np.asarray(inputs)[lo:hi]
        if tuple(x.shape[1:]) != self.topo.input_shape:
            raise SpikeGradError(f"chip {self.index}: input images {tuple(x.shape[1:])}, topology "
                                 f"expects {self.topo.input_shape}")
        if not np.isfinite(x).all():
            raise SpikeGradError(f"chip {self.index}: input of batch {batch} micro {micro} has NaN or inf")
        phases = None
        if self.events and train:  # the float input as the simulation's one input wave
            phases = [(FORWARD_STANDARD, [(np.arange(len(x)), to_chwb(np, x.astype(np.float64)))])]
        return to_chwb(self.xp, to_device(self.backend, x, self.dtype)), phases

    def _busy(self, t0: float, c0: float) -> None:
        self.timing["busy"] += time.perf_counter() - t0
        self.timing["cpu"] += time.process_time() - c0

    def audit_sizes(self, on: bool = True) -> None:
        """Also record, per link, the payload of the smaller encoding (costs a second count)."""
        self.size_audit = on

    def _receive(self, buf: Any, kind: str, batch: int, micro: int, shape: tuple) -> np.ndarray:
        t0 = time.perf_counter()
        _, values = wire.decode(buf, kind=kind, dst=self.index, shape=tuple(shape), batch=batch, micro=micro)
        self.timing["decode"] += time.perf_counter() - t0
        self._check_samples(values.shape[0], kind, batch, micro)
        return values

    def _check_samples(self, n: int, kind: str, batch: int, micro: int) -> None:
        if n == 0:
            raise SpikeGradError(f"chip {self.index}: {kind} message of batch {batch} micro {micro}: samples "
                                 f"expected at least 1, got 0")

    # -- FORWARD -----------------------------------------------------------------------------
    def forward(self, inputs: Any, batch: int, micro: int, lo: int = 0, hi: int | None = None,
                train: bool = True, apply_first: float | None = None, *pending: dict) -> Any:
        """Spikes in, spikes out for micro-batch ``micro`` of batch ``batch``.

        inputs: on the first chip the float images (N, C, H, W) of the whole batch, of which
        rows lo:hi are this micro-batch; elsewhere a wire message (kind forward). Returns the
        wire message for the next chip; the output chip returns nothing when training (it
        keeps Vᴸ for BACKWARD) and the predictions argmax Vᴸ (B,) when ``train`` is False.
        apply_first: the previous batch's APPLY, folded into this batch's first call (one call
        fewer per chip and batch): when not None, first ``apply(apply_first, *pending)``.
        """
        if apply_first is not None:
            self.apply(apply_first, *pending)
        t0, c0 = time.perf_counter(), time.process_time()
        if self.is_first:
            S_in, phases_in = self._input(inputs, lo, hi, batch, micro, train)
        elif self.events and train:
            counts, phases_in = self._receive_events(inputs, batch, micro, self.first - 1, self._in_shape())
            S_in = self._to_layout(counts, self.first - 1)
        else:
            S_in = self._to_layout(self._receive(inputs, "forward", batch, micro,
                                                 self._in_shape()), self.first - 1)
        kept = forward_layers(self.xp, self.topo, self.params, S_in, self.cfg.step, self.first, self.last)
        S = kept[-1].S
        seg = None
        if self.events and train:  # the spiking network itself, on the same input events
            B = S_in.shape[-1] if S_in.ndim == 4 else S_in.shape[0]
            seg = self._segment(B)
            phases_out = seg.forward(phases_in or [])
            for i, l in enumerate(self.layers):
                if l < self.L:
                    self._check(seg.net[l].S, kept[i].S)
        if train:
            if (batch, micro) in self.pending:
                raise SpikeGradError(f"chip {self.index}: micro-batch {micro} of batch {batch} arrived twice")
            self.pending[(batch, micro)] = (S_in, kept, seg)
        if self.is_output:
            out = None if train else to_host(S.argmax(axis=1))
        elif seg is not None:
            out = self._send_events(phases_out, self.index + 1, batch, micro, self._out_shape(), B)
        else:
            out = self._send(S, "forward", self.index + 1, batch, micro, self._out_shape(), count=train)
        self._busy(t0, c0)
        return out

    # -- BACKWARD ----------------------------------------------------------------------------
    def backward(self, errors: Any, batch: int, micro: int, labels: Any = None, lo: int = 0,
                 hi: int | None = None) -> Any:
        """Error spikes in, error spikes out for one micro-batch (after its FORWARD).

        errors: a wire message (kind error) with Z of this chip's top layer; on the output
        chip it is ignored (the pipeline passes its own forward result, None, to order the
        calls) and ``labels`` (the batch's labels, rows lo:hi) are used instead. Returns the wire
        message for the chip below (None on the first chip); the output chip returns
        (message, [loss sum, correct]).
        """
        t0, c0 = time.perf_counter(), time.process_time()
        key = (batch, micro)
        if key not in self.pending:
            raise SpikeGradError(f"chip {self.index}: error for micro-batch {micro} of batch {batch} "
                                 f"without its forward pass")
        S_in, kept, seg = self.pending.pop(key)
        xp, step = self.xp, self.cfg.step
        stats = None
        if self.is_output:
            y = np.asarray(labels)[lo:hi].astype(np.int64)
            V = kept[-1].S
            yd = to_device(self.backend, y)
            correct = int((V.argmax(axis=1) == yd).sum())
            U, loss = top_potential(xp, V, yd, step)
            if seg is not None:  # the top U compartments start from the ANN's unrounded Uᴸ
                phases_out = seg.backward(top_error=to_host(U).astype(np.float64))
            E = top_error_spikes(xp, U, step)
            emitted = {self.L: error_events(xp, E, step)}  # Zᴸ = Eᴸ: no gate on the output
            stats = [float(loss.sum()), correct]
        else:
            if seg is not None:
                counts, phases_in = self._receive_events(errors, batch, micro, self.last, self._out_shape())
                Z = self._to_layout(counts, self.last)
                phases_out = seg.backward(phases_in)
            else:
                Z = self._to_layout(self._receive(errors, "error", batch, micro, self._out_shape()), self.last)
            emitted = {self.last: error_events(xp, Z, step)}  # what the U compartments above emitted
            E = error_gate(xp, Z, kept[-1].mask, 1.0, rounding=False)  # δ = z·S′ (Eq. (7))
        B = S_in.shape[-1] if S_in.ndim == 4 else S_in.shape[0]

        def visit(l: int, E_l: Any) -> None:  # checks and counters of layer l, once its E is known
            i = l - self.first
            if seg is not None:
                self._check(seg.net[l].E, E_l)
            below = S_in if i == 0 else kept[i - 1].S
            self.counter.accumulate_row(l, self.counter.measure_layer(
                l, below, kept[i].S if l < self.L else None, E_l, B, emitted.get(l)))

        _, sums, Z_below = backward_layers(xp, self.topo, self.params, kept, E, step, self.first, self.last,
                                           visit=visit, emitted=emitted)
        for l, (gW, gb) in sums.items():
            acc = self.omega[l]
            if acc is None:
                self.omega[l] = (gW.copy(), gb.copy())
            else:
                acc_W, acc_b = acc
                acc_W += gW
                acc_b += gb
        out = None
        if Z_below is not None:  # the layer below lives on the previous chip: send its error spikes
            below_shape = self.topo.layers[self.first - 1].out_shape
            if seg is not None:  # the boundary U compartments' error spikes, as events
                self._check(seg.net[self.first - 1].Z, Z_below)
                out = self._send_events(phases_out, self.index - 1, batch, micro, below_shape, B)
            else:
                out = self._send(Z_below, "error", self.index - 1, batch, micro, below_shape)
        self._busy(t0, c0)
        return (out, stats) if self.is_output else out

    # -- FORWARD + BACKWARD on a chip that holds the whole network ---------------------------
    def train_micro(self, inputs: Any, batch: int, micro: int, lo: int, hi: int, labels: Any,
                    increments: bool = False, apply_first: float | None = None,
                    *pending: dict) -> tuple[list, dict | None]:
        """FORWARD then BACKWARD of one micro-batch in one call, on a chip that holds every layer
        (no link to send on: one call instead of two, the same arithmetic in the same order).

        apply_first: the previous batch's APPLY, folded into this batch's first call (one call,
        and one wait for the replicas' increments, fewer per batch): when not None, first
        ``apply(apply_first, *pending)``, exactly as a separate call would.
        Returns ([loss sum, correct], this chip's ``increments()`` when ``increments`` is set,
        i.e. after a replica's last micro-batch of a batch, else None)."""
        if not (self.is_first and self.is_output):
            raise SpikeGradError(f"chip {self.index}: train_micro needs a chip holding every layer, this one "
                                 f"holds layers {self.first}-{self.last}")
        self.forward(inputs, batch, micro, lo, hi, True, apply_first, *pending)
        _, stats = self.backward(None, batch, micro, labels, lo, hi)
        return stats, (self.increments() if increments else None)

    # -- APPLY -------------------------------------------------------------------------------
    def increments(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """This chip's ω as host arrays (for replicas to combine). Counted as the replica exchange:
        one message of these arrays to each of the other ``replicas`` − 1 copies of this chip."""
        out = {l: (to_host(w[0]), to_host(w[1])) for l, w in self.omega.items() if w is not None}
        others = self.cfg.replicas - 1
        if others > 0:
            self.exchange[0] += others
            self.exchange[1] += others * sum(W.nbytes + b.nbytes for W, b in out.values())
        return out

    def apply(self, lr_scale: float, *increments: dict) -> None:
        """v ← μ v − η ω, w ← w + v, ω ← 0 (Algorithm 3, once per batch).

        increments: empty for one pipeline (this chip's own ω); with replicas, every replica's
        ``increments()`` in replica order, this chip's included, so that all replicas add
        the same numbers in the same order and stay identical.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        eta, mu = self.cfg.eta * lr_scale, self.cfg.momentum
        if self.pending:
            raise SpikeGradError(f"chip {self.index}: apply with {len(self.pending)} micro-batches still "
                                 f"waiting for their backward pass")
        for l, (W, b) in self.params.items():
            total: tuple[Any, Any] | None = None
            if increments:
                for inc in increments:
                    if l in inc:
                        gW, gb = (to_device(self.backend, a, self.dtype) for a in inc[l])
                        total = (gW.copy(), gb.copy()) if total is None else (total[0] + gW, total[1] + gb)
            else:
                total = self.omega[l]
            if total is not None:
                sgd_update(self.xp, W, b, *self.velocity[l], total[0], total[1], eta, mu, self.cfg.frac_bits)
            self.omega[l] = None
        self._busy(t0, c0)

    # -- state and counters ------------------------------------------------------------------
    def state(self) -> dict[int, tuple[np.ndarray, ...]]:
        """{layer: (W, b, vW, vb)} host arrays."""
        return {l: (to_host(W), to_host(b), to_host(self.velocity[l][0]), to_host(self.velocity[l][1]))
                for l, (W, b) in self.params.items()}

    def restore(self, state: dict[int, tuple[np.ndarray, ...]]) -> None:
        for l in self.params:
            if l not in state:
                raise SpikeGradError(f"chip {self.index}: restore without layer {l}")
            W, b, vW, vb = (self._own(a) for a in state[l])
            if W.shape != self.params[l][0].shape:
                raise SpikeGradError(f"chip {self.index}: layer {l} weights {W.shape}, expected "
                                     f"{self.params[l][0].shape}")
            self.params[l], self.velocity[l] = (W, b), (vW, vb)
        self.omega = {l: None for l in self.params}
        self.pending.clear()

    def reset_counters(self) -> None:
        self.counter.reset()
        self.traffic: dict[int, list] = {}
        # busy: wall seconds inside the protocol's calls; cpu: this process's CPU seconds in them
        # (what the chip's work needs on a core of its own: launch.tools.plan)
        self.timing = {"encode": 0.0, "decode": 0.0, "busy": 0.0, "cpu": 0.0}
        self.event_checks = [0, 0]  # values compared (spiking network vs ANN), values that differ
        self.exchange = [0, 0]  # increments sent to the other replicas: messages, bytes

    def report(self, reset: bool = True) -> dict:
        """Counters since the last reset: synops rows of its layers, traffic per destination, timing."""
        totals = self.counter.totals()
        out = {
            "chip": self.index, "layers": self.layers,
            "synops": {l: dict(zip(COUNTERS, map(float, totals[l]))) for l in self.layers},
            "traffic": {dst: {"messages": v[0], "bytes": v[1], "spikes": v[2], "min_payload_bytes": v[3]}
                        for dst, v in self.traffic.items()},
            "timing": dict(self.timing),
            "event_checks": {"values": self.event_checks[0], "differ": self.event_checks[1]},
            "exchange": {"messages": self.exchange[0], "bytes": self.exchange[1]},
            "rss_bytes": resident_bytes(),
        }
        if reset:
            self.reset_counters()
        else:
            self.counter.accumulate(totals.tolist())
        return out


def merge_reports(reports: list[dict], over_time: bool = False) -> list[dict]:
    """Chip reports (of replicas, or with ``over_time`` of successive parts of an epoch) summed
    per chip, by chip index; resident memory is summed over replicas, the latest over time.
    Layer and destination keys may be ints or their strings (reports that went through JSON)."""
    merged: dict[int, dict] = {}
    for rep in reports:
        m = merged.setdefault(int(rep["chip"]), {"chip": int(rep["chip"]), "layers": rep["layers"], "synops": {},
                                                 "traffic": {}, "timing": {},
                                                 "event_checks": {"values": 0, "differ": 0}})
        ex = m.setdefault("exchange", {"messages": 0, "bytes": 0})
        for k, v in rep.get("exchange", {}).items():
            ex[k] += v
        if "nodes" in rep:  # the Ray nodes the chip's replicas ran on (added by the chip engine)
            m["nodes"] = sorted(set(m.get("nodes", [])) | set(rep["nodes"]))
        if "micro_batch" in rep:  # samples per micro-batch of the pipeline (added by the chip engine)
            m["micro_batch"] = rep["micro_batch"]
        for l, row in rep["synops"].items():
            acc = m["synops"].setdefault(int(l), dict.fromkeys(row, 0.0))
            for k, v in row.items():
                acc[k] += v
        for dst, link in rep["traffic"].items():
            acc = m["traffic"].setdefault(int(dst), dict.fromkeys(link, 0))
            for k, v in link.items():
                acc[k] += v
        for k, v in rep["timing"].items():
            m["timing"][k] = m["timing"].get(k, 0.0) + v
        for k, v in rep.get("event_checks", {}).items():
            m["event_checks"][k] += v
        rss = rep.get("rss_bytes", 0)
        m["rss_bytes"] = rss if over_time else m.get("rss_bytes", 0) + rss
    return [merged[c] for c in sorted(merged)]


def run_chain(chips: list[Chip], x: np.ndarray, y: np.ndarray, micro: int, batch: int = 0,
              lr_scale: float = 1.0) -> tuple[float, int]:
    """One batch through a chain of chips held in this process, as :mod:`actors.pipeline` drives
    them over Ray: per micro-batch FORWARD up the chain and BACKWARD down it, the Arrow wire
    messages passed by hand; then every chip's APPLY. For tests and the Ray-free GPU check
    (``launch.tools.gpu_check``). Returns (loss sum, correct)."""
    loss, correct = 0.0, 0
    for m, lo in enumerate(range(0, len(x), micro)):
        hi = min(len(x), lo + micro)
        msg = chips[0].forward(x, batch, m, lo, hi)
        for c in chips[1:]:
            msg = c.forward(msg, batch, m)
        err, stats = chips[-1].backward(None, batch, m, y, lo, hi)
        loss, correct = loss + stats[0], correct + stats[1]
        for c in reversed(chips[:-1]):
            err = c.backward(err, batch, m)
    for c in chips:
        c.apply(lr_scale)
    return loss, correct
