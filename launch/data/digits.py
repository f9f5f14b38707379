"""scikit-learn's bundled 8x8 digits (no download): x = value / 16, shape (N, 1, 8, 8).

Split: ``np.random.default_rng(0).permutation(1797)``; the first 1437 indices are the training
set, the remaining 360 the test set (the same split on every call and machine).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import DataError, Dataset

NAME = "digits"
# Training defaults (keys are TrainConfig fields): a quick laptop demo (README).
DEFAULTS: dict[str, Any] = dict(topology="digits", epochs=10, batch_size=32, lr=1e-4, momentum=0.9,
                                alpha=100.0, theta_ff=0.25)


def load(data_dir: Any = None, download: bool = False, progress: bool = True) -> Dataset:
    """The digits; ``data_dir`` and ``download`` are not used (they ship with scikit-learn)."""
    from sklearn.datasets import load_digits  # noqa: PLC0415  (importing scikit-learn takes about a second)

    bunch = load_digits()
    values, labels = np.asarray(bunch.data), np.asarray(bunch.target, dtype=np.int64)
    if values.shape != (1797, 64) or values.min() < 0 or values.max() > 16:
        raise DataError(f"scikit-learn load_digits: expected (1797, 64) values in 0..16, "
                        f"got shape {values.shape} range {values.min()}..{values.max()}")
    x = (values / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(x))  # fixed seed: same split everywhere
    tr, te = order[:1437], order[1437:]
    return Dataset("digits", x[tr], labels[tr], x[te], labels[te], tuple(str(i) for i in range(10)),
                   "scikit-learn load_digits (bundled; split rng seed 0: 1437 train / 360 test)")


def download(data_dir: Any = None, progress: bool = True) -> None:
    """Nothing to fetch: the digits ship with scikit-learn."""
