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
fan-in over a chip's synapses, or one channel's map over its neurons) cannot be mapped: an error. The
output layer is never split: its error (softmax, section 2) reads all of Vᴸ, and Vᴸ are potentials,
which never cross a chip boundary.

:class:`Plan` says what crosses between the chips of a mapping, per micro-batch (Only spikes cross):

* forward, the spike counts of a slice of layer l − 1 go to every other chip holding units of
  layer l they connect to (a pooling channel only to the same channel above; conv and dense
  units to all), one message per destination chip;
* backward, through a layer l held whole by one chip (or any pooling layer), that chip sums
  (Wˡ)ᵀ Eˡ for the units below (the U compartments, Eq. (6)) and sends their error spikes
  Zˡ⁻¹ to the chips holding them, as an unsplit chain does;
* backward, through a trainable layer l split over several chips (:meth:`Plan.sums_below`), no
  chip holds all of Wˡ's rows, and a partial sum must not cross: each slice sends its error
  spikes Eˡ to every chip holding units of layer l − 1, and those chips keep a copy of Wˡ's
  columns from their units (:func:`cluster.layers` ``columns``), sum Zˡ⁻¹ themselves and update
  the copy from the same error spikes and their own spikes Sˡ⁻¹ (Eq. (8)). Owner and copy add
  the same integer products, so they stay identical (``actors.slices.check_copies`` proves it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from .errors import SpikeGradError
from .layers import kind_of
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
        if l == len(topo.layers) - 1 and not fits_a_chip:
            raise SpikeGradError(
                f"the output layer {l} ({layer.token()}: {whole_n:,} neurons, {whole_s:,} synapses) cannot be "
                f"mapped onto {spec.name} chips: it must fit on one chip (its softmax reads every Vᴸ, which "
                f"are potentials, not spikes)")
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


@dataclass(frozen=True)
class Piece:
    """Units ``lo..hi-1`` of some layer, on chip ``chip``."""

    chip: int
    lo: int
    hi: int


Layout = tuple[tuple[tuple[int, int, int], ...], ...]
"""Per chip, its slices as (layer, first unit, end unit): what a chip actor is told of a mapping."""


class Phase(str, Enum):
    """What a chip does, in order: per micro-batch FORWARD up the chips and BACKWARD down them, once
    per batch APPLY (Algorithm 3). Every value names the :class:`actors.chip.Chip` method that runs
    it; a chip's :meth:`~actors.chip.Chip.step` dispatches its calls' phases on these names. APPLY
    runs at the start of a chip's first step of the next batch (or on its own when the driver
    drains the chips); with replicas a chip's last step of a batch also returns its increments
    (the replica exchange), so neither costs a call of its own."""

    FORWARD = "forward"
    BACKWARD = "backward"
    APPLY = "apply"


@dataclass(frozen=True)
class Call:
    """One phase of one chip's slice for a micro-batch: ``phase`` (FORWARD or BACKWARD) of the chip's
    slice of ``layer``; it takes the messages ``inputs`` and returns ``outputs`` (message keys
    (phase, layer of the sender, sender chip, receiver chip)), in that order."""

    chip: int
    phase: Phase
    layer: int
    inputs: tuple[tuple[str, int, int, int], ...]
    outputs: tuple[tuple[str, int, int, int], ...]
    top: bool = False  # the output layer's call: it also returns [loss, correct] (or predictions)


@dataclass(frozen=True)
class Step:
    """Consecutive calls of one chip with no message from another chip between them: one chip call
    (:meth:`actors.chip.Chip.step`). Its messages in and out are its calls', in call order."""

    chip: int
    calls: tuple[Call, ...]

    @property
    def inputs(self) -> tuple[tuple[str, int, int, int], ...]:
        return tuple(k for c in self.calls for k in c.inputs)

    @property
    def outputs(self) -> tuple[tuple[str, int, int, int], ...]:
        return tuple(k for c in self.calls for k in c.outputs)

    @property
    def ops(self) -> tuple[tuple[str, int, int], ...]:
        """What the chip runs: (phase, layer, number of messages it takes) per call."""
        return tuple((c.phase.value, c.layer, len(c.inputs)) for c in self.calls)

    def top(self, train: bool) -> bool:
        """It returns [loss, correct] (training: the output layer's BACKWARD) or the predictions
        (evaluation: its FORWARD) after its messages."""
        return any(c.top and (c.phase is Phase.BACKWARD or not train) for c in self.calls)


def whole_layers(topo: Topology, groups: list[tuple[int, int]]) -> Layout:
    """``--chips`` groups (first layer, last layer) per chip as a :data:`Layout`: each chip holds the
    slice of all units of each of its layers."""
    return tuple(tuple((l, 0, layer_units(topo, l)[0]) for l in range(a, b + 1)) for a, b in groups)


class Plan:
    """Who sends what to whom for a network laid out on chips (module docstring).

    layout: per chip, its slices (layer, lo, hi) in layer order; together they must tile every
    layer's units once, each chip holding at most one slice of a layer, the output layer on one chip.
    """

    def __init__(self, topo: Topology, layout: Layout) -> None:
        self.topo = topo
        self.layout: Layout = tuple(tuple((int(l), int(lo), int(hi)) for l, lo, hi in c) for c in layout)
        self.L = len(topo.layers) - 1
        self.owners: list[list[Piece]] = [[] for _ in topo.layers]
        for c, slices in enumerate(self.layout):
            seen = set()
            for l, lo, hi in slices:
                if not 0 <= l <= self.L or l in seen:
                    raise SpikeGradError(f"chip {c}: slice of layer {l} out of range or given twice")
                seen.add(l)
                self.owners[l].append(Piece(c, lo, hi))
        for l, owners in enumerate(self.owners):
            owners.sort(key=lambda p: p.lo)
            units = layer_units(topo, l)[0]
            ends = [0] + [p.hi for p in owners]
            if not owners or any(p.lo != e or p.hi <= p.lo for p, e in zip(owners, ends)) or ends[-1] != units:
                raise SpikeGradError(f"the chips' slices of layer {l} do not tile its {units} units once: "
                                     f"{[(p.chip, p.lo, p.hi) for p in owners]}")
        if len(self.owners[self.L]) > 1:
            raise SpikeGradError(f"the output layer {self.L} is split over chips {self.chips_of(self.L)}; "
                                 f"it must sit on one chip")

    @classmethod
    def of(cls, mapping: Mapping) -> Plan:
        return cls(mapping.topology, tuple(tuple((s.layer, s.lo, s.hi) for s in c.slices)
                                           for c in mapping.chips))

    @property
    def n_chips(self) -> int:
        return len(self.layout)

    def chips_of(self, l: int) -> list[int]:
        return [p.chip for p in self.owners[l]]

    def slice_of(self, l: int, chip: int) -> Piece:
        for p in self.owners[l]:
            if p.chip == chip:
                return p
        raise SpikeGradError(f"chip {chip} holds no slice of layer {l}")

    def layer(self, l: int, lo: int, hi: int):  # noqa: ANN201  (a topology layer spec)
        """The layer spec of units lo..hi-1 of layer l (the whole layer when they are all of it)."""
        layer = self.topo.layers[l]
        return layer if (lo, hi) == (0, layer_units(self.topo, l)[0]) else kind_of(layer).slice(layer, lo, hi)

    def needs(self, l: int, lo: int, hi: int) -> tuple[int, int]:
        """The units of layer l − 1 that units lo..hi-1 of layer l connect to."""
        layer = self.topo.layers[l]
        return kind_of(layer).needs(layer, lo, hi, layer_units(self.topo, l - 1)[0])

    def _clip(self, l: int, lo: int, hi: int) -> list[Piece]:
        """The owners of layer l's units lo..hi-1, each clipped to them, in unit order."""
        return [Piece(p.chip, max(p.lo, lo), min(p.hi, hi)) for p in self.owners[l] if p.lo < hi and lo < p.hi]

    def sums_below(self, l: int) -> bool:
        """Layer l is trainable and split: its error spikes go down, the chips below keep weight copies."""
        return 0 < l and self.topo.layers[l].trainable and len(self.owners[l]) > 1

    def forward_sources(self, l: int, chip: int) -> list[Piece]:
        """The pieces of layer l − 1 (chip, units) that chip's slice of layer l integrates, in unit order."""
        s = self.slice_of(l, chip)
        return self._clip(l - 1, *self.needs(l, s.lo, s.hi)) if l > 0 else []

    def forward_targets(self, l: int, chip: int) -> list[Piece]:
        """Per other chip holding connected units of layer l + 1: the units of chip's slice of l it needs."""
        if l == self.L:
            return []
        s, out = self.slice_of(l, chip), []
        for d in self.owners[l + 1]:
            a, b = self.needs(l + 1, d.lo, d.hi)
            lo, hi = max(a, s.lo), min(b, s.hi)
            if d.chip != chip and lo < hi:
                out.append(Piece(d.chip, lo, hi))
        return out

    def backward_sources(self, l: int, chip: int) -> list[Piece]:
        """Where chip's slice of layer l (l < L) gets its error spikes from: the slices of layer l + 1
        (their E, when :meth:`sums_below` (l + 1)), else the Z pieces of its own units (units of l)."""
        if l == self.L:
            return []
        if self.sums_below(l + 1):
            return list(self.owners[l + 1])
        s, out = self.slice_of(l, chip), []
        for d in self.owners[l + 1]:
            a, b = self.needs(l + 1, d.lo, d.hi)
            lo, hi = max(a, s.lo), min(b, s.hi)
            if lo < hi:
                out.append(Piece(d.chip, lo, hi))
        return out

    def backward_targets(self, l: int, chip: int) -> list[Piece]:
        """Where chip's slice of layer l sends error spikes: its E to every other chip of layer l − 1
        (:meth:`sums_below`), else Z pieces (units of l − 1) to the other chips holding them."""
        if l == 0:
            return []
        if self.sums_below(l):
            s = self.slice_of(l, chip)
            return [Piece(p.chip, s.lo, s.hi) for p in self.owners[l - 1] if p.chip != chip]
        return [p for p in self.forward_sources(l, chip) if p.chip != chip]

    def calls(self) -> list[Call]:
        """The calls of one training micro-batch in an order that respects every message: FORWARD
        layer by layer, then BACKWARD from the output down. Evaluation runs the forward calls only."""
        out = []
        for l in range(self.L + 1):
            for p in self.owners[l]:
                ins = tuple(("forward", l - 1, s.chip, p.chip) for s in self.forward_sources(l, p.chip)
                            if s.chip != p.chip)
                outs = tuple(("forward", l, p.chip, t.chip) for t in self.forward_targets(l, p.chip))
                out.append(Call(p.chip, Phase.FORWARD, l, ins, outs, l == self.L))
        for l in range(self.L, -1, -1):
            for p in self.owners[l]:
                ins = tuple(("backward", l + 1, s.chip, p.chip) for s in self.backward_sources(l, p.chip)
                            if s.chip != p.chip)
                outs = tuple(("backward", l, p.chip, t.chip) for t in self.backward_targets(l, p.chip))
                out.append(Call(p.chip, Phase.BACKWARD, l, ins, outs, l == self.L))
        return out

    def steps(self, train: bool = True) -> list[Step]:
        """The chip calls of one micro-batch: :meth:`calls` (evaluation: the FORWARD calls only),
        consecutive calls of one chip fused into one :class:`Step`. A chain of one layer per chip
        takes 2C − 1 calls (the output chip's FORWARD and BACKWARD are one), a chip holding the
        whole network one."""
        out: list[Step] = []
        for call in self.calls():
            if not train and call.phase is not Phase.FORWARD:
                continue
            if out and out[-1].chip == call.chip:
                out[-1] = Step(call.chip, out[-1].calls + (call,))
            else:
                out.append(Step(call.chip, (call,)))
        return out

    @property
    def split(self) -> tuple[int, ...]:
        """Layers held by more than one chip."""
        return tuple(l for l, owners in enumerate(self.owners) if len(owners) > 1)

    def copies(self, chip: int) -> list[tuple[int, int, int]]:
        """The weight copies chip keeps: (layer l, lo, hi) for each split trainable layer l whose
        input units lo..hi-1 (of layer l − 1) it holds."""
        return [(l + 1, p.lo, p.hi) for l in range(self.L) for p in self.owners[l]
                if p.chip == chip and self.sums_below(l + 1)]

    def copy_synapses(self, chip: int) -> int:
        """Weights chip stores as copies (:meth:`copies`), beyond the synapses of its own slices: the
        columns of its input units lo..hi-1, i.e. (hi − lo) / (input channels) of the layer's weights."""
        total = 0
        for l, lo, hi in self.copies(chip):
            shape = self.topo.weight_shape(l)
            total += math.prod(shape) * (hi - lo) // self.topo.layers[l].in_shape[0]
        return total

    def param_layers(self, chip: int) -> list[int]:
        """Layers whose weights chip needs at start-up: its own trainable slices' and its copies'."""
        own = [l for l, _, _ in self.layout[chip] if self.topo.layers[l].trainable]
        return sorted(set(own) | {l for l, _, _ in self.copies(chip)})
