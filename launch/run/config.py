"""Training configuration: one frozen dataclass, per-dataset defaults, strict checking.

Every enumeration has one typed source, a ``Literal`` (this module's, or the one of the package
that owns it: ``cluster.network.GradientMode``, ``cluster.backend.BackendName``,
``actors.chip.Wire`` and ``Placement``); the fields are annotated with them, :func:`_check_types`
validates against them and the CLI takes its ``choices`` from them. The defaults per dataset live
with each dataset (:mod:`launch.data`); a flag given on the command line always wins over them.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import types
from dataclasses import dataclass, fields
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from actors.chip import PLACEMENTS, WIRES, Placement, Wire, parse_chips
from actors.transport import TRANSPORTS, TransportName
from cluster.backend import BACKENDS, BackendName
from cluster.errors import SpikeGradError
from cluster.mapping import PROFILES, ChipSpec, Layout, Plan, map_network, resolve_spec
from cluster.network import GRADIENT_MODES, GradientMode, StepConfig
from cluster.topology import PRESETS, Topology, parse_topology

from ..data import DATASET_DEFAULTS, DATASETS
from . import formats

Engine = Literal["chips", "local"]
DType = Literal["float32", "float64"]
Schedule = Literal["constant", "cosine", "epoch-cosine"]
ENGINES: tuple[str, ...] = get_args(Engine)
DTYPES: tuple[str, ...] = get_args(DType)
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; saved as ``config.json`` in the run directory.

    lr: learning rate applied to the batch *sum* of increments (Algorithm 3 applies
    Σ_batch once per batch); η = lr / α for spike gradients, lr for float gradients.
    momentum: 0 is plain SGD exactly as Algorithm 3; > 0 keeps a velocity per weight.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    topology: str = "digits"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-4
    momentum: float = 0.9
    schedule: Schedule = "cosine"
    alpha: float = 100.0
    theta_ff: float = 0.25
    theta_bp: float | None = None   # None: equal to theta_ff (section 3: no explicit rescaling)
    gradient: GradientMode = "spike"
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    engine: Engine = "chips"
    chips: str | None = None        # --chips groups, e.g. "0-1,2-3,4,5"; None: one layer per chip
    chip: str | None = None         # a chip profile (cluster.mapping.PROFILES): map the network by capacity
    chip_neurons: int | None = None  # a chip of your own: its neurons (with chip_synapses)
    chip_synapses: int | None = None  # a chip of your own: its synapses (stored weights, copies included)
    chip_cores: int | None = None   # a profile's cores per chip, overridden (a smaller chip of that kind)
    replicas: int = 1
    placement: Placement = "pack"
    micro_batch: int | None = None  # chips: samples per micro-batch (None: launch.run.chips.default_micro_batch)
    wire: Wire = "counts"           # chips: spike counts per micro-batch, or "events" (address events)
    transport: TransportName = "auto"  # chips: how messages travel (actors.transport): auto, ray or shm
    checkpoint_every: int | None = None  # also checkpoint every N batches (None: at epoch ends only)
    shift: int = 0                  # augmentation: each training image moved by up to ±shift pixels (0: none)
    flip: bool = False              # augmentation: each training image mirrored left-right with probability 1/2
    validation: int = 0             # hold out the last N training images; scored after every epoch
    backend: BackendName = "numpy"
    cuda_graph: bool = True         # CuPy: each full batch's step replayed as one CUDA graph (cluster.graph)
    dtype: DType = "float32"
    weight_frac_bits: int | None = None  # fixed-point weights on a 2⁻ᴷ grid, nearest rounding
    init_from: str | None = None    # the NIR file the initial weights came from (launch.tools.nir), or None
    out: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        _check(self)

    @functools.cached_property
    def topo(self) -> Topology:
        """The parsed topology: parsed once (by the checks of ``__post_init__``) and handed down."""
        return parse_topology(self.topology)

    def chip_spec(self) -> ChipSpec | None:
        """The chip capacity asked for (``--chip``, ``--chip-neurons``, ``--chip-synapses``), or None."""
        return resolve_spec(self.chip, self.chip_neurons, self.chip_synapses, self.chip_cores)

    def chip_layout(self) -> tuple[list[tuple[int, int]], Layout | None]:
        """The chips: (layer groups (first, last) per chip, the slices per chip when the capacity's
        mapping splits a layer, else None). From the capacity (cluster.mapping), or ``--chips``."""

        spec = self.chip_spec()
        if spec is None:
            return parse_chips(self.chips, len(self.topo.layers)), None
        mapping = map_network(self.topo, spec)
        groups = mapping.groups()
        if groups is not None:
            return groups, None
        if self.gradient != "spike":
            split = ", ".join(f"{l} ({self.topo.layers[l].token()})" for l in mapping.split_layers)
            raise SpikeGradError(f"on {spec.name} chips layers {split} are split across chips, and split layers "
                                 f"exchange spikes only: they need --gradient spike (the float baseline's errors "
                                 f"are not spikes); or choose a larger chip")
        plan = Plan.of(mapping)
        return [(c[0][0], c[-1][0]) for c in plan.layout], plan.layout

    @property
    def step(self) -> StepConfig:
        return StepConfig(theta_ff=self.theta_ff,
                          theta_bp=self.theta_ff if self.theta_bp is None else self.theta_bp,
                          alpha=self.alpha, gradient=self.gradient)

    @property
    def eta(self) -> float:
        """η, the factor of Σ E ⊗ S in ΔW = −η Σ E ⊗ S (section 2: rescaled by 1/α)."""
        return self.lr / self.step.error_scale

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


_TYPES: dict[Any, tuple[type, ...]] = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}


@functools.cache
def _field_rules() -> dict[str, tuple[tuple[type, ...], tuple[Any, ...] | None, bool, str]]:
    """Per field, from its resolved annotation: (Python types allowed, the Literal's values or None,
    whether None is allowed, the annotation in words)."""
    rules = {}
    for name, hint in get_type_hints(TrainConfig).items():
        parts = get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)
        kinds: tuple[type, ...] = ()
        values: tuple[Any, ...] | None = None
        words = " or ".join("null" if p is type(None) else getattr(p, "__name__", "a value") for p in parts)
        for part in parts:
            if get_origin(part) is Literal:
                values = get_args(part)
                kinds += tuple({type(v) for v in values})
            elif part is not type(None):
                kinds += _TYPES[part]
        rules[name] = (kinds, values, type(None) in parts, words)
    return rules


def _check_types(cfg: TrainConfig) -> None:
    """Every field has the type its annotation names (``int | None``, a ``Literal`` of the allowed
    values, and so on); booleans are not numbers here (``lr: true`` in an edited config.json is
    refused, not read as 1)."""
    for name, (kinds, values, nullable, words) in _field_rules().items():
        v = getattr(cfg, name)
        if v is None and nullable:
            continue
        if values is not None and (isinstance(v, bool) or v not in values or not isinstance(v, kinds)):
            raise SpikeGradError(f"{name} must be one of {', '.join(map(str, values))}, got {v!r}"[:300])
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            raise SpikeGradError(f"{name} must be {words}, got {type(v).__name__} {v!r}"[:300])


def _check_memory(cfg: TrainConfig, topo: Any) -> None:
    """Refuse a network that cannot fit in this machine's memory before anything is allocated:
    the whole network for one process, its largest layer for chips (each chip holds its layers)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    itemsize = 8 if cfg.dtype == "float64" else 4
    per_layer = [topo.layer_bytes(l, cfg.batch_size, itemsize) for l in range(len(topo.layers))]
    need, what = ((max(per_layer), "its largest layer") if cfg.engine == "chips" else (sum(per_layer), "it"))
    if need > ram:
        raise SpikeGradError(f"topology {topo.text[:80]!r} at batch {cfg.batch_size} needs at least "
                             f"{need / 2 ** 30:.1f} GiB for {what} (weights, velocities, activations), more than "
                             f"this machine's {ram / 2 ** 30:.1f} GiB; use a smaller network or batch")


