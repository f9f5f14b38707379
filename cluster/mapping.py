"""Mapping a network onto chips with a capacity: which slice of which layer each chip holds.

A real neuromorphic chip holds a bounded number of neurons and synapses (the published figures of
:data:`PROFILES`). A layer too big for one chip is cut into slices, a slice being whole units:

=========  ===================  ===================================  =================================
layer      unit                 neurons per unit                     synapses per unit (stored weights)
=========  ===================  ===================================  =================================
conv       one output channel   Ho·Wo IF neurons                     Ci·k·k (its kernel, shared by all
                                                                     Ho·Wo positions: stored once)
pool       one channel          Ho·Wo linear IF neurons              0 (fixed weights Θff/k², not stored)
dense      one output neuron    1                                    N_in (its fan-in)
=========  ===================  ===================================  =================================

A neuron counts once, its error compartment included: SpikeGrad's neuron integrates forward (V)
and error (U) potentials side by side (Eqs. (1), (6)), so the state of one neuron is two
compartments on the chip that holds it. Biases are neuron parameters, not synapses.

:func:`map_network` fills chips in layer order: consecutive small layers share a chip; a layer
that fits a chip of its own but not what is left of the current one starts the next chip whole;
a layer bigger than a chip fills what is left of the current chip and continues on the next ones
(so a chip may hold the end of one layer and the start of the next). A unit that alone exceeds a chip (one neuron's
fan-in over a chip's synapses, or one channel's map over its neurons) cannot be mapped: an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import SpikeGradError
from .topology import Topology


@dataclass(frozen=True)
class ChipSpec:
    """A chip's capacity: neurons and synapses (stored weights) it can hold; ``source`` cites the figures."""

    name: str
    neurons: int
    synapses: int
    source: str = "given on the command line"

    def __post_init__(self) -> None:
        for what in ("neurons", "synapses"):
            v = getattr(self, what)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise SpikeGradError(f"chip {what} expected an integer >= 1, got {v!r}")


PROFILES: dict[str, ChipSpec] = {
    "loihi": ChipSpec("loihi", 131_072, 130_000_000,
                      "Intel Loihi: 128 neuro-cores x 1,024 compartments, 130 M synapses (Davies et al., "
                      "IEEE Micro 38(1), 2018)"),
    "loihi2": ChipSpec("loihi2", 1_000_000, 120_000_000,
                       "Intel Loihi 2: up to 1 M neurons and 120 M synapses per chip (Intel Labs, Loihi 2 "
                       "technology brief, 2021)"),
    "truenorth": ChipSpec("truenorth", 1_048_576, 268_435_456,
                          "IBM TrueNorth: 4,096 cores x 256 neurons, 256 x 256 synapses per core (Merolla et "
                          "al., Science 345(6197), 2014)"),
}


def resolve_spec(name: str | None, neurons: int | None, synapses: int | None) -> ChipSpec | None:
    """The capacity asked for: a profile of :data:`PROFILES` (its figures overridden by ``neurons``
    or ``synapses`` where given), a custom chip (both figures needed), or None (nothing asked)."""
    if name is None and neurons is None and synapses is None:
        return None
    if name is not None:
        if name not in PROFILES:
            raise SpikeGradError(f"chip must be one of {', '.join(PROFILES)}, got {name!r}")
        base = PROFILES[name]
        if neurons is None and synapses is None:
            return base
        return ChipSpec(f"{name} (modified)", neurons or base.neurons, synapses or base.synapses,
                        base.source + "; capacity overridden on the command line")
    if neurons is None or synapses is None:
        raise SpikeGradError(f"a custom chip needs both a neuron and a synapse capacity (--chip-neurons and "
                             f"--chip-synapses), or a profile (--chip {'|'.join(PROFILES)})")
    return ChipSpec("custom", neurons, synapses)


@dataclass(frozen=True)
class Slice:
    """Units ``lo..hi-1`` of layer ``layer`` (output channels for conv and pool, neurons for dense)."""

    layer: int
    lo: int
    hi: int
    neurons: int
    synapses: int

    @property
    def units(self) -> int:
        return self.hi - self.lo


@dataclass(frozen=True)
class ChipLoad:
    """What one chip holds: its slices in layer order, and their totals."""

    index: int
    slices: tuple[Slice, ...]

    @property
    def neurons(self) -> int:
        return sum(s.neurons for s in self.slices)

    @property
    def synapses(self) -> int:
        return sum(s.synapses for s in self.slices)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.layer for s in self.slices)


