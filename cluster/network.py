"""The equivalent ANN of a SpikeGrad network: forward, backward, increments.

One training step (Algorithm 3) on a batch, in the ANN form of section 3:

* forward, l = 0..L−1: Ŝˡ = (Wˡ ⋆ Sˡ⁻¹ + bˡ) / Θff with S⁻¹ = x, the float input
  multiplied in ("Input encoding"); Sˡ = max(0, round(Ŝˡ)), S′ˡ = [Ŝˡ > 0] for
  conv and dense (Eqs. (10), (13), (15)); Sˡ = round(mean) for pooling, S′ = 1;
* output: Vᴸ = Wᴸ ⋆ Sᴸ⁻¹ + bᴸ, integrated, never spiking; prediction argmax Vᴸ;
* top error: Uᴸ = α (softmax(Vᴸ) − onehot(y)), Eᴸ = Zᴸ = round(Uᴸ / Θbp);
* backward, l < L: Zˡ = round((Wˡ⁺¹)ᵀ ⋆ Eˡ⁺¹ / Θbp), Eˡ = S′ˡ ⊙ Zˡ (Eqs. (11), (12), (18));
  pooling's weights are Θff / k²;
* increments: ΔWˡ = −η Σ_batch Eˡ ⊗ Sˡ⁻¹, Δbˡ = −η Σ_batch Eˡ (Eq. (14)).

The float-gradient baseline (tables 1-2, "Direct float gradient") keeps the same
integer forward pass and drops both rounds of the backward pass, with α = 1.

The one implementation of each step: :func:`forward_layers` and :func:`backward_layers` run a
range of layers first..last, and :func:`output_error` (through :func:`top_potential`) is the
top error. The local engine (via :func:`forward` and :func:`backward`), every chip
(``actors.chip``, its own range), the CUDA-graph step and the profiler (``spikegrad bench train
--profile``, through the ``clock`` hook) all call these; layer types dispatch through
:func:`cluster.layers.kind_of`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, get_args

import numpy as np

from . import layers as ops
from .errors import SpikeGradError
from .kernels import activation, error_gate, round_any
from .layers import kind_of
from .topology import Topology

GradientMode = Literal["spike", "float"]
GRADIENT_MODES: tuple[str, ...] = get_args(GradientMode)


@dataclass(frozen=True)
class StepConfig:
    """Thresholds and error scale of one training step.

    theta_ff: Θff, forward threshold (> 0). theta_bp: Θbp, error threshold (> 0).
    alpha: α, error scale of the top layer (> 0; ignored, taken as 1, for float gradients).
    gradient: ``spike`` (rounded, integer errors) or ``float`` (no rounding in the backward pass).
    """

    theta_ff: float = 1.0
    theta_bp: float = 1.0
    alpha: float = 100.0
    gradient: GradientMode = "spike"

    def __post_init__(self) -> None:
        for name in ("theta_ff", "theta_bp", "alpha"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and np.isfinite(v) and v > 0):
                raise SpikeGradError(f"{name} must be a finite number > 0, got {v!r}")
        if self.gradient not in GRADIENT_MODES:
            raise SpikeGradError(f"gradient must be one of {GRADIENT_MODES}, got {self.gradient!r}")

    @property
    def error_scale(self) -> float:
        """α for spike gradients, 1 for the float baseline."""
        return self.alpha if self.gradient == "spike" else 1.0


@dataclass
class LayerForward:
    """What layer l keeps from its forward phase for its backward phase.

    S: its output (CHWB (C, H, W, B) for conv/pool, (B, N) for dense; Vᴸ for the output layer).
    mask: S′ (same shape as S) for ReLU layers, None for pooling and the output.
    cache: im2col patches (conv) or the flattened input (dense), for the increments.
    """

    S: Any
    mask: Any | None
    cache: Any | None


@dataclass
class ForwardPass:
    x: Any                       # CHWB input (C, H, W, B), the float S⁻¹
    layers: list[LayerForward] = field(default_factory=list)

    @property
    def V(self) -> Any:
        """Vᴸ (B, classes), the output layer's integrated values."""
        return self.layers[-1].S


@dataclass
class BackwardPass:
    E: list[Any]                         # Eˡ per layer l, layer-native layout (None where not computed)
    sums: dict[int, tuple[Any, Any]]     # layer l -> (Σ E ⊗ Sˡ⁻¹, Σ E), shapes of (Wˡ, bˡ)
    loss: Any                            # (B,) cross-entropy of softmax(Vᴸ)
    emitted: dict[int, Any] = field(default_factory=dict)  # layer l -> Σ |Zˡ|, error spikes before S′


