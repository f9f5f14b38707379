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

Per-layer functions (:func:`layer_forward`, :func:`layer_backward`) are the
units a chip runs; :func:`forward` and :func:`backward` chain them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from . import layers as ops
from .errors import SpikeGradError
from .kernels import activation, error_gate, round_any
from .topology import Conv, Dense, Pool, Topology

GradientMode = Literal["spike", "float"]
GRADIENT_MODES: tuple[str, ...] = ("spike", "float")


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


def to_chwb(xp: Any, x: Any) -> Any:
    """(B, C, H, W) -> (C, H, W, B) contiguous, the engine's map layout."""
    return xp.ascontiguousarray(x.transpose(1, 2, 3, 0))


def layer_input(xp: Any, layer: Any, S_prev: Any) -> Any:
    """Give layer its input in the layout it expects (dense layers take (B, N) rows)."""
    if isinstance(layer, Dense) and S_prev.ndim == 4:
        return ops.flatten(xp, S_prev)
    return S_prev


def layer_forward(xp: Any, layer: Any, params: tuple[Any, Any] | None, S_prev: Any,
                  cfg: StepConfig, is_output: bool) -> LayerForward:
    """Forward phase of one layer: S_prev (native layout of the layer below) -> LayerForward."""
    S_prev = layer_input(xp, layer, S_prev)
    if isinstance(layer, Pool):
        # Ŝ = mean of the window; a linear IF layer, so S = round(Ŝ) and S′ = 1.
        return LayerForward(round_any(xp, ops.pool_forward(xp, layer, S_prev)), None, None)
    W, b = params  # type: ignore[misc]
    if isinstance(layer, Conv):
        pre, cache = ops.conv_forward(xp, layer, W, S_prev)  # (Co, Ho·Wo·B)
        bias = b[:, None]
    else:
        pre, cache = ops.dense_forward(W, S_prev), S_prev      # (B, N_out)
        bias = b[None, :]
    if is_output:
        pre += bias  # Vᴸ integrates only: no threshold, no rounding
        return LayerForward(pre, None, cache)
    S, mask = activation(xp, pre, bias, cfg.theta_ff)
    if isinstance(layer, Conv):
        Co, Ho, Wo = layer.out_shape
        S, mask = S.reshape(Co, Ho, Wo, -1), mask.reshape(Co, Ho, Wo, -1)
    return LayerForward(S, mask, cache)


def forward(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], x: Any,
            cfg: StepConfig) -> ForwardPass:
    """Forward pass over all layers. x: (B, C, H, W) float input -> ForwardPass."""
    if tuple(x.shape[1:]) != topo.input_shape:
        raise SpikeGradError(f"input shape {tuple(x.shape[1:])} does not fit topology "
                             f"{topo.text!r}, which expects {topo.input_shape} (C, H, W)")
    fp = ForwardPass(x=to_chwb(xp, x))
    S = fp.x
    L = len(topo.layers) - 1
    for l, layer in enumerate(topo.layers):
        lf = layer_forward(xp, layer, params.get(l), S, cfg, is_output=(l == L))
        fp.layers.append(lf)
        S = lf.S
    return fp


def softmax(xp: Any, V: Any) -> Any:
    """Row-wise softmax of V (B, classes), shifted by the row max for stability."""
    e = xp.exp(V - V.max(axis=1, keepdims=True))
    e /= e.sum(axis=1, keepdims=True)
    return e


def output_error(xp: Any, V: Any, y: Any, cfg: StepConfig) -> tuple[Any, Any]:
    """Top error Eᴸ = round(α (softmax(Vᴸ) − onehot(y)) / Θbp) and the loss.

    V: (B, classes) float; y: (B,) int. Returns (Eᴸ (B, classes), cross-entropy (B,)).
    Float gradients: Eᴸ = (softmax − onehot) / Θbp, unrounded.
    """
    p = softmax(xp, V)
    B = V.shape[0]
    rows = xp.arange(B)
    loss = -xp.log(xp.maximum(p[rows, y], xp.finfo(p.dtype).tiny))
    U = p
    U[rows, y] -= 1
    U *= cfg.error_scale
    U /= cfg.theta_bp
    if cfg.gradient == "spike":
        U = round_any(xp, U)
    return U, loss


def layer_error_below(xp: Any, layer: Any, params: tuple[Any, Any] | None, E: Any,
                      below_shape: tuple[int, int, int], below_is_map: bool,
                      cfg: StepConfig) -> Any:
    """(Wˡ)ᵀ ⋆ Eˡ for the layer below, in its layout (÷ Θbp and rounding follow in :func:`gate`)."""
    if isinstance(layer, Pool):
        return ops.pool_backward_input(xp, layer, E, cfg.theta_ff / layer.size ** 2)
    W, _ = params  # type: ignore[misc]
    if isinstance(layer, Conv):
        Z = ops.conv_backward_input(xp, layer, W, E)
    elif below_is_map:
        Z = ops.dense_error_to_map(W, E, below_shape)
    else:
        Z = ops.dense_backward_input(W, E)
    return Z


def layer_increment_sums(xp: Any, layer: Any, params: tuple[Any, Any], E: Any,
                         cache: Any) -> tuple[Any, Any]:
    """(Σ E ⊗ Sˡ⁻¹, Σ E) for a trainable layer, shapes of (W, b); ΔW = −η × these."""
    W, _ = params
    if isinstance(layer, Conv):
        return ops.conv_increment_sums(W, E, cache, xp)
    return ops.dense_increment_sums(E, cache)


def gate(xp: Any, Z: Any, mask: Any | None, cfg: StepConfig) -> Any:
    """Eˡ = S′ˡ ⊙ round(Zˡ / Θbp) (spike) or S′ˡ ⊙ Zˡ / Θbp (float); mask None means S′ = 1."""
    return error_gate(xp, Z, mask, cfg.theta_bp, rounding=(cfg.gradient == "spike"))


def backward(xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]], fp: ForwardPass,
             y: Any, cfg: StepConfig) -> BackwardPass:
    """Backward pass (Algorithm 2 in ANN form): errors top-down and increment sums.

    y: (B,) int labels on the backend. The error of layer 0 is computed (it updates
    W⁰) but nothing is propagated into the input.
    """
    L = len(topo.layers) - 1
    E: list[Any] = [None] * (L + 1)
    sums: dict[int, tuple[Any, Any]] = {}
    E[L], loss = output_error(xp, fp.V, y, cfg)
    for l in range(L, -1, -1):
        layer = topo.layers[l]
        if layer.trainable:
            sums[l] = layer_increment_sums(xp, layer, params[l], E[l], fp.layers[l].cache)
        if l == 0:
            break
        below = topo.layers[l - 1]
        Z_hat = layer_error_below(xp, layer, params.get(l), E[l], below.out_shape,
                                  not isinstance(below, Dense), cfg)
        E[l - 1] = gate(xp, Z_hat, fp.layers[l - 1].mask, cfg)
    return BackwardPass(E=E, sums=sums, loss=loss)


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
        layer = topo.layers[l]
        shape = layer.weight_shape
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
    vW *= mu
    vW -= eta * gW
    vb *= mu
    vb -= eta * gb
    W += vW
    b += vb
    if frac_bits is not None:
        quantize(xp, W, frac_bits)
        quantize(xp, b, frac_bits)


def export_layer(xp: Any, S: Any) -> Any:
    """A layer array in the DESIGN layout (B, N), N in (C, H, W) order (a contiguous copy for maps)."""
    return xp.ascontiguousarray(ops.flatten(xp, S)) if S.ndim == 4 else S
