"""How a chip's messages reach the chip that takes them: the transport of :mod:`actors.chip`.

A chip hands every message it sends to its transport (``send(buffer, dst) -> what its call
returns``) and every message it receives back through it (``take(what it got) -> buffer``), so
the wire (:mod:`actors.wire`) and the counters never see the difference. Two transports:

* :class:`Transport` (``ray``, everywhere): the Arrow buffer itself is the call's result. Ray
  keeps results above its 100 KiB inline limit in the object store of the sender's node, and the
  taker's node reads them from there.
* :class:`SharedMemory` (``shm``, chips on one node): the sender writes the message into a file
  of its own in ``/dev/shm`` (mode 0600) and its call returns only a :class:`Parcel` (the file's
  name, size and node); the taker reads the file and removes it. Ray still places the chips,
  orders their calls (a taker's call starts after the sender's call that wrote the file has
  returned: the parcel is one of its arguments), reports their failures and restarts them; only
  the bytes go around it. Measured on the project's 2-core machine, moving 685 KB messages through
  Ray cost 4-6 ms of the machine's CPU each (``spikegrad bench chips --profile``: Ray alone with
  messages of the measured size and with 200-byte ones, docs/measurements/bench-chips-2026-12-08.md).
  Messages to chips on other nodes still travel through Ray.

No listener is opened: the files are the chips' user's own (0600), in the node's memory. A parcel
is input like any message: its name must be one this pipeline's senders make (a fixed pattern in
``/dev/shm``, no other path, never a link), its file must exist and hold exactly the size it
names, and a parcel from another node is refused; each as one :class:`TransportError`.

Files live between a sender's call and the taker's. A chip killed in between leaves the files it
wrote and those written to it: the pipeline removes its own files when it closes or restarts
(:func:`remove_parcels`, on the driver's node, and :meth:`SharedMemory.close` on each live chip).
A driver killed outright (Ray ends a driver from C++ when its cluster loses the GCS) leaves the
messages then in flight, and chips that outlive it may go on with the calls they hold:

- the process that watches such a driver (:mod:`launch.run.supervise`) removes the files of the
  pipelines its run told it of, once the driver is gone;
- a chip on the driver's node checks, after writing each file, that the driver still runs, and
  removes the file itself when it does not. Between the two nothing is left: a file written while
  the driver still ran is there for the watcher to remove;
- elsewhere (a driver on another node, a machine that lost power), every file name holds its
  writer's process id, and every new pipeline (on the driver's node) and every chip that starts
  sharing memory (on its node) first removes the files whose writer is gone
  (:func:`remove_stale_parcels`).
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

import pyarrow as pa

from cluster.errors import SpikeGradError

SHM_DIR = "/dev/shm"
PREFIX = "spikegrad-"
# auto: shm between chips on one node where its /dev/shm is writable, else ray; shm: that or an error
TransportName = Literal["auto", "ray", "shm"]
TRANSPORTS: tuple[str, ...] = get_args(TransportName)
_TAG_RE = re.compile(r"[0-9a-f]{8,32}")
MAX_PARCEL = 1 << 31  # bytes: far above any message the wire accepts (MAX_VALUES values)
_WRITER = r"r[0-9]{1,6}c[0-9]{1,6}-p([0-9]{1,10})-[0-9]{1,19}"  # after the stem: replica, chip, writer pid, n
_STALE = re.compile(re.escape(PREFIX) + r"[0-9a-f]{8,32}-" + _WRITER)


class TransportError(SpikeGradError):
    """A message handed to a chip could not be taken (a bad or missing parcel)."""


@dataclass(frozen=True)
class Parcel:
    """What a chip's call returns for a message it wrote to shared memory: where the bytes are."""

    name: str  # the file's name in SHM_DIR
    size: int  # its bytes
    node: str  # the Ray node id of the machine whose /dev/shm holds it


def shm_usable() -> bool:
    """Whether this machine has a writable /dev/shm (Linux): where :class:`SharedMemory` can run."""
    return os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK | os.X_OK)


def _stem(tag: str) -> str:
    if not isinstance(tag, str) or not _TAG_RE.fullmatch(tag):
        raise TransportError(f"transport: tag expected 8-32 lowercase hex digits, got {str(tag)[:40]!r}")
    return f"{PREFIX}{tag}-"


class Transport:
    """Ray's object store: a message travels as the buffer itself."""

    name = "ray"

    def send(self, buf: pa.Buffer, dst: int) -> Any:
        return buf

    def take(self, msg: Any) -> Any:
        if isinstance(msg, Parcel):
            raise TransportError(f"transport: a shared-memory parcel ({msg.name[:60]}) reached a chip that "
                                 f"takes messages through Ray")
        return msg

    def close(self) -> int:
        return 0


