"""Mapping a network onto chips with a capacity: which slice of which layer each chip holds.

A real neuromorphic chip holds a bounded number of neurons and weights, and every core on it has
limits of its own (:mod:`cluster.hardware` gives the published figures, with sources). A layer is
cut into *units*:

=========  ===================  =======================  ===========================================
layer      unit                 neurons per unit         weights per unit (stored)
=========  ===================  =======================  ===========================================
conv       one output channel   Ho·Wo IF neurons         Ci·k·k when a core's neurons share the
                                                         kernel, Ho·Wo·Ci·k·k where they may not
pool       one channel          Ho·Wo linear IF neurons  0 (one fixed weight Θff/k², a core parameter)
dense      one output neuron    1                        N_in (its fan-in)
=========  ===================  =======================  ===========================================

**Neurons and compartments.** SpikeGrad's neuron integrates a forward potential V and an error
potential U side by side (Eqs. (1), (6)): two compartments (``compartments_per_neuron``, 2 for
learning, 1 for inference). Published per-core limits are in compartments.

**Copies.** Where a trainable layer l + 1 is split over chips, every chip holding units of layer l
stores a copy of Wˡ⁺¹'s columns of its units (module :class:`Plan`: the error spikes Eˡ⁺¹ come
down and the copy sums Zˡ; Eq. (6)). Copies are counted against the capacity like the chip's own
weights. Each stored weight serves both directions (W forward, Wᵀ backward), as the paper assumes;
hardware that reads synapses in one direction only needs twice the weight memory (not counted),
and momentum velocities (one per weight) are not counted either.

**Cores** (profiles with cores; a chip of the user's own, ``--chip-neurons``/``--chip-synapses``,
is one pool). A core holds neurons of one layer (one block per core, as NengoLoihi allocates):
whole units where they fit, else bands of rows of one channel, else pieces of one row. Its limits:
compartments (neurons × compartments per neuron), input axons (the distinct inputs its neurons read:
a convolution tile reads Ci channels of the input rows and columns it covers, a dense neuron all
N_in), and synaptic memory (weights × weight bits; a shared kernel is stored once per core). A chip
has ``cores`` cores. Where a single neuron breaks a core's limit (a fan-in over its axons, its weights
over its memory) the network cannot be mapped: an error naming the limit.

:func:`map_network` fills chips in layer order: consecutive small layers share a chip; a layer
that fits a chip of its own but not what is left of the current one starts the next chip whole;
a layer bigger than a chip fills what is left of the current chip and continues on the next ones
(so a chip may hold the end of one layer and the start of the next). A layer is split exactly when
it does not fit one chip alone, copies included (decided from the output layer down, since layer
l's copies depend on whether l + 1 is split). The output layer is never split: its error (softmax,
section 2) reads all of Vᴸ, and Vᴸ are potentials, which never cross a chip boundary. A profile
whose cores are one layer each and whose layers never split (Speck) is packed by
:func:`_map_layer_per_core`.

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
from dataclasses import dataclass, field
from enum import Enum

from .errors import SpikeGradError
from .hardware import PROFILES as HARDWARE
from .hardware import Capacity, Profile, custom_capacity
from .layers import kind_of
from .topology import Topology


@dataclass(frozen=True)
class ChipSpec:
    """A chip to map onto: its capacity (:class:`cluster.hardware.Capacity`), the compartments of one
    SpikeGrad neuron (2: V and U), and where the figures come from."""

    name: str
    capacity: Capacity
    compartments_per_neuron: int = 2
    source: str = "given on the command line"
    profile: Profile | None = None

    def __post_init__(self) -> None:
        c = self.compartments_per_neuron
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 2:
            raise SpikeGradError(f"compartments per neuron expected 1 (inference) or 2 (learning: V and U), got {c!r}")

    @property
    def neurons(self) -> int:
        """SpikeGrad neurons one chip holds (compartments / compartments per neuron)."""
        cap = self.capacity
        return cap.neurons if cap.pooled else cap.cores * cap.compartments // self.compartments_per_neuron

    @property
    def synapses(self) -> int:
        """Weights one chip stores at its precision."""
        cap = self.capacity
        return cap.synapses if cap.pooled else cap.cores * cap.synapse_bits // cap.weight_bits


def custom_chip(neurons: int, synapses: int, name: str = "custom") -> ChipSpec:
    """A chip of the user's own: one pool of ``neurons`` neurons and ``synapses`` weights."""
    return ChipSpec(name, custom_capacity(neurons, synapses))


