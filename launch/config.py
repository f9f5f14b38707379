"""Training configuration: one frozen dataclass, per-dataset defaults, strict checking.

The defaults per dataset were chosen by measurement (README, "Choosing Θff and the
optimizer"); a flag given on the command line always wins over them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from cluster.errors import SpikeGradError
from cluster.network import GRADIENT_MODES, StepConfig
from cluster.topology import PRESETS, parse_topology

ENGINES = ("chips", "local")
WIRES = ("counts", "events")
PLACEMENTS = ("pack", "spread")
BACKENDS = ("numpy", "cupy")
DTYPES = ("float32", "float64")
SCHEDULES = ("constant", "cosine")


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
    schedule: str = "cosine"
    alpha: float = 100.0
    theta_ff: float = 0.25
    theta_bp: float | None = None   # None: equal to theta_ff (section 3: no explicit rescaling)
    gradient: str = "spike"
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    engine: str = "chips"
    chips: str | None = None        # --chips groups, e.g. "0-1,2-3,4,5"; None: one layer per chip
    replicas: int = 1
    placement: str = "pack"
    micro_batch: int | None = None  # chips: samples per micro-batch (None: chip_trainer.default_micro_batch)
    wire: str = "counts"            # chips: spike counts per micro-batch, or "events" (address events)
    checkpoint_every: int | None = None  # also checkpoint every N batches (None: at epoch ends only)
    shift: int = 0                  # augmentation: each training image moved by up to ±shift pixels (0: none)
    flip: bool = False              # augmentation: each training image mirrored left-right with probability 1/2
    validation: int = 0             # hold out the last N training images; scored after every epoch
    backend: str = "numpy"
    cuda_graph: bool = True         # CuPy: each full batch's step replayed as one CUDA graph (cluster.graph)
    dtype: str = "float32"
    weight_frac_bits: int | None = None  # fixed-point weights on a 2⁻ᴷ grid, nearest rounding
    out: str | None = None
    download: bool = False

    def __post_init__(self) -> None:
        _check(self)

    @property
    def step(self) -> StepConfig:
        return StepConfig(theta_ff=self.theta_ff,
                          theta_bp=self.theta_ff if self.theta_bp is None else self.theta_bp,
                          alpha=self.alpha, gradient=self.gradient)  # type: ignore[arg-type]

    @property
    def eta(self) -> float:
        """η, the factor of Σ E ⊗ S in ΔW = −η Σ E ⊗ S (section 2: rescaled by 1/α)."""
        return self.lr / self.step.error_scale

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)


# Per-dataset defaults, measured (README). Keys are TrainConfig fields.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "digits": dict(topology="digits", epochs=10, batch_size=32, lr=1e-4, momentum=0.9,
                   alpha=100.0, theta_ff=0.25),
    "mnist": dict(topology="mnist", epochs=5, batch_size=64, lr=6e-5, momentum=0.9,
                  alpha=100.0, theta_ff=0.25),
    # Found on the channel-narrowed network on a validation split (docs/measurements/cifar10-recipe-*).
    "cifar10": dict(topology="cifar10", epochs=30, batch_size=64, lr=1e-5, momentum=0.9,
                    alpha=500.0, theta_ff=0.25, shift=4, flip=True),
}


def _check(cfg: TrainConfig) -> None:
    if cfg.dataset not in DATASET_DEFAULTS:
        raise SpikeGradError(f"unknown dataset {cfg.dataset!r}; expected one of: {', '.join(DATASET_DEFAULTS)}")
    for name, allowed in (("gradient", GRADIENT_MODES), ("engine", ENGINES), ("backend", BACKENDS),
                          ("dtype", DTYPES), ("schedule", SCHEDULES), ("placement", PLACEMENTS),
                          ("wire", WIRES)):
        if getattr(cfg, name) not in allowed:
            raise SpikeGradError(f"{name} must be one of {', '.join(allowed)}, got {getattr(cfg, name)!r}")
    for name in ("epochs", "batch_size", "replicas"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise SpikeGradError(f"{name} must be an integer >= 1, got {v!r}")
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
    if not (0 <= cfg.momentum < 1):
        raise SpikeGradError(f"momentum must lie in [0, 1), got {cfg.momentum!r}")
    topo = parse_topology(cfg.topology)  # raises with the offending token
    if cfg.wire == "events" and (cfg.engine != "chips" or cfg.gradient != "spike"):
        raise SpikeGradError(f"--wire events needs --engine chips and --gradient spike, got engine {cfg.engine}, "
                             f"gradient {cfg.gradient}")
    if cfg.engine == "chips":
        from actors.chip import parse_chips  # noqa: PLC0415

        parse_chips(cfg.chips, len(topo.layers))
        if cfg.replicas > cfg.batch_size:
            raise SpikeGradError(f"replicas ({cfg.replicas}) cannot exceed the batch size ({cfg.batch_size})")


def make_config(dataset: str = "digits", **overrides: Any) -> TrainConfig:
    """The dataset's measured defaults, then ``overrides`` (None values are ignored)."""
    if dataset not in DATASET_DEFAULTS:
        raise SpikeGradError(f"unknown dataset {dataset!r}; expected one of: {', '.join(DATASET_DEFAULTS)}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise SpikeGradError(f"unknown config keys {unknown}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = dict(DATASET_DEFAULTS[dataset], dataset=dataset)
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values)


def config_from_json(text: str) -> TrainConfig:
    """Rebuild a saved config; unknown keys or wrong types are errors."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SpikeGradError(f"config.json is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SpikeGradError(f"config.json must hold an object, got {type(data).__name__}")
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpikeGradError(f"config.json has unknown keys {unknown}; known: {', '.join(sorted(known))}")
    return TrainConfig(**data)


__all__ = ["TrainConfig", "make_config", "config_from_json", "DATASET_DEFAULTS", "PRESETS"]
