"""A whole training run and a checkpoint evaluation, as the CLI drives them."""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cluster.errors import SpikeGradError

from .config import TrainConfig
from .datasets import load_dataset
from cluster.topology import parse_topology

from .chip_format import format_traffic, traffic_rows
from .config import config_from_json
from .trainer import (
    CHECKPOINT, LOCK, Trainer, check_fit, epoch_rows, load_run, read_checkpoint, read_parquet_rows, save_checkpoint,
    select, write_parquet,
)
from .files import write_atomic


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.dataset}-{cfg.gradient}-s{cfg.seed}-{stamp}"


def make_trainer(cfg: TrainConfig, address: str | None = None) -> Trainer:
    if cfg.engine == "chips":
        from .chip_trainer import ChipTrainer  # noqa: PLC0415  (imports Ray)

        return ChipTrainer(cfg, chips=cfg.chips, replicas=cfg.replicas, placement=cfg.placement,
                           micro_batch=cfg.micro_batch, address=address)
    return Trainer(cfg)


def train(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = None,
          address: str | None = None) -> dict:
    """Train as configured; writes the run directory; returns the final metrics.

    Returned keys: test_accuracy (percent), train_seconds (training only, no evaluation),
    images_per_second (training), engine, backend, run_dir, epochs, and the last epoch's row.
    """
    log = log or (lambda s: print(s, file=sys.stderr))
    remote = RemoteRun(cfg.out) if cfg.out and is_uri(cfg.out) else None
    if remote is not None and remote.exists("config.json"):
        raise SpikeGradError(f"run directory {cfg.out} already holds a run; choose another --out")
    run_dir = remote.local if remote else Path(cfg.out) if cfg.out else default_run_dir(cfg)
    if (run_dir / "config.json").exists():
        raise SpikeGradError(f"run directory {run_dir} already holds a run; choose another --out")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpikeGradError(f"run directory {run_dir} cannot be created ({exc.strerror or exc})") from None
    sync = remote.push if remote else _no_sync

    def start(trainer: Trainer) -> None:
        write_atomic(run_dir / "config.json", lambda f: f.write(cfg.to_json() + "\n"), mode="w")
        save_checkpoint(run_dir, trainer)  # the initial state: a run can resume (or chips restart) from here
        sync()

    with run_lock(run_dir):
        if (run_dir / "config.json").exists():  # a run that started between the check above and the lock
            raise SpikeGradError(f"run directory {run_dir} already holds a run; choose another --out")
        return _run(cfg, run_dir, start, progress, log, address, sync, cfg.out if remote else None)


def _no_sync() -> None:
    pass


def is_uri(text: str) -> bool:
    """``s3://bucket/run``, ``gs://...``, ``hdfs://...``, ``file:///...``: a run directory on a
    pyarrow filesystem rather than a local path."""
    return "://" in str(text)


class RemoteRun:
    """A run directory on a pyarrow filesystem (``--out s3://bucket/run``: shared storage that every
    node of a cluster, and the user afterwards, can reach). The run is written to a local staging
    folder as usual, and each time a checkpoint (or the end of an epoch, or the summary) is written
    the folder is copied to the URI, so the remote directory always holds a complete, resumable run.
    Query parameters of the URI configure the filesystem (e.g. ``?endpoint_override=HOST:PORT&
    scheme=http`` for an S3-compatible server); credentials come from the usual environment."""

    def __init__(self, uri: str) -> None:
        import tempfile  # noqa: PLC0415

        import pyarrow.fs as pafs  # noqa: PLC0415

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
        for p in sorted(self.local.iterdir(), key=lambda p: p.name == CHECKPOINT):  # the checkpoint last
            if not p.is_file() or p.name == LOCK or p.name.startswith(".") or self.sent.get(p.name) == self._stamp(p):
                continue
            stamp = self._stamp(p)
            self._call(f"upload of {p.name}", lambda: self.pafs.copy_files(
                str(p), f"{self.path}/{p.name}", destination_filesystem=self.fs))
            self.sent[p.name] = stamp


