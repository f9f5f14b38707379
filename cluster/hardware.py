"""Published figures of neuromorphic chips: capacity per core and chip, energy per operation, rates.

Every figure carries a key into :data:`SOURCES`; a figure no source gives is an *assumption* and
says so (key ``"assumed"``), and so is every figure the gathered notes mark unverified (``"[unverified]"``
in its source text). Where sources conflict the table keeps one value and gives the range in
``low``/``high`` (a forecast then reports a range, never one number).

Three uses:

* **capacity** (:class:`Capacity`): cores per chip, and per core its compartments, input axons
  (fan-in) and synaptic memory in bits at a weight precision; whether convolution kernels may be
  shared by the neurons of a core, whether the chip learns on chip, whether its routers multicast,
  and how many chips a board holds on its 2-D mesh. :mod:`cluster.mapping` packs within them;
* **energy** (:class:`Energy`): pJ per synaptic operation, synaptic update (read-modify-write of a
  weight), compartment update, spike sent out of a core, hop between cores on a chip, bit across a
  chip-to-chip link and across a node-to-node link, each with a source or marked assumed;
* **time** (:class:`Rates`): synaptic events per core per second, router packets per second, chip
  and node link bandwidth, the barrier that ends a time step.

Pure data and a validating reader of the same fields from a dict (a user's JSON file, read by
``launch``); no I/O here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .errors import SpikeGradError

SOURCES: dict[str, str] = {
    "D18": "Davies et al., Loihi: a neuromorphic manycore processor with on-chip learning, IEEE Micro 38(1), 2018",
    "KS": "nengo/keras-spiking model_energy.py (quotes D18 and Hoeppner et al. 2019, arXiv 1903.08941)",
    "NL": "nengo/nengo-loihi (block.py MAX_COMPARTMENTS, MAX_IN_AXONS, MAX_SYNAPSE_BITS; connection.py)",
    "SF": "SLAM-Lab/SANA-FE arch/loihi.yaml (calibrated Loihi energies and latencies; Boyle et al., IEEE TCAD 2025)",
    "CASM": "IEEE Circuits and Systems Magazine, Q2 2022, p. 21 (Loihi learning engine, synaptic memory)",
    "WCL2": "WikiChip, intel/loihi_2 (128 neurocores, 1,048,576 neurons per chip)",
    "REG": "The Register, 2021-10-01 (Loihi 2: up to 8,192 neurons per core, graded spikes)",
    "FBH": "fbhtechinfo, Loihi 2 (128 KB SRAM per core; secondary source)",
    "OZU": "OzU-CAST/LoihiScalingEfficiency README (Loihi 2 weights at most 8 bit in practice)",
    "LDL": "lava-nc/lava-dl discussion #111 (Loihi 2 convolutional weight sharing)",
    "ARS": "Ars Technica, 2021-09 (Loihi 2: neuron update 2x, spike generation 10x faster than Loihi)",
    "M14": "Merolla et al., Science 345(6197), 2014 (TrueNorth: 4,096 cores, 256x256 crossbar)",
    "SEN": "Tang et al., SENECA, Front. Neurosci. 17:1187252, 2023, Table 3 (quoting Akopyan et al. 2015 "
           "and Hoeppner et al. 2021)",
    "SM": "SpiNNakerManchester/SpiNNMachine version_spin1.py / version_spin2.py (cores per chip, router tables)",
    "SPY": "SpiNNakerManchester/sPyNNaker constants (256 neurons per core by default)",
    "APT": "APT group, SpiNNaker architecture pages (18 ARM968 cores, 128 MB SDRAM, multicast router)",
    "ST13": "Stromatias et al., IJCNN 2013 (1.8 G synaptic events/s per 48-chip board)",
    "HO19": "Hoeppner et al., IEEE TCAS-I 2019, arXiv 1903.08941 (via keras-spiking)",
    "GO24": "Gonzalez et al., arXiv 2401.04491, 2023 (SpiNNaker 2: 152 PEs)",
    "ONS2": "open-neuromorphic.org SpiNNaker 2 page (19 MB SRAM per chip; secondary source)",
    "SIN": "synsense/sinabs dynapcnn.py and docs/speck (9 cores, neuron and kernel memory per core, 8-bit weights)",
    "HZ": "Horowitz, Computing's energy problem, ISSCC 2014, 45 nm (via SpikingJelly and stillwater-sc/universal)",
    "UNV": "stillwater-sc/universal generic_45nm.hpp: 10 pJ/bit off-chip I/O, an assumption of that model",
    "assumed": "no published figure found: an assumption of this tool (energies can be replaced with --energy FILE)",
}


@dataclass(frozen=True)
class Value:
    """A figure, its source key (:data:`SOURCES`) and, where sources disagree, the range it may take."""

    value: float
    source: str
    low: float | None = None
    high: float | None = None
    note: str = ""

    @property
    def range(self) -> tuple[float, float]:
        return (self.value if self.low is None else self.low, self.value if self.high is None else self.high)

    def cite(self) -> str:
        src = SOURCES.get(self.source, self.source)
        lo, hi = self.range
        span = f" (sources range {lo:g}-{hi:g})" if (lo, hi) != (self.value, self.value) else ""
        return f"{self.value:g}{span} [{self.source}{': ' + self.note if self.note else ''}] {src}"


def _v(value: float, source: str, low: float | None = None, high: float | None = None, note: str = "") -> Value:
    return Value(float(value), source, low, high, note)


@dataclass(frozen=True)
class Capacity:
    """What one chip holds (:mod:`cluster.mapping` packs within every limit).

    A *pooled* capacity (``cores == 0``: a chip of the user's own, ``--chip-neurons N --chip-synapses
    M``) has no cores: ``neurons`` SpikeGrad neurons (both compartments) and ``synapses`` stored
    weights, shared by every layer on the chip. Otherwise the chip has ``cores`` cores, each holding
    neurons of one layer (one block per core, as NengoLoihi allocates) within ``compartments``,
    ``axons`` (distinct inputs; None where no limit is published) and ``synapse_bits`` of weight
    memory at ``weight_bits`` per weight.
    """

    cores: int = 0
    compartments: int = 0
    axons: int | None = None
    synapse_bits: int = 0
    weight_bits: int = 8
    neurons: int = 0
    synapses: int = 0
    shares_kernels: bool = True
    learns: bool = True
    multicast: bool = False
    max_chips: int | None = None           # a single-chip device (Speck): 1
    board: tuple[int, int] = (4, 4)        # chips per board on its 2-D mesh (columns, rows)
    layer_per_core_only: bool = False      # Speck/DYNAP-CNN: each core is one layer, layers never split
    core_neuron_entries: tuple[int, ...] = ()   # Speck: per core, neuron-state entries
    core_kernel_entries: tuple[int, ...] = ()   # Speck: per core, kernel-memory entries
    sources: dict[str, str] = field(default_factory=dict)  # field -> source key

    @property
    def pooled(self) -> bool:
        return self.cores == 0


@dataclass(frozen=True)
class Energy:
    """pJ per event, each a :class:`Value` with its source (module docstring)."""

    synop: Value                 # a spike delivered to one synapse: weight read and accumulate
    update: Value                # a weight's learning update: read, add, write
    compartment: Value           # one compartment's state updated
    spike: Value                 # a spike leaving a core (message generation)
    hop: Value                   # a packet crossing one router-to-router link on a chip or board mesh
    chip_bit: Value              # a bit across a chip-to-chip link
    node_bit: Value              # a bit across a node-to-node network link
    mac: Value = field(default_factory=lambda: _v(4.6, "HZ", note="32-bit float MAC"))  # the ANN baseline
    sram_bit: Value = field(default_factory=lambda: _v(0.31, "HZ", 0.16, 1.56, "SRAM read per bit, 32 KB array"))


@dataclass(frozen=True)
class Rates:
    """Speeds: per core, per router, per link."""

    synops_per_core: Value       # synaptic events a core processes per second
    updates_per_core: Value      # compartment updates per core per second
    packets_per_router: Value    # packets a chip's router forwards per second
    chip_link_bps: Value         # one chip-to-chip link, bits/s
    node_link_bps: Value         # one node's network interface, bits/s
    step_barrier_s: Value        # the barrier that ends a time step


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    capacity: Capacity
    energy: Energy
    rates: Rates


_NODE_BIT = _v(100.0, "assumed", 10.0, 1000.0, "Ethernet-class NIC and switch, an order of magnitude only")
_NODE_BPS = _v(10e9, "assumed", 1e9, 100e9, "a 10 Gbit/s node interface")
_CHIP_BIT = _v(10.0, "UNV", 1.0, 30.0, "off-chip I/O")
_LOIHI_ENERGY = Energy(
    synop=_v(23.6, "KS", 23.6, 35.5, "D18 minimum; SANA-FE calibrates 24.0 conv to 35.5 dense"),
    update=_v(120.0, "D18", note="pairwise STDP update, [unverified] in the gathered notes"),
    compartment=_v(81.0, "KS", 52.0, 81.0, "active compartment update (D18); 52 inactive"),
    spike=_v(111.0, "SF", 40.8, 180.3, "output message 111 + spike generation 69.3 in SANA-FE"),
    hop=_v(3.5, "KS", 1.7, 4.2, "across-tile hop (D18); SANA-FE 3.0 E-W, 4.2 N-S, 1.7 within a tile"),
    chip_bit=_CHIP_BIT, node_bit=_NODE_BIT)
_LOIHI_RATES = Rates(
    synops_per_core=_v(2.6e8, "SF", 2.1e8, 3.2e8, "1 / (3.1-4.7 ns per synaptic event)"),
    updates_per_core=_v(1.0e8, "SF", note="1 / (6.0 + 3.7 ns per compartment)"),
    packets_per_router=_v(2.4e8, "SF", 1.5e8, 2.4e8, "1 / (4.1-6.5 ns per hop)"),
    chip_link_bps=_v(1e9, "assumed", 0.1e9, 10e9, "Loihi's chip-to-chip bandwidth is not published"),
    node_link_bps=_NODE_BPS,
    step_barrier_s=_v(1.0e-6, "SF", 0.3e-6, 1.8e-6, "barrier 0.6-1.8 us by chips synchronised"))

PROFILES: dict[str, Profile] = {
    "loihi": Profile(
        "loihi", "Intel Loihi (14 nm)",
        Capacity(cores=128, compartments=1024, axons=4096, synapse_bits=16384 * 64, weight_bits=8,
                 shares_kernels=True, learns=True, multicast=False, board=(8, 4),
                 sources=dict(cores="D18", compartments="NL", axons="NL", synapse_bits="NL", weight_bits="NL",
                              shares_kernels="NL", learns="CASM", multicast="SF", board="assumed")),
        _LOIHI_ENERGY, _LOIHI_RATES),
    "loihi2": Profile(
        "loihi2", "Intel Loihi 2 (Intel 4)",
        Capacity(cores=128, compartments=8192, axons=None, synapse_bits=128 * 1024 * 8, weight_bits=8,
                 shares_kernels=True, learns=True, multicast=False, board=(8, 4),
                 sources=dict(cores="WCL2", compartments="REG", axons="assumed", synapse_bits="FBH",
                              weight_bits="OZU", shares_kernels="LDL", learns="WCL2", multicast="assumed",
                              board="assumed")),
        Energy(synop=_v(23.6, "assumed", 1.0, 35.5, "Intel publishes no Loihi 2 energies: Loihi's figures"),
               update=_v(120.0, "assumed", note="Loihi's figure"),
               compartment=_v(40.5, "assumed", 26.0, 81.0, "Loihi's 81 pJ halved: updates 2x faster (ARS)"),
               spike=_v(111.0, "assumed", 11.1, 180.3, "Loihi's figure"),
               hop=_v(3.5, "assumed", 1.7, 4.2, "Loihi's figure"),
               chip_bit=_CHIP_BIT, node_bit=_NODE_BIT),
        Rates(synops_per_core=_v(2.6e8, "assumed", 2.1e8, 5.2e8, "Loihi's rate; not published for Loihi 2"),
              updates_per_core=_v(2.0e8, "ARS", note="2x Loihi's"),
              packets_per_router=_v(2.4e8, "assumed", 1.5e8, 4.8e8, "Loihi's rate"),
              chip_link_bps=_v(1e9, "assumed", 0.1e9, 10e9), node_link_bps=_NODE_BPS,
              step_barrier_s=_v(1.0e-6, "assumed", 0.3e-6, 1.8e-6, "Loihi's barrier"))),
    "truenorth": Profile(
        "truenorth", "IBM TrueNorth (28 nm)",
        Capacity(cores=4096, compartments=256, axons=256, synapse_bits=256 * 256, weight_bits=1,
                 shares_kernels=False, learns=False, multicast=False, board=(4, 4),
                 sources=dict(cores="M14", compartments="M14", axons="M14", synapse_bits="M14",
                              weight_bits="M14", shares_kernels="assumed", learns="M14", multicast="assumed",
                              board="assumed")),
        Energy(synop=_v(26.0, "M14", 2.5, 26.0, "[unverified] 26 pJ real-time; 2.5 pJ = 400 GSOPS/W (SEN)"),
               update=_v(float("nan"), "M14", note="no on-chip learning"),
               compartment=_v(0.0, "assumed", note="folded into the per-synop figure"),
               spike=_v(0.0, "assumed", note="folded into the per-synop figure"),
               hop=_v(2.0, "assumed", 1.0, 4.0, "no published per-hop figure"),
               chip_bit=_CHIP_BIT, node_bit=_NODE_BIT),
        Rates(synops_per_core=_v(1.1e7, "assumed", 1.1e7, 1.1e8, "46 GSOPS/W at 63 mW over 4,096 cores"),
              updates_per_core=_v(2.56e5, "M14", note="256 neurons at a 1 kHz tick [unverified]"),
              packets_per_router=_v(1e7, "assumed", 1e6, 1e8), chip_link_bps=_v(1e9, "assumed", 0.1e9, 10e9),
              node_link_bps=_NODE_BPS, step_barrier_s=_v(1e-3, "M14", note="1 ms tick [unverified]"))),
    "spinnaker": Profile(
        "spinnaker", "SpiNNaker 1 (130 nm)",
        Capacity(cores=16, compartments=512, axons=None, synapse_bits=123_469_792 * 8 // 16, weight_bits=16,
                 shares_kernels=True, learns=True, multicast=True, board=(8, 6),
                 sources=dict(cores="APT", compartments="SPY", axons="SPY", synapse_bits="SM",
                              weight_bits="assumed", shares_kernels="assumed", learns="APT", multicast="APT",
                              board="ST13")),
        Energy(synop=_v(13300.0, "KS", 45.0, 13300.0, "13.3 nJ (HO19); a '45 pJ' table cell is likely a unit slip"),
               update=_v(26600.0, "assumed", note="two synaptic events' worth, ARM software"),
               compartment=_v(26000.0, "KS", note="26 nJ (HO19)"),
               spike=_v(0.0, "assumed", note="in the per-synop figure"),
               hop=_v(10.0, "assumed", 1.0, 100.0, "no published router energy"),
               chip_bit=_CHIP_BIT, node_bit=_NODE_BIT),
        Rates(synops_per_core=_v(2.3e6, "ST13", note="1.8 G events/s per 48-chip board, 16 cores per chip"),
              updates_per_core=_v(2.56e5, "assumed", note="256 neurons at 1 ms steps"),
              packets_per_router=_v(5e6, "assumed", 1e6, 2e7), chip_link_bps=_v(0.25e9, "assumed", 0.1e9, 1e9),
              node_link_bps=_NODE_BPS, step_barrier_s=_v(1e-3, "APT", note="1 ms real-time step"))),
    "spinnaker2": Profile(
        "spinnaker2", "SpiNNaker 2 (22FDX)",
        Capacity(cores=152, compartments=512, axons=None, synapse_bits=128 * 1024 * 8, weight_bits=8,
                 shares_kernels=True, learns=True, multicast=True, board=(8, 6),
                 sources=dict(cores="GO24", compartments="assumed", axons="assumed", synapse_bits="ONS2",
                              weight_bits="assumed", shares_kernels="assumed", learns="GO24", multicast="SM",
                              board="assumed")),
        Energy(synop=_v(450.0, "KS", 10.0, 450.0, "450 pJ 28 nm prototype (HO19); 10 pJ 22 nm (SEN)"),
               update=_v(900.0, "assumed", note="two synaptic events' worth"),
               compartment=_v(2190.0, "KS", note="2.19 nJ (HO19)"),
               spike=_v(0.0, "assumed", note="in the per-synop figure"),
               hop=_v(10.0, "assumed", 1.0, 100.0),
               chip_bit=_CHIP_BIT, node_bit=_NODE_BIT),
        Rates(synops_per_core=_v(2e7, "assumed", 5e6, 1e8, "ARM software with accelerators"),
              updates_per_core=_v(1e6, "assumed", 2.5e5, 4e6), packets_per_router=_v(2e7, "assumed", 5e6, 1e8),
              chip_link_bps=_v(1e9, "assumed", 0.25e9, 5e9), node_link_bps=_NODE_BPS,
              step_barrier_s=_v(1e-3, "assumed", 1e-4, 1e-3))),
    "speck": Profile(
        "speck", "SynSense Speck (DYNAP-CNN)",
        Capacity(cores=9, compartments=64 * 1024, axons=None, synapse_bits=64 * 1024 * 8, weight_bits=8,
                 shares_kernels=True, learns=False, multicast=False, max_chips=1, board=(1, 1),
                 layer_per_core_only=True,
                 core_neuron_entries=tuple(k * 1024 for k in (64, 64, 64, 32, 32, 16, 16, 16, 16)),
                 core_kernel_entries=tuple(k * 1024 for k in (16, 16, 16, 32, 32, 64, 64, 16, 16)),
                 sources=dict(cores="SIN", compartments="SIN", axons="SIN", synapse_bits="SIN", weight_bits="SIN",
                              shares_kernels="SIN", learns="SIN", multicast="SIN", board="SIN")),
        Energy(synop=_v(10.0, "assumed", 1.0, 30.0, "Speck's energies are not published"),
               update=_v(float("nan"), "SIN", note="no on-chip learning"),
               compartment=_v(5.0, "assumed", 1.0, 20.0), spike=_v(5.0, "assumed", 1.0, 20.0),
               hop=_v(2.0, "assumed", 1.0, 5.0), chip_bit=_CHIP_BIT, node_bit=_NODE_BIT),
        Rates(synops_per_core=_v(1e8, "assumed", 1e7, 1e9, "a per-core cap exists (SIN), its value is not published"),
              updates_per_core=_v(1e8, "assumed", 1e7, 1e9), packets_per_router=_v(1e8, "assumed", 1e7, 1e9),
              chip_link_bps=_v(1e9, "assumed"), node_link_bps=_NODE_BPS,
              step_barrier_s=_v(0.0, "SIN", note="no tick"))),
}


def custom_capacity(neurons: int, synapses: int) -> Capacity:
    """A pooled chip of the user's own: ``neurons`` SpikeGrad neurons, ``synapses`` stored weights."""
    for what, v in (("neurons", neurons), ("synapses", synapses)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpikeGradError(f"chip {what} expected an integer >= 1, got {v!r}")
    return Capacity(neurons=neurons, synapses=synapses, board=(4, 4),
                    sources=dict(neurons="given", synapses="given", board="assumed"))


# -- energy profiles from a user's file ----------------------------------------------------------------

ENERGY_FIELDS = tuple(f.name for f in fields(Energy))
RATE_FIELDS = tuple(f.name for f in fields(Rates))


def _value_from(where: str, raw: object) -> Value:
    """A figure from a file: a number, or {"value": x, "source": "...", "low": a, "high": b}."""
    if isinstance(raw, bool):
        raise SpikeGradError(f"{where} expected a number or an object with 'value' and 'source', got {raw!r}")
    if isinstance(raw, (int, float)):
        raw = {"value": raw, "source": "given in the file, no source"}
    if not isinstance(raw, dict):
        raise SpikeGradError(f"{where} expected a number or an object with 'value' and 'source', "
                             f"got {type(raw).__name__}")
    unknown = set(raw) - {"value", "source", "low", "high", "note"}
    if unknown:
        raise SpikeGradError(f"{where}: unknown key(s) {sorted(unknown)}; expected value, source, low, high, note")
    nums = {}
    for k in ("value", "low", "high"):
        x = raw.get(k)
        if x is None and k != "value":
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x) or x < 0:
            raise SpikeGradError(f"{where}.{k} expected a finite number >= 0, got {x!r}")
        nums[k] = float(x)
    src, note = raw.get("source", "given in the file, no source"), raw.get("note", "")
    if not isinstance(src, str) or not isinstance(note, str) or len(src) > 500 or len(note) > 500:
        raise SpikeGradError(f"{where}: source and note expected text of at most 500 characters")
    lo, hi = nums.get("low", nums["value"]), nums.get("high", nums["value"])
    if not lo <= nums["value"] <= hi:
        raise SpikeGradError(f"{where}: expected low <= value <= high, got {lo:g}, {nums['value']:g}, {hi:g}")
    return Value(nums["value"], src, nums.get("low"), nums.get("high"), note)


def energy_from_dict(data: object, base: Energy, where: str = "energy file") -> Energy:
    """An :class:`Energy` from a decoded JSON object: the keys of :data:`ENERGY_FIELDS` (each a number
    or an object with value and source), the missing ones taken from ``base``; unknown keys refused."""
    if not isinstance(data, dict):
        raise SpikeGradError(f"{where} expected a JSON object with keys among {', '.join(ENERGY_FIELDS)}")
    unknown = sorted(set(data) - set(ENERGY_FIELDS) - {"name", "comment"})
    if unknown:
        raise SpikeGradError(f"{where}: unknown key(s) {unknown}; expected some of {', '.join(ENERGY_FIELDS)}")
    vals = {f: (_value_from(f"{where}: {f}", data[f]) if f in data else getattr(base, f)) for f in ENERGY_FIELDS}
    return Energy(**vals)
