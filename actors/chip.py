"""A chip: slices of one or more consecutive layers of the spiking network (docs/design.md §5).

A chip holds one slice (a range of units: output channels of a convolution or a pooling layer,
neurons of a dense layer) of each of its layers, as :class:`cluster.mapping.Plan` lays them out; a
chip of ``--chips`` groups holds the slice of all units of each of its layers
(:func:`cluster.mapping.whole_layers`), a capacity's mapping may split a layer over several chips.
It is a plain class, testable without Ray; :mod:`actors.ray_chip` wraps it as a Ray actor. It
holds its slices' weights Wˡ, bˡ, the momentum velocities, the increment accumulators ω (Eq. (8)),
the copies of split layers' weight columns it sums for, and its counters.

Its phases (:class:`cluster.mapping.Phase`, one method each), per micro-batch FORWARD layer by
layer up and BACKWARD down, per batch APPLY:

=========  ================================================================================
phase      what happens to its slice of layer l
=========  ================================================================================
FORWARD    the spike counts of the units of layer l − 1 it connects to come in, one message
           from each other chip holding some (its own slice of l − 1 stays here; layer 0
           reads the float images x); Ŝ, S, S′ of its units (:func:`cluster.network.layer_forward`);
           its spike counts go out, one message per chip holding units of l + 1 that need them
           (the output slice keeps Vᴸ)
BACKWARD   its error spikes come in (the output slice makes Eᴸ from Vᴸ and the labels): Z of its
           units from the chip(s) above that summed them, or, below a split trainable layer,
           that layer's error spikes Eˡ⁺¹ from every chip holding it, summed here on a copy of
           the weights' columns (Eq. (11)); Eˡ = S′ ⊙ Z (Eq. (7)); ω += Σ Eˡ ⊗ Sˡ⁻¹ and
           Zˡ⁻¹ = round((Wˡ)ᵀ ⋆ Eˡ / Θbp) (or, its layer split, Eˡ itself) out to the chips below,
           all through :func:`cluster.network.backward_layers` on the chip's view of the layer
APPLY      once per batch (Algorithm 3): v ← μ v − η Σ ω (its own and its replicas'),
           w ← w + v, ω ← 0, for its rows and its copies alike
=========  ================================================================================

The driver sends a chip its consecutive calls with no message from another chip between them as
one :meth:`Chip.step` (:meth:`Plan.steps`): a chain's output chip runs FORWARD and BACKWARD in
one call, a chip holding the whole network a micro-batch in one call. APPLY runs at the start of
the chip's first step of the next batch; with replicas, a chip's last step of a batch also
returns its increments (:meth:`Chip.increments`). Only integer spike counts cross (floats only for
the float-gradient baseline, on layouts that split no layer). Owner rows and copies add the same
integer products in the same update, so they stay bit-identical (:func:`actors.slices.check_copies`).

Event wire (``ChipConfig.wire == "events"``, ``spikegrad train --wire events``): when training, each
slice also runs its share of the spiking network (:class:`cluster.events.SliceSegment`, float64)
on the address events it receives, the waves of every source piece placed among its input units;
it sends the events of its units (forward), of the U compartments it sums for, or of its δ
(backward), phase by phase (:func:`actors.wire.encode_events`). The receiver sums the events to
the counts its equivalent ANN uses, so learning is the count wire's; every S, E and Z it holds is
compared with the ANN's, and the values that differ are counted (``report()["event_checks"]``).
Evaluation uses counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from cluster.backend import cupy_available, get_backend, to_device, to_host
from cluster.errors import SpikeGradError
from cluster.events import FORWARD_STANDARD, SliceSegment
from cluster.kernels import error_gate
from cluster.layers import kind_of
from cluster.mapping import Layout, Phase, Plan, Step
from cluster.network import (
    LayerForward,
    StepConfig,
    backward_layers,
    error_events,
    layer_forward,
    momentum_step,
    sgd_update,
    to_chwb,
    top_error_spikes,
    top_potential,
)
from cluster.synops import COUNTERS, SynopCounter
from cluster.topology import Topology, parse_topology

from . import slices, wire
from .allocator import resident_bytes
from .transport import Transport

__all__ = ["Chip", "ChipConfig", "ChipFailure", "Phase", "abs_total", "dispatch", "merge_reports", "parse_chips",
           "run_chips", "schedule"]


class ChipFailure(SpikeGradError):
    """A chip's process died, or a message it held was lost with it: the driver can restart the
    chips from the last checkpoint and replay (``launch.run.driver``)."""


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
    """Chip ``index`` of a layout (:data:`cluster.mapping.Layout`); see the module docstring.

    params: {layer: (W, b)} whole host arrays of :meth:`Plan.param_layers` (its slices' trainable
    layers and the layers it keeps copies of); it keeps its rows and its copies' columns.
    """

    def __init__(self, index: int, layout: Layout, cfg: ChipConfig,
                 params: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        topo = parse_topology(cfg.topology)
        self.plan = Plan(topo, layout)
        self.index, self.cfg, self.topo, self.L = index, cfg, topo, len(topo.layers) - 1
        if not 0 <= index < self.plan.n_chips:
            raise SpikeGradError(f"chip {index}: the layout has chips 0..{self.plan.n_chips - 1}")
        if cfg.wire not in WIRES:
            raise SpikeGradError(f"chip {index}: wire expected one of {WIRES}, got {cfg.wire!r}")
        if cfg.wire == "events" and cfg.step.gradient != "spike":
            raise SpikeGradError("--wire events needs spike gradients (error spikes); float gradients have no events")
        if self.plan.split and cfg.step.gradient != "spike":
            raise SpikeGradError(f"chips holding slices of layers {list(self.plan.split)} exchange spikes only: they "
                                 f"need --gradient spike (the float baseline's errors are not spikes)")
        self.events = cfg.wire == "events"
        self.slices = {l: (lo, hi) for l, lo, hi in self.plan.layout[index]}
        self.layers = sorted(self.slices)
        self.first, self.last = self.layers[0], self.layers[-1]
        # "auto": CuPy where this chip's process sees a CUDA device, else NumPy; the choice is
        # reported by ping() and logged by the driver, never made silently.
        self.backend = get_backend(("cupy" if cupy_available()[0] else "numpy") if cfg.backend == "auto"
                                   else cfg.backend)
        self.xp = self.backend.xp
        self.dtype = np.dtype(cfg.dtype)
        missing = [l for l in self.plan.param_layers(index) if l not in params]
        if missing:
            raise SpikeGradError(f"chip {index}: no initial weights for layers {missing}")
        # Its rows, as private copies: arrays that came through Ray's object store are read-only views of it.
        self.params = {l: (self._own(params[l][0][lo:hi]), self._own(params[l][1][lo:hi]))
                       for l, (lo, hi) in self.slices.items() if topo.layers[l].trainable}
        self.velocity = {l: (self.xp.zeros_like(W), self.xp.zeros_like(b)) for l, (W, b) in self.params.items()}
        self.omega: dict[int, tuple[Any, Any] | None] = {l: None for l in self.params}  # Σ E ⊗ S so far
        # This chip's view of the network: its slices' layer specs in place of the layers'
        self.view = Topology(topo.text, topo.input_shape, tuple(
            self.plan.layer(l, *self.slices[l]) if l in self.slices else layer for l, layer in enumerate(topo.layers)))
        # backward_layers' view of layer l's BACKWARD: its slice, and below it the units it connects to
        self.backward_views = {l: self._view({l: self.view.layers[l], l - 1: self.plan.layer(
            l - 1, *self.plan.needs(l, *self.slices[l]))} if l > 0 else {l: self.view.layers[l]}) for l in self.layers}
        # Copies of split layers' weights: {l: [view (the columns' spec at l, its slice of l − 1 below),
        # W[:, cols], velocity, ω]}
        self.copies: dict[int, list[Any]] = {}
        for l, lo, hi in self.plan.copies(index):
            layer = topo.layers[l]
            W = self._own(kind_of(layer).columns(params[l][0], layer, lo, hi))
            spec = self._view({l: kind_of(layer).on_input(layer, lo, hi), l - 1: self.view.layers[l - 1]})
            self.copies[l] = [spec, W, self.xp.zeros_like(W), None]
        # Per micro-batch (batch, micro, train): what later calls of this chip need (its own slices'
        # forward results, the error pieces it sent itself)
        self.slots: dict[tuple[int, int, bool], dict] = {}
        self.counter = SynopCounter(self.xp, self.view, spike_errors=(cfg.step.gradient == "spike"))
        self.size_audit = False
        self.transport: Transport = Transport()  # its messages as the buffers themselves (actors.transport)
        self.reset_counters()

    def _own(self, a: np.ndarray) -> Any:
        """A private, writable copy of a host array on this chip's backend."""
        return np.array(a, dtype=self.dtype) if self.xp is np else to_device(self.backend, a, self.dtype)

    def _view(self, layers: dict[int, Any]) -> Topology:
        """The network with ``layers`` {l: layer spec} in place of its own."""
        return Topology(self.topo.text, self.topo.input_shape,
                        tuple(layers.get(l, layer) for l, layer in enumerate(self.topo.layers)))

    # -- messages ----------------------------------------------------------------------------
    def _layer_shape(self, l: int, lo: int, hi: int) -> tuple[int, ...]:
        return self.plan.layer(l, lo, hi).out_shape

    def _layout(self, values: np.ndarray, l: int, shape: tuple[int, ...], to_backend: bool = True,
                order: str = "samples") -> Any:
        """Host wire values of units of layer l (per-sample ``shape``; maybe a read-only view of a
        message), (B, N) or for ``order`` "units" (N, B), as a fresh array in layer l's layout, the
        chip's dtype on its backend (float64 on the host: ``to_backend`` False). A map is units-major
        (N, B): in that order it needs only the cast (and the copy to the device, in the wire's
        dtype: 1 byte per count, mostly); in the other it is turned first, as rows are the other way."""
        is_map = self.topo.layers[l].is_map
        host = values if is_map == (order == "units") else wire.transpose(values)
        v = to_device(self.backend, host, self.dtype) if to_backend else np.asarray(host, np.float64)
        if v is values:  # same dtype, not turned: still the message's own memory
            v = v.copy()
        if not is_map:
            return v
        C, H, W = shape
        return v.reshape(C, H, W, host.shape[1])

    def _outgoing(self, A: Any, counts: bool) -> tuple[np.ndarray, str]:
        """A layer array (CHWB map or (B, N) rows, on the backend) -> (host values for the wire,
        C-contiguous, and their wire order): a map as its units-major (N, B) (order "units", never
        turned), rows as (B, N) (order "samples"). ``counts`` (spike counts, integers held as
        floats) come as the wire's integer type, exactly ``astype(np.int32)`` narrowed as
        :func:`actors.wire.encode` narrows it: cast before the device-to-host copy, which then moves
        1 or 2 bytes per count instead of 4."""
        units_major = A.ndim == 4
        order = "units" if units_major else "samples"
        if units_major:
            A = A.reshape(-1, A.shape[-1])  # (N, B)
        if not counts:
            return to_host(A), order
        lo, hi = (float(A.min()), float(A.max())) if A.size else (math.nan, math.nan)
        if not (-2.0**31 <= lo and hi < 2.0**31):
            # empty, NaN, or beyond int32: today's int32 conversion, whatever it makes of them
            return to_host(A).astype(np.int32, order="C"), order
        # int() and astype both truncate toward zero, a monotone map: the narrowed min and max are
        # int(lo) and int(hi), so this is the type encode would pick from astype(np.int32)
        return to_host(A.astype(wire.int_type(int(lo), int(hi)), order="C")), order

    def _send(self, values: Any, kind: str, dst: int, batch: int, micro: int, shape: tuple,
              count: bool = True) -> Any:
        """Encode ``values`` for chip ``dst``; ``count`` False (evaluation) leaves the traffic counters alone."""
        t0 = time.perf_counter()
        # Spike counts are integers: the wire gets them as integers, so it only picks the narrowest
        # type instead of proving float values integral. The float baseline's errors stay floats.
        rows, order = self._outgoing(values, counts=kind == "forward" or self.cfg.step.gradient == "spike")
        buf = wire.encode(rows, kind=kind, src=self.index, dst=dst, batch=batch, micro=micro, shape=shape,
                          order=order)
        self.timing["encode"] += time.perf_counter() - t0
        if not count:
            return buf
        link = self.traffic.setdefault(dst, [0, 0, 0.0, 0])
        link[0] += 1
        link[1] += buf.size
        link[2] += abs_total(rows)
        if self.size_audit:  # the smaller of the two encodings' payloads, for the benchmark
            link[3] += min(wire.encoded_sizes(rows, order).values())
        return buf

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

    def _piece_in(self, buf: Any, kind: str, src: int, l: int, lo: int, hi: int, batch: int,
                  micro: int, events: bool) -> tuple[Any, list | None]:
        """A message of units lo..hi-1 of layer l from chip src: (the counts in layer l's layout,
        with address events (``events``) also their phases of waves, float64 in that layout; else None)."""
        shape = tuple(self._layer_shape(l, lo, hi))
        t0 = time.perf_counter()
        buf = self.transport.take(buf)  # the time it takes counts as decoding
        phases = None
        if events:
            h, raw = wire.decode_events(buf, dst=self.index, shape=shape, batch=batch, micro=micro)
            values = np.zeros((h.samples, h.neurons), np.int64)
            phases = []
            for tag, waves in raw:
                for cols, rows in waves:
                    values[cols] += rows
                phases.append((tag, [(cols, self._layout(rows, l, shape, False)) for cols, rows in waves]))
        else:
            # a view of the message's values: _layout makes the chip's own array from it in one cast
            h, values = wire.decode(buf, kind=kind, dst=self.index, shape=shape, batch=batch, micro=micro,
                                    copy=False)
        self.timing["decode"] += time.perf_counter() - t0
        if h.src != src:
            raise SpikeGradError(f"chip {self.index}: {kind} message of layer {l} units {lo}-{hi} expected from "
                                 f"chip {src}, got one from chip {h.src}")
        self._check_samples(h.samples, kind, batch, micro)
        return self._layout(values, l, shape, order=h.order), phases

    def _gather(self, pieces: list, msgs: list[Any], own: Any, own_lo: int, kind: str, l: int, batch: int,
                micro: int, own_phases: list | None = None, events: bool = True) -> tuple[Any, list | None]:
        """The pieces (chip, lo, hi) of layer l, in unit order, joined: this chip's from ``own``
        (its array of layer l from unit ``own_lo``, and ``own_phases``, its waves), the others from
        ``msgs`` in order. Returns (the joined array, with events (the event wire while training,
        ``events``) also the phases of waves placed in the joined units, each phase's waves from
        every piece, else None)."""
        events = events and self.events
        it = iter(msgs)
        parts, phase_parts = [], []
        base, total = pieces[0].lo, pieces[-1].hi - pieces[0].lo
        for p in pieces:
            if p.chip == self.index:
                parts.append(slices.units(own, p.lo - own_lo, p.hi - own_lo))
                got = None if own_phases is None else slices.cut(own_phases, p.lo - own_lo, p.hi - own_lo)
            else:
                try:
                    buf = next(it)
                except StopIteration:
                    raise SpikeGradError(f"chip {self.index}: {kind} of layer {l}: {len(msgs)} messages, "
                                         f"expected one from each of chips {[q.chip for q in pieces]}") from None
                arr, got = self._piece_in(buf, kind, p.chip, l, p.lo, p.hi, batch, micro, events)
                parts.append(arr)
            if got is not None:
                phase_parts.append(slices.place(got, p.lo - base, total))
        if next(it, None) is not None:
            raise SpikeGradError(f"chip {self.index}: {kind} of layer {l}: more messages than the plan's "
                                 f"{len(pieces)} pieces")
        joined = slices.join(self.xp, parts)
        if not events:
            return joined, None
        return joined, slices.merge(phase_parts, backward=(kind == "error"))

    def _send_piece(self, A: Any, phases: list | None, a: int, b: int, kind: str, dst: int, batch: int,
                    micro: int, shape: tuple[int, ...], samples: int, count: bool = True) -> Any:
        """Units a..b-1 of a layer array (relative to its first unit) to chip dst: as counts, or
        with events (``phases`` given) as the address events of those units; as its transport
        carries it (the time it takes counts as encoding)."""
        if phases is None:
            buf = self._send(slices.units(A, a, b), kind, dst, batch, micro, shape, count=count)
        else:
            buf = self._send_events(slices.cut(phases, a, b), dst, batch, micro, shape, samples)
        t0 = time.perf_counter()
        out = self.transport.send(buf, dst)
        self.timing["encode"] += time.perf_counter() - t0
        return out

    def _check_samples(self, n: int, kind: str, batch: int, micro: int) -> None:
        if n == 0:
            raise SpikeGradError(f"chip {self.index}: {kind} message of batch {batch} micro {micro}: samples "
                                 f"expected at least 1, got 0")

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

    # -- event mode (--wire events) -----------------------------------------------------------
    def _segment_for(self, l: int, batch_size: int) -> SliceSegment:
        """This slice of layer l in the event simulation (float64, NumPy), on its current weights."""
        def host(a: Any) -> np.ndarray:
            return to_host(a).astype(np.float64)

        params = tuple(host(p) for p in self.params[l]) if l in self.params else None
        below = None
        if l > 0 and not self.plan.sums_below(l):
            below = self.plan.layer(l - 1, *self.plan.needs(l, *self.slices[l]))
        copy = None
        if l + 1 in self.copies:
            copy = (self.copies[l + 1][0].layers[l + 1], host(self.copies[l + 1][1]))
        return SliceSegment(self.view, l, self.view.layers[l], params, batch_size, self.cfg.step, below=below,
                            copy=copy)

    def _check(self, sim: np.ndarray, ann: Any) -> None:
        """Count the values where the spiking network (sim) and the equivalent ANN differ."""
        a = to_host(ann)
        self.event_checks[0] += a.size
        self.event_checks[1] += int(np.count_nonzero(sim != a))

    def _busy(self, t0: float, c0: float) -> None:
        self.timing["busy"] += time.perf_counter() - t0
        self.timing["cpu"] += time.process_time() - c0

    def _slot(self, batch: int, micro: int, train: bool) -> dict:
        return self.slots.setdefault((batch, micro, train), {})

    def audit_sizes(self, on: bool = True) -> None:
        """Also record, per link, the payload of the smaller encoding (costs a second count)."""
        self.size_audit = on

    # -- one step: consecutive calls of a micro-batch (cluster.mapping.Plan.steps) --------------
    def step(self, ops: tuple[tuple[str, int, int], ...], batch: int, micro: int, x: Any, y: Any, lo: int,
             hi: int | None, train: bool = True, increments: bool = False, lr_scale: float | None = None,
             n_increments: int = 0, *args: Any) -> Any:
        """Run ``ops`` (:attr:`Step.ops`: (phase, layer, messages taken) per call) for micro-batch
        ``micro`` of batch ``batch`` in order, dispatching each phase to the method of its name.

        x: the float images of the whole batch (rows lo:hi are this micro-batch) where a FORWARD of
        layer 0 is among the ops; y: the batch's labels where the output layer's BACKWARD is.
        lr_scale: when not None, the previous batch's APPLY first, ``apply(lr_scale, *increments)``
        with the first ``n_increments`` of args (the replicas' increments); the rest of args are the
        ops' messages, in order. increments: after the ops, also return this chip's
        :meth:`increments` (a replica's last step of a batch). Returns the ops' messages in order,
        then the output layer's [loss, correct] (training) or predictions (evaluation), then the
        increments, as Ray's ``num_returns`` expects (:func:`actors.slices.returns`).
        """
        incs, msgs = args[:n_increments], args[n_increments:]
        if lr_scale is not None:
            self.apply(lr_scale, *incs)
        out: list[Any] = []
        top: list[Any] = []  # [loss, correct] or the predictions: after every message
        at = 0
        for phase, l, n in ops:
            run = getattr(self, Phase(phase).value)
            got = run(l, batch, micro, x if phase == Phase.FORWARD else y, lo, hi, train, *msgs[at:at + n])
            if l == self.L and (phase == Phase.BACKWARD or not train):
                top.append(got.pop())
            out.extend(got)
            at += n
        if at != len(msgs):
            raise SpikeGradError(f"chip {self.index}: step of batch {batch} micro {micro}: {len(msgs)} messages, "
                                 f"its calls take {at}")
        if increments:
            top.append(self.increments())
        return slices.returns(out + top)

    # -- FORWARD -----------------------------------------------------------------------------
    def forward(self, l: int, batch: int, micro: int, x: Any = None, lo: int = 0, hi: int | None = None,
                train: bool = True, *msgs: Any) -> list[Any]:
        """FORWARD of this chip's slice of layer l for one micro-batch (module docstring).

        x: for layer 0 the float images (N, C, H, W) of the whole batch, rows lo:hi being this
        micro-batch (else None); msgs: the messages of :meth:`Plan.forward_sources`' other chips,
        in order. Returns the messages for :meth:`Plan.forward_targets`; for the output layer when
        evaluating (``train`` False), the predictions argmax Vᴸ (B,).
        """
        t0, c0 = time.perf_counter(), time.process_time()
        if l not in self.slices:
            raise SpikeGradError(f"chip {self.index} holds no slice of layer {l}")
        slot = self._slot(batch, micro, train)
        if ("S", l) in slot:
            raise SpikeGradError(f"chip {self.index}: micro-batch {micro} of batch {batch} arrived twice at layer {l}")
        if l == 0:
            S_in, phases_in = self._input(x, lo, hi, batch, micro, train)
        else:
            below = slot.get(("S", l - 1))
            S_in, phases_in = self._gather(self.plan.forward_sources(l, self.index), list(msgs),
                                           None if below is None else below[1].S, self.slices.get(l - 1, (0, 0))[0],
                                           "forward", l - 1, batch, micro, slot.get(("P", l - 1)), events=train)
        a, b = self.slices[l]
        kept = layer_forward(self.xp, self.view.layers[l], self.params.get(l), S_in, self.cfg.step,
                             is_output=(l == self.L))
        slot[("S", l)] = (S_in, kept)
        B = S_in.shape[-1] if S_in.ndim == 4 else S_in.shape[0]
        phases_out = None
        if self.events and train:  # the spiking network's slice, on the same input events
            seg = self._segment_for(l, B)
            phases_out = seg.forward(phases_in or [])
            if l < self.L:
                self._check(seg.net[l].S, kept.S)
            slot[("seg", l)] = seg
            if l + 1 in self.slices:
                slot[("P", l)] = phases_out
        out: list[Any] = []
        for t in self.plan.forward_targets(l, self.index):
            out.append(self._send_piece(kept.S, phases_out, t.lo - a, t.hi - a, "forward", t.chip, batch, micro,
                                        self._layer_shape(l, t.lo, t.hi), B, count=train))
        self._busy(t0, c0)
        if not train and (l == self.L or l == self.last):
            del self.slots[(batch, micro, train)]
        if l == self.L and not train:
            out.append(to_host(kept.S.argmax(axis=1)))
        return out

    # -- BACKWARD ----------------------------------------------------------------------------
    def backward(self, l: int, batch: int, micro: int, y: Any = None, lo: int = 0, hi: int | None = None,
                 train: bool = True, *msgs: Any) -> list[Any]:
        """BACKWARD of this chip's slice of layer l for one micro-batch (module docstring).

        y: for the output layer the batch's labels, rows lo:hi (else None); msgs: the messages of
        :meth:`Plan.backward_sources`' other chips, in order. Returns the messages for
        :meth:`Plan.backward_targets`, and for the output layer also [loss sum, correct] after them.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        slot = self.slots.get((batch, micro, True), {})
        if not train or ("S", l) not in slot:
            raise SpikeGradError(f"chip {self.index}: error for micro-batch {micro} of batch {batch} at layer {l} "
                                 f"without its forward pass")
        S_in, kept = slot.pop(("S", l))
        seg = slot.pop(("seg", l), None)
        xp, step, (a, b) = self.xp, self.cfg.step, self.slices[l]
        stats: list | None = None
        phases_out = None
        emitted: dict[int, Any] = {}
        if l == self.L:
            yd = to_device(self.backend, np.asarray(y)[lo:hi].astype(np.int64))
            correct = int((kept.S.argmax(axis=1) == yd).sum())
            U, loss = top_potential(xp, kept.S, yd, step)
            if seg is not None:  # the top U compartments start from the ANN's unrounded Uᴸ
                phases_out = seg.backward(top_error=to_host(U).astype(np.float64))
            E = top_error_spikes(xp, U, step)
            emitted[l] = error_events(xp, E, step)  # Zᴸ = Eᴸ: no gate on the output
            stats = [float(loss.sum()), correct]
        elif self.plan.sums_below(l + 1):  # Eˡ⁺¹ of every slice above, summed here on the copy (Eq. (11))
            E_up, phases_in = self._gather(self.plan.backward_sources(l, self.index), list(msgs),
                                           slot.pop(("E", l + 1), None), self.slices.get(l + 1, (0, 0))[0], "error",
                                           l + 1, batch, micro, slot.pop(("EP", l + 1), None))
            view, Wc, _, omega = self.copies[l + 1]
            cache = kind_of(view.layers[l + 1]).increment_cache(xp, view.layers[l + 1], kept.S)
            _, sums, Z = backward_layers(xp, view, {l + 1: (Wc, None)}, [LayerForward(None, None, cache)], E_up,
                                         step, l + 1, l + 1, emitted=emitted)
            if seg is not None:
                phases_out = seg.backward(phases_in)
                self._check(seg.net[l].Z, Z)
            E = error_gate(xp, Z, kept.mask, 1.0, rounding=False)  # δ = z·S′ (Eq. (7))
            if omega is None:
                self.copies[l + 1][3] = sums[l + 1][0].copy()
            else:
                omega += sums[l + 1][0]
        else:  # Z of its units from the chip(s) above that summed them
            Z, phases_in = self._gather(self.plan.backward_sources(l, self.index), list(msgs),
                                        slot.pop(("Z", l), None), a, "error", l, batch, micro,
                                        slot.pop(("ZP", l), None))
            if seg is not None:
                phases_out = seg.backward(phases_in)
            emitted[l] = error_events(xp, Z, step)  # what the U compartments above emitted for its units
            E = error_gate(xp, Z, kept.mask, 1.0, rounding=False)  # δ = z·S′ (Eq. (7))
        if seg is not None:
            self._check(seg.net[l].E, E)
        B = S_in.shape[-1] if S_in.ndim == 4 else S_in.shape[0]
        self.counter.accumulate_row(l, self.counter.measure_layer(l, S_in, kept.S if l < self.L else None, E, B,
                                                                  emitted[l]))
        # its rows' increments and, unless its layer is split (then the chips below sum on their
        # copies), the error spikes Zˡ⁻¹ of the units below it connects to
        split = self.plan.sums_below(l)
        _, sums, Z_below = backward_layers(xp, self.backward_views[l], self.params, [kept], E, step, l, l,
                                           below=not split)
        if l in sums:
            gW, gb = sums[l]
            acc = self.omega[l]
            if acc is None:
                self.omega[l] = (gW.copy(), gb.copy())
            else:
                acc[0][...] += gW
                acc[1][...] += gb
        out: list[Any] = []
        targets = self.plan.backward_targets(l, self.index)
        if l > 0 and split:  # its error spikes Eˡ to every chip of layer l − 1
            if l - 1 in self.slices:
                slot[("E", l)] = E
                if phases_out is not None:
                    slot[("EP", l)] = phases_out
            out = [self._send_piece(E, phases_out, 0, b - a, "error", t.chip, batch, micro,
                                    self._layer_shape(l, a, b), B) for t in targets]
        elif l > 0:  # Zˡ⁻¹ of the units below its slice connects to, summed here
            n0, _ = self.plan.needs(l, a, b)
            if seg is not None:  # the U compartments below, as the spiking network summed them
                self._check(seg.net[l - 1].Z, Z_below)
            if l - 1 in self.slices:
                u0, u1 = self.slices[l - 1]
                lo_, hi_ = max(u0, n0), min(u1, self.plan.needs(l, a, b)[1])
                if lo_ < hi_:
                    slot[("Z", l - 1)] = slices.units(Z_below, lo_ - n0, hi_ - n0)
                    if phases_out is not None:
                        slot[("ZP", l - 1)] = slices.cut(phases_out, lo_ - n0, hi_ - n0)
            out = [self._send_piece(Z_below, phases_out, t.lo - n0, t.hi - n0, "error", t.chip, batch, micro,
                                    self._layer_shape(l - 1, t.lo, t.hi), B) for t in targets]
        if l == self.first:
            self.slots.pop((batch, micro, True), None)
        self._busy(t0, c0)
        return out + [stats] if stats is not None else out

    # -- APPLY, replicas ---------------------------------------------------------------------
    def increments(self) -> dict:
        """This chip's ω as host arrays, its rows' by layer and its copies' under ("copy", layer),
        for replicas to combine. Counted as the replica exchange: one message of these arrays to
        each of the other ``replicas`` − 1 copies of this chip."""
        out: dict[Any, Any] = {l: (to_host(w[0]), to_host(w[1])) for l, w in self.omega.items() if w is not None}
        out.update({("copy", l): to_host(c[3]) for l, c in self.copies.items() if c[3] is not None})
        others = self.cfg.replicas - 1
        if others > 0:
            self.exchange[0] += others
            self.exchange[1] += others * sum(sum(a.nbytes for a in v) if isinstance(v, tuple) else v.nbytes
                                             for v in out.values())
        return out

    def apply(self, lr_scale: float, *increments: dict) -> None:
        """v ← μ v − η ω, w ← w + v, ω ← 0 (Algorithm 3, once per batch), for its rows and copies.

        increments: empty for one pipeline (this chip's own ω); with replicas, every replica's
        :meth:`increments` in replica order, this chip's included (None in its place: the ω it
        holds, the same numbers), so that all replicas add the same numbers in the same order and
        stay identical.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        eta, mu = self.cfg.eta * lr_scale, self.cfg.momentum
        if any(train for _, _, train in self.slots):
            raise SpikeGradError(f"chip {self.index}: apply with micro-batches still waiting for their "
                                 f"backward pass")

        def total(key: Any, own: Any) -> Any:
            if not increments:
                return own
            out = None
            for inc in increments:
                if inc is None:  # its own ω, held here: the numbers its increments() sent the others
                    if own is None:
                        continue
                    g = list(own)
                elif key in inc:
                    g = [to_device(self.backend, a, self.dtype) for a in
                         (inc[key] if isinstance(inc[key], tuple) else (inc[key],))]
                else:
                    continue
                out = [a.copy() for a in g] if out is None else [s + a for s, a in zip(out, g)]
            return out

        for l, (W, b) in self.params.items():
            t = total(l, self.omega[l])
            if t is not None:
                sgd_update(self.xp, W, b, *self.velocity[l], t[0], t[1], eta, mu, self.cfg.frac_bits)
            self.omega[l] = None
        for l, c in self.copies.items():
            t = total(("copy", l), None if c[3] is None else (c[3],))
            if t is not None:
                momentum_step(self.xp, c[1], c[2], t[0], eta, mu, self.cfg.frac_bits)
            c[3] = None
        self._busy(t0, c0)

    # -- state and counters ------------------------------------------------------------------
    def state(self) -> dict[int, tuple[np.ndarray, ...]]:
        """{layer: (W, b, vW, vb)} host arrays of its rows (:func:`actors.slices.assemble_state`)."""
        return {l: (to_host(W), to_host(b), to_host(self.velocity[l][0]), to_host(self.velocity[l][1]))
                for l, (W, b) in self.params.items()}

    def copy_state(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{layer: (W copy, its velocity)}: the columns of split layers it keeps (``slices.check_copies``)."""
        return {l: (to_host(c[1]), to_host(c[2])) for l, c in self.copies.items()}

    def restore(self, state: dict[int, tuple[np.ndarray, ...]]) -> None:
        """From whole layers' (W, b, vW, vb): its rows and its copies' columns."""
        for l in self.plan.param_layers(self.index):
            if l not in state:
                raise SpikeGradError(f"chip {self.index}: restore without layer {l}")
        for l in self.params:
            a, b = self.slices[l]
            W, bias, vW, vb = (self._own(np.asarray(arr)[a:b]) for arr in state[l])
            if W.shape != self.params[l][0].shape:
                raise SpikeGradError(f"chip {self.index}: layer {l} weights {W.shape}, expected "
                                     f"{self.params[l][0].shape}")
            self.params[l], self.velocity[l] = (W, bias), (vW, vb)
        for l, c in self.copies.items():
            layer = self.topo.layers[l]
            _, lo, hi = next(t for t in self.plan.copies(self.index) if t[0] == l)
            W, vW = (self._own(kind_of(layer).columns(np.asarray(state[l][i]), layer, lo, hi)) for i in (0, 2))
            if W.shape != c[1].shape:
                raise SpikeGradError(f"chip {self.index}: layer {l} weight copy {W.shape}, expected {c[1].shape}")
            c[1], c[2], c[3] = W, vW, None
        self.omega = {l: None for l in self.params}
        self.slots.clear()

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


def abs_total(rows: np.ndarray) -> float:
    """Σ|v| of wire rows (the spike counts of a message, ``link[2]`` of the traffic), exactly
    ``float(np.abs(rows).sum())`` of their int32 (or float) values, in one pass over 1-2 byte
    counts: |v| of int8/int16 fits the unsigned type of its width (np.abs wraps -128 to -128,
    which is 128 unsigned), and a row's sum fits uint32 when N·max|v| < 2³²."""
    if rows.dtype.kind != "i" or rows.dtype.itemsize > 2:
        return float(np.abs(rows).sum())
    u = np.abs(rows).view(f"u{rows.dtype.itemsize}")
    acc = np.uint32 if rows.shape[-1] * np.iinfo(u.dtype).max < 2**32 else np.uint64
    return float(u.sum(axis=-1, dtype=acc).sum(dtype=np.uint64))


def dispatch(step: Step, send: Callable[[int, str, int, tuple], Any], mailbox: dict, batch: int, micro: int,
             x: Any, y: Any, lo: int, hi: int, train: bool = True, apply: tuple = (), increments: bool = False,
             method: str = "step") -> tuple[Any, Any, Any]:
    """Issue one :class:`Step` of :meth:`Plan.steps`: its messages taken from ``mailbox``, its results
    put there. ``send(chip, method, results, args)`` makes the call (in this process, or a Ray actor
    call with ``num_returns=results``). apply: (lr scale, *the replicas' increments) of the previous
    batch's APPLY, to run first; increments: the step also returns the chip's increments. Returns
    (the output slice's result: [loss, correct] of a training step, the predictions of an evaluation
    step, else None; the increments, else None; the call's last result)."""
    ins = [mailbox.pop(k) for k in step.inputs]
    reads_x = any(c.layer == 0 and c.phase is Phase.FORWARD for c in step.calls)
    top = step.top(train)
    n_out = len(step.outputs)
    n = n_out + top + increments
    lr, incs = (apply[0], apply[1:]) if apply else (None, ())
    value = send(step.chip, method, max(1, n), (step.ops, batch, micro, x if reads_x else None,
                                                y if top and train else None, lo, hi, train, increments, lr,
                                                len(incs), *incs, *ins))
    got = slices.results(value, n)
    mailbox.update(zip(step.outputs, got))
    return (got[n_out] if top else None), (got[-1] if increments else None), (got[-1] if got else value)


def schedule(steps: list[Step], micro_batches: int) -> list[tuple[int, int]]:
    """The order in which a batch's steps are issued: (micro-batch, step index) pairs.

    Each chip runs its calls in the order they reach it. Issued micro-batch after micro-batch, the
    first chip's FORWARD of micro-batch m + 1 would queue behind its BACKWARD of m, the last of m's
    round trip, so no two chips would ever work at once. So the steps before the first one with a
    BACKWARD go out for every micro-batch first, then the rest, micro-batch after micro-batch
    (GPipe's schedule): a chain of C chips is idle (C − 1) / (M + C − 1) of the time with M
    micro-batches. Every chip still runs its BACKWARDs (and adds to ω) in micro-batch order, and the
    weights change once per batch, so the arithmetic is the one of micro-batch after micro-batch.
    """
    split = next((i for i, st in enumerate(steps) if any(c.phase is Phase.BACKWARD for c in st.calls)), len(steps))
    return ([(m, i) for m in range(micro_batches) for i in range(split)]
            + [(m, i) for m in range(micro_batches) for i in range(split, len(steps))])


def run_chips(chips: list[Chip], x: np.ndarray, y: np.ndarray, micro: int, batch: int = 0,
              lr_scale: float = 1.0) -> tuple[float, int]:
    """One batch through chips of one layout held in this process, exactly as
    :mod:`actors.pipeline` drives them over Ray: per micro-batch the steps of :meth:`Plan.steps`
    (:func:`dispatch`), the Arrow messages passed by hand; then every chip's APPLY. For tests and
    the Ray-free GPU check (``launch.tools.gpu_check``). Returns (loss sum, correct)."""
    def send(chip: int, method: str, n: int, args: tuple) -> Any:
        return getattr(chips[chip], method)(*args)

    steps = chips[0].plan.steps()
    loss, correct = 0.0, 0
    rows = [(lo, min(len(x), lo + micro)) for lo in range(0, len(x), micro)]
    mailboxes: list[dict[tuple, Any]] = [{} for _ in rows]
    for m, i in schedule(steps, len(rows)):
        stats, _, _ = dispatch(steps[i], send, mailboxes[m], batch, m, x, y, *rows[m])
        if stats is not None:
            loss, correct = loss + stats[0], correct + stats[1]
    for c in chips:
        c.apply(lr_scale)
    return loss, correct


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
        for key in ("micro_batch", "transport"):  # the pipeline's, added by the chip engine
            if key in rep:
                m[key] = rep[key]
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
