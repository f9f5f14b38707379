"""The engine protocol: how the driver (:mod:`launch.run.driver`) has training steps run.

Two implementations: :class:`launch.run.local.LocalEngine` (this process and forked worker
processes sharing memory for the micro-batches, or CuPy with CUDA graphs) and
:class:`launch.run.chips.ChipEngine` (a Ray cluster of chip actors); :mod:`launch.run.factory`
builds the one a configuration names. The driver owns everything else (epochs, shuffling, the learning-rate schedule,
progress, checkpoints, resume, recovery, metrics) and never asks which engine it has.

A step's results may come back later than it was submitted (the chips keep batches in flight):
:meth:`Engine.collect` returns what has finished, and ``wait=True`` finishes everything first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from actors.chip import ChipFailure, merge_reports
from cluster.synops import COUNTERS

from .formats import banked_counters

__all__ = ["Engine", "Counters", "ChipFailure", "HostState"]

HostState = dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
"""{trainable layer l: (W, b, vW, vb)} host arrays: weights, biases and their velocities."""


@dataclass
class Counters:
    """What the steps since the last :meth:`Engine.counters` call did.

    layers: (L+1, len(COUNTERS)) synaptic-operation counts per layer (:mod:`cluster.synops`).
    chips: one report per chip (:meth:`actors.chip.Chip.report`, summed over replicas); empty for
    an engine without chips.
    """

    layers: np.ndarray
    chips: list[dict] = field(default_factory=list)

    @classmethod
    def zeros(cls, n_layers: int) -> Counters:
        return cls(np.zeros((n_layers, len(COUNTERS))))

    @classmethod
    def from_reports(cls, reports: list[dict], n_layers: int) -> Counters:
        """Layer counts taken from chip reports (each chip reports the rows of its layers)."""
        counts = np.zeros((n_layers, len(COUNTERS)))
        for rep in reports:
            for l, row in rep["synops"].items():
                counts[int(l)] += [row[k] for k in COUNTERS]  # a split layer: rows of several chips
        return cls(counts, reports)

    def __add__(self, other: Counters) -> Counters:
        """Successive parts of an epoch, summed (chip timing and traffic too)."""
        return Counters(self.layers + other.layers, merge_reports(self.chips + other.chips, over_time=True))

    def to_json(self) -> dict:
        return {"layers": self.layers.tolist(), "chips": self.chips}

    @classmethod
    def from_json(cls, data: Any, n_layers: int) -> Counters:
        """Banked counters from a checkpoint's progress record, of any format
        (:func:`launch.run.formats.banked_counters`)."""
        return cls(*banked_counters(data, n_layers))


class Engine(Protocol):
    """Runs training steps and evaluation on weights it holds (see the module docstring).

    Failures an engine can recover from raise :class:`ChipFailure`; the driver then calls
    :meth:`restart` and :meth:`restore` with the last checkpoint's state and replays.
    """

    backend_name: str

    def describe(self) -> str:
        """One line for the run log: where the steps run."""

    def submit(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> None:
        """Queue one training step (Algorithm 3): x (B, C, H, W) host float, y (B,) host int,
        the learning rate times ``lr_scale``."""

    def collect(self, wait: bool = False) -> tuple[float, int, int]:
        """(loss sum, correct, samples) of the steps finished since the last call; with ``wait``
        every submitted step is finished first."""

    def predict(self, x: np.ndarray) -> np.ndarray:
        """argmax Vᴸ (B,) host int for x (B, C, H, W); finishes submitted steps first."""

    def counters(self) -> Counters:
        """The counters since the last call (then reset); finishes submitted steps first."""

    def state(self) -> HostState:
        """Weights and velocities, host arrays; finishes submitted steps first."""

    def restore(self, state: HostState) -> None:
        """Replace weights and velocities (steps not yet applied are dropped)."""

    def restart(self) -> None:
        """After a :class:`ChipFailure`: start afresh (the driver restores a checkpoint next)."""

    def note(self) -> str | None:
        """A warning for the run log, once (e.g. why a CUDA graph was given up), or None."""

    def memory(self) -> dict[str, float]:
        """Memory beyond the driver process's own, MiB (chips, object store); may be empty."""

    def calls(self) -> int:
        """Actor calls the driver has made since the engine started (restarts included; 0 without chips)."""

    def close(self) -> None:
        """Release threads, actors, a private Ray instance."""