def check_machine(cfg: TrainConfig) -> None:
    """What a configuration asks of the machine and of the chips, checked when a run starts (train,
    resume, eval, verify), never when a configuration is built or read: whether the network fits
    this machine's memory, and, on chips, whether its chips can be laid out (a capacity's mapping).
    A config.json is valid or not by itself; whether it can run here is decided here."""
    _check_memory(cfg, cfg.topo)
    if cfg.engine == "chips":
        cfg.chip_layout()


MAX_EPOCHS = 1_000_000  # more than any schedule needs; the cosine schedule spreads over all of them


def _check(cfg: TrainConfig) -> None:
    _check_types(cfg)  # enumerations included: their Literal annotations
    if cfg.dataset not in DATASETS:
        raise SpikeGradError(f"unknown dataset {cfg.dataset!r}; expected one of: {', '.join(DATASETS)}")
    for name in ("epochs", "batch_size", "replicas"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpikeGradError(f"{name} must be an integer >= 1, got {v!r}")
    if cfg.epochs > MAX_EPOCHS:  # a run that could not end (the 10^30 epochs trained for ever)
        got = f"{cfg.epochs:.3g}" if cfg.epochs >= 10 ** 15 else f"{cfg.epochs:,}"
        raise SpikeGradError(f"epochs must be at most {MAX_EPOCHS:,}, got {got}")
    for name in ("limit_train", "limit_test", "micro_batch", "checkpoint_every"):
        v = getattr(cfg, name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise SpikeGradError(f"{name} must be an integer >= 1, got {v!r}")
    for name in ("lr", "alpha", "theta_ff"):
        v = getattr(cfg, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise SpikeGradError(f"{name} must be a finite number > 0, got {v!r}")
    for name in ("shift", "validation"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise SpikeGradError(f"{name} must be an integer >= 0, got {v!r}")
    for name in ("flip", "cuda_graph"):
        if not isinstance(getattr(cfg, name), bool):
            raise SpikeGradError(f"{name} must be true or false, got {getattr(cfg, name)!r}")
    if cfg.limit_train is not None and cfg.validation >= cfg.limit_train:
        raise SpikeGradError(f"validation ({cfg.validation}) must be smaller than limit_train ({cfg.limit_train}): "
                             "no training images would be left")
    if cfg.theta_bp is not None and (not math.isfinite(cfg.theta_bp) or cfg.theta_bp <= 0):
        raise SpikeGradError(f"theta_bp must be a finite number > 0, got {cfg.theta_bp!r}")
    if cfg.weight_frac_bits is not None and (not isinstance(cfg.weight_frac_bits, int)
                                             or not 1 <= cfg.weight_frac_bits <= 30):
        raise SpikeGradError(f"weight_frac_bits must be an integer in 1..30, got {cfg.weight_frac_bits!r}")
    if not 0 <= cfg.seed < 2 ** 63:
        raise SpikeGradError(f"seed must be an integer in 0..2^63-1, got {cfg.seed!r}")
    if not (0 <= cfg.momentum < 1):
        raise SpikeGradError(f"momentum must lie in [0, 1), got {cfg.momentum!r}")
    _ = cfg.topo  # parsed here, once; raises with the offending token
    if cfg.wire == "events" and (cfg.engine != "chips" or cfg.gradient != "spike"):
        raise SpikeGradError(f"--wire events needs --engine chips and --gradient spike, got engine {cfg.engine}, "
                             f"gradient {cfg.gradient}")
    spec = cfg.chip_spec()  # checks the figures
    if spec is not None and not spec.capacity.learns:
        why = spec.capacity.sources.get("learns", "assumed")
        raise SpikeGradError(f"{spec.name} cannot learn on chip [{why}]: training needs a profile that learns "
                             f"({', '.join(n for n, p in PROFILES.items() if p.capacity.learns)}) or a chip of your "
                             f"own (--chip-neurons, --chip-synapses); `spikegrad map --chip {cfg.chip} "
                             f"--compartments 1` maps a trained network onto it for inference")
    if spec is not None:
        if cfg.engine != "chips":
            raise SpikeGradError(f"a chip capacity (--chip, --chip-neurons, --chip-synapses) needs --engine chips, "
                                 f"got engine {cfg.engine}")
        if cfg.chips:
            raise SpikeGradError("give either --chips groups or a chip capacity (--chip ...), not both")
    if cfg.engine == "chips":
        if cfg.replicas > cfg.batch_size:
            raise SpikeGradError(f"replicas ({cfg.replicas}) cannot exceed the batch size ({cfg.batch_size})")


def make_config(dataset: str = "digits", **overrides: Any) -> TrainConfig:
    """The dataset's measured defaults, then ``overrides`` (None values are ignored)."""
    if dataset not in DATASETS:
        raise SpikeGradError(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASETS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpikeGradError(f"unknown config keys {unknown}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = dict(DATASET_DEFAULTS[dataset], dataset=dataset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def check_address(address: str) -> str:
    """A Ray address as ``ray.init`` takes it: ``auto``, ``host:port`` or ``ray://host:port``
    (port 1-65535, no spaces); anything else is refused before Ray is asked."""
    rest = address[len("ray://"):] if address.startswith("ray://") else address
    host, _, port = rest.rpartition(":")
    ok = address == "auto" or (host and not any(c.isspace() for c in host) and port.isascii()
                               and port.isdigit() and 1 <= int(port) <= 65535)
    if not ok:
        raise SpikeGradError(f"address expected 'auto', 'HOST:PORT' or 'ray://HOST:PORT' (port 1-65535), "
                             f"got {address[:100]!r}")
    return address


def config_from_json(text: str | bytes) -> TrainConfig:
    """Rebuild a saved config; invalid UTF-8 or JSON, unknown or repeated keys or wrong types are errors."""
    def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in pairs:
            if k in seen:  # json would keep the last silently: an edit that says two things
                raise SpikeGradError(f"config.json gives the key {k[:60]!r} twice")
            seen[k] = v
        return seen

    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        data = json.loads(text, object_pairs_hook=unique)
    except UnicodeDecodeError as exc:
        raise SpikeGradError(f"config.json is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise SpikeGradError(f"config.json is not valid JSON ({exc})") from None
    except RecursionError:
        raise SpikeGradError("config.json is nested too deeply to be a saved configuration") from None
    if not isinstance(data, dict):
        raise SpikeGradError(f"config.json must hold an object, got {type(data).__name__}")
    data, _ = formats.config_data(data)  # older formats migrated, a newer one refused
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpikeGradError(f"config.json has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return TrainConfig(**data)


__all__ = ["TrainConfig", "make_config", "config_from_json", "check_machine", "check_address", "DATASET_DEFAULTS",
           "PRESETS", "ENGINES", "DTYPES", "SCHEDULES", "BACKENDS", "WIRES", "TRANSPORTS", "PLACEMENTS",
           "GRADIENT_MODES"]
