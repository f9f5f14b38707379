"""Event-driven simulation of the spiking network itself (Algorithms 1-3, docs/design.md §3).

Where :mod:`cluster.network` computes the equivalent ANN, this module lets the
integrate-and-fire neurons of every layer exchange individual signed spikes, and
so proves, on real data, that the accumulated responses equal the ANN's.

Events are processed in *waves*: after every change of its input a layer fires
as long as its activation function says so, one spike per neuron per round, and
each round is a wave (an array of −1/0/+1 per neuron and sample) that the next
layer integrates with one product. Waves stream from layer to layer through
generators, so a layer starts integrating while the layer below still fires.
A wave carries only the samples that hold a spike: a layer's potentials change
only where its input arrived or where it fired itself, so after the first round
every step touches those samples alone.

Event order (ORDERS): "waves" (every neuron over threshold fires in each round,
each round travels up at once), "layered" (a layer integrates all its input of a
phase before it fires) or seeded "random" (each fires with probability 1/2 per
round and stays eligible, so a layer's spikes leave in random sub-waves,
interleaved with the integration and firing of the layers above). The
accumulated values do not depend on it; the number of spikes emitted does.

Forward (Algorithm 1, Eqs. (1)-(4)): V(0) = b and a neuron whose bias already
crosses ±Θff fires at t = 0; layer 0 receives W x by multiplication; a neuron
fires +1 while V ≥ Θff and −1 while V ≤ −Θff (a ReLU neuron only while S > 0,
Eq. (4)); each spike moves Θff from V to S. Residual phases (Eqs. (16), (17)),
bottom-up: each layer applies Eq. (16) once (a ReLU neuron's −1 only if S > 0),
its residual spikes propagate up with the standard rule, then the next layer.
The output layer integrates only.

Backward (Algorithm 2, Eqs. (5)-(8)): S′ from the final state (Eq. (5)); the top
layer's U = α(softmax(V) − onehot) emits error spikes z while |U| ≥ Θbp;
δ = z·S′ travels down, adding w·δ to the U of the layer below, which fires by
the same linear rule; residual phases (Eqs. (19), (20)) top-down. The weight
increments ω = −η Σ δ ⊗ x(T) use the final forward trace x(T) = η S (Eq. (8)): in
:func:`simulate` every δ a neuron emits adds δ ⊗ x(T) of its inputs to its synapses'
ω as it leaves, wave by wave (:meth:`_Layer.learn`), so the reported ω is accumulated
event by event, not computed from the summed δ.

With weights, biases and inputs on a dyadic grid every sum is exact in float64,
and S, Z, E, ω equal the ANN's exactly whatever the order of events.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from . import layers as ops
from .errors import SpikeGradError
from .network import StepConfig, export_layer, to_chwb, top_potential
from .synops import _weighted_events, layer_fan
from .topology import Conv, Dense, Pool, Topology

Wave = tuple  # (sample indices: int array, spikes of those samples in the layer's layout)

ORDERS = {
    "waves": "every neuron over threshold fires once per round; each round travels up as one wave at once",
    "layered": "a layer integrates all it receives in a phase, then fires (bias firing at t = 0 first)",
    "random": "each neuron over threshold fires in a round with probability 1/2 (seeded); sub-waves travel at once",
}


@dataclass
class EventCounts:
    """Per layer: spikes emitted forward (n), best case Σ|S| (n_min), error spikes emitted by its U
    compartments and their best case Σ|Z| (what ``cluster.synops`` counts as ``error_spikes``),
    synaptic events forward and backward, and the number of waves."""

    spikes: list[float] = field(default_factory=list)
    spikes_min: list[float] = field(default_factory=list)
    error_spikes: list[float] = field(default_factory=list)
    error_spikes_min: list[float] = field(default_factory=list)  # Σ |Z|: the equivalent ANN's error_spikes
    events_forward: list[float] = field(default_factory=list)
    events_backward: list[float] = field(default_factory=list)
    waves: list[int] = field(default_factory=list)


@dataclass
class EventResult:
    """Accumulated values in the layout of docs/design.md §2: S[l] (B, N_l) for l < L, V (B, classes),
    Z[l], E[l] (B, N_l) for every l, and the increment sums {l: (Σ E ⊗ Sˡ⁻¹, Σ E)}
    (ΔW = −η × these), plus the event counts."""

    S: list[np.ndarray]
    V: np.ndarray
    Z: list[np.ndarray]
    E: list[np.ndarray]
    sums: dict[int, tuple[np.ndarray, np.ndarray]]
    counts: EventCounts


def _take(A: np.ndarray, cols: np.ndarray | None) -> np.ndarray:
    """The samples ``cols`` of a layer array (batch axis last for maps, first for dense rows)."""
    if cols is None or len(cols) == A.shape[-1 if A.ndim == 4 else 0]:  # all samples
        return A
    return A[..., cols] if A.ndim == 4 else A[cols]


def _add(A: np.ndarray, cols: np.ndarray | None, r: np.ndarray) -> None:
    """A[samples cols] += r (the samples of a wave are distinct and in order)."""
    if cols is None or len(cols) == A.shape[-1 if A.ndim == 4 else 0]:
        A += r
    elif A.ndim == 4 and 4 * len(cols) > A.shape[-1]:
        # Many samples of a map: a fancy-indexed += on the innermost axis reads and writes with the
        # batch's stride; r spread into zeros and added whole is about twice as fast (x + 0 == x).
        full = np.zeros_like(A)
        full[..., cols] = r
        A += full
    elif A.ndim == 4:
        A[..., cols] += r
    else:
        A[cols] += r


def _active(s: np.ndarray) -> np.ndarray:
    """Which samples of a wave (or a mask in the same layout) hold anything."""
    # any() along an axis of a 2-D array is a 1-D array (numpy's stub also allows a scalar)
    return cast(np.ndarray, s.reshape(-1, s.shape[-1]).any(axis=0) if s.ndim == 4 else s.any(axis=1))


def _compact(s: np.ndarray, cols: np.ndarray | None, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep the samples of a wave that hold a spike: (sample indices, their data)."""
    keep = _active(s)
    idx = np.arange(batch) if cols is None else cols
    if keep.all():
        return idx, s
    return idx[keep], (s[..., keep] if s.ndim == 4 else s[keep])


