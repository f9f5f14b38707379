"""The array backend: NumPy on a CPU or CuPy on a GPU, chosen once.

The math in :mod:`cluster` is written once over an array module ``xp``. A
:class:`Backend` is picked by name at start-up and never swapped silently;
asking for CuPy where CUDA is missing is an error that names the fix.
Host-device copies happen in :func:`to_device` and :func:`to_host` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal, get_args

import numpy as np

from .errors import SpikeGradError

BackendName = Literal["numpy", "cupy"]


@dataclass(frozen=True)
class Backend:
    name: BackendName
    xp: ModuleType

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on NumPy); call before reading a clock."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()


def cupy_available() -> tuple[bool, str]:
    """(True, device name) if CuPy imports and sees a CUDA device, else (False, reason)."""
    try:
        import cupy  # noqa: PLC0415  (optional dependency)
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc})"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"CuPy found no CUDA device ({type(exc).__name__}: {exc})"
    if n < 1:
        return False, "CuPy found no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return True, name


BACKENDS: tuple[str, ...] = get_args(BackendName)


def get_backend(name: str = "numpy") -> Backend:
    """Return the backend called ``name`` (``numpy`` or ``cupy``)."""
    if name == "numpy":
        return Backend("numpy", np)
    if name == "cupy":
        ok, why = cupy_available()
        if not ok:
            raise SpikeGradError(
                f"backend 'cupy' asked for, but {why}; install the GPU extra "
                "(pip install 'spikegrad-cluster[gpu]') on a machine with CUDA, or use --backend numpy"
            )
        import cupy  # noqa: PLC0415  (CuPy: only on a GPU)

        return Backend("cupy", cupy)
    raise SpikeGradError(f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)}")


def to_device(backend: Backend, array: Any, dtype: Any = None) -> Any:
    """Host (NumPy) array -> backend array; the only host-to-device copy."""
    if backend.is_gpu:
        return backend.xp.asarray(array, dtype=dtype)
    return np.asarray(array, dtype=dtype)


def to_host(array: Any) -> np.ndarray:
    """Backend array -> NumPy array; the only device-to-host copy (synchronises)."""
    if isinstance(array, np.ndarray):
        return array
    return array.get()