PROFILES: dict[str, ChipSpec] = {
    name: ChipSpec(name, p.capacity, 2, p.title, p) for name, p in HARDWARE.items()
}


def resolve_spec(name: str | None, neurons: int | None, synapses: int | None, cores: int | None = None,
                 compartments: int = 2) -> ChipSpec | None:
    """The chip asked for: a profile of :data:`PROFILES` (``cores`` overrides its cores per chip), a
    chip of the user's own (``neurons`` and ``synapses`` both), or None (nothing asked)."""
    if name is None and neurons is None and synapses is None:
        if cores is not None:
            raise SpikeGradError("--chip-cores changes a profile's cores per chip: give a profile with --chip")
        return None
    if name is not None:
        if name not in PROFILES:
            raise SpikeGradError(f"chip must be one of {', '.join(PROFILES)}, got {name!r}")
        if neurons is not None or synapses is not None:
            raise SpikeGradError(f"--chip-neurons and --chip-synapses describe a chip of your own (one pool, no "
                                 f"cores); {name} has per-core limits: give --chip {name} alone, or with "
                                 f"--chip-cores N to shrink it")
        base = PROFILES[name]
        cap = base.capacity
        if cores is not None:
            if isinstance(cores, bool) or not isinstance(cores, int) or cores < 1 or cap.layer_per_core_only:
                raise SpikeGradError(f"--chip-cores expected an integer >= 1 on a profile with uniform cores, got "
                                     f"{cores!r} for {name}")
            cap = Capacity(**{**cap.__dict__, "cores": cores})
        return ChipSpec(name if cores is None else f"{name} ({cores} cores)", cap, compartments,
                        base.source + ("" if cores is None else f"; {cores} cores per chip given on the command line"),
                        base.profile)
    if neurons is None or synapses is None:
        raise SpikeGradError(f"a custom chip needs both a neuron and a synapse capacity (--chip-neurons and "
                             f"--chip-synapses), or a profile (--chip {'|'.join(PROFILES)})")
    return ChipSpec("custom", custom_capacity(neurons, synapses), compartments)


@dataclass(frozen=True)
class Slice:
    """Units ``lo..hi-1`` of layer ``layer`` (output channels for conv and pool, neurons for dense):
    its neurons, its own weights (``synapses``) and the weights it keeps as copies of the layer above
    (``copies``); on a chip with cores, the cores it takes, its weight memory in bits and the most
    input axons one of its cores reads."""

    layer: int
    lo: int
    hi: int
    neurons: int
    synapses: int
    copies: int = 0
    cores: int = 0
    bits: int = 0
    axons: int = 0

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
    def copies(self) -> int:
        return sum(s.copies for s in self.slices)

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(s.layer for s in self.slices)


@dataclass(frozen=True)
class Fill:
    """One limit of a chip: what is used of it."""

    limit: str
    used: float
    capacity: float
    unit: str

    @property
    def share(self) -> float:
        return self.used / self.capacity if self.capacity else 0.0


