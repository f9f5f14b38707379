"""The paper's topology notation, parsed into frozen layer specs.

Notation (section 4, tables 1-2): tokens joined by ``-``.

=============  ===========================================================
``28x28``      input, height × width, one channel (first token only)
``32x32x3``    input, height × width × channels (first token only)
``15C5``       convolution: 15 kernels of 5×5, stride 1, no padding
``128C3p1``    the same with zero padding 1 on every side
``P2``         2×2 average pooling, stride 2 (a linear IF layer)
``300``        dense (fully connected) layer of 300 neurons
=============  ===========================================================

Layers are numbered l = 0..L in topology order (pooling layers count); layer L,
the last, must be dense and is the output layer (it integrates, never spikes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from .errors import SpikeGradError

PRESETS: dict[str, str] = {
    "mnist": "28x28-15C5-P2-40C5-P2-300-10",
    "cifar10": "32x32x3-128C3p1-256C3p1-P2-512C3p1-P2-1024C3p1-512C3p1-1024-512-10",
    # A small net for scikit-learn's 8×8 digits, quick enough for a laptop demo.
    "digits": "8x8-16C3p1-P2-64-10",
}


@dataclass(frozen=True)
class Conv:
    """Convolution, stride 1: (B, Ci, H, W) -> (B, Co, H + 2p - k + 1, W + 2p - k + 1)."""

    out_channels: int
    kernel: int
    padding: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @property
    def kind(self) -> str:
        return "conv"

    @property
    def is_map(self) -> bool:
        """Its output is a map, held CHWB (C, H, W, B); else rows (B, N)."""
        return True

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_channels, self.in_shape[0], self.kernel, self.kernel)

    @property
    def trainable(self) -> bool:
        return True

    def token(self) -> str:
        return f"{self.out_channels}C{self.kernel}" + (f"p{self.padding}" if self.padding else "")


@dataclass(frozen=True)
class Pool:
    """k×k average pooling, stride k: (B, C, H, W) -> (B, C, H // k, W // k)."""

    size: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @property
    def kind(self) -> str:
        return "pool"

    @property
    def is_map(self) -> bool:
        return True

    @property
    def weight_shape(self) -> None:
        return None

    @property
    def trainable(self) -> bool:
        return False

    def token(self) -> str:
        return f"P{self.size}"


@dataclass(frozen=True)
class Dense:
    """Fully connected: (B, N_in) -> (B, N_out); its input is flattened in (C, H, W) order."""

    out_features: int
    in_shape: tuple[int, int, int]
    out_shape: tuple[int, int, int]

    @property
    def kind(self) -> str:
        return "dense"

    @property
    def is_map(self) -> bool:
        return False

    @property
    def in_features(self) -> int:
        c, h, w = self.in_shape
        return c * h * w

    @property
    def weight_shape(self) -> tuple[int, ...]:
        return (self.out_features, self.in_features)

    @property
    def trainable(self) -> bool:
        return True

    def token(self) -> str:
        return str(self.out_features)


Layer = Conv | Pool | Dense


@dataclass(frozen=True)
class Topology:
    """A parsed network: input shape (C, H, W) and layers l = 0..L."""

    text: str
    input_shape: tuple[int, int, int]
    layers: tuple[Layer, ...]

    @property
    def num_classes(self) -> int:
        return self.layers[-1].out_features  # type: ignore[union-attr]

    @property
    def trainable(self) -> tuple[int, ...]:
        """Layer indices l that hold weights, in order: trainable index t -> layer l."""
        return tuple(l for l, layer in enumerate(self.layers) if layer.trainable)

    def neurons(self, l: int) -> int:
        c, h, w = self.layers[l].out_shape
        return c * h * w

    def weight_shape(self, l: int) -> tuple[int, ...]:
        """Shape of the weights of layer l, which must be trainable (one of :attr:`trainable`)."""
        shape = self.layers[l].weight_shape
        if shape is None:
            raise SpikeGradError(f"layer {l} ({self.layers[l].token()}) has no weights")
        return shape

    def layer_bytes(self, l: int, batch: int, itemsize: int) -> int:
        """A lower bound of the memory layer l holds in one training step of ``batch`` samples:
        weights, biases, velocities and increments (four copies), its outputs, surrogate
        derivatives and errors (three per neuron and sample) and, for a convolution, its im2col
        patches. Checked before anything is allocated (``launch.run.config``)."""
        layer = self.layers[l]
        n = 0
        if layer.trainable:
            w_shape = self.weight_shape(l)
            n = 4 * (math.prod(w_shape) + w_shape[0])
        n += 3 * self.neurons(l) * batch
        if isinstance(layer, Conv):
            n += layer.in_shape[0] * layer.kernel ** 2 * layer.out_shape[1] * layer.out_shape[2] * batch
        return n * itemsize

    def describe(self) -> str:
        parts = [f"input {'x'.join(map(str, self.input_shape))}"]
        for l, layer in enumerate(self.layers):
            parts.append(f"l{l} {layer.token()} -> {'x'.join(map(str, layer.out_shape))}")
        return ", ".join(parts)


_INPUT = re.compile(r"([0-9]+)x([0-9]+)(?:x([0-9]+))?", re.ASCII)
_CONV = re.compile(r"([0-9]+)C([0-9]+)(?:p([0-9]+))?", re.ASCII)
_POOL = re.compile(r"P([0-9]+)", re.ASCII)
_DENSE = re.compile(r"([0-9]+)", re.ASCII)
_MAX_DIGITS = 9  # every number of a topology is below 10⁹


def _point_at(text: str, index: int, why: str) -> SpikeGradError:
    """An error naming token ``index`` and marking it in the string: ``28x28-[15Q5]-10``."""
    tokens = [t if len(t) <= 24 else t[:12] + "..." + t[-4:] for t in text.split("-")]
    marked = "-".join(f"[{t}]" if i == index else t for i, t in enumerate(tokens))
    if len(marked) > 200:
        marked = marked[:200] + "..."
    return SpikeGradError(f"bad topology token {index + 1} {tokens[index]!r} in {marked}: {why}")


def parse_topology(text: str) -> Topology:
    """Parse a topology string or preset name (``mnist``, ``cifar10``, ``digits``).

    Raises :class:`SpikeGradError` pointing at the offending token, e.g. a kernel
    larger than its (padded) input, or a pooling size that does not divide the map.
    """
    if not isinstance(text, str):
        raise SpikeGradError(f"topology expected a string like '28x28-15C5-P2-10', got {type(text).__name__}")
    text = PRESETS.get(text, text).strip()
    if not text.isascii() or not text.isprintable():
        bad = next(ch for ch in text if not (ch.isascii() and ch.isprintable()))
        raise SpikeGradError(f"topology expected ASCII letters, digits and '-', got {bad!r} in {text!r}")
    tokens = text.split("-")
    for i, tok in enumerate(tokens):
        if re.search(rf"[0-9]{{{_MAX_DIGITS + 1}}}", tok):
            raise _point_at(text, i, f"numbers in a topology have at most {_MAX_DIGITS} digits")
    if len(tokens) < 2:
        raise SpikeGradError(
            f"topology {text!r} needs an input and at least one layer, e.g. '28x28-15C5-P2-10'; "
            f"presets: {', '.join(PRESETS)}"
        )
    m = _INPUT.fullmatch(tokens[0])
    if not m:
        raise _point_at(text, 0, "expected an input shape like '28x28' or '32x32x3'")
    h, w, c = int(m.group(1)), int(m.group(2)), int(m.group(3) or 1)
    if min(h, w, c) < 1:
        raise _point_at(text, 0, "input dimensions must be >= 1")
    shape = (c, h, w)
    layers: list[Layer] = []
    for i, tok in enumerate(tokens[1:], start=1):
        if (m := _CONV.fullmatch(tok)):
            co, k, p = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
            if co < 1 or k < 1:
                raise _point_at(text, i, "channels and kernel size must be >= 1")
            if shape[1] == 1 and shape[2] == 1 and layers and layers[-1].kind == "dense":
                raise _point_at(text, i, "a convolution cannot follow a dense layer")
            ho, wo = shape[1] + 2 * p - k + 1, shape[2] + 2 * p - k + 1
            if ho < 1 or wo < 1:
                raise _point_at(text, i, f"kernel {k} with padding {p} does not fit the "
                                         f"{shape[1]}x{shape[2]} input map")
            if p >= k:
                raise _point_at(text, i, f"padding {p} must be smaller than kernel {k}")
            layers.append(Conv(co, k, p, shape, (co, ho, wo)))
        elif (m := _POOL.fullmatch(tok)):
            k = int(m.group(1))
            if k < 1 or shape[1] < k or shape[2] < k:
                raise _point_at(text, i, f"pooling {k}x{k} does not fit the {shape[1]}x{shape[2]} map")
            if layers and layers[-1].kind == "dense":
                raise _point_at(text, i, "pooling cannot follow a dense layer")
            layers.append(Pool(k, shape, (shape[0], shape[1] // k, shape[2] // k)))
        elif (m := _DENSE.fullmatch(tok)):
            n = int(m.group(1))
            if n < 1:
                raise _point_at(text, i, "a dense layer needs >= 1 neuron")
            layers.append(Dense(n, shape, (n, 1, 1)))
        else:
            raise _point_at(text, i, "expected a conv 'NCk' or 'NCkpP', a pooling 'Pk' or a dense 'N'")
        shape = layers[-1].out_shape
    if layers[-1].kind != "dense":
        raise _point_at(text, len(tokens) - 1, "the last layer (the output) must be dense, e.g. '10'")
    return Topology(text=text, input_shape=(c, h, w), layers=tuple(layers))
