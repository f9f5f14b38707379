"""Event-driven simulation of the spiking network itself (Algorithms 1-3, DESIGN §3).

Where :mod:`cluster.network` computes the equivalent ANN, this module lets the
integrate-and-fire neurons of every layer exchange individual signed spikes, and
so proves, on real data, that the accumulated responses equal the ANN's.

Events are processed in *waves*: after every change of its input a layer fires
as long as its activation function says so, one spike per neuron per round, and
each round is a wave (an array of −1/0/+1 per neuron and sample) that the next
layer integrates with one product. Waves stream from layer to layer through
generators, so a layer starts integrating while the layer below still fires.

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
increments ω = −η Σ δ ⊗ x(T) use the final forward trace x(T) = η S (Eq. (8)), so
they are accumulated from the summed δ of each layer once its phase has ended.

With weights, biases and inputs on a dyadic grid every sum is exact in float64,
and S, Z, E, ω equal the ANN's exactly whatever the order of events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from . import layers as ops
from .network import StepConfig, export_layer, layer_increment_sums, softmax, to_chwb
from .synops import _weighted_events, layer_fan
from .topology import Conv, Dense, Pool, Topology


@dataclass
class EventCounts:
    """Per layer: spikes emitted forward (n), best case Σ|S| (n_min), error spikes emitted,
    synaptic events forward and backward, and the number of waves."""

    spikes: list[float] = field(default_factory=list)
    spikes_min: list[float] = field(default_factory=list)
    error_spikes: list[float] = field(default_factory=list)
    events_forward: list[float] = field(default_factory=list)
    events_backward: list[float] = field(default_factory=list)
    waves: list[int] = field(default_factory=list)


@dataclass
class EventResult:
    """Accumulated values in the DESIGN layout: S[l] (B, N_l) for l < L, V (B, classes),
    Z[l], E[l] (B, N_l) for every l, and the increment sums {l: (Σ E ⊗ Sˡ⁻¹, Σ E)}
    (ΔW = −η × these), plus the event counts."""

    S: list[np.ndarray]
    V: np.ndarray
    Z: list[np.ndarray]
    E: list[np.ndarray]
    sums: dict[int, tuple[np.ndarray, np.ndarray]]
    counts: EventCounts


class _Layer:
    """One layer's two compartments: V, S (forward) and U, Z (backward), in engine layout."""

    def __init__(self, layer: Any, params: tuple | None, batch: int, cfg: StepConfig, relu: bool,
                 first: bool = False) -> None:
        self.layer, self.params, self.cfg, self.relu, self.first = layer, params, cfg, relu, first
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

    # forward -------------------------------------------------------------------------------
    def drive(self, s_in: Any) -> None:
        """V += W ⋆ s_in for one incoming wave (or the float input, multiplied in)."""
        layer, xp = self.layer, np
        if not self.first:  # spikes, not the float input
            fo = self.fan.fan_out
            self.events_in += float(_weighted_events(xp, s_in, fo, fo, "abs")[1])
        if isinstance(layer, Pool):
            self.V += self.cfg.theta_ff * ops.pool_forward(xp, layer, s_in)  # weights Θff/k²
        elif isinstance(layer, Conv):
            pre, _ = ops.conv_forward(xp, layer, self.params[0], s_in)
            self.V += pre.reshape(self.V.shape)
        else:
            if s_in.ndim == 4:
                s_in = ops.flatten(xp, s_in)
            self.V += ops.dense_forward(self.params[0], s_in)

    def fire(self) -> Iterator[np.ndarray]:
        """Standard rule (Eqs. (3), (4)) until stable; yields each round's spikes as a wave."""
        theta = self.cfg.theta_ff
        while True:
            down = self.V <= -theta
            if self.relu:
                down &= self.S > 0
            s = (self.V >= theta).astype(np.float64) - down
            k = np.abs(s).sum()
            if k == 0:
                return
            self.V -= s * theta
            self.S += s
            self.n += k
            self.waves += 1
            yield s

    def residual(self) -> np.ndarray:
        """Eq. (16) once: ties at ±Θff/2 round away from zero given the sign of S."""
        h = self.cfg.theta_ff / 2
        up = (self.V > h) | ((self.V == h) & (self.S >= 0))
        down = (self.V < -h) | ((self.V == -h) & (self.S <= 0))
        if self.relu:
            down &= self.S > 0
        s = up.astype(np.float64) - down
        self.V -= s * self.cfg.theta_ff
        self.S += s
        self.n += np.abs(s).sum()
        self.waves += 1
        return s

    # backward ------------------------------------------------------------------------------
    def receive(self, delta: Any, above: "_Layer") -> None:
        """U += (W of the layer above)ᵀ ⋆ δ for one wave of δ from the layer above."""
        lay, xp = above.layer, np
        if isinstance(lay, Pool):
            self.U += ops.pool_backward_input(xp, lay, delta, self.cfg.theta_ff / lay.size ** 2)
        elif isinstance(lay, Conv):
            self.U += ops.conv_backward_input(xp, lay, above.params[0], delta)
        elif self.U.ndim == 4:
            self.U += ops.dense_error_to_map(above.params[0], delta, self.layer.out_shape)
        else:
            self.U += ops.dense_backward_input(above.params[0], delta)

    def fire_errors(self) -> Iterator[np.ndarray]:
        """Linear error rule while |U| ≥ Θbp; yields δ = z·S′ per round (Eq. (7))."""
        theta = self.cfg.theta_bp
        while True:
            z = (self.U >= theta).astype(np.float64) - (self.U <= -theta)
            k = np.abs(z).sum()
            if k == 0:
                return
            yield self._emit(z, k)

    def residual_errors(self) -> np.ndarray:
        """Eq. (19) once; returns δ = z_res·S′."""
        h = self.cfg.theta_bp / 2
        up = (self.U > h) | ((self.U == h) & (self.Z >= 0))
        down = (self.U < -h) | ((self.U == -h) & (self.Z <= 0))
        z = up.astype(np.float64) - down
        return self._emit(z, np.abs(z).sum())

    def _emit(self, z: np.ndarray, k: float) -> np.ndarray:
        self.U -= z * self.cfg.theta_bp
        self.Z += z
        self.n_err += k
        delta = z if self.mask is None else z * self.mask
        self.E += delta
        return delta