class SharedMemory(Transport):
    """Messages to the chips in ``local`` (chip indices of this chip's replica, on this node) as
    files in /dev/shm; to others through Ray. ``tag``: the pipeline's (hex); ``replica``, ``chip``:
    this chip's, so that every file name is unique and its writer known. ``owner``: the process id
    of the driver where it runs on this node (None elsewhere): a file written once it is gone is
    removed at once (module docstring)."""

    name = "shm"

    def __init__(self, tag: str, node: str, local: set[int] | frozenset[int], replica: int, chip: int,
                 owner: int | None = None) -> None:
        self.stem = _stem(tag)
        self.pattern = re.compile(re.escape(self.stem) + _WRITER)
        self.mine = f"{self.stem}r{int(replica)}c{int(chip)}-p{os.getpid()}-"
        self.node, self.local, self.sent = str(node), frozenset(int(c) for c in local), 0
        self.owner = None if owner is None else int(owner)

    def send(self, buf: pa.Buffer, dst: int) -> Any:
        if dst not in self.local:
            return buf
        name = f"{self.mine}{self.sent}"
        self.sent += 1
        path = os.path.join(SHM_DIR, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view, done = memoryview(buf), 0
            while done < len(view):
                done += os.write(fd, view[done:])
        except BaseException:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        if self.owner is not None and not process_alive(self.owner):  # checked after the write: no gap
            os.unlink(path)  # nobody will take it, and the driver's watcher may have swept already
            return buf
        return Parcel(name, buf.size, self.node)

    def take(self, msg: Any) -> Any:
        if not isinstance(msg, Parcel):
            return msg
        if not isinstance(msg.name, str) or not self.pattern.fullmatch(msg.name):
            raise TransportError(f"transport: parcel name expected one of this pipeline's "
                                 f"({self.stem}r<replica>c<chip>-p<pid>-<n>), got {str(msg.name)[:60]!r}")
        if msg.node != self.node:
            raise TransportError(f"transport: parcel expected from this node ({self.node[:12]}), got one from "
                                 f"node {str(msg.node)[:12]}")
        if isinstance(msg.size, bool) or not isinstance(msg.size, int) or not 0 <= msg.size <= MAX_PARCEL:
            raise TransportError(f"transport: parcel size expected 0..{MAX_PARCEL} bytes, got {msg.size!r}")
        path = os.path.join(SHM_DIR, msg.name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise TransportError(f"transport: parcel {msg.name} could not be opened ({e.strerror}): its sender "
                                 f"or an earlier taker is gone or took it") from None
        try:
            os.unlink(path)  # taken once; the open descriptor still reads it
            size = os.fstat(fd).st_size
            if size != msg.size:
                raise TransportError(f"transport: parcel {msg.name} expected {msg.size} bytes, holds {size}")
            data = bytearray(size)
            view, done = memoryview(data), 0
            while done < size:
                n = os.readv(fd, [view[done:]])
                if n <= 0:
                    raise TransportError(f"transport: parcel {msg.name} ended after {done} of {size} bytes")
                done += n
        finally:
            os.close(fd)
        return pa.py_buffer(data)

    def close(self) -> int:
        """Remove the files this chip wrote that nobody took; how many there were."""
        return remove_parcels(self.mine)


def remove_parcels(prefix: str) -> int:
    """Remove this node's files in /dev/shm whose names start with ``prefix`` (a pipeline's
    ``spikegrad-<tag>-``, or one chip's part of it); how many were removed. Only names of the
    pattern this module makes are touched."""
    if not prefix.startswith(PREFIX) or "/" in prefix or not _TAG_RE.fullmatch(prefix[len(PREFIX):].split("-")[0]):
        raise TransportError(f"transport: refusing to remove files of prefix {prefix[:60]!r}")
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, glob.escape(prefix) + "*")):
        try:
            if not os.path.islink(path) and os.path.isfile(path):
                os.unlink(path)
                n += 1
        except FileNotFoundError:  # taken meanwhile
            pass
    return n


def drop_pipelines(prefixes: list[str]) -> None:
    """Remove this node's files of these pipelines (:func:`remove_parcels`), for the processes that
    clean up after a driver Ray ended: a prefix that is not one a pipeline makes, or a file system
    gone, is passed over (the line they print matters more)."""
    if not shm_usable():
        return
    for prefix in dict.fromkeys(prefixes):
        try:
            remove_parcels(prefix)
        except (TransportError, OSError):
            pass


def remove_stale_parcels() -> int:
    """Remove this node's parcels (of any pipeline) whose writer process is gone; how many. A file
    whose writer's id now belongs to another process stays (never a live writer's file)."""
    if not shm_usable():
        return 0
    n = 0
    for path in glob.glob(os.path.join(SHM_DIR, PREFIX + "*")):
        m = _STALE.fullmatch(os.path.basename(path))
        if m is None or os.path.islink(path) or process_alive(int(m.group(1))):
            continue
        try:
            os.unlink(path)
            n += 1
        except FileNotFoundError:
            pass
    return n


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine: Linux /proc (a zombie, ended but not yet
    reaped, counts as gone), else a signal 0."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def pipeline_prefix(tag: str) -> str:
    """The prefix of every file a pipeline of this ``tag`` writes (:func:`remove_parcels`)."""
    return _stem(tag)