def to_chwb(xp: Any, x: Any) -> Any:
    """(B, C, H, W) -> (C, H, W, B) contiguous, the engine's map layout."""
    return xp.ascontiguousarray(x.transpose(1, 2, 3, 0))


Clock = Callable[[str, Callable[[], Any]], Any]
"""A timing hook: ``clock(key, fn)`` runs ``fn()`` and returns its result (``launch`` profiles with it)."""


def _untimed(key: str, fn: Callable[[], Any]) -> Any:
    return fn()


def layer_forward(xp: Any, layer: Any, params: tuple[Any, Any] | None, S_prev: Any,
                  cfg: StepConfig, is_output: bool) -> LayerForward:
    """Forward phase of one layer (Eqs. (10), (13), (15)): S_prev (native layout of the layer
    below, or the CHWB float input) -> LayerForward in this layer's layout."""
    kind = kind_of(layer)
    pre, bias, cache = kind.linear(xp, layer, params, S_prev)
    if is_output:
        pre += bias  # Vᴸ integrates only: no threshold, no rounding
        return LayerForward(pre, None, cache)
    if not kind.relu:
        # A linear IF layer (pooling): S = round(Ŝ) and S′ = 1.
        return LayerForward(round_any(xp, pre), None, cache)
    S, mask = activation(xp, pre, bias, cfg.theta_ff)
    return LayerForward(kind.layout(S, layer), kind.layout(mask, layer), cache)


def forward_layers(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], S_in: Any, cfg: StepConfig,
                   first: int = 0, last: int | None = None, clock: Clock | None = None) -> list[LayerForward]:
    """Forward phase of layers ``first..last`` (default: to the output) on S_in, the output of
    layer first − 1 in its layout (for first = 0 the CHWB float input). One entry per layer."""
    L = len(topo.layers) - 1
    last = L if last is None else last
    run = clock or _untimed
    out: list[LayerForward] = []
    S = S_in
    for l in range(first, last + 1):
        layer = topo.layers[l]
        lf = run(f"l{l} {layer.token():>8} forward",
                 partial(layer_forward, xp, layer, params.get(l), S, cfg, is_output=(l == L)))
        out.append(lf)
        S = lf.S
    return out


def forward(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], x: Any,
            cfg: StepConfig) -> ForwardPass:
    """Forward pass over all layers. x: (B, C, H, W) float input -> ForwardPass."""
    if tuple(x.shape[1:]) != topo.input_shape:
        raise SpikeGradError(f"input shape {tuple(x.shape[1:])} does not fit topology "
                             f"{topo.text!r}, which expects {topo.input_shape} (C, H, W)")
    fp = ForwardPass(x=to_chwb(xp, x))
    fp.layers = forward_layers(xp, topo, params, fp.x, cfg)
    return fp