def simulate(topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]], x: np.ndarray,
             y: np.ndarray, cfg: StepConfig, residual: bool = True) -> EventResult:
    """One training step of the spiking network, event by event (float64, NumPy).

    x: (B, C, H, W) float input; y: (B,) int labels; params as for :func:`cluster.network.forward`.
    ``residual`` False skips Eqs. (16), (19): the accumulated values then differ from the
    ANN's by the spike discretisation error, |SDE| < 1 (Eqs. (10), (11)).
    """
    B = x.shape[0]
    L = len(topo.layers) - 1
    net = [_Layer(layer, params.get(l), B, cfg, relu=not isinstance(layer, Pool) and l < L, first=(l == 0))
           for l, layer in enumerate(topo.layers)]
    xin = to_chwb(np, np.asarray(x, dtype=np.float64))

    # Forward, standard phase: waves stream up through generators.
    def run(l: int, incoming: Iterable[Any]) -> Iterator[np.ndarray]:
        st = net[l]
        if l == L:
            for w in incoming:
                st.drive(w)
            return
        yield from st.fire()  # a bias beyond ±Θff fires at t = 0
        for w in incoming:
            st.drive(w)
            yield from st.fire()

    def push_up(l: int, waves: Iterable[Any]) -> None:
        stream: Iterable[Any] = waves
        for k in range(l, L + 1):
            stream = run(k, stream)
        for _ in stream:
            pass

    counts = EventCounts()
    push_up(0, [xin])
    if residual:
        for r in range(L):
            push_up(r + 1, [net[r].residual()])
    for l in range(L):
        st = net[l]
        st.mask = (st.V > 0) | (st.S > 0) if st.relu else None  # Eq. (5)
    # Backward: the top error, then δ waves streaming down.
    V = net[L].V
    U = softmax(np, V)
    U[np.arange(B), y] -= 1
    net[L].U = U * cfg.error_scale

    def run_down(l: int, incoming: Iterable[Any]) -> Iterator[np.ndarray]:
        st, above = net[l], net[l + 1]
        for d in incoming:
            fi = above.fan.fan_in
            above.events_back += float(_weighted_events(np, d, fi, fi, "abs")[1])
            st.receive(d, above)
            yield from st.fire_errors()

    def push_down(l: int, deltas: Iterable[Any]) -> None:
        stream: Iterable[Any] = deltas
        for k in range(l, -1, -1):
            stream = run_down(k, stream)
        for _ in stream:
            pass

    push_down(L - 1, net[L].fire_errors())
    if residual:
        for r in range(L, -1, -1):
            d = net[r].residual_errors()
            if r > 0:
                push_down(r - 1, [d])
    # Results in the DESIGN layout; increments from each layer's summed δ and x(T) (Eq. (14)).
    sums = {}
    below = xin
    for l, layer in enumerate(topo.layers):
        st = net[l]
        if layer.trainable:
            cache = ops.im2col(np, below, layer) if isinstance(layer, Conv) else \
                (ops.flatten(np, below) if below.ndim == 4 else below)
            sums[l] = layer_increment_sums(np, layer, st.params, st.E, cache)
        counts.spikes.append(st.n)
        counts.spikes_min.append(float(np.abs(st.S).sum()) if l < L else 0.0)
        counts.error_spikes.append(st.n_err)
        counts.waves.append(st.waves)
        counts.events_forward.append(st.events_in)
        counts.events_backward.append(st.events_back)
        below = st.S
    return EventResult(S=[export_layer(np, net[l].S) for l in range(L)], V=net[L].V.copy(),
                       Z=[export_layer(np, st.Z) for st in net], E=[export_layer(np, st.E) for st in net],
                       sums=sums, counts=counts)


def max_sde_without_residual(topo: Topology, params: dict, x: np.ndarray, y: np.ndarray,
                             cfg: StepConfig) -> list[float]:
    """Per hidden layer, max |SDE| of the standard rule alone (Eqs. (10), (13)): the SNN's S
    against the ANN response to the SNN's own input spikes, max(0, Ŝ) (pooling: Ŝ). < 1."""
    ev = simulate(topo, params, x, y, cfg, residual=False)
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