class _Layer:
    """One layer's two compartments: V, S (forward) and U, Z (backward), in engine layout.

    A wave is (sample indices, spikes of those samples): after its input changes only the
    samples that received something can fire, and within a burst only those that fired (or,
    in random order, were eligible) in the round before, so every step touches those alone.
    """

    def __init__(self, layer: Any, params: tuple | None, batch: int, cfg: StepConfig, relu: bool,
                 first: bool = False, rng: np.random.Generator | None = None) -> None:
        self.layer, self.params, self.cfg, self.relu, self.first = layer, params, cfg, relu, first
        self.batch, self.rng = batch, rng
        # A pooling neuron's weights are Θff/k²: its V is kept in units of Θff/k², so it sums
        # integer spike counts against the threshold k², exact for any k (not only powers of 2).
        self.theta = float(layer.size ** 2) if isinstance(layer, Pool) else cfg.theta_ff
        shape = (layer.out_shape[0], 1, 1) if isinstance(layer, Dense) else layer.out_shape
        full = (batch, shape[0]) if isinstance(layer, Dense) else (*shape, batch)
        self.V = np.zeros(full)
        if params is not None:
            b = params[1]
            self.V += b if isinstance(layer, Dense) else b[:, None, None, None]  # V(0) = b
        self.S = np.zeros(full)
        self.U = np.zeros(full)
        self.Z = np.zeros(full)
        self.E = np.zeros(full)
        self.mask: np.ndarray | None = None
        self.n = 0.0
        self.n_err = 0.0
        self.waves = 0
        self.fan = layer_fan(layer)
        self.events_in = 0.0    # synaptic events of spikes arriving forward (Σ |s| · fan-out)
        self.events_back = 0.0  # synaptic events of δ leaving backward (Σ |δ| · fan-in)
        # Eq. (8): the forward trace x(T) of this layer's inputs (set once the forward pass is over),
        # and ω, which every δ this layer emits adds to (without −η): None where not accumulated
        self.trace: np.ndarray | None = None
        self.omega: tuple[np.ndarray, np.ndarray] | None = None
        self._patches: np.ndarray | None = None  # im2col of the trace (B, Ho·Wo, K), for a convolution

    @property
    def weights(self) -> tuple[Any, Any]:
        """(W, b) of this layer, one with weights (convolution or dense)."""
        if self.params is None:
            raise SpikeGradError(f"layer {self.layer.token()} has no weights")
        return self.params

    def _choose(self, eligible: np.ndarray) -> np.ndarray:
        """Deterministic order: every eligible neuron fires this round; random order: each
        eligible neuron fires with probability 1/2 (the rest stay eligible for later rounds)."""
        if self.rng is None:
            return eligible
        return eligible * (self.rng.random(eligible.shape) < 0.5)

    # forward -------------------------------------------------------------------------------
    def drive(self, wave: Wave) -> None:
        """V += W ⋆ s_in for one incoming wave (or the float input, multiplied in)."""
        cols, s_in = wave
        layer, xp = self.layer, np
        if not self.first:  # spikes, not the float input
            fo = self.fan.fan_out
            self.events_in += float(_weighted_events(xp, s_in, fo, fo, "abs")[1])
        if isinstance(layer, Pool):
            r = np.rint(layer.size ** 2 * ops.pool_forward(xp, layer, s_in))  # Σ window, in Θff/k² units
        elif isinstance(layer, Conv):
            pre, _ = ops.conv_forward(xp, layer, self.weights[0], s_in)
            r = pre.reshape(*self.V.shape[:3], s_in.shape[-1])
        else:
            if s_in.ndim == 4:
                s_in = ops.flatten(xp, s_in)
            r = ops.dense_forward(self.weights[0], s_in)
        _add(self.V, cols, r)

    def fire(self, cols: np.ndarray | None) -> Iterator[Wave]:
        """Standard rule (Eqs. (3), (4)) on the samples ``cols`` (None: all) until stable;
        yields each round's spikes as a wave."""
        theta = self.theta
        while True:
            V = _take(self.V, cols)
            down = V <= -theta
            if self.relu:
                down &= _take(self.S, cols) > 0
            e = (V >= theta).astype(np.float64) - down
            cols, e = _compact(e, cols, self.batch)
            if not len(cols):
                return
            s = self._choose(e)
            if not s.any():
                continue
            _add(self.V, cols, -theta * s)
            _add(self.S, cols, s)
            self.n += np.abs(s).sum()
            self.waves += 1
            yield _compact(s, cols, self.batch)

    def residual(self) -> Wave:
        """Eq. (16) once: ties at ±Θff/2 round away from zero given the sign of S."""
        h = self.theta / 2
        up = (self.V > h) | ((self.V == h) & (self.S >= 0))
        down = (self.V < -h) | ((self.V == -h) & (self.S <= 0))
        if self.relu:
            down &= self.S > 0
        s = up.astype(np.float64) - down
        self.V -= s * self.theta
        self.S += s
        self.n += np.abs(s).sum()
        self.waves += 1
        return _compact(s, None, self.batch)

    # backward ------------------------------------------------------------------------------
    def receive(self, wave: Wave, above: _Layer) -> None:
        """U += (W of the layer above)ᵀ ⋆ δ for one wave of δ from the layer above."""
        cols, delta = wave
        lay, xp = above.layer, np
        if isinstance(lay, Pool):
            r = ops.pool_backward_input(xp, lay, delta, self.cfg.theta_ff / lay.size ** 2)
        elif isinstance(lay, Conv):
            r = ops.conv_backward_input(xp, lay, above.weights[0], delta)
        elif self.U.ndim == 4:
            r = ops.dense_error_to_map(above.weights[0], delta, self.layer.out_shape)
        else:
            r = ops.dense_backward_input(above.weights[0], delta)
        _add(self.U, cols, r)

    def fire_errors(self, cols: np.ndarray | None) -> Iterator[Wave]:
        """Linear error rule while |U| ≥ Θbp on the samples ``cols`` (None: all); yields
        δ = z·S′ per round (Eq. (7))."""
        theta = self.cfg.theta_bp
        while True:
            U = _take(self.U, cols)
            e = (U >= theta).astype(np.float64) - (U <= -theta)
            cols, e = _compact(e, cols, self.batch)
            if not len(cols):
                return
            z = self._choose(e)
            if not z.any():
                continue
            wave = self._emit(cols, z)
            if wave is not None:
                yield wave

    def residual_errors(self) -> Wave | None:
        """Eq. (19) once; returns δ = z_res·S′."""
        h = self.cfg.theta_bp / 2
        up = (self.U > h) | ((self.U == h) & (self.Z >= 0))
        down = (self.U < -h) | ((self.U == -h) & (self.Z <= 0))
        z = up.astype(np.float64) - down
        return self._emit(None, z)

    def gate(self, wave: Wave) -> Wave | None:
        """Error spikes z of this layer's U, emitted on the segment above: δ = z·S′ (Eq. (7))."""
        cols, z = wave
        _add(self.Z, cols, z)
        delta = z if self.mask is None else z * _take(self.mask, cols)
        _add(self.E, cols, delta)
        cols, delta = _compact(delta, cols, self.batch)
        if not len(cols):
            return None
        self.learn(cols, delta)
        return cols, delta

    def learn(self, cols: np.ndarray, delta: np.ndarray) -> None:
        """Eq. (8) for one wave of δ leaving this layer's neurons: each adds δ · x(T) of each of its
        inputs to that synapse's ω (and δ to its bias's). Only where :attr:`trace` is set."""
        if self.trace is None or self.params is None:
            return
        W = self.params[0]
        if isinstance(self.layer, Conv):  # the trace's patches once per layer, each wave's samples from them
            if self._patches is None:  # sample-major (B, Ho·Wo, K): a wave's samples are contiguous blocks
                B = self.trace.shape[-1]
                P = self.layer.out_shape[1] * self.layer.out_shape[2]
                self._patches = np.ascontiguousarray(ops.im2col(
                    np, np.ascontiguousarray(self.trace), self.layer).reshape(-1, P, B).transpose(2, 1, 0))
            p = self._patches if cols is None or len(cols) == len(self._patches) else self._patches[cols]
            Co, nb = delta.shape[0], delta.shape[-1]
            d2 = delta.reshape(Co, -1, nb).transpose(0, 2, 1).reshape(Co, -1)  # (Co, k·Ho·Wo), like p
            gW = (d2 @ p.reshape(-1, p.shape[-1])).reshape(W.shape)
            gb = d2.sum(axis=1)
        else:
            x = _take(self.trace, cols)
            x = ops.flatten(np, x) if x.ndim == 4 else x
            gW, gb = delta.T @ x, delta.sum(axis=0)
        if self.omega is None:
            self.omega = (np.array(gW, dtype=np.float64), np.array(gb, dtype=np.float64))
        else:
            self.omega[0][...] += gW
            self.omega[1][...] += gb

    def _emit(self, cols: np.ndarray | None, z: np.ndarray) -> Wave | None:
        """Error spikes z leave U for Z; δ = z·S′ joins E and, where nonzero, travels down."""
        _add(self.U, cols, -self.cfg.theta_bp * z)
        _add(self.Z, cols, z)
        self.n_err += np.abs(z).sum()
        delta = z if self.mask is None else z * _take(self.mask, cols)
        _add(self.E, cols, delta)
        cols, delta = _compact(delta, cols, self.batch)
        if not len(cols):
            return None
        self.learn(cols, delta)
        return cols, delta


