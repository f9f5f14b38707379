"""Files written whole or not at all, and .npz files read without pickle: the leaf every room of
``launch`` uses for its files (run directories, conformance answers, the decoded-image cache). It
imports nothing of the project but :mod:`cluster.errors`."""

from __future__ import annotations

import math
import os
import secrets
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError


def write_atomic(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` whole or not at all: ``write(f)`` fills a new temporary file beside it
    (created exclusively under a random name, so never a file or symlink someone planted; the
    usual umask applies), which is then renamed over ``path``. The one atomic writer of the
    project (run directories, conformance answers, the decoded-image cache)."""
    tmp = str(path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp"))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_NPZ_KINDS = "biufU"  # bool, integers, floats, and text (the progress record, a case's topology)


def read_npz(path: Path, what: str = "checkpoint") -> dict[str, np.ndarray]:
    """An .npz file's arrays, read without pickle (checkpoints, conformance cases). Every member's
    header is checked against the bytes the member holds before anything is allocated (a header
    may claim any shape, a compressed member may inflate to far more than its array); only numbers,
    booleans and text are accepted."""

    fmt = np.lib.format
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    raise SpikeGradError(f"{what} {path}: expected only .npy members, got {info.filename!r}")
                with zf.open(info) as f:
                    version = fmt.read_magic(f)
                    shape, _, dtype = (fmt.read_array_header_1_0 if version == (1, 0) else
                                       fmt.read_array_header_2_0)(f)
                    need = math.prod(shape) * dtype.itemsize
                    if dtype.hasobject or dtype.kind not in _NPZ_KINDS:
                        raise SpikeGradError(f"{what} {path}: {info.filename} expected numbers, got dtype {dtype}")
                    size = f.tell() + need  # the header, then exactly the array's bytes
                    if size > info.file_size:
                        raise SpikeGradError(f"{what} {path}: {info.filename} claims shape {shape} "
                                             f"({need} bytes) but holds {info.file_size} bytes")
                    if info.file_size > size:  # a compressed member far larger than its array
                        raise SpikeGradError(f"{what} {path}: {info.filename} holds {info.file_size:,} bytes, "
                                             f"its header claims {size:,} (shape {shape})")
                with zf.open(info) as f:  # read again from the start: read_array wants the header
                    arrays[info.filename[:-4]] = fmt.read_array(f, allow_pickle=False)
    except SpikeGradError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, MemoryError) as exc:
        raise SpikeGradError(f"{what} {path} is unreadable ({type(exc).__name__}: {exc})") from None
    return arrays
