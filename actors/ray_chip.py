"""Chips as Ray actors: the plain :class:`~actors.chip.Chip`, one process each.

The only Ray-specific part of a chip is its process: BLAS is limited to one thread
(the pipeline, not BLAS, is the parallelism: several chips share the cores) and
glibc keeps freed temporaries (see :mod:`actors.allocator`). Every method of
:class:`~actors.chip.Chip` is callable remotely.
"""

from __future__ import annotations

import os
from typing import Any

import ray

from .allocator import keep_freed_memory
from .chip import Chip
from .slices import returns
from .transport import SharedMemory, remove_stale_parcels, shm_usable


class _InProcess:
    """First sets up the process a chip runs in; then the chip class's own constructor."""

    def __init__(self, *args, blas_threads: int = 1, **kwargs) -> None:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415  (threadpoolctl: in the forked workers only)

        threadpool_limits(limits=blas_threads, user_api="blas")
        keep_freed_memory()
        super().__init__(*args, **kwargs)

    def ping(self) -> dict:
        """Where this chip runs: index, backend, node, process id, actor id."""

        import ray as _ray  # noqa: PLC0415  (Ray: loaded only where chips run)

        ctx = _ray.get_runtime_context()
        chip: Any = self
        return {"chip": chip.index, "backend": chip.backend.name, "node": ctx.get_node_id(), "pid": os.getpid(),
                "actor": ctx.get_actor_id()}

    def use_shared_memory(self, tag: str, local: list[int], replica: int, required: bool,
                          driver: tuple[str, int] | None = None) -> str:
        """Send messages to the chips ``local`` (of this chip's replica, on this node, as the driver
        found them) through /dev/shm (:class:`actors.transport.SharedMemory`); the name of the
        transport now in use: ``ray`` where this node has no writable /dev/shm (an error if
        ``required``). ``driver``: its (node id, process id); on this node, files written once it
        is gone are removed at once."""
        import ray as _ray  # noqa: PLC0415  (Ray: loaded only where chips run)

        chip: Any = self
        if not shm_usable():
            if required:
                raise RuntimeError(f"chip {chip.index}: --transport shm, but this node has no writable /dev/shm")
            return chip.transport.name
        remove_stale_parcels()  # files of runs whose chips are gone, on this node
        node = _ray.get_runtime_context().get_node_id()
        owner = driver[1] if driver is not None and driver[0] == node else None
        chip.transport = SharedMemory(tag, node, set(local), replica, chip.index, owner=owner)
        return chip.transport.name

    def drop_parcels(self) -> int:
        """Remove the files this chip wrote to shared memory that nobody took; how many."""
        chip: Any = self
        return chip.transport.close()

    def echo(self, n: int, size: int, top: bool, *msgs: Any) -> Any:
        """No work: ``n`` messages of ``size`` bytes (and [0.0, 0] where the step's output layer
        answers [loss, correct]), for :meth:`actors.pipeline.ChipPipeline.time_empty_calls`, which
        times Ray's share of the chips' calls on the chips' own actors."""
        import pyarrow as pa  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)

        out: list[Any] = [pa.py_buffer(bytes(size)) for _ in range(n)] + ([[0.0, 0]] if top else [])
        return returns(out)


class ChipProcess(_InProcess, Chip):
    """A :class:`Chip` in a process of its own."""


ChipActor = ray.remote(ChipProcess)