FORWARD_STANDARD = -1  # phase tag of the standard forward (and backward) phase; residual phases: layer index


class Segment:
    """Layers ``first..last`` of the network in the event simulation: one chip's share of it.

    A chain of segments covering 0..L is the whole network; one segment 0..L is
    :func:`simulate`. Segments exchange *phases* in order, each a (tag, [waves]) pair:
    the standard phase (tag ``FORWARD_STANDARD``), then one residual phase per layer r (tag r),
    bottom-up forward (Eq. (16)) and top-down backward (Eq. (19)). Every segment handles the
    phases in this global order, so a chain gives the same events as the whole network.

    Forward waves are the spikes of the segment's top layer. Backward, the synapses Wˡ live
    with layer l, so a segment also holds the U compartments of the layer below it (the
    boundary, ``first - 1``): it sends their error spikes z ungated, and the segment below
    gates them with its S′ (δ = z·S′, Eq. (7)), as on the chips of :mod:`actors.chip`.
    """

    def __init__(self, topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], first: int, last: int,
                 batch: int, cfg: StepConfig, residual: bool = True, order: str = "waves", seed: int = 0) -> None:
        if order not in ORDERS:
            raise ValueError(f"order expected one of {tuple(ORDERS)}, got {order!r}")
        self.topo, self.cfg, self.residual, self.order = topo, cfg, residual, order
        self.first, self.last, self.batch = first, last, batch
        self.L = L = len(topo.layers) - 1
        self.bottom = first - 1 if first > 0 else 0  # lowest layer whose U lives here
        rng = np.random.default_rng(seed) if order == "random" else None
        self.net = {l: _Layer(topo.layers[l], params.get(l) if l >= first else None, batch, cfg,
                              relu=not isinstance(topo.layers[l], Pool) and l < L, first=(l == 0), rng=rng)
                    for l in range(self.bottom, last + 1)}

    # forward -------------------------------------------------------------------------------
    def _run(self, l: int, incoming: Iterable[Wave]) -> Iterator[Wave]:
        st = self.net[l]
        if l == self.L:
            for w in incoming:
                st.drive(w)
            return
        yield from st.fire(None)  # a bias beyond ±Θff fires at t = 0
        if self.order == "layered":
            for w in incoming:
                st.drive(w)
            yield from st.fire(None)
            return
        for w in incoming:
            st.drive(w)
            yield from st.fire(w[0])

    def _up(self, l: int, waves: list[Wave], start: bool = False) -> list[Wave]:
        """Waves into layer l, streamed up to the segment's top; the top layer's waves out.
        ``start``: the standard phase, which runs even without input (biases fire at t = 0)."""
        if not waves and not start:
            return []
        stream: Iterable[Wave] = waves
        for k in range(l, self.last + 1):
            stream = self._run(k, stream)
        return list(stream)

    def forward(self, phases: list[tuple[int, list[Wave]]]) -> list[tuple[int, list[Wave]]]:
        """The phases from the segment below (on layer 0: the standard phase holding the input,
        one wave (all samples, x in CHWB)); returns this segment's phases for the one above."""
        if not phases or phases[0][0] != FORWARD_STANDARD:  # no spikes from below: the phase still runs
            phases = [(FORWARD_STANDARD, []), *phases]
        out = [(tag, self._up(self.first, waves, start=(i == 0))) for i, (tag, waves) in enumerate(phases)]
        if self.residual:
            for r in range(self.first, min(self.last, self.L - 1) + 1):
                w = self.net[r].residual()
                waves = [w] if len(w[0]) else []
                out.append((r, waves if r == self.last else self._up(r + 1, waves)))
        for l in range(self.first, min(self.last, self.L - 1) + 1):
            st = self.net[l]
            st.mask = (st.V > 0) | (st.S > 0) if st.relu else None  # Eq. (5)
        return out

    # backward ------------------------------------------------------------------------------
    def _run_down(self, l: int, incoming: Iterable[Wave]) -> Iterator[Wave]:
        return self._errors_through(self.net[l], self.net[l + 1], incoming)

    def _errors_through(self, st: _Layer, above: _Layer, incoming: Iterable[Wave]) -> Iterator[Wave]:
        """δ waves from ``above`` (its synapses) into st's U compartments, which fire: st's δ out."""
        fi = above.fan.fan_in
        for w in incoming:
            above.events_back += float(_weighted_events(np, w[1], fi, fi, "abs")[1])
            st.receive(w, above)
            if self.order != "layered":
                yield from st.fire_errors(w[0])
        if self.order == "layered":
            yield from st.fire_errors(None)

    def _down(self, l: int, deltas: Iterable[Wave]) -> list[Wave]:
        """δ waves from layer l + 1 streamed down to the segment's bottom; the bottom's waves out
        (the boundary's error spikes z; on the first segment the waves are run, not kept)."""
        stream: Iterable[Wave] = deltas
        for k in range(l, self.bottom - 1, -1):
            stream = self._run_down(k, stream)
        if self.first == 0:  # layer 0's δ goes nowhere: run the stream without keeping its waves
            for _ in stream:
                pass
            return []
        return list(stream)

    def backward(self, phases: list[tuple[int, list[Wave]]] | None = None, y: np.ndarray | None = None,
                 top_error: np.ndarray | None = None) -> list[tuple[int, list[Wave]]]:
        """The error phases from the segment above (error spikes z of this segment's top layer);
        on the output segment instead the labels y, or ``top_error``, the unrounded
        α(softmax(Vᴸ) − onehot(y)) (B, classes) to start from. Returns the phases of the
        boundary's error spikes z for the segment below (on the first segment: nothing)."""
        top = self.net[self.last]
        if self.last == self.L:
            if top_error is None:
                top_error, _ = top_potential(np, top.V, y, self.cfg)
            top.U = np.array(top_error, dtype=np.float64)
            out = [(FORWARD_STANDARD, self._down(self.L - 1, top.fire_errors(None)))]
        else:
            out = []
            for tag, waves in phases or []:
                deltas = [d for d in (top.gate(w) for w in waves) if d is not None]
                out.append((tag, self._down(self.last - 1, deltas) if deltas else []))
        if self.residual:
            for r in range(self.last if self.last == self.L else self.last - 1, self.bottom - 1, -1):
                d = self.net[r].residual_errors()
                if r == self.bottom and self.first > 0:  # the boundary's z, for the segment below
                    out.append((r, [d] if d is not None else []))
                else:
                    out.append((r, self._down(r - 1, [d]) if r > 0 and d is not None else []))
        return out

