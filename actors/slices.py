"""Chips that hold slices of layers: a network mapped onto chips with a capacity (issue 14).

A :class:`SliceChip` holds one slice (a range of units: output channels of a convolution or a
pooling layer, neurons of a dense layer) of each of one or more consecutive layers, as
:func:`cluster.mapping.map_network` lays them out; :class:`cluster.mapping.Plan` says which chip
sends what to whom. Per micro-batch every slice is one call, FORWARD layer by layer and BACKWARD
from the output down (:meth:`Plan.calls`):

* FORWARD of a slice of layer l: the spike counts of the units of layer l − 1 it connects to come
  in, one message from each other chip holding some (this chip's own slice of l − 1 stays here);
  Ŝ, S, S′ of its units (:func:`cluster.network.layer_forward` on the slice's layer spec); its
  spike counts go out, one message per chip holding units of layer l + 1 that integrate them.
* BACKWARD of a slice of layer l: its error spikes come in (the output slice makes Eᴸ from Vᴸ
  and the labels): Z of its units from the chip(s) above that summed them, or, below a split
  trainable layer, that layer's error spikes Eˡ⁺¹ from every chip holding it, summed here on a
  copy of the weights' columns (Eq. (11)); Eˡ = S′ ⊙ Z; ω += Σ Eˡ ⊗ Sˡ⁻¹ for its rows (and the
  copy's ω from Eˡ⁺¹ and its own spikes, Eq. (8)); then Zˡ⁻¹ or Eˡ out (:class:`Plan`).
* APPLY: as :class:`actors.chip.Chip`, for its rows and its copies alike.

Only integer spike counts cross (split mappings need spike gradients). Owner rows and copies
add the same integer products in the same update, so they stay bit-identical; :func:`check_copies`
compares them whenever the driver gathers the weights (every checkpoint).

Event wire (``--wire events``): each slice also runs its share of the spiking network
(:class:`cluster.events.SliceSegment`) on the address events it receives, the waves of every source
piece placed among its input units; it sends the events of its units (forward), of the U
compartments it sums for, or of its δ (backward) to each destination, phase by phase, and compares
every S, E and Z it holds with the equivalent ANN's (``report()["event_checks"]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from cluster.backend import to_device, to_host
from cluster.errors import SpikeGradError
from cluster.events import FORWARD_STANDARD, SliceSegment
from cluster.kernels import error_gate
from cluster.layers import kind_of
from cluster.mapping import Call, Layout, Plan
from cluster.network import (
    _gated_error_below,
    error_events,
    layer_forward,
    layer_increment_sums,
    momentum_step,
    top_error_spikes,
    top_potential,
)
from cluster.synops import SynopCounter
from cluster.topology import Topology, parse_topology

from . import wire
from .chip import Chip, ChipConfig


def _units(A: Any, lo: int, hi: int) -> Any:
    """Units lo..hi-1 of a layer array: channels of a CHWB map, columns of (B, N) rows."""
    return A[lo:hi] if A.ndim == 4 else A[:, lo:hi]


def _join(xp: Any, parts: list[Any]) -> Any:
    """Pieces of consecutive units, in order, as one layer array."""
    if len(parts) == 1:
        return parts[0]
    return xp.concatenate(parts, axis=0 if parts[0].ndim == 4 else 1)


def _cut(phases: list, a: int, b: int) -> list:
    """Units a..b-1 of every wave of some phases (float64 layer layout), samples without a spike dropped."""
    out = []
    for tag, waves in phases:
        kept = []
        for cols, d in waves:
            piece = _units(d, a, b)
            has = (piece.reshape(-1, piece.shape[-1]) != 0).any(axis=0) if piece.ndim == 4 else (piece != 0).any(axis=1)
            if has.any():
                kept.append((cols[has], piece[..., has] if piece.ndim == 4 else piece[has]))
        out.append((tag, kept))
    return out


def _place(phases: list, offset: int, total: int) -> list:
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


def _merge(parts: list[list], backward: bool) -> list:
    """Phases from several pieces as one: each phase's waves from every piece, in piece order; phases
    in the global order (forward: the standard phase, then residual phases bottom-up; backward:
    top-down)."""
    waves: dict[int, list] = {}
    for phases in parts:
        for tag, ws in phases:
            waves.setdefault(tag, []).extend(ws)
    order = sorted(waves, key=lambda t: (t != FORWARD_STANDARD, -t if backward else t))
    return [(t, waves[t]) for t in order]


def _returns(msgs: list[Any]) -> Any:
    """A call's results as Ray's ``num_returns = max(1, len(msgs))`` expects them."""
    if not msgs:
        return None
    return msgs[0] if len(msgs) == 1 else tuple(msgs)


def results(value: Any, n: int) -> list[Any]:
    """The inverse of :func:`_returns`: a call's ``n`` results as a list."""
    if n == 0:
        return []
    return [value] if n == 1 else list(value)


