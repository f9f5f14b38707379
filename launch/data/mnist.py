"""MNIST from its IDX files (gzip or plain): x = pixel / 256, shape (N, 1, 28, 28).

The divisor is a power of two, so every x and every sum of them is exact in binary floating
point; max x = 255/256 < 1. Every file is checked against the original's digest.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    MAX_IDX_BYTES,
    DataError,
    Dataset,
    _check_digest,
    _fetch_any,
    _gunzip_if_gzip,
    _read_bytes,
    require_dir,
)

NAME = "mnist"
# Training defaults (keys are TrainConfig fields), measured (README, "Choosing Θff and the optimizer").
DEFAULTS: dict[str, Any] = dict(topology="mnist", epochs=5, batch_size=64, lr=6e-5, momentum=0.9,
                                alpha=100.0, theta_ff=0.25)

# Mirrors in the order torchvision tries them; each serves "<base><name>.gz".
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# name -> (MD5 of the original .gz file, SHA-256 of the uncompressed IDX payload)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
_IDX_MAGIC = {0x0801: 1, 0x0803: 3}  # unsigned-byte labels (1 dim) / images (3 dims)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: expected an IDX header of at least 4 bytes, got {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(f"{path}: expected IDX magic 0x00000801 (uint8 labels) or 0x00000803 "
                        f"(uint8 images), got 0x{magic:08x}")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX header, got {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python integers: a header's product cannot wrap
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: dims {dims} need {expected} payload bytes, got {got} bytes")
    # copy(): frombuffer over bytes is read-only; callers get an ordinary writable array.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or plain): uint8 array shaped (N,) for labels or (N, H, W) for images."""
    path = Path(path)
    return _parse_idx(_gunzip_if_gzip(_read_bytes(path, MAX_IDX_BYTES), path), path)


def _mnist_path(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):  # .gz first: it is the original file
        if candidate.is_file():
            return candidate
    return None


def _read_mnist_file(path: Path, name: str) -> np.ndarray:
    raw = _read_bytes(path, MAX_IDX_BYTES)
    data = _gunzip_if_gzip(raw, path)
    array = _parse_idx(data, path)  # structure first: "truncated" says more than a digest
    md5, sha256 = MNIST_FILES[name]
    if raw is data:
        _check_digest(path, "sha256", data, sha256)
    elif hashlib.md5(raw).hexdigest() != md5:
        # A re-compressed copy has another gzip header but may hold the very same payload.
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise DataError(f"{path}: checksum mismatch: expected MD5 {md5} (or uncompressed SHA-256 "
                            f"{sha256}), got MD5 {hashlib.md5(raw).hexdigest()} (SHA-256 {actual})")
    return array


def load(data_dir: Any, download: bool = False, progress: bool = True) -> Dataset:
    """MNIST from ``data_dir`` (required); ``download`` fetches the files that are missing."""
    root = require_dir(NAME, data_dir, create=download)
    missing = [n for n in MNIST_FILES if _mnist_path(root, n) is None]
    if missing and download:
        fetch_missing(root, progress=progress)
    elif missing:
        raise DataError(f"mnist: expected {', '.join(n + '[.gz]' for n in missing)} in {root}, "
                        f"got no such file; pass --download or copy them there")
    paths: dict[str, Path] = {}
    for n in MNIST_FILES:
        p = _mnist_path(root, n)
        if p is None:  # not after fetch_missing, which fetches every missing file or raises
            raise DataError(f"mnist: expected {n}[.gz] in {root}, got no such file")
        paths[n] = p
    arrays = {n: _read_mnist_file(p, n) for n, p in paths.items()}
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        img_path, lab_path = paths[f"{split}-images-idx3-ubyte"], paths[f"{split}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{img_path}: expected images shaped (N, 28, 28), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{lab_path}: expected {len(images)} labels (as many as images in "
                            f"{img_path.name}), got shape {labels.shape}")
        # pixel / 256 in float32 is exact (dyadic); it keeps x strictly below 1.
        parts[split] = (images[:, None].astype(np.float32) * np.float32(1 / 256), labels.astype(np.int64))
    kinds = sorted({"gzip" if p.suffix == ".gz" else "plain" for p in paths.values()})
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["t10k"]
    return Dataset("mnist", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
                   classes=tuple(str(i) for i in range(10)), source=f"{root} (IDX, {'+'.join(kinds)})")


def download(data_dir: Any, progress: bool = True) -> None:
    """Download the MNIST files ``data_dir`` lacks."""
    fetch_missing(require_dir(NAME, data_dir, create=True), progress)


def fetch_missing(root: Path, progress: bool = True) -> None:
    expected = ", ".join(f"{n}.gz" for n in MNIST_FILES)
    for n, (md5, _) in MNIST_FILES.items():
        if _mnist_path(root, n) is None:
            _fetch_any([base + n + ".gz" for base in MNIST_MIRRORS], root / f"{n}.gz", md5, progress, expected)
