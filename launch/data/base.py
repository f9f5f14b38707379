"""What every dataset shares: the :class:`Dataset` record, :class:`DataError`, bounded file
reads, checksums, downloads and the training augmentation."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cluster.errors import SpikeGradError

_TIMEOUT_S = 30
# The largest file each reader accepts (the size is checked before a byte is read or inflated):
# 128 MiB for IDX (MNIST's largest file holds 47 MB); CIFAR-10's bound is in launch.data.cifar10.
MAX_IDX_BYTES = 128 << 20


class DataError(SpikeGradError):
    """A data file or data directory is missing, damaged or not what was expected."""


@dataclass(frozen=True)
class Dataset:
    """Train/test split: x_* float32 (N, C, H, W), y_* int64 (N,), class names, and the source."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def shift_images(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each image of x (B, C, H, W) moved by its whole-pixel shift (dy, dx) of shifts (B, 2):
    out[..., i, j] = x[..., i - dy, j - dx], zero where that falls outside the image.

    The training augmentation of ``--shift`` (a new copy; x is not changed). Zero is the
    background of MNIST (pixel / 256) and the mean grey of CIFAR-10 ((pixel - 128) / 128).
    """
    shifts = np.asarray(shifts)
    if shifts.shape != (len(x), 2):
        raise SpikeGradError(f"shift_images: expected shifts shaped ({len(x)}, 2), got {shifts.shape}")
    H, W = x.shape[2:]
    out = np.zeros_like(x)
    pairs, which = np.unique(shifts, axis=0, return_inverse=True)
    for k, (dy, dx) in enumerate(pairs.tolist()):
        if abs(dy) >= H or abs(dx) >= W:
            continue  # moved out entirely: all zero
        rows = np.flatnonzero(which.reshape(-1) == k)
        out[rows, :, max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)] = \
            x[rows, :, max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    return out


def augment(x: np.ndarray, shifts: np.ndarray | None, flips: np.ndarray | None) -> np.ndarray:
    """The training augmentation of one batch: each image moved by its shift (``--shift``; with
    zero fill this is the usual pad-and-random-crop), then mirrored left-right where its flip is
    set (``--flip``). x is not changed; with neither, x itself is returned."""
    out = x if shifts is None else shift_images(x, shifts)
    if flips is not None and flips.any():
        out = out.copy() if out is x else out
        out[flips] = out[flips][..., ::-1]
    return out


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    try:
        if limit is not None and (size := path.stat().st_size) > limit:
            raise DataError(f"{path}: expected at most {limit} bytes, got a {size}-byte file")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: expected a readable file, got {exc.strerror or exc}") from None


def _gunzip_if_gzip(raw: bytes, path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """Decompress when the gzip magic 1f 8b leads, whatever the file is called; at most ``limit``
    bytes come out (a gzip bomb is refused after ``limit``, not after filling the memory)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    out, total, rest = [], 0, raw
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member at a time
            chunk = d.decompress(rest, 1 << 20)
            while True:
                out.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DataError(f"{path}: expected at most {limit} bytes once decompressed, got more")
                if d.eof or (not chunk and not d.unconsumed_tail):
                    break
                chunk = d.decompress(d.unconsumed_tail, 1 << 20)
            if not d.eof:
                raise EOFError("the stream ends before its end marker")
            rest = d.unused_data
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: expected a complete gzip stream, got a damaged one ({exc})") from None
    return b"".join(out)


def _check_digest(path: Path, algo: str, data: bytes, expected: str) -> None:
    actual = hashlib.new(algo, data).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: checksum mismatch: expected {algo.upper()} {expected}, got {actual}")


def require_dir(name: str, data_dir, *, create: bool) -> Path:
    if data_dir is None:
        raise DataError(f"{name}: expected --data-dir (the folder holding the {name} files), got none")
    root = Path(data_dir).expanduser()
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{root}: expected a data directory that can be created, got {exc}") from None
    if not root.is_dir():
        raise DataError(f"{name}: expected an existing data directory, got {root} "
                        f"({'a file' if root.exists() else 'no such directory'}); pass --download to create it")
    return root


def _fetch(url: str, target: Path, md5: str, progress: bool) -> None:
    """Download ``url`` to ``target``: temp file in the same folder, MD5 check, then atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: checksum mismatch: expected MD5 {md5}, got {digest.hexdigest()}")
        os.replace(tmp, target)  # same filesystem, so readers see the whole file or none of it
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_any(urls, target: Path, md5: str, progress: bool, expected: str) -> None:
    errors, offline = [], True
    for url in urls:
        try:
            return _fetch(url, target, md5, progress)
        except DataError as exc:  # wrong bytes from one mirror: another may serve the right ones
            errors.append(str(exc))
            offline = False
        except (urllib.error.URLError, OSError, ValueError) as exc:  # includes HTTPError, timeouts
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    hint = "the machine seems offline" if offline else "no mirror served the expected file"
    raise DataError(f"download of {target.name} failed ({'; '.join(errors)}): {hint}; "
                    f"expected files in {target.parent}: put {expected} there by hand")
