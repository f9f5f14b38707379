"""Energy and time of one training sample on a neuromorphic system, SNN against its equivalent ANN.

Inputs are per-sample counts (``layers.parquet``'s counters over the epoch's images, the routed
flows of :mod:`cluster.routing`) and a profile of :mod:`cluster.hardware`; every term is returned with
its count, its energy per event, the product and the source, so the output can print its sources.

SNN terms (pJ per sample):

* synaptic operations: every spike or error spike delivered to a synapse (``input_macs`` +
  ``acc_forward`` + ``acc_backward``: the forward pass, Eq. (1), and the δ sent down, Eq. (6)) × synop;
* weight updates: ``acc_update`` (Eq. (8): one per delivered δ and fan-in) × update;
* compartment updates: event-driven, each compartment once per sample, and once more per spike it
  emits (``spikes`` + ``error_spikes``) × compartment;
* spikes sent out of a core: every packet of every flow, on-chip ones included × spike;
* hops: on-chip packets × the mean hop count between two cores of a chip (a √C × √C mesh of C cores,
  2·√C / 3 hops) × hop; chip-to-chip and board-to-board packet-hops × hop and, per bit, × chip_bit;
  node-to-node packets' bits × node_bit.

ANN terms: MACs (forward, backward, update) × mac; one weight read per MAC and one weight write per
update MAC at 32 bits × sram_bit (weights stay on their chip; no reuse across a batch, the same
per-sample comparison the SNN's figure makes); the same partition's activations and errors moved
densely at ``ann_bits`` per value: on chip written and read once (2 × bits × sram_bit), across chips
× chip_bit per hop, across nodes × node_bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .hardware import Energy, Rates, Value


@dataclass(frozen=True)
class Term:
    name: str
    count: float          # events (or bits) per sample
    each: Value           # pJ per event (or per bit)
    factor: float = 1.0   # events per count (e.g. bits per packet)

    @property
    def pj(self) -> float:
        return self.count * self.factor * self.each.value

    def pj_range(self) -> tuple[float, float]:
        lo, hi = self.each.range
        return self.count * self.factor * lo, self.count * self.factor * hi


def mean_core_hops(cores: int) -> float:
    """Mean XY distance between two random cores of a √C × √C mesh (2·n/3 for n = √C)."""
    return 2.0 * math.sqrt(max(1, cores)) / 3.0


@dataclass(frozen=True)
class SampleCounts:
    """Per training sample: the network's counters (module docstring) and its routed traffic."""

    synops: float
    updates: float
    compartments: float           # neurons × compartments per neuron
    spikes_emitted: float         # Σ|S| + Σ|Z| of all layers
    macs_forward: float
    macs_backward: float
    macs_update: float
    packets: dict[str, float]     # per class: on-chip packets, chip-to-chip / board / node packet-hops
    values: dict[str, float]      # the ANN's values moved per class (same partition, same routes)


def snn_terms(c: SampleCounts, e: Energy, packet_bits: int, cores: int) -> list[Term]:
    on_chip = c.packets.get("on-chip", 0.0)
    off = c.packets.get("chip-to-chip", 0.0) + c.packets.get("board-to-board", 0.0)
    all_packets = on_chip + sum(c.packets.get(k, 0.0) for k in ("chip-to-chip", "board-to-board", "node-to-node"))
    return [
        Term("synaptic operations", c.synops, e.synop),
        Term("weight updates", c.updates, e.update),
        Term("compartment updates", c.compartments + c.spikes_emitted, e.compartment),
        Term("spikes sent", all_packets, e.spike),
        Term("hops on chip", on_chip, e.hop, mean_core_hops(cores)),
        Term("hops between chips", off, e.hop),
        Term("bits between chips", off, e.chip_bit, packet_bits),
        Term("bits between nodes", c.packets.get("node-to-node", 0.0), e.node_bit, packet_bits),
    ]


def ann_terms(c: SampleCounts, e: Energy, ann_bits: int) -> list[Term]:
    macs = c.macs_forward + c.macs_backward + c.macs_update
    off = c.values.get("chip-to-chip", 0.0) + c.values.get("board-to-board", 0.0)
    return [
        Term("MACs", macs, e.mac),
        Term("weight reads (32 bit)", macs, e.sram_bit, 32),
        Term("weight writes (32 bit)", c.macs_update, e.sram_bit, 32),
        Term(f"values on chip ({ann_bits} bit, write+read)", c.values.get("on-chip", 0.0), e.sram_bit, 2 * ann_bits),
        Term(f"values between chips ({ann_bits} bit)", off, e.chip_bit, ann_bits),
        Term(f"values between nodes ({ann_bits} bit)", c.values.get("node-to-node", 0.0), e.node_bit, ann_bits),
    ]


def total(terms: list[Term]) -> tuple[float, float, float]:
    """(pJ, low, high), NaN figures (a chip that cannot learn) left out of nothing: they make NaN."""
    lo = sum(t.pj_range()[0] for t in terms)
    hi = sum(t.pj_range()[1] for t in terms)
    return sum(t.pj for t in terms), lo, hi


@dataclass(frozen=True)
class ChipWork:
    """One chip's work per sample on the target: its cores, synaptic events, compartment updates, and
    the packets its router forwards."""

    chip: int
    cores: int
    synops: float
    compartment_updates: float
    router_packets: float


def forecast(chips: list[ChipWork], link_bits: dict[str, float], node_bits: dict[int, float], steps: int,
             r: Rates, use: str = "value") -> dict:
    """Samples per second and latency per sample of on-chip learning (``use``: "value", "low" or
    "high" figures of the rates; low rates give the slow end).

    Chips work on different samples at once (a pipeline); a chip needs its synaptic events over its
    cores' rate plus its compartment updates likewise, and its router its packets over the router
    rate; a mesh link its bits over the chip-link bandwidth; a node's interface its bits over the
    node bandwidth; a sample needs at least ``steps`` time steps, each ended by a barrier. The rate
    is one over the slowest of these; the latency the sum of the chips' times along the path plus the
    steps' barriers."""
    def pick(v: Value) -> float:
        lo, hi = v.range
        return {"value": v.value, "low": lo, "high": hi}[use]

    per_chip = {}
    for w in chips:
        k = max(1, w.cores)
        per_chip[w.chip] = (w.synops / (k * pick(r.synops_per_core))
                            + w.compartment_updates / (k * pick(r.updates_per_core)))
    router = {w.chip: w.router_packets / pick(r.packets_per_router) for w in chips}
    link = max(link_bits.values(), default=0.0) / pick(r.chip_link_bps)
    nic = max(node_bits.values(), default=0.0) / pick(r.node_link_bps)
    barrier = steps * (r.step_barrier_s.value if use == "value" else
                       r.step_barrier_s.range[1] if use == "low" else r.step_barrier_s.range[0])
    bounds = {"chip compute": max(per_chip.values(), default=0.0), "router": max(router.values(), default=0.0),
              "chip link": link, "node link": nic, "time steps": barrier}
    binding = max(bounds, key=lambda k: bounds[k])
    slowest = bounds[binding]
    return dict(samples_per_second=1.0 / slowest if slowest > 0 else math.inf, binding=binding, bounds=bounds,
                latency_s=sum(per_chip.values()) + barrier, per_chip=per_chip)