@dataclass(frozen=True)
class Mapping:
    """A network on chips of one capacity."""

    topology: Topology
    spec: ChipSpec
    chips: tuple[ChipLoad, ...]
    notes: tuple[str, ...] = field(default=())

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

    def fill(self, chip: ChipLoad) -> list[Fill]:
        """Every limit of the chip, with what ``chip`` uses of it (the largest share binds)."""
        cap, cpn = self.spec.capacity, self.spec.compartments_per_neuron
        if cap.pooled:
            return [Fill("neurons", chip.neurons, cap.neurons, "neurons"),
                    Fill("synapses", chip.synapses + chip.copies, cap.synapses, "weights")]
        if cap.layer_per_core_only:
            return [Fill("cores", len(chip.slices) - sum(self.topology.layers[s.layer].kind == "pool"
                                                         for s in chip.slices), cap.cores, "cores"),
                    Fill("neuron memory", chip.neurons * cpn, sum(cap.core_neuron_entries), "entries"),
                    Fill("kernel memory", sum(s.bits for s in chip.slices) // cap.weight_bits,
                         sum(cap.core_kernel_entries), "entries")]
        out = [Fill("cores", sum(s.cores for s in chip.slices), cap.cores, "cores"),
               Fill("compartments", chip.neurons * cpn, cap.cores * cap.compartments, "compartments"),
               Fill("synaptic memory", sum(s.bits for s in chip.slices), cap.cores * cap.synapse_bits, "bits")]
        if cap.axons is not None:
            out.append(Fill("axons per core", max((s.axons for s in chip.slices), default=0), cap.axons, "axons"))
        return out

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
    """(units, neurons per unit, weights per unit with a shared kernel) of layer l (module docstring)."""
    layer = topo.layers[l]
    C, H, W = layer.out_shape
    if layer.kind == "dense":
        return C, 1, layer.in_shape[0] * layer.in_shape[1] * layer.in_shape[2]
    per_unit = layer.in_shape[0] * layer.kernel ** 2 if layer.kind == "conv" else 0  # type: ignore[union-attr]
    return C, H * W, per_unit


def copy_per_unit(topo: Topology, l: int, shares_kernels: bool = True) -> int:
    """Weights one unit of layer l stores as a copy of Wˡ⁺¹'s columns, when l + 1 is split (Eq. (6)):
    Wˡ⁺¹ has (units of l) input channels, so a unit keeps 1 / units of it; a convolution whose
    kernel its core may not share keeps it once per neuron of the unit."""
    if l + 1 >= len(topo.layers) or not topo.layers[l + 1].trainable:
        return 0
    units, n_per, _ = layer_units(topo, l)
    per = math.prod(topo.weight_shape(l + 1)) // units
    return per * n_per if topo.layers[l + 1].kind == "conv" and not shares_kernels else per