@dataclass(frozen=True)
class Mapping:
    """A network on chips of one capacity."""

    topology: Topology
    spec: ChipSpec
    chips: tuple[ChipLoad, ...]

    def chips_of(self, layer: int) -> tuple[int, ...]:
        """Indices of the chips holding some of ``layer``, in order."""
        return tuple(c.index for c in self.chips if layer in c.layers)

    @property
    def split_layers(self) -> tuple[int, ...]:
        """Layers spread over more than one chip."""
        return tuple(l for l in range(len(self.topology.layers)) if len(self.chips_of(l)) > 1)

    def groups(self) -> list[tuple[int, int]] | None:
        """The mapping as ``--chips`` groups (first layer, last layer) per chip, when no layer is
        split; None otherwise."""
        if self.split_layers:
            return None
        return [(c.layers[0], c.layers[-1]) for c in self.chips]

    def slices_of(self, layer: int) -> list[tuple[int, Slice]]:
        """(chip index, slice) of every slice of ``layer``, in unit order."""
        return [(c.index, s) for c in self.chips for s in c.slices if s.layer == layer]

    def links(self) -> list[tuple[int, int]]:
        """Chip pairs (a, b), a ≠ b, where spikes of layer l − 1 on chip a reach neurons of layer l on
        chip b (error spikes go back from b to a). A convolution or dense unit connects to every
        unit below; a pooling channel only to the same channel below."""
        out = set()
        for l in range(1, len(self.topology.layers)):
            pool = self.topology.layers[l].kind == "pool"
            below = self.slices_of(l - 1)
            for b, s in self.slices_of(l):
                for a, t in below:
                    if a != b and (not pool or (t.lo < s.hi and s.lo < t.hi)):
                        out.add((a, b))
        return sorted(out)


def layer_units(topo: Topology, l: int) -> tuple[int, int, int]:
    """(units, neurons per unit, synapses per unit) of layer l (module docstring's table)."""
    layer = topo.layers[l]
    C, H, W = layer.out_shape
    if layer.kind == "dense":
        return C, 1, layer.in_shape[0] * layer.in_shape[1] * layer.in_shape[2]
    per_unit = layer.in_shape[0] * layer.kernel ** 2 if layer.kind == "conv" else 0  # type: ignore[union-attr]
    return C, H * W, per_unit


MAX_CHIPS = 100_000  # a mapping is built chip by chip: beyond this it would only exhaust memory


def map_network(topo: Topology, spec: ChipSpec) -> Mapping:
    """Fill chips of capacity ``spec`` with the layers of ``topo`` in order (module docstring).

    Raises :class:`SpikeGradError` naming the layer when one of its units cannot fit on a chip.
    """
    per_layer = [layer_units(topo, l) for l in range(len(topo.layers))]
    need = max(-(-sum(u * n for u, n, _ in per_layer) // spec.neurons),
               -(-sum(u * s for u, _, s in per_layer) // spec.synapses))
    if need > MAX_CHIPS:
        raise SpikeGradError(f"{topo.text[:80]!r} needs at least {need:,} {spec.name} chips ({spec.neurons:,} "
                             f"neurons, {spec.synapses:,} synapses each); at most {MAX_CHIPS:,} are mapped")
    chips: list[list[Slice]] = [[]]
    free_n, free_s = spec.neurons, spec.synapses
    for l, layer in enumerate(topo.layers):
        units, n_per, s_per = layer_units(topo, l)
        if n_per > spec.neurons or s_per > spec.synapses:
            what = ("a neuron's fan-in of" if layer.kind == "dense" else "one channel's kernel of") \
                if s_per > spec.synapses else "one channel's map of"
            need = s_per if s_per > spec.synapses else n_per
            unit_word = "synapses" if s_per > spec.synapses else "neurons"
            raise SpikeGradError(
                f"layer {l} ({layer.token()}) cannot be mapped onto {spec.name} chips: {what} {need:,} {unit_word} "
                f"exceeds a chip's {getattr(spec, unit_word):,}")
        whole_n, whole_s = units * n_per, units * s_per
        fits_a_chip = whole_n <= spec.neurons and whole_s <= spec.synapses
        if chips[-1] and fits_a_chip and (whole_n > free_n or whole_s > free_s):
            # the layer fits a chip of its own but not what is left of this one: whole, on the next
            chips.append([])
            free_n, free_s = spec.neurons, spec.synapses
        u = 0
        while u < units:
            fit = units - u
            if n_per:
                fit = min(fit, free_n // n_per)
            if s_per:
                fit = min(fit, free_s // s_per)
            if fit == 0:  # this chip is full for this layer: the next one
                chips.append([])
                free_n, free_s = spec.neurons, spec.synapses
                continue
            chips[-1].append(Slice(l, u, u + fit, fit * n_per, fit * s_per))
            free_n -= fit * n_per
            free_s -= fit * s_per
            u += fit
    return Mapping(topo, spec, tuple(ChipLoad(i, tuple(s)) for i, s in enumerate(chips)))