class SliceSegment(Segment):
    """One chip's slice of one layer l in the event simulation (chips holding slices of layers,
    ``actors.slices``, ``--wire events``): the slice's neurons (``spec``, its rows of (W, b)),
    and, as for :class:`Segment`, the U compartments of the units below that it sums for
    (``below``: the layer spec of those units, or None when it sums for none).

    ``copy``: (the layer spec of layer l + 1's synapses from this slice's units, those weights)
    when layer l + 1 is split: the error spikes δ of l + 1 then arrive here, and this slice's own U
    compartments integrate them (Eq. (6)) with the copy, fire, and take their residual phase
    (Eq. (19)); otherwise its U lives with the chip above and its error spikes z arrive ungated.
    Without ``below`` the slice's δ leave as they are (the chips below keep copies of Wˡ).
    """

    def __init__(self, topo: Topology, l: int, spec: Any, params: tuple | None, batch: int, cfg: StepConfig,
                 below: Any = None, copy: tuple[Any, np.ndarray] | None = None, order: str = "waves",
                 seed: int = 0) -> None:
        if order not in ORDERS:
            raise ValueError(f"order expected one of {tuple(ORDERS)}, got {order!r}")
        self.topo, self.cfg, self.residual, self.order = topo, cfg, True, order
        self.first = self.last = l
        self.batch = batch
        self.L = L = len(topo.layers) - 1
        rng = np.random.default_rng(seed) if order == "random" else None
        self.net = {l: _Layer(spec, params, batch, cfg, relu=not isinstance(spec, Pool) and l < L, first=(l == 0),
                              rng=rng)}
        self.bottom = l
        if below is not None and l > 0:
            self.bottom = l - 1
            self.net[l - 1] = _Layer(below, None, batch, cfg, relu=not isinstance(below, Pool), rng=rng)
        self.copy = None
        if copy is not None:
            cspec, W = copy
            self.copy = _Layer(cspec, (W, np.zeros(W.shape[0])), batch, cfg, relu=False, rng=rng)

    def _integrate(self, waves: list[Wave]) -> Iterator[Wave]:
        """δ waves of layer l + 1 into this slice's own U through the copy; its δ out."""
        assert self.copy is not None
        return self._errors_through(self.net[self.last], self.copy, waves)

    def backward(self, phases: list[tuple[int, list[Wave]]] | None = None, y: np.ndarray | None = None,
                 top_error: np.ndarray | None = None) -> list[tuple[int, list[Wave]]]:
        """As :meth:`Segment.backward`; with a copy, the phases hold δ of layer l + 1 (module
        docstring of ``actors.slices``) and this slice also takes its own U's residual phase."""
        if self.copy is None:
            return super().backward(phases, y, top_error)
        l = self.last
        out = [(tag, self._down(l - 1, self._integrate(waves))) for tag, waves in phases or []]
        d = self.net[l].residual_errors()  # Eq. (19) for its own U
        out.append((l, self._down(l - 1, [d]) if d is not None else []))
        if self.bottom < l:  # the U compartments below, summed here: their residual z, ungated
            d = self.net[l - 1].residual_errors()
            out.append((l - 1, [d] if d is not None else []))
        return out