def softmax(xp: Any, V: Any) -> Any:
    """Row-wise softmax of V (B, classes), shifted by the row max for stability."""
    e = xp.exp(V - V.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def top_potential(xp: Any, V: Any, y: Any, cfg: StepConfig) -> tuple[Any, Any]:
    """The output layer's error compartments Uᴸ = α (softmax(Vᴸ) − onehot(y)) and the loss.

    V: (B, classes) float; y: (B,) int. Returns (Uᴸ (B, classes), cross-entropy (B,)); α = 1 for
    float gradients. The event simulator starts its top error spikes from this Uᴸ (Eq. (6)).
    """
    p = softmax(xp, V)
    rows = xp.arange(V.shape[0])
    loss = -xp.log(xp.maximum(p[rows, y], xp.finfo(p.dtype).tiny))
    U = p
    U[rows, y] -= 1
    U *= cfg.error_scale
    return U, loss


def top_error_spikes(xp: Any, U: Any, cfg: StepConfig) -> Any:
    """In place: Eᴸ = Zᴸ = round(Uᴸ / Θbp) (spike) or Uᴸ / Θbp (float), (B, classes)."""
    U /= cfg.theta_bp
    return round_any(xp, U) if cfg.gradient == "spike" else U


def output_error(xp: Any, V: Any, y: Any, cfg: StepConfig) -> tuple[Any, Any]:
    """Top error Eᴸ = round(α (softmax(Vᴸ) − onehot(y)) / Θbp) and the loss: (Eᴸ (B, classes), (B,))."""
    U, loss = top_potential(xp, V, y, cfg)
    return top_error_spikes(xp, U, cfg), loss


def layer_increment_sums(xp: Any, layer: Any, params: tuple[Any, Any], E: Any,
                         cache: Any) -> tuple[Any, Any]:
    """(Σ E ⊗ Sˡ⁻¹, Σ E) for a trainable layer, shapes of (W, b); ΔW = −η × these (Eq. (14))."""
    return kind_of(layer).increments(xp, layer, params, E, cache)


def gate(xp: Any, Z: Any, mask: Any | None, cfg: StepConfig) -> Any:
    """Eˡ = S′ˡ ⊙ round(Zˡ / Θbp) (spike) or S′ˡ ⊙ Zˡ / Θbp (float); mask None means S′ = 1."""
    return error_gate(xp, Z, mask, cfg.theta_bp, rounding=(cfg.gradient == "spike"))


def _gated_error_below(xp: Any, layer: Any, params: tuple[Any, Any] | None, E: Any, below: Any,
                       mask: Any | None, cfg: StepConfig, count: list | None = None) -> Any:
    """gate((Wˡ)ᵀ ⋆ Eˡ), Eˡ⁻¹ = S′ ⊙ round(Zˡ⁻¹ / Θbp): one timed unit of :func:`backward_layers`,
    as each layer kind computes it (pooling rounds on its pooled grid: the same values). ``count``: a
    list to append the error spikes the U compartments below emit, Σ |Zˡ⁻¹|, before the gate."""
    return kind_of(layer).gated_error_below(xp, layer, params, E, below, mask, cfg.theta_ff, cfg.theta_bp,
                                            cfg.gradient == "spike", count)


def error_events(xp: Any, E: Any, cfg: StepConfig) -> Any:
    """Error spikes in E (Σ |E|), or its nonzero values for float gradients: a float64 (device) scalar."""
    return xp.abs(E).sum(dtype=np.float64) if cfg.gradient == "spike" else xp.count_nonzero(E).astype(np.float64)


def backward_layers(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], kept: list[LayerForward],
                    E_top: Any, cfg: StepConfig, first: int = 0, last: int | None = None,
                    clock: Clock | None = None, visit: Callable[[int, Any], None] | None = None,
                    emitted: dict[int, Any] | None = None, below: bool = True) -> tuple[list[Any], dict, Any]:
    """Backward phase of layers ``last..first`` (Algorithm 2 in ANN form, Eqs. (7), (11), (12), (18)).

    kept: the forward phase of layers first..last (:func:`forward_layers`); E_top: E of layer
    ``last`` (from :func:`output_error` on the output layer, else S′ ⊙ Z of the error spikes
    received from above). ``visit(l, Eˡ)`` is called for each layer, top down, once its E is
    known. ``emitted``: a dict to fill with the error spikes the U compartments of each layer
    below ``last`` emit, Σ |Zˡ| before the S′ gate (Eq. (6); first − 1 included). Returns (E:
    list over layers 0..L, None outside first..last; the increment sums {l: (Σ E ⊗ Sˡ⁻¹, Σ E)};
    Zᶠⁱʳˢᵗ⁻¹ = round((W)ᵀ ⋆ E / Θbp), the error spikes for the layer below ``first`` (None when
    first = 0: nothing is propagated into the input)). ``below`` False: no Zᶠⁱʳˢᵗ⁻¹ either (a
    slice of a split layer: the chips below sum it on their copies of its weights, cluster.mapping).

    A chip holding a slice of a layer (``actors.chip``) passes its view of the network: ``topo``
    with the slice's layer spec at ``first`` and, below it, the units it connects to; a copy of a
    split layer's columns is the layer spec ``on_input`` those columns (:func:`cluster.layers.kind_of`).
    """
    L = len(topo.layers) - 1
    last = L if last is None else last
    run = clock or _untimed
    E: list[Any] = [None] * (L + 1)
    E[last] = E_top
    sums: dict[int, tuple[Any, Any]] = {}
    Z_below = None
    for l in range(last, first - 1, -1):
        layer, El = topo.layers[l], E[l]
        if visit is not None:
            visit(l, El)
        if layer.trainable:
            sums[l] = run(f"l{l} {layer.token():>8} increments",
                          partial(layer_increment_sums, xp, layer, params[l], El, kept[l - first].cache))
        if l == 0 or (l == first and not below):
            break
        layer_below = topo.layers[l - 1]
        # the layer below on this side of the boundary gates with its S′; across it, S′ is the receiver's
        mask = kept[l - 1 - first].mask if l > first else None
        count: list | None = [] if emitted is not None else None
        Zl = run(f"l{l} {layer.token():>8} error below",
                 partial(_gated_error_below, xp, layer, params.get(l), El, layer_below, mask, cfg, count))
        if emitted is not None and count:
            emitted[l - 1] = count[0]
        if l == first:
            Z_below = Zl
            break
        E[l - 1] = Zl
    return E, sums, Z_below


