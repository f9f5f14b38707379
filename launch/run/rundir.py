"""A run directory: the one place that knows its file names and formats.

=====================  ==========================================================================
file                   what it holds
=====================  ==========================================================================
``config.json``        the resolved :class:`~launch.run.config.TrainConfig`
``metrics.parquet``    one row per epoch (accuracies, loss, images/s, spikes per neuron, ...)
``layers.parquet``     one row per epoch and layer (synaptic operations, spikes, errors)
``traffic.parquet``    chips only: one row per epoch and link (messages, bytes, spikes)
``chips.parquet``      chips only: one row per epoch and chip (operations, timing, event checks)
``checkpoint.npz``     weights, velocities and the driver's position (read without pickle)
``summary.json``       the final metrics
``.lock``              one writer at a time (the owner's PID; on a remote run also a lease object,
                       :meth:`RemoteRun.claim`)
=====================  ==========================================================================

Every file is written whole or not at all (:func:`write_atomic`). A run directory may live on a
pyarrow filesystem (``--out s3://bucket/run``): it is then staged locally and pushed after each
write (:class:`RemoteRun`). Train, resume, eval, verify, traffic and report all go through
:class:`RunDir`.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError

from ..files import read_npz, write_atomic
from . import formats
from .config import config_from_json


def write_parquet(path: Path, rows: list[dict]) -> None:
    """A table written whole, stamped with the run-file format (:mod:`launch.run.formats`)."""
    import pyarrow as pa  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)

    table = pa.Table.from_pylist(rows)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **formats.parquet_metadata()})
    write_atomic(path, lambda f: pq.write_table(table, f))


def read_parquet_table(path: Path) -> tuple[list[dict], dict[bytes, bytes] | None, list[str]]:
    """A Parquet file's rows, schema metadata and column names."""
    import pyarrow as pa  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)
    import pyarrow.parquet as pq  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)

    try:
        table = pq.read_table(path)
        return table.to_pylist(), table.schema.metadata, table.column_names
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SpikeGradError(f"{path} is not a readable Parquet file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None



def is_uri(text: str) -> bool:
    """``s3://bucket/run``, ``gs://...``, ``hdfs://...``, ``file:///...``: a run directory on a
    pyarrow filesystem rather than a local path."""
    return "://" in str(text)


HELD_LOCKS: set[int] = set()
"""The descriptors of the run-directory locks this process holds: a forked child (the local engine's
worker processes) closes its copies, so that the lock goes with its owner (``launch.run.workers``)."""


class RunDir:
    """One run directory (local, or the staging copy of a remote one).

    path: the local folder; label: how to name it to the user (the URI of a remote run);
    remote: the :class:`RemoteRun` it is pushed to after each write, if any.
    """

    CONFIG = "config.json"
    CHECKPOINT = "checkpoint.npz"
    SUMMARY = "summary.json"
    LOCK = ".lock"
    TABLES = ("metrics", "layers", "traffic", "chips", "operations", "spikes")  # <name>.parquet
    # The columns every reader relies on; a table without them (an edited or foreign file) is refused.
    COLUMNS = {"metrics": ("epoch", "images", "seconds", "train_loss", "train_accuracy", "test_accuracy"),
               "layers": ("epoch", "layer", "kind", "acc_forward", "acc_backward", "acc_update", "macs"),
               "traffic": ("epoch", "src", "dst", "messages", "bytes", "spikes"),
               "chips": ("epoch", "chip", "layers"),
               "operations": ("epoch", "layer", "kind", "pass", "snn_acc", "snn_mac", "ann_mac"),
               "spikes": ("epoch", "layer", "spikes", "count", "n_max")}

    def __init__(self, path: str | os.PathLike, remote: RemoteRun | None = None) -> None:
        self.path = Path(path)
        self.remote = remote
        self.label = remote.uri if remote is not None else str(self.path)

    @classmethod
    def at(cls, where: str) -> RunDir:
        """The run directory at a local path or a filesystem URI (staged locally, not read yet)."""
        if is_uri(where):
            remote = RemoteRun(where)
            return cls(remote.local, remote)
        return cls(where)

    @classmethod
    def fetch(cls, where: str) -> RunDir:
        """An existing run to read (eval, verify, traffic, report): a remote one is copied here first."""
        run = cls.at(where)
        if run.remote is not None:
            if not run.remote.exists(cls.CONFIG):
                raise SpikeGradError(f"{where} is not a run directory: {cls.CONFIG} is missing there")
            run.remote.pull()
        return run

    def __str__(self) -> str:
        return self.label

    def file(self, name: str) -> Path:
        return self.path / name

    def table_file(self, table: str) -> Path:
        assert table in self.TABLES, table
        return self.path / f"{table}.parquet"

    # -- existence -----------------------------------------------------------------------------
    def holds_run(self) -> bool:
        """A run was started here (its config is written), locally or at the remote URI."""
        if self.remote is not None and self.remote.exists(self.CONFIG):
            return True
        return self.file(self.CONFIG).exists()

    def require(self, *names: str, why: str = "is not a run directory") -> None:
        for name in names:
            path = self.file(name)
            if not path.is_file():
                what = "is not a regular file" if path.exists() else "is missing"  # a device, a folder
                raise SpikeGradError(f"{self.label} {why}: {name} {what}")

    def create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpikeGradError(f"run directory {self.label} cannot be created ({exc.strerror or exc})") from None

    def remove_if_unused(self, created: Path) -> None:
        """Remove the folder if it holds nothing but the lock file (a run that failed before its
        config was written), and the empty folders above it up to ``created`` (the outermost one
        this run made); anything else is left alone."""
        try:
            if {p.name for p in self.path.iterdir()} <= {self.LOCK}:
                (self.path / self.LOCK).unlink(missing_ok=True)
                folder = self.path
                while True:
                    folder.rmdir()  # only ever an empty folder
                    if folder == created or folder.parent == folder:
                        break
                    folder = folder.parent
        except OSError:
            pass

    # -- files ---------------------------------------------------------------------------------
    def write_config(self, cfg: Any) -> None:
        text = formats.stamp_config(cfg.to_json())
        write_atomic(self.file(self.CONFIG), lambda f: f.write(text + "\n"), mode="w")

    def read_config(self) -> Any:

        self.require(self.CONFIG)
        return config_from_json(self.file(self.CONFIG).read_bytes())

    def write_checkpoint(self, arrays: dict[str, np.ndarray]) -> None:
        kwds: dict[str, Any] = formats.stamp_checkpoint(arrays)  # numpy's stub types savez's **kwds as bool too
        write_atomic(self.file(self.CHECKPOINT), lambda f: np.savez(f, **kwds))

    def read_checkpoint(self) -> dict[str, np.ndarray]:
        """The checkpoint's arrays in today's format (every command reads it here)."""
        self.require(self.CHECKPOINT)
        path = self.file(self.CHECKPOINT)
        return formats.checkpoint_arrays(read_npz(path, "checkpoint"), f"checkpoint {path}")

    @property
    def checkpoint_path(self) -> Path:
        return self.file(self.CHECKPOINT)

    def write_table(self, table: str, rows: list[dict]) -> None:
        write_parquet(self.table_file(table), rows)

    def read_table(self, table: str) -> list[dict]:
        """The table's rows; [] when the run has none (a local run has no traffic)."""
        path = self.table_file(table)
        rows, metadata, columns = read_parquet_table(path) if path.is_file() else ([], None, [])
        want = self.COLUMNS[table]
        missing = [c for c in want if rows and c not in rows[0]]
        if missing:
            raise SpikeGradError(f"{path} is not a {table} table of a run: expected columns {', '.join(want)}; "
                                 f"missing {', '.join(missing)}")
        for r in rows:
            for c in want:
                v, text = r[c], c in ("kind", "layers", "pass")
                ok = isinstance(v, str) if text else \
                    isinstance(v, (int, float)) and not isinstance(v, bool) and (c != "epoch" or isinstance(v, int))
                if not ok:
                    raise SpikeGradError(f"{path}: column {c} expected {'text' if text else 'a number'}, got "
                                         f"{type(v).__name__} {str(v)[:40]!r}")
        return formats.table_rows(table, rows, formats.table_version(metadata, columns, str(path)))

    def write_summary(self, summary: dict) -> None:
        write_atomic(self.file(self.SUMMARY), lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")

    def sync(self) -> None:
        """Copy what changed to where the run lives (remote runs; nothing for a local one)."""
        if self.remote is not None:
            self.remote.push()

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer per run directory: an exclusive lock on ``.lock`` (holding the owner's PID),
        taken before data or Ray start and released when the process ends, however it ends."""
        path = self.file(self.LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SpikeGradError(f"run directory {self.label}: cannot open its lock file {self.LOCK} "
                                 f"({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise SpikeGradError(f"run directory {self.label} is in use by another spikegrad process "
                                 f"(PID {owner}); wait for it or choose another --out") from None
        HELD_LOCKS.add(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            if self.remote is not None:
                with self.remote.claim():
                    yield
            else:
                yield
        finally:
            HELD_LOCKS.discard(fd)
            os.close(fd)  # releases the lock


class RemoteRun:
    """A run directory on a pyarrow filesystem (``--out s3://bucket/run``: shared storage that every
    node of a cluster, and the user afterwards, can reach). The run is written to a local staging
    folder as usual, and each time a checkpoint (or the end of an epoch, or the summary) is written
    the folder is copied to the URI, so the remote directory always holds a complete, resumable run.
    Query parameters of the URI configure the filesystem (e.g. ``?endpoint_override=HOST:PORT&
    scheme=http`` for an S3-compatible server); credentials come from the usual environment."""

    def __init__(self, uri: str) -> None:
        import pyarrow.fs as pafs  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)

        self.uri, self.pafs = uri, pafs
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(uri)
        except (ValueError, OSError, TypeError) as exc:
            raise SpikeGradError(f"--out {uri!r}: expected a filesystem URI pyarrow can open "
                                 f"(s3://, gs://, hdfs://, file://), got {type(exc).__name__}: {exc}") from None
        self.path = self.path.rstrip("/")
        self.local = Path(tempfile.mkdtemp(prefix="spikegrad-run-")) / "run"
        self.created = False
        self.sent: dict[str, tuple[int, int]] = {}  # file -> (size, mtime) last uploaded

    def _call(self, what: str, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (OSError, ValueError) as exc:
            raise SpikeGradError(f"run directory {self.uri}: {what} failed ({type(exc).__name__}: "
                                 f"{' '.join(str(exc).split())[:300]})") from None

    def exists(self, name: str) -> bool:
        info = self._call("reading", lambda: self.fs.get_file_info(f"{self.path}/{name}"))
        return info.type == self.pafs.FileType.File

    # -- one writer across machines ----------------------------------------------------------
    LEASE = ".lock.json"
    LEASE_RENEW_S = 60.0  # the holder rewrites its lease this often
    LEASE_TTL_S = 300.0   # a lease not renewed for this long belongs to a run that is gone
    LEASE_SETTLE_S = 2.0  # after writing a lease, read it back after this long: the last writer wins

    def _read_lease(self) -> dict | None:
        if not self.exists(self.LEASE):
            return None

        def read() -> bytes:
            with self.fs.open_input_stream(f"{self.path}/{self.LEASE}") as f:
                return f.read(4096)
        try:
            lease = json.loads(self._call("reading the lease", read))
            return lease if isinstance(lease, dict) else {}
        except ValueError:  # damaged: no owner can be named, and it is treated as held
            return {}

    def _write_lease(self, lease: dict) -> None:
        def write() -> None:
            with self.fs.open_output_stream(f"{self.path}/{self.LEASE}") as f:
                f.write(json.dumps(lease).encode())
        self._call("writing the lease", write)

    @contextmanager
    def claim(self) -> Iterator[None]:
        """Hold the remote directory's lease while a run writes it, so that a run on another machine
        writing the same URI is refused (the local ``.lock`` stops only this machine's processes).

        Object stores have no exclusive create that pyarrow offers, so the lease is best effort: a run
        writes ``.lock.json`` {owner, token, renewed}, waits :data:`LEASE_SETTLE_S`, reads it back
        and goes on only if its token is still there (of two runs starting together, the last
        writer wins and the other is refused, unless both read back before either rewrites). The
        holder renews it every :data:`LEASE_RENEW_S` from a thread; a lease older than
        :data:`LEASE_TTL_S` belongs to a run that has ended without releasing it (killed), and is
        taken over. Released (removed) when the run ends.
        """

        owner = f"{socket.gethostname()} PID {os.getpid()}"
        token = secrets.token_hex(16)

        def held_by_other() -> str | None:
            lease = self._read_lease()
            if lease is None or lease.get("token") == token:
                return None
            if not lease:
                return (f"run directory {self.uri} holds an unreadable lease {self.LEASE}; if no spikegrad "
                        f"process writes there, remove it and try again")
            renewed = lease.get("renewed")
            age = time.time() - renewed if isinstance(renewed, (int, float)) else 0.0
            if age > self.LEASE_TTL_S:
                return None
            return (f"run directory {self.uri} is in use by another spikegrad process ({lease.get('owner', 'unknown')}"
                    f", its lease renewed {max(age, 0):.0f} s ago; a lease not renewed for {self.LEASE_TTL_S:.0f} s is "
                    f"taken over); wait for it or choose another --out")

        if (why := held_by_other()) is not None:
            raise SpikeGradError(why)
        if not self.created:
            self._call("creating the directory", lambda: self.fs.create_dir(self.path, recursive=True))
            self.created = True
        self._write_lease({"owner": owner, "token": token, "renewed": time.time()})
        time.sleep(self.LEASE_SETTLE_S)
        if (why := held_by_other()) is not None:
            raise SpikeGradError(why)
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.LEASE_RENEW_S):
                try:
                    self._write_lease({"owner": owner, "token": token, "renewed": time.time()})
                except SpikeGradError:  # the store is unreachable now; the run's own pushes will say so
                    pass

        thread = threading.Thread(target=renew, name="spikegrad-lease", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=10)
            try:
                lease = self._read_lease()
                if lease is not None and lease.get("token") == token:
                    self._call("removing the lease", lambda: self.fs.delete_file(f"{self.path}/{self.LEASE}"))
            except SpikeGradError:
                pass  # left behind: it expires after LEASE_TTL_S

    def pull(self) -> Path:
        """Copy the remote run directory into the staging folder; returns that folder."""
        self.local.mkdir(parents=True, exist_ok=True)
        self._call("download", lambda: self.pafs.copy_files(self.path, str(self.local), source_filesystem=self.fs))
        self.created = True
        self.sent = {p.name: self._stamp(p) for p in self.local.iterdir() if p.is_file()}
        return self.local

    @staticmethod
    def _stamp(p: Path) -> tuple[int, int]:
        st = p.stat()
        return st.st_size, st.st_mtime_ns

    def push(self) -> None:
        """Copy the run's files that changed since the last push to the remote directory (each file
        whole: a reader there sees the old or the new version; the lock and temporary files stay)."""
        if not self.created:
            self._call("creating the directory", lambda: self.fs.create_dir(self.path, recursive=True))
            self.created = True
        for p in sorted(self.local.iterdir(), key=lambda p: p.name == RunDir.CHECKPOINT):  # the checkpoint last
            if not p.is_file() or p.name.startswith(".") or self.sent.get(p.name) == self._stamp(p):
                continue
            stamp = self._stamp(p)
            self._call(f"upload of {p.name}", partial(
                self.pafs.copy_files, str(p), f"{self.path}/{p.name}", destination_filesystem=self.fs))
            self.sent[p.name] = stamp