def fetch_run(run_dir: str) -> str:
    """A local run directory to read: ``run_dir`` itself, or a local copy of a run at a URI."""
    if not is_uri(run_dir):
        return run_dir
    remote = RemoteRun(run_dir)
    if not remote.exists("config.json"):
        raise SpikeGradError(f"{run_dir} is not a run directory: config.json is missing there")
    return str(remote.pull())


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """One writer per run directory: an exclusive lock on ``run_dir/.lock`` (holding the owner's
    PID), taken before data or Ray start and released when the process ends, however it ends."""
    path = run_dir / LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise SpikeGradError(f"run directory {run_dir}: cannot open its lock file {LOCK} "
                             f"({exc.strerror or exc})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        owner = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise SpikeGradError(f"run directory {run_dir} is in use by another spikegrad process "
                             f"(PID {owner}); wait for it or choose another --out") from None
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # releases the lock


def _run(cfg: TrainConfig, run_dir: Path, start: Callable[[Trainer], None], progress: bool,
         log: Callable[[str], None], address: str | None, sync: Callable[[], None] = _no_sync,
         label: str | None = None) -> dict:
    """Load the data, make the trainer, ``start(trainer)`` (new run or resumed state), train, close.
    ``sync`` copies the run directory where it belongs after each write (remote runs); ``label``
    names the run directory to the user (its URI for a remote run)."""
    name = label or str(run_dir)
    try:
        return _run_data(cfg, run_dir, start, progress, log, address, sync, name)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (launch.cli): say how to go on
        raise Interrupted(name, getattr(exc, "signal_name", "interrupted")) from None


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: its last checkpoint is on disk, and it can resume."""

    def __init__(self, run_dir: Path | str, how: str) -> None:
        super().__init__(f"{how}; the last checkpoint of {run_dir} is kept: continue with "
                         f"spikegrad train --resume {run_dir}")
        self.signal_name = how


def _run_data(cfg: TrainConfig, run_dir: Path, start: Callable[[Trainer], None], progress: bool,
              log: Callable[[str], None], address: str | None, sync: Callable[[], None], name: str) -> dict:
    data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, progress=progress)
    check_fit(parse_topology(cfg.topology), data)
    xtr, ytr, xte, yte, xval, yval = select(data, cfg)
    trainer = make_trainer(cfg, address)
    watch = None
    if getattr(trainer, "started_ray", False) and not address and not os.environ.get("RAY_ADDRESS"):
        from .chip_trainer import watch_ray  # noqa: PLC0415

        watch = watch_ray(lambda what: f"{what}; the last checkpoint of {name} is kept: continue with "
                                       f"spikegrad train --resume {name}")
    try:
        start(trainer)
        return _train(cfg, trainer, data, (xtr, ytr, xte, yte, xval, yval), run_dir, progress, log, sync, name)
    finally:
        if watch is not None:
            watch.set()  # the shutdown below ends the GCS and raylet on purpose
        trainer.close()


def resume(run_dir: str, data_dir: str | None = None, progress: bool = True,
           log: Callable[[str], None] | None = None, address: str | None = None) -> dict:
    """Continue a stopped run from its last checkpoint (epoch end or ``--checkpoint-every``):
    the same batches in the same order follow, so it ends with the weights of an
    uninterrupted run. ``data_dir`` overrides the run's (the data may have moved)."""
    log = log or (lambda s: print(s, file=sys.stderr))
    remote = RemoteRun(run_dir) if is_uri(run_dir) else None
    if remote is not None:
        for name in ("config.json", CHECKPOINT):
            if not remote.exists(name):
                raise SpikeGradError(f"cannot resume {run_dir}: {name} is missing (not a run directory, or "
                                     "stopped before its first checkpoint)")
        remote.pull()
    run = remote.local if remote else Path(run_dir)
    for name in ("config.json", CHECKPOINT):
        if not (run / name).is_file():
            raise SpikeGradError(f"cannot resume {run}: {name} is missing (not a run directory, or stopped "
                                 "before its first checkpoint)")
    with run_lock(run):  # before reading: a run still writing this directory is refused, not raced
        cfg = config_from_json((run / "config.json").read_bytes())
        if data_dir:
            cfg = TrainConfig(**{**json.loads(cfg.to_json()), "data_dir": data_dir})
        arrays = read_checkpoint(run / CHECKPOINT)
        done = arrays.get("epochs_done")
        if done is not None and done.shape == () and done.dtype.kind in "iu" and int(done) >= cfg.epochs:
            raise SpikeGradError(f"cannot resume {run_dir}: all {cfg.epochs} epochs are done")

        def start(trainer: Trainer) -> None:
            trainer.load_state(arrays, str(run / CHECKPOINT))
            log(f"spikegrad: resuming {run_dir} at epoch {trainer.epochs_done + 1}, batch {trainer.position}")

        return _run(cfg, run, start, progress, log, address, remote.push if remote else _no_sync,
                    run_dir if remote else None)


