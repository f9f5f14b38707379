"""How a chip's wire messages reach the next chip: the transport under :mod:`actors.wire`.

The driver chains the chips' steps by Ray object references whatever the transport (Ray places,
schedules and restarts the chips, and orders their calls); what a reference holds differs:

==========  =======================================================================================
transport   what travels in the Ray call
==========  =======================================================================================
``ray``     the message itself: inline in the call below Ray's 100 KiB limit, through the node's
            object store above it (create, seal, pin, free: 4-5 ms of CPU per message on this
            machine, ``../shared/notes/ray.md``). Works across nodes: the fallback.
``shm``     chips on one node: a :class:`ShmMessage` of a few bytes (always inline). The sender
            writes the message to a file of its own in the pipeline's private directory in
            ``/dev/shm`` (mode 0700, made and removed by the driver); the receiver maps it, removes
            it and decodes from the mapping (no copy). Nothing listens on a port: only the user that
            runs the cluster can read or write the directory.
==========  =======================================================================================

The bytes a chip decodes are the same either way, so the counts are.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa

from cluster.errors import SpikeGradError

Transport = Literal["ray", "shm"]
TRANSPORTS: tuple[str, ...] = get_args(Transport)
SHM_ROOT = "/dev/shm"


@dataclass(frozen=True)
class ShmMessage:
    """A wire message left in a file of the pipeline's shared-memory directory: its name and size."""

    name: str
    size: int


def make_directory() -> str | None:
    """A private directory (mode 0700) for one pipeline's messages in /dev/shm; None where there is
    no /dev/shm (then the chips use Ray's own transport)."""
    if not os.path.isdir(SHM_ROOT):
        return None
    return tempfile.mkdtemp(prefix="spikegrad-", dir=SHM_ROOT)


def remove_directory(directory: str | None) -> None:
    """The directory and every message left in it (by a chip that died, or a step never run)."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)


class Link:
    """One chip's end of the transport: :meth:`send` what it encoded, :meth:`receive` what came.

    directory: the pipeline's shared-memory directory (``shm``), or None (``ray``).
    """

    def __init__(self, chip: int, directory: str | None = None) -> None:
        self.chip, self.directory = chip, directory
        self._names = itertools.count()

    @property
    def kind(self) -> Transport:
        return "shm" if self.directory else "ray"

    def send(self, buf: pa.Buffer) -> Any:
        """What the Ray call carries for the encoded message ``buf``."""
        if self.directory is None:
            return buf
        name = f"{self.chip}-{os.getpid()}-{next(self._names)}"  # replicas of a chip are processes of their own
        fd = os.open(os.path.join(self.directory, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(buf)
        return ShmMessage(name, buf.size)

    def receive(self, msg: Any) -> Any:
        """The message bytes (a pa.Buffer, mapped) of what a Ray call carried; anything but a
        :class:`ShmMessage` is passed on for :mod:`actors.wire` to check."""
        if not isinstance(msg, ShmMessage):
            return msg
        if self.directory is None:
            raise SpikeGradError(f"chip {self.chip}: a shared-memory message came, this chip uses Ray's transport")
        if os.sep in msg.name or msg.name in ("", ".", ".."):
            raise SpikeGradError(f"chip {self.chip}: shared-memory message name expected a file name, "
                                 f"got {msg.name[:60]!r}")
        path = os.path.join(self.directory, msg.name)
        try:
            buf = pa.memory_map(path).read_buffer()
        except OSError as exc:
            raise SpikeGradError(f"chip {self.chip}: shared-memory message {msg.name!r} expected in "
                                 f"{self.directory}, got {type(exc).__name__}: {exc}") from None
        os.unlink(path)  # the mapping stays valid until buf is gone
        if buf.size != msg.size:
            raise SpikeGradError(f"chip {self.chip}: shared-memory message {msg.name!r}: {msg.size} bytes "
                                 f"expected, got {buf.size}")
        return buf