class _Geometry:
    """Layer l's needs on the cores of ``spec`` (module docstring, *Cores*)."""

    def __init__(self, topo: Topology, l: int, spec: ChipSpec, copies: bool) -> None:
        self.l, self.layer, self.spec, self.cap = l, topo.layers[l], spec, spec.capacity
        self.units, self.n_per, self.shared_w = layer_units(topo, l)
        self.copy = copy_per_unit(topo, l, self.cap.shares_kernels) if copies else 0
        # a convolution's copied columns are a kernel too: where a core shares kernels, each core
        # holding some of a channel's neurons keeps the channel's whole copy once
        self.copy_shared = bool(copies and self.cap.shares_kernels and topo.layers[l + 1].kind == "conv")
        layer = self.layer
        self.Ci, self.Hin, self.Win = layer.in_shape
        _, self.Ho, self.Wo = layer.out_shape
        self.k = getattr(layer, "kernel", getattr(layer, "size", 1))
        self.fan_in = (self.Ci * self.k ** 2 if layer.kind == "conv" else self.k ** 2 if layer.kind == "pool"
                       else self.shared_w)
        self.tile = self._tile() if not self.cap.pooled and not self.cap.layer_per_core_only else None

    def unit_weights(self) -> int:
        """Own weights per unit as the chip stores them."""
        if self.layer.kind == "conv" and not self.cap.pooled and not self.cap.shares_kernels:
            return self.shared_w * self.n_per
        return self.shared_w

    # -- one core's tile: c whole units, or a band of a rows (of w columns) of one unit ------------
    def _axons(self, c: int, a: int, w: int) -> int:
        kind = self.layer.kind
        if kind == "dense":
            return self.fan_in
        if kind == "pool":
            return c * min(self.Hin, a * self.k) * min(self.Win, w * self.k)
        return self.Ci * min(self.Hin, a - 1 + self.k) * min(self.Win, w - 1 + self.k)

    def _bits(self, c: int, a: int, w: int) -> int:
        neurons = c * a * w
        if self.layer.kind == "dense":
            own = neurons * self.fan_in
        elif self.layer.kind == "pool":
            own = 0
        else:
            own = c * self.shared_w if self.cap.shares_kernels else neurons * self.fan_in
        copied = c * self.copy if self.copy_shared else neurons * self.copy // self.n_per
        return (own + copied) * self.cap.weight_bits

    def _fits(self, c: int, a: int, w: int) -> bool:
        cap = self.cap
        return (c * a * w * self.spec.compartments_per_neuron <= cap.compartments
                and (cap.axons is None or self._axons(c, a, w) <= cap.axons)
                and self._bits(c, a, w) <= cap.synapse_bits)

    def _largest(self, hi: int, fits) -> int:
        lo = 0
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(mid):
                lo = mid
            else:
                hi = mid - 1
        return lo

    def _tile(self) -> tuple[str, int]:
        """("units", c): c whole units per core; ("cores", k): k cores per unit."""
        if self.layer.kind == "dense":
            n = self._largest(self.units, lambda n: self._fits(n, 1, 1))
            if n:
                return "units", n
        else:
            c = self._largest(self.units, lambda c: self._fits(c, self.Ho, self.Wo))
            if c:
                return "units", c
            a = self._largest(self.Ho, lambda a: self._fits(1, a, self.Wo))
            if a:
                return "cores", -(-self.Ho // a)
            w = self._largest(self.Wo, lambda w: self._fits(1, 1, w))
            if w:
                return "cores", self.Ho * -(-self.Wo // w)
        raise self._refusal()

    def _refusal(self) -> SpikeGradError:
        cap, cpn, what = self.cap, self.spec.compartments_per_neuron, f"layer {self.l} ({self.layer.token()})"
        on = f"onto {self.spec.name} chips"
        if cpn > cap.compartments:
            why = f"a neuron's {cpn} compartments exceed a core's {cap.compartments:,}"
        elif cap.axons is not None and self._axons(1, 1, 1) > cap.axons:
            why = (f"one neuron's fan-in of {self._axons(1, 1, 1):,} inputs exceeds a core's {cap.axons:,} input "
                   f"axons [{cap.sources.get('axons', '?')}]")
        else:
            why = (f"one neuron's {self._bits(1, 1, 1) // cap.weight_bits:,} weights"
                   + (f" ({self.copy // self.n_per:,} of them copies of layer {self.l + 1}'s)" if self.copy else "")
                   + f" at {cap.weight_bits} bits exceed a core's {cap.synapse_bits:,} bits of synaptic memory")
        return SpikeGradError(f"{what} cannot be mapped {on}: {why}")

    def cores(self, units: int) -> int:
        assert self.tile is not None
        how, n = self.tile
        return -(-units // n) if how == "units" else units * n

    def units_in(self, free_cores: int) -> int:
        assert self.tile is not None
        how, n = self.tile
        return free_cores * n if how == "units" else free_cores // n

    def make_slice(self, lo: int, hi: int) -> Slice:
        u = hi - lo
        own = u * self.unit_weights()
        if self.tile is None:
            return Slice(self.l, lo, hi, u * self.n_per, own, u * self.copy)
        how, n = self.tile
        if how == "units":
            full, rest = divmod(u, n)
            bits = full * self._bits(n, self.Ho, self.Wo) + (self._bits(rest, self.Ho, self.Wo) if rest else 0)
            axons = self._axons(min(u, n), self.Ho, self.Wo)
        else:  # n cores per unit: bands of rows (n <= Ho) or pieces of rows, each core storing the
            # shared kernel (and a shared copy) again; the last band may hold fewer neurons
            a, w = (-(-self.Ho // n), self.Wo) if n <= self.Ho else (1, -(-self.Wo * self.Ho // n))
            bits = u * n * self._bits(1, a, w)
            axons = self._axons(1, a, w)
        return Slice(self.l, lo, hi, u * self.n_per, own, u * self.copy, self.cores(u), bits, axons)

    def fits_a_chip(self) -> bool:
        cap = self.cap
        if cap.pooled:
            return (self.units * self.n_per <= cap.neurons
                    and self.units * (self.unit_weights() + self.copy) <= cap.synapses)
        return self.cores(self.units) <= cap.cores


MAX_CHIPS = 100_000  # a mapping is built chip by chip: beyond this it would only exhaust memory


def _check_pooled_unit(g: _Geometry, spec: ChipSpec) -> None:
    cap, layer = spec.capacity, g.layer
    n_per, s_per = g.n_per, g.unit_weights() + g.copy
    if n_per <= cap.neurons and s_per <= cap.synapses:
        return
    if s_per > cap.synapses:
        what = ("a neuron's fan-in of" if layer.kind == "dense" else "one channel's kernel of")
        if g.copy:
            raise SpikeGradError(f"layer {g.l} ({layer.token()}) cannot be mapped onto {spec.name} chips: one unit's "
                                 f"{g.unit_weights():,} weights and {g.copy:,} copied weights of layer {g.l + 1} "
                                 f"(split above it) exceed a chip's {cap.synapses:,}")
        raise SpikeGradError(f"layer {g.l} ({layer.token()}) cannot be mapped onto {spec.name} chips: {what} "
                             f"{g.unit_weights():,} synapses exceeds a chip's {cap.synapses:,}")
    raise SpikeGradError(f"layer {g.l} ({layer.token()}) cannot be mapped onto {spec.name} chips: one channel's "
                         f"map of {n_per:,} neurons exceeds a chip's {cap.neurons:,}")


def _splits(topo: Topology, spec: ChipSpec) -> list[bool]:
    """Which layers must be split (do not fit one chip alone, copies included), from the output down."""
    L = len(topo.layers) - 1
    for l in range(L + 1):  # a unit too big even without copies: named in layer order
        g = _Geometry(topo, l, spec, copies=False)
        if spec.capacity.pooled:
            _check_pooled_unit(g, spec)
    split = [False] * (L + 1)
    for l in range(L, -1, -1):
        g = _Geometry(topo, l, spec, copies=l < L and split[l + 1])
        if spec.capacity.pooled:
            _check_pooled_unit(g, spec)
        split[l] = not g.fits_a_chip()
        if l == L and split[L]:
            _refuse_output(topo, spec)
    return split


def _refuse_output(topo: Topology, spec: ChipSpec) -> None:
    L = len(topo.layers) - 1
    g = _Geometry(topo, L, spec, False)
    raise SpikeGradError(
        f"the output layer {L} ({topo.layers[L].token()}: {g.units * g.n_per:,} neurons, "
        f"{g.units * g.unit_weights():,} synapses) cannot be mapped onto {spec.name} chips: it must fit on one "
        f"chip (its softmax reads every Vᴸ, which are potentials, not spikes)")


def map_network(topo: Topology, spec: ChipSpec) -> Mapping:
    """Fill chips of ``spec`` with the layers of ``topo`` in order (module docstring).

    Raises :class:`SpikeGradError` naming the layer and the limit when one of its units cannot fit.
    """
    if spec.capacity.layer_per_core_only:
        return _map_layer_per_core(topo, spec)
    split = _splits(topo, spec)
    L = len(topo.layers) - 1
    geoms = [_Geometry(topo, l, spec, copies=l < L and split[l + 1]) for l in range(L + 1)]
    cap = spec.capacity
    if cap.pooled:
        need = max(-(-sum(g.units * g.n_per for g in geoms) // cap.neurons),
                   -(-sum(g.units * (g.unit_weights() + g.copy) for g in geoms) // cap.synapses))
    else:
        need = -(-sum(g.cores(g.units) for g in geoms) // cap.cores)
    limit = min(MAX_CHIPS, cap.max_chips or MAX_CHIPS)
    if need > limit:
        raise SpikeGradError(f"{topo.text[:80]!r} needs at least {need:,} {spec.name} chips; at most {limit:,} "
                             + ("can be mapped" if limit == MAX_CHIPS else f"make one {spec.name} system"))
    chips: list[list[Slice]] = [[]]
    free_n, free_s, free_c = cap.neurons, cap.synapses, cap.cores

    def next_chip() -> None:
        nonlocal free_n, free_s, free_c
        chips.append([])
        free_n, free_s, free_c = cap.neurons, cap.synapses, cap.cores

    for l, g in enumerate(geoms):
        if chips[-1] and not split[l]:
            room = (g.units * g.n_per <= free_n and g.units * (g.unit_weights() + g.copy) <= free_s) if cap.pooled \
                else g.cores(g.units) <= free_c
            if not room:  # the layer fits a chip of its own but not what is left of this one: whole, on the next
                next_chip()
        u = 0
        while u < g.units:
            if cap.pooled:
                fit = min(g.units - u, free_n // g.n_per)
                per = g.unit_weights() + g.copy
                if per:
                    fit = min(fit, free_s // per)
            else:
                fit = min(g.units - u, g.units_in(free_c))
            if fit == 0:  # this chip is full for this layer: the next one
                next_chip()
                continue
            s = g.make_slice(u, u + fit)
            chips[-1].append(s)
            free_n -= s.neurons
            free_s -= s.synapses + s.copies
            free_c -= s.cores
            u += fit
    if len(chips) > limit:
        raise SpikeGradError(f"{topo.text[:80]!r} takes {len(chips):,} {spec.name} chips; at most {limit:,} make one "
                             f"{spec.name} system")
    return Mapping(topo, spec, tuple(ChipLoad(i, tuple(s)) for i, s in enumerate(chips)))


def _map_layer_per_core(topo: Topology, spec: ChipSpec) -> Mapping:
    """One chip whose cores hold one layer each, never split (Speck/DYNAP-CNN): a pooling layer joins
    the core of the layer below it (a DYNAP-CNN core convolves, then pools); each other layer takes
    the free core with the least memory that holds its neuron states (its neurons × compartments)
    and its weights (its kernel entries), in layer order."""
    cap, cpn = spec.capacity, spec.compartments_per_neuron
    free = list(range(len(cap.core_neuron_entries)))
    slices = []
    for l, layer in enumerate(topo.layers):
        g = _Geometry(topo, l, spec, False)
        neurons, weights = g.units * g.n_per, g.units * g.unit_weights()
        slices.append(Slice(l, 0, g.units, neurons, weights, bits=weights * cap.weight_bits))
        if layer.kind == "pool":
            if l == 0:
                raise SpikeGradError(f"layer 0 ({layer.token()}) cannot be mapped onto {spec.name}: pooling runs in "
                                     f"the core of the layer below it, and there is none")
            continue
        ok = [c for c in free if neurons * cpn <= cap.core_neuron_entries[c] and weights <= cap.core_kernel_entries[c]]
        if not ok:
            if not free:
                why = f"its {len(cap.core_neuron_entries)} cores are taken by layers 0-{l - 1} (one layer per core)"
            else:
                why = (f"{neurons:,} neurons x {cpn} compartments = {neurons * cpn:,} neuron-state entries and "
                       f"{weights:,} kernel entries fit none of the free cores (largest free: "
                       f"{max(cap.core_neuron_entries[c] for c in free):,} neuron and "
                       f"{max(cap.core_kernel_entries[c] for c in free):,} kernel entries)")
            raise SpikeGradError(f"layer {l} ({layer.token()}) cannot be mapped onto {spec.name} "
                                 f"[{cap.sources.get('cores', '?')}]: {why}")
        best = min(ok, key=lambda c: (cap.core_neuron_entries[c] + cap.core_kernel_entries[c], c))
        free.remove(best)
    return Mapping(topo, spec, (ChipLoad(0, tuple(slices)),),
                   notes=("one chip, one layer per core; a pooling layer runs in the core below it",))


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

    def layer(self, l: int, lo: int, hi: int):
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