def _previous_rows(run_dir: Path, name: str, epochs_done: int) -> list[dict]:
    """Rows of the epochs a resumed run has already finished (later rows were never confirmed)."""
    path = run_dir / name
    return [r for r in read_parquet_rows(path) if r["epoch"] <= epochs_done] if path.is_file() else []


MAX_CHIP_RESTARTS = 3  # per epoch


def _epoch_surviving_chip_failures(trainer: Trainer, run_dir: Path, xtr, ytr, xte, yte, progress: bool,
                                   log: Callable[[str], None], sync: Callable[[], None] = _no_sync):
    """One epoch; when a chip dies, fresh chips restart from the last checkpoint and the batches
    since are replayed in the same order (so the weights end as without the failure), at most
    MAX_CHIP_RESTARTS times, then a clear error."""
    from actors.chip import ChipFailure  # noqa: PLC0415

    cfg = trainer.cfg
    restarts = 0
    while True:
        try:
            if restarts:  # inside the try: a failure while the new chips start counts like any other
                trainer.restart_chips()  # type: ignore[attr-defined]
                trainer.load_state(read_checkpoint(run_dir / CHECKPOINT), str(run_dir / CHECKPOINT))
                log(f"spikegrad: chips restarted ({restarts} of {MAX_CHIP_RESTARTS}); replaying from epoch "
                    f"{trainer.epochs_done + 1}, batch {trainer.position}")
            return trainer.run_epoch(xtr, ytr, xte, yte, progress=progress, checkpoint_every=cfg.checkpoint_every,
                                     checkpoint=lambda: (save_checkpoint(run_dir, trainer), sync()))
        except ChipFailure as exc:
            if restarts == MAX_CHIP_RESTARTS:
                raise SpikeGradError(f"{exc}; gave up after {MAX_CHIP_RESTARTS} restarts in epoch "
                                     f"{trainer.epochs_done + 1} (last checkpoint intact: {run_dir / CHECKPOINT})") from None
            log(f"spikegrad: {exc}")
            restarts += 1