def backward(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], fp: ForwardPass,
             y: Any, cfg: StepConfig) -> BackwardPass:
    """Backward pass (Algorithm 2 in ANN form): errors top-down and increment sums.

    y: (B,) int labels on the backend. The error of layer 0 is computed (it updates
    W⁰) but nothing is propagated into the input.
    """
    E_top, loss = output_error(xp, fp.V, y, cfg)
    emitted = {len(topo.layers) - 1: error_events(xp, E_top, cfg)}  # Zᴸ = Eᴸ: no gate on the output
    E, sums, _ = backward_layers(xp, topo, params, fp.layers, E_top, cfg, emitted=emitted)
    return BackwardPass(E=E, sums=sums, loss=loss, emitted=emitted)


def init_params(topo: Topology, rng: np.random.Generator, theta_ff: float,
                dtype: Any = np.float32) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Initial weights on the host, scaled to the forward threshold Θff.

    He-normal (std √(2/fan_in)) keeps a ReLU net's activations at one scale. Here
    Ŝ = (W S + b)/Θff, and S itself is in units of 1/Θff, so layers l ≥ 1 get
    std Θff·√(2/fan_in) and every hidden layer emits about (ANN activation)/Θff
    spikes: Θff alone sets how many spikes a neuron emits. Layer 0 multiplies the
    float input, so its std is √(2/fan_in); the output layer (no Θff) gets
    Θff·√(1/fan_in) so that Vᴸ starts O(1). Biases start at 0.
    Returns {layer l: (W (weight_shape), b (out_channels,))}.
    """
    params = {}
    L = len(topo.layers) - 1
    for l in topo.trainable:
        shape = topo.weight_shape(l)
        fan_in = int(np.prod(shape[1:]))
        if l == 0:
            std = np.sqrt(2.0 / fan_in)
        elif l == L:
            std = theta_ff * np.sqrt(1.0 / fan_in)
        else:
            std = theta_ff * np.sqrt(2.0 / fan_in)
        W = (rng.standard_normal(shape) * std).astype(dtype)
        params[l] = (W, np.zeros(shape[0], dtype=dtype))
    return params


def quantize(xp: Any, W: Any, frac_bits: int) -> Any:
    """In place: W ← round(W · 2ᴷ) / 2ᴷ, nearest with ties away from zero (fixed-point weights).

    On a 2⁻ᴷ grid every product with a dyadic input or an integer spike count, and every sum
    of them, is exact in float64: the event simulation then equals the ANN exactly.
    """
    scale = float(2 ** frac_bits)
    W *= scale
    round_any(xp, W)
    W /= scale
    return W


def sgd_update(xp: Any, W: Any, b: Any, vW: Any, vb: Any, gW: Any, gb: Any, eta: float, mu: float,
               frac_bits: int | None = None) -> None:
    """In place, once per batch (Algorithm 3, Eq. (14)): v ← μ v − η Σ E ⊗ S, w ← w + v.

    μ = 0 is plain SGD, ΔW = −η Σ E ⊗ S. With ``frac_bits`` K the weights and biases are
    rounded to the 2⁻ᴷ grid after each update (the velocity stays in floating point).
    """
    momentum_step(xp, W, vW, gW, eta, mu, frac_bits)
    momentum_step(xp, b, vb, gb, eta, mu, frac_bits)


def momentum_step(xp: Any, W: Any, vW: Any, gW: Any, eta: float, mu: float, frac_bits: int | None = None) -> None:
    """In place, one array of :func:`sgd_update`: v ← μ v − η g, w ← w + v, then the 2⁻ᴷ grid.
    Elementwise: a block of W updated with the same g anywhere gives the same values."""
    vW *= mu
    vW -= eta * gW
    W += vW
    if frac_bits is not None:
        quantize(xp, W, frac_bits)


def export_layer(xp: Any, S: Any) -> Any:
    """A layer array in the layout of docs/design.md §2 (B, N), N in (C, H, W) order (a contiguous copy for maps)."""
    return xp.ascontiguousarray(ops.flatten(xp, S)) if S.ndim == 4 else S