class SliceChip(Chip):
    """Chip ``index`` of a layout (:data:`cluster.mapping.Layout`); see the module docstring.

    params: {layer: (W, b)} whole host arrays of :meth:`Plan.param_layers` (its slices' layers and
    the layers it keeps copies of); it keeps its rows and its copies' columns.
    """

    def __init__(self, index: int, layout: Layout, cfg: ChipConfig,
                 params: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        topo = parse_topology(cfg.topology)
        self.plan = Plan(topo, layout)
        if not 0 <= index < self.plan.n_chips:
            raise SpikeGradError(f"chip {index}: the layout has chips 0..{self.plan.n_chips - 1}")
        if cfg.step.gradient != "spike":
            raise SpikeGradError("chips holding slices of layers exchange spikes only: they need --gradient spike "
                                 "(the float baseline's errors are not spikes)")
        self.slices = {l: (lo, hi) for l, lo, hi in self.plan.layout[index]}
        missing = [l for l in self.plan.param_layers(index) if l not in params]
        if missing:
            raise SpikeGradError(f"chip {index}: no initial weights for layers {missing}")
        own = {l: (params[l][0][lo:hi], params[l][1][lo:hi]) for l, (lo, hi) in self.slices.items()
               if topo.layers[l].trainable}
        super().__init__(index, min(self.slices), max(self.slices), cfg, own)
        # This chip's view of the network: its slices' layer specs in place of the layers'
        self.view = Topology(topo.text, topo.input_shape, tuple(
            self.plan.layer(l, *self.slices[l]) if l in self.slices else layer for l, layer in enumerate(topo.layers)))
        self.counter = SynopCounter(self.xp, self.view, spike_errors=True)
        # Copies of split layers' weights: {l: (columns' layer spec, W[:, cols], velocity, ω)}
        self.copies: dict[int, list[Any]] = {}
        for l, lo, hi in self.plan.copies(index):
            layer = topo.layers[l]
            W = self._own(kind_of(layer).columns(params[l][0], layer, lo, hi))
            self.copies[l] = [kind_of(layer).on_input(layer, lo, hi), W, self.xp.zeros_like(W), None]
        # Per micro-batch (batch, micro): what later calls of this chip need (its own slices'
        # forward results, the error pieces it sent itself)
        self.slots: dict[tuple[int, int, bool], dict] = {}

    # -- messages ----------------------------------------------------------------------------
    def _layer_shape(self, l: int, lo: int, hi: int) -> tuple[int, ...]:
        return self.plan.layer(l, lo, hi).out_shape

    def _layout(self, values: Any, l: int, shape: tuple[int, ...], to_backend: bool = True) -> Any:
        """Wire rows (B, N) of units of layer l (per-sample ``shape``) in layer l's layout."""
        v = to_device(self.backend, values, self.dtype) if to_backend else np.asarray(values, np.float64)
        if not self.plan.topo.layers[l].is_map:
            return v
        xp = self.xp if to_backend else np
        C, H, W = shape
        return xp.ascontiguousarray(v.T).reshape(C, H, W, v.shape[0])

    def _piece_in(self, buf: Any, kind: str, src: int, l: int, lo: int, hi: int, batch: int,
                  micro: int, events: bool) -> tuple[Any, list | None]:
        """A message of units lo..hi-1 of layer l from chip src: (the counts in layer l's layout,
        with address events (``events``) also their phases of waves, float64 in that layout; else None)."""
        shape = tuple(self._layer_shape(l, lo, hi))
        t0 = time.perf_counter()
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
            h, values = wire.decode(buf, kind=kind, dst=self.index, shape=shape, batch=batch, micro=micro)
        self.timing["decode"] += time.perf_counter() - t0
        if h.src != src:
            raise SpikeGradError(f"chip {self.index}: {kind} message of layer {l} units {lo}-{hi} expected from "
                                 f"chip {src}, got one from chip {h.src}")
        self._check_samples(h.samples, kind, batch, micro)
        return self._layout(values, l, shape), phases

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
                parts.append(_units(own, p.lo - own_lo, p.hi - own_lo))
                got = None if own_phases is None else _cut(own_phases, p.lo - own_lo, p.hi - own_lo)
            else:
                try:
                    buf = next(it)
                except StopIteration:
                    raise SpikeGradError(f"chip {self.index}: {kind} of layer {l}: {len(msgs)} messages, "
                                         f"expected one from each of chips {[q.chip for q in pieces]}") from None
                arr, got = self._piece_in(buf, kind, p.chip, l, p.lo, p.hi, batch, micro, events)
                parts.append(arr)
            if got is not None:
                phase_parts.append(_place(got, p.lo - base, total))
        if next(it, None) is not None:
            raise SpikeGradError(f"chip {self.index}: {kind} of layer {l}: more messages than the plan's "
                                 f"{len(pieces)} pieces")
        joined = _join(self.xp, parts)
        if not events:
            return joined, None
        return joined, _merge(phase_parts, backward=(kind == "error"))

    def _send_piece(self, A: Any, phases: list | None, a: int, b: int, kind: str, dst: int, batch: int,
                    micro: int, shape: tuple[int, ...], samples: int, count: bool = True) -> Any:
        """Units a..b-1 of a layer array (relative to its first unit) to chip dst: as counts, or
        with events (``phases`` given) as the address events of those units."""
        if phases is None:
            return self._send(_units(A, a, b), kind, dst, batch, micro, shape, count=count)
        return self._send_events(_cut(phases, a, b), dst, batch, micro, shape, samples)

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
            copy = (self.copies[l + 1][0], host(self.copies[l + 1][1]))
        return SliceSegment(self.view, l, self.view.layers[l], params, batch_size, self.cfg.step, below=below,
                            copy=copy)

    def _slot(self, batch: int, micro: int, train: bool) -> dict:
        return self.slots.setdefault((batch, micro, train), {})

    # -- FORWARD -----------------------------------------------------------------------------
    def forward_slice(self, l: int, batch: int, micro: int, x: Any = None, lo: int = 0, hi: int | None = None,
                      train: bool = True, *msgs: Any) -> Any:
        """FORWARD of this chip's slice of layer l for one micro-batch (module docstring).

        x: for layer 0 the float images (N, C, H, W) of the whole batch, rows lo:hi being this
        micro-batch (else None); msgs: the messages of :meth:`Plan.forward_sources`' other chips,
        in order. Returns the messages for :meth:`Plan.forward_targets` (:func:`results`); for the
        output layer None when training, else the predictions argmax Vᴸ (B,).
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
        if l == self.L:
            if train:
                return None
            del self.slots[(batch, micro, train)]
            return to_host(kept.S.argmax(axis=1))
        if not train and l == self.last:
            del self.slots[(batch, micro, train)]
        return _returns(out)

    # -- BACKWARD ----------------------------------------------------------------------------
    def backward_slice(self, l: int, batch: int, micro: int, y: Any = None, lo: int = 0, hi: int | None = None,
                       *msgs: Any) -> Any:
        """BACKWARD of this chip's slice of layer l for one micro-batch (module docstring).

        y: for the output layer the batch's labels, rows lo:hi (else None); msgs: the messages of
        :meth:`Plan.backward_sources`' other chips, in order. Returns the messages for
        :meth:`Plan.backward_targets`, and for the output layer also [loss sum, correct] after them.
        """
        t0, c0 = time.perf_counter(), time.process_time()
        slot = self.slots.get((batch, micro, True), {})
        if ("S", l) not in slot:
            raise SpikeGradError(f"chip {self.index}: error for micro-batch {micro} of batch {batch} at layer {l} "
                                 f"without its forward pass")
        S_in, kept = slot.pop(("S", l))
        seg = slot.pop(("seg", l), None)
        xp, step, (a, b) = self.xp, self.cfg.step, self.slices[l]
        layer = self.view.layers[l]
        stats: list | None = None
        phases_out = None
        if l == self.L:
            yd = to_device(self.backend, np.asarray(y)[lo:hi].astype(np.int64))
            correct = int((kept.S.argmax(axis=1) == yd).sum())
            U, loss = top_potential(xp, kept.S, yd, step)
            if seg is not None:  # the top U compartments start from the ANN's unrounded Uᴸ
                phases_out = seg.backward(top_error=to_host(U).astype(np.float64))
            E = top_error_spikes(xp, U, step)
            emitted = error_events(xp, E, step)  # Zᴸ = Eᴸ: no gate on the output
            stats = [float(loss.sum()), correct]
        elif self.plan.sums_below(l + 1):  # Eˡ⁺¹ of every slice above, summed here on the copy
            above = self.plan.topo.layers[l + 1]
            E_up, phases_in = self._gather(self.plan.backward_sources(l, self.index), list(msgs),
                                           slot.pop(("E", l + 1), None), self.slices.get(l + 1, (0, 0))[0], "error",
                                           l + 1, batch, micro, slot.pop(("EP", l + 1), None))
            spec, Wc, _, omega = self.copies[l + 1]
            count: list = []  # its U compartments' error spikes, before the gate
            E = _gated_error_below(xp, spec, (Wc, None), E_up, layer, kept.mask, step, count)
            emitted = count[0]
            if seg is not None:
                phases_out = seg.backward(phases_in)
                self._check(seg.net[l].Z, _gated_error_below(xp, spec, (Wc, None), E_up, layer, None, step))
            cache = kind_of(above).increment_cache(xp, spec, kept.S)
            gW, _ = layer_increment_sums(xp, spec, (Wc, None), E_up, cache)
            if omega is None:
                self.copies[l + 1][3] = gW.copy()
            else:
                omega += gW
        else:  # Z of its units from the chip(s) above that summed them
            Z, phases_in = self._gather(self.plan.backward_sources(l, self.index), list(msgs),
                                        slot.pop(("Z", l), None), a, "error", l, batch, micro,
                                        slot.pop(("ZP", l), None))
            if seg is not None:
                phases_out = seg.backward(phases_in)
            emitted = error_events(xp, Z, step)  # what the U compartments above emitted for its units
            E = error_gate(xp, Z, kept.mask, 1.0, rounding=False)  # δ = z·S′ (Eq. (7))
        if seg is not None:
            self._check(seg.net[l].E, E)
        B = S_in.shape[-1] if S_in.ndim == 4 else S_in.shape[0]
        self.counter.accumulate_row(l, self.counter.measure_layer(l, S_in, kept.S if l < self.L else None, E, B,
                                                                  emitted))
        if layer.trainable:
            gW, gb = layer_increment_sums(xp, layer, self.params[l], E, kept.cache)
            acc = self.omega[l]
            if acc is None:
                self.omega[l] = (gW.copy(), gb.copy())
            else:
                acc[0][...] += gW
                acc[1][...] += gb
        out: list[Any] = []
        targets = self.plan.backward_targets(l, self.index)
        if l > 0 and self.plan.sums_below(l):  # its error spikes Eˡ to every chip of layer l − 1
            if l - 1 in self.slices:
                slot[("E", l)] = E
                if phases_out is not None:
                    slot[("EP", l)] = phases_out
            out = [self._send_piece(E, phases_out, 0, b - a, "error", t.chip, batch, micro,
                                    self._layer_shape(l, a, b), B) for t in targets]
        elif l > 0:  # Zˡ⁻¹ of the units below its slice connects to, summed here
            n0, n1 = self.plan.needs(l, a, b)
            Z_below = _gated_error_below(xp, layer, self.params.get(l), E, self.plan.layer(l - 1, n0, n1), None, step)
            if seg is not None:  # the U compartments below, as the spiking network summed them
                self._check(seg.net[l - 1].Z, Z_below)
            if l - 1 in self.slices:
                u0, u1 = self.slices[l - 1]
                lo_, hi_ = max(u0, n0), min(u1, n1)
                if lo_ < hi_:
                    slot[("Z", l - 1)] = _units(Z_below, lo_ - n0, hi_ - n0)
                    if phases_out is not None:
                        slot[("ZP", l - 1)] = _cut(phases_out, lo_ - n0, hi_ - n0)
            out = [self._send_piece(Z_below, phases_out, t.lo - n0, t.hi - n0, "error", t.chip, batch, micro,
                                    self._layer_shape(l - 1, t.lo, t.hi), B) for t in targets]
        if l == self.first:
            self.slots.pop((batch, micro, True), None)
        self._busy(t0, c0)
        return _returns(out + [stats]) if stats is not None else _returns(out)

    # -- APPLY, state ------------------------------------------------------------------------
    def increments(self) -> dict:
        """Its rows' ω by layer, and its copies' ω under ("copy", layer), as host arrays."""
        out: dict[Any, Any] = dict(super().increments())
        copies = {("copy", l): to_host(c[3]) for l, c in self.copies.items() if c[3] is not None}
        others = self.cfg.replicas - 1
        if others > 0:  # in the same messages as its rows' ω
            self.exchange[1] += others * sum(a.nbytes for a in copies.values())
        out.update(copies)
        return out

    def apply(self, lr_scale: float, *increments: dict) -> None:
        """Chip.apply for its rows; the same step for its copies (with the same increments)."""
        if any(train for _, _, train in self.slots):
            raise SpikeGradError(f"chip {self.index}: apply with micro-batches still waiting for their "
                                 f"backward pass")
        super().apply(lr_scale, *[{k: v for k, v in inc.items() if isinstance(k, int)} for inc in increments])
        eta, mu = self.cfg.eta * lr_scale, self.cfg.momentum
        for l, c in self.copies.items():
            total = c[3]
            if increments:
                total = None
                for inc in increments:
                    if ("copy", l) in inc:
                        g = to_device(self.backend, inc[("copy", l)], self.dtype)
                        total = g.copy() if total is None else total + g
            if total is not None:
                momentum_step(self.xp, c[1], c[2], total, eta, mu, self.cfg.frac_bits)
            c[3] = None

    def copy_state(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{layer: (W copy, its velocity)}: the columns of split layers it keeps (:func:`check_copies`)."""
        return {l: (to_host(c[1]), to_host(c[2])) for l, c in self.copies.items()}

    def restore(self, state: dict[int, tuple[np.ndarray, ...]]) -> None:
        """From whole layers' (W, b, vW, vb): its rows and its copies' columns."""
        for l in self.plan.param_layers(self.index):
            if l not in state:
                raise SpikeGradError(f"chip {self.index}: restore without layer {l}")
        own = {}
        for l in self.params:
            a, b = self.slices[l]
            own[l] = tuple(arr[a:b] for arr in state[l])
        super().restore(own)
        for l, c in self.copies.items():
            layer = self.plan.topo.layers[l]
            _, lo, hi = next(t for t in self.plan.copies(self.index) if t[0] == l)
            W, vW = (self._own(kind_of(layer).columns(np.asarray(state[l][i]), layer, lo, hi)) for i in (0, 2))
            if W.shape != c[1].shape:
                raise SpikeGradError(f"chip {self.index}: layer {l} weight copy {W.shape}, expected {c[1].shape}")
            c[1], c[2], c[3] = W, vW, None
        self.slots.clear()


def assemble_state(plan: Plan, parts: list[dict]) -> dict[int, tuple[np.ndarray, ...]]:
    """Whole layers' (W, b, vW, vb) from the chips' :meth:`SliceChip.state`, in chip order."""
    out = {}
    for l, layer in enumerate(plan.topo.layers):
        if layer.trainable:
            rows = [parts[p.chip][l] for p in plan.owners[l]]
            out[l] = tuple(np.concatenate([r[i] for r in rows], axis=0) for i in range(4))
    return out


def check_copies(plan: Plan, state: dict[int, tuple[np.ndarray, ...]], copies: list[dict]) -> int:
    """Every chip's weight copies (:meth:`SliceChip.copy_state`, in chip order) against the owners'
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


def dispatch(call: Call, send: Callable[[int, str, int, tuple], Any], mailbox: dict, batch: int, micro: int,
             x: Any, y: Any, lo: int, hi: int, train: bool = True) -> tuple[Any, Any]:
    """Issue one call of :meth:`Plan.calls`: its messages taken from ``mailbox``, its results put
    there. ``send(chip, method, results, args)`` makes the call (in this process, or a Ray actor
    call with ``num_returns=results``). Returns (the output slice's result: [loss, correct] of a
    training BACKWARD, the predictions of an evaluation FORWARD, else None; the call's last result)."""
    ins = [mailbox.pop(k) for k in call.inputs]
    if call.phase == "forward":
        n = len(call.outputs)
        value = send(call.chip, "forward_slice", max(1, n),
                     (call.layer, batch, micro, x if call.layer == 0 else None, lo, hi, train, *ins))
    else:
        n = len(call.outputs) + call.top
        value = send(call.chip, "backward_slice", max(1, n),
                     (call.layer, batch, micro, y if call.top else None, lo, hi, *ins))
    got = results(value, n)
    mailbox.update(zip(call.outputs, got))
    top = None
    if call.top and (call.phase == "backward" or not train):
        top = got[-1] if call.phase == "backward" else value
    return top, (got[-1] if got else value)


def run_slices(chips: list[SliceChip], x: np.ndarray, y: np.ndarray, micro: int, batch: int = 0,
               lr_scale: float = 1.0) -> tuple[float, int]:
    """One batch through chips of one layout held in this process, exactly as
    :mod:`actors.pipeline` drives them over Ray: per micro-batch the calls of :meth:`Plan.calls`
    (:func:`dispatch`), the Arrow messages passed by hand; then every chip's APPLY.
    Returns (loss sum, correct)."""
    def send(chip: int, method: str, n: int, args: tuple) -> Any:
        return getattr(chips[chip], method)(*args)

    calls = chips[0].plan.calls()
    loss, correct = 0.0, 0
    for m, lo in enumerate(range(0, len(x), micro)):
        hi = min(len(x), lo + micro)
        mailbox: dict[tuple, Any] = {}
        for call in calls:
            stats, _ = dispatch(call, send, mailbox, batch, m, x, y, lo, hi)
            if stats is not None:
                loss, correct = loss + stats[0], correct + stats[1]
    for c in chips:
        c.apply(lr_scale)
    return loss, correct