def _train(cfg: TrainConfig, trainer: Trainer, data, arrays: tuple, run_dir: Path, progress: bool,
           log: Callable[[str], None], sync: Callable[[], None] = _no_sync, name: str | None = None) -> dict:
    xtr, ytr, xte, yte, xval, yval = arrays
    held = f" / {len(xval)} validation (the last of the training file)" if len(xval) else ""
    log(f"spikegrad: {data.name} from {data.source}: {len(xtr)} train{held} / {len(xte)} test images"
        + (f"; training images moved by up to {cfg.shift} px" if cfg.shift else "")
        + ("; mirrored with probability 1/2" if cfg.flip else ""))
    log(f"spikegrad: topology {trainer.topo.describe()}")
    if cfg.engine == "chips":
        log(f"spikegrad: chips: {trainer.describe()}")  # type: ignore[attr-defined]
    log(f"spikegrad: engine {cfg.engine}, backend {trainer.backend.name} ({cfg.dtype}"
        + (", steps replayed as CUDA graphs), " if trainer.use_graph else "), ") +
        f"{cfg.gradient} gradient, alpha {cfg.alpha:g}, theta_ff {cfg.theta_ff:g}, "
        f"theta_bp {cfg.step.theta_bp:g}, lr {cfg.lr:g} ({cfg.schedule}), momentum {cfg.momentum:g}, "
        f"batch {cfg.batch_size}, seed {cfg.seed}; run directory {run_dir}")
    done = trainer.epochs_done
    rows, layer_rows, link_rows, chip_rows = (_previous_rows(run_dir, name, done) for name in (
        "metrics.parquet", "layers.parquet", "traffic.parquet", "chips.parquet"))
    train_seconds, images = sum(r["seconds"] for r in rows), sum(r["images"] for r in rows)
    for _ in range(done, cfg.epochs):
        res = _epoch_surviving_chip_failures(trainer, run_dir, xtr, ytr, xte, yte, progress, log, sync)
        row, lrows = epoch_rows(res, trainer.topo, cfg)
        row["val_accuracy"] = trainer.evaluate(xval, yval) if len(xval) else float("nan")
        row.update(trainer.memory())
        rows.append(row)
        layer_rows.extend(lrows)
        train_seconds += res.seconds
        images += res.images
        log(f"epoch {res.epoch}: train loss {res.train_loss:.4f}, train acc {res.train_accuracy:.2f}%, "
            + (f"val acc {row['val_accuracy']:.2f}%, " if len(xval) else "")
            + f"test acc {res.test_accuracy:.2f}%, {row['images_per_second']:.0f} img/s, "
            f"spikes/neuron {row['spikes_per_neuron']:.3f}, rel. synops fwd {row['rel_synops_forward']:.3f} "
            f"bwd {row['rel_synops_backward']:.4f}")
        write_parquet(run_dir / "metrics.parquet", rows)
        write_parquet(run_dir / "layers.parquet", layer_rows)
        if cfg.engine == "chips":
            links, chips = traffic_rows(res.epoch, trainer.last_reports)  # type: ignore[attr-defined]
            link_rows += links
            chip_rows += chips
            write_parquet(run_dir / "traffic.parquet", link_rows)
            write_parquet(run_dir / "chips.parquet", chip_rows)
        save_checkpoint(run_dir, trainer)
        sync()
        if trainer.graph_note:
            log(f"spikegrad: warning: {trainer.graph_note}")
            trainer.graph_note = None
    if cfg.engine == "chips":
        log(format_traffic(link_rows, chip_rows))
    summary = dict(
        test_accuracy=rows[-1]["test_accuracy"], val_accuracy=rows[-1]["val_accuracy"] if len(xval) else None, train_accuracy=rows[-1]["train_accuracy"],
        train_loss=rows[-1]["train_loss"], train_seconds=round(train_seconds, 3),
        images_per_second=round(images / train_seconds, 1) if train_seconds > 0 else None,
        engine=cfg.engine, backend=trainer.backend.name, dataset=cfg.dataset, data_source=data.source,
        gradient=cfg.gradient,
        epochs=cfg.epochs, seed=cfg.seed, run_dir=name or str(run_dir),
    )
    write_atomic(run_dir / "summary.json", lambda f: f.write(json.dumps(summary, indent=2) + "\n"), mode="w")
    sync()
    return summary


def evaluate_run(run_dir: str, data_dir: str | None = None, limit_test: int | None = None,
                 backend: str | None = None, progress: bool = True) -> dict:
    """Test accuracy of a run directory's checkpoint on its dataset's test set."""
    trainer = load_run(run_dir, backend=backend)
    cfg = trainer.cfg
    data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, progress=progress)
    check_fit(trainer.topo, data)
    xte, yte = data.x_test[:limit_test], data.y_test[:limit_test]
    t0 = time.perf_counter()
    acc = trainer.evaluate(xte, yte)
    return dict(test_accuracy=acc, images=len(xte), seconds=round(time.perf_counter() - t0, 3),
                run_dir=str(run_dir), dataset=cfg.dataset, epochs_done=trainer.epochs_done)