def simulate(topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], x: np.ndarray,
             y: np.ndarray, cfg: StepConfig, residual: bool = True, order: str = "waves",
             seed: int = 0, chips: list[tuple[int, int]] | None = None, input_steps: int = 1,
             backward: bool = True) -> EventResult:
    """One training step of the spiking network, event by event (float64, NumPy).

    x: (B, C, H, W) float input; y: (B,) int labels; params as for :func:`cluster.network.forward`.
    ``residual`` False skips Eqs. (16), (19): the accumulated values then differ from the
    ANN's by the spike discretisation error, |SDE| < 1 (Eqs. (10), (11)).
    ``order`` (see ORDERS): "waves", every neuron over threshold fires in each round and each
    round travels up at once; "layered", a layer (after its bias firing at t = 0) integrates
    everything the layer below sends in a phase before it fires; "random", each neuron over
    threshold fires in a round with probability 1/2 (``seed``), so a layer's spikes reach the
    layer above in random sub-waves, interleaved with its integration and firing.
    ``chips``: layer groups [(first, last), ...] simulated as a chain of :class:`Segment` (default:
    one segment); with orders "waves" and "layered" the result is the same, counts included.
    ``input_steps`` T: the input is "provided in a continuous fashion" (section 3.4): layer 0 receives
    its input current W x in T equal parts, x / T each, one input wave per time step, and fires
    after each (T = 1: all at t = 0). T must be a power of two, so that x / T, every product with it
    and their sums stay exact on a dyadic grid and the accumulated values remain the ANN's.
    ``backward`` False: the forward pass alone (Z, E and ω stay zero, no error spikes counted).
    """
    if isinstance(input_steps, bool) or not isinstance(input_steps, int) or input_steps < 1 \
            or input_steps & (input_steps - 1):
        raise ValueError(f"input_steps expected a power of two >= 1, got {input_steps!r}")
    B = x.shape[0]
    L = len(topo.layers) - 1
    groups = chips or [(0, L)]
    segs = [Segment(topo, params, lo, hi, B, cfg, residual, order, seed + i) for i, (lo, hi) in enumerate(groups)]
    xin = to_chwb(np, np.asarray(x, dtype=np.float64))
    part = xin / input_steps if input_steps > 1 else xin
    phases = [(FORWARD_STANDARD, [(np.arange(B), part) for _ in range(input_steps)])]
    for seg in segs:
        phases = seg.forward(phases)
    # Each layer from the segment that owns it (the boundary U compartments report error spikes).
    net = {l: seg.net[l] for seg in segs for l in range(seg.first, seg.last + 1)}
    below = xin
    for l in range(L + 1):  # the forward traces x(T) that Eq. (8) multiplies each δ with
        net[l].trace, below = below, net[l].S
    errors: list[tuple[int, list[Wave]]] | None = None
    for seg in reversed(segs) if backward else ():
        errors = seg.backward(errors, y=y)
    n_err = {l: net[l].n_err for l in net}
    for seg in segs[1:]:
        n_err[seg.first - 1] = seg.net[seg.first - 1].n_err
    # Results in the layout of docs/design.md §2; ω as the δ events added it up (Eq. (8), :meth:`_Layer.learn`).
    counts = EventCounts()
    sums = {}
    for l, layer in enumerate(topo.layers):
        st = net[l]
        if layer.trainable:
            W, b = st.weights
            sums[l] = st.omega if st.omega is not None else (np.zeros(np.shape(W)), np.zeros(np.shape(b)))
        counts.spikes.append(st.n)
        counts.spikes_min.append(float(np.abs(st.S).sum()) if l < L else 0.0)
        counts.error_spikes.append(n_err[l])
        counts.error_spikes_min.append(float(np.abs(st.Z).sum()))
        counts.waves.append(st.waves)
        counts.events_forward.append(st.events_in)
        counts.events_backward.append(st.events_back)
        below = st.S
    return EventResult(S=[export_layer(np, net[l].S) for l in range(L)], V=net[L].V.copy(),
                       Z=[export_layer(np, net[l].Z) for l in range(L + 1)],
                       E=[export_layer(np, net[l].E) for l in range(L + 1)], sums=sums, counts=counts)


