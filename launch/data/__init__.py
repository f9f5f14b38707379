"""Datasets for SpikeGrad, as a registry: one module each (:mod:`~launch.data.digits`,
:mod:`~launch.data.mnist`, :mod:`~launch.data.cifar10`), holding its name, its training defaults,
its loader and its download. An unknown name is refused; it never falls through to a loader.

Every loader returns a :class:`Dataset` of float32 images shaped (N, C, H, W) and int64 labels.
Files are read only from the data directory, which is never written (a download aside); every bad
input raises :class:`DataError` naming the file, what was expected and what came. Pickle is
never used. A new dataset is one module here and one line in :data:`REGISTRY`.
"""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any

from . import cifar10, digits, mnist
from .base import DataError, Dataset, augment, shift_images

REGISTRY: dict[str, ModuleType] = {m.NAME: m for m in (digits, mnist, cifar10)}
DATASETS: tuple[str, ...] = tuple(REGISTRY)
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {name: m.DEFAULTS for name, m in REGISTRY.items()}


def dataset_module(name: str) -> ModuleType:
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise DataError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    return REGISTRY[key]


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 download: bool = False, progress: bool = True) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) from ``data_dir`` (each module's docstring gives its
    scaling). ``download=True`` fetches only the files that are missing (``progress`` shows a
    tqdm bar). ``digits`` ignores ``data_dir``; ``mnist`` and ``cifar10`` require it."""
    return dataset_module(name).load(data_dir, download=download, progress=progress)


def download_dataset(name: str, data_dir: Any, *, progress: bool = True) -> None:
    """Download the files of ``name`` that ``data_dir`` lacks (digits needs none)."""
    dataset_module(name).download(data_dir, progress=progress)


__all__ = ["REGISTRY", "DATASETS", "DATASET_DEFAULTS", "Dataset", "DataError", "augment", "shift_images",
           "load_dataset", "download_dataset", "dataset_module"]