def max_sde_without_residual(topo: Topology, params: dict, x: np.ndarray, y: np.ndarray,
                             cfg: StepConfig, order: str = "waves", seed: int = 0,
                             input_steps: int = 1) -> list[float]:
    """Per hidden layer, max |SDE| of the standard rule alone (Eqs. (10), (13)): the SNN's S
    against the ANN response to the SNN's own input spikes, max(0, Ŝ) (pooling: Ŝ). < 1."""
    ev = simulate(topo, params, x, y, cfg, residual=False, order=order, seed=seed, input_steps=input_steps,
                  backward=False)
    below = to_chwb(np, np.asarray(x, dtype=np.float64))
    worst = []
    for l, layer in enumerate(topo.layers[:-1]):
        if isinstance(layer, Pool):
            s_hat = ops.pool_forward(np, layer, below)
        elif isinstance(layer, Conv):
            pre, _ = ops.conv_forward(np, layer, params[l][0], below)
            s_hat = (pre.reshape(*layer.out_shape, -1) + params[l][1][:, None, None, None]) / cfg.theta_ff
        else:
            inp = ops.flatten(np, below) if below.ndim == 4 else below
            s_hat = (ops.dense_forward(params[l][0], inp) + params[l][1]) / cfg.theta_ff
        ann = s_hat if isinstance(layer, Pool) else np.maximum(0, s_hat)
        worst.append(float(np.abs(export_layer(np, ann) - ev.S[l]).max(initial=0.0)))
        S = ev.S[l]
        below = S if isinstance(layer, Dense) else to_chwb(np, S.reshape(-1, *layer.out_shape))
    return worst
