"""A whole training run, a resumed one and a checkpoint's evaluation, as the CLI drives them:
the run directory, its lock, the data, the driver and its engine."""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cluster.errors import SpikeGradError
from cluster.topology import Topology

from ..data import Dataset, load_dataset
from .config import TrainConfig, check_machine
from .driver import Driver
from .factory import make_engine
from .rundir import RunDir
from .supervise import kept, tell


def default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.dataset}-{cfg.gradient}-s{cfg.seed}-{stamp}"


def select(data: Dataset, cfg: TrainConfig) -> tuple[np.ndarray, ...]:
    """(x_train, y_train, x_test, y_test, x_val, y_val): the training set cut to --limit-train
    (first N, in file order), its last --validation images held out as the validation set
    (empty without it), and the test set cut to --limit-test."""
    xtr, ytr = data.x_train[:cfg.limit_train], data.y_train[:cfg.limit_train]
    if cfg.validation >= len(xtr):
        raise SpikeGradError(f"--validation {cfg.validation} leaves no training images: {data.name} has "
                             f"{len(xtr)} (after --limit-train)")
    cut = len(xtr) - cfg.validation
    xte, yte = data.x_test[:cfg.limit_test], data.y_test[:cfg.limit_test]
    return xtr[:cut], ytr[:cut], xte, yte, xtr[cut:], ytr[cut:]


def check_fit(topo: Topology, data: Dataset) -> None:
    if tuple(data.input_shape) != topo.input_shape:
        raise SpikeGradError(
            f"topology {topo.text!r} expects input {topo.input_shape} (C, H, W), but {data.name} "
            f"images are {tuple(data.input_shape)}")
    classes = int(max(data.y_train.max(), data.y_test.max())) + 1
    if topo.num_classes < classes:
        raise SpikeGradError(f"topology {topo.text!r} has {topo.num_classes} outputs, "
                             f"{data.name} has {classes} classes")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def train(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = None,
          address: str | None = None, initial: dict[int, tuple[np.ndarray, np.ndarray]] | None = None) -> dict:
    """Train as configured; writes the run directory; returns the final metrics. ``initial``:
    {layer l: (W, b)} to start from instead of the seed's draws (``--init-from``, a NIR graph's
    weights); the checkpoint written at the start holds them, so a resumed run needs no more.

    Returned keys: test_accuracy (percent), train_seconds (training only, no evaluation),
    images_per_second (training), engine, backend, run_dir, epochs, and the last epoch's row.
    """
    check_machine(cfg)  # before anything is created
    run = RunDir.at(cfg.out) if cfg.out else RunDir(default_run_dir(cfg))
    if run.holds_run():
        raise SpikeGradError(f"run directory {run} already holds a run; choose another --out")
    created = None if run.path.exists() else run.path  # the outermost folder this run creates
    while created is not None and not created.parent.exists():
        created = created.parent
    run.create()

    def start(driver: Driver) -> None:
        if initial is not None:
            driver.set_weights(initial)
        run.write_config(cfg)
        driver.save(run)  # the initial state: a run can resume (or chips restart) from here

    try:
        with run.lock():
            if run.holds_run():  # a run that started between the check above and the lock
                raise SpikeGradError(f"run directory {run} already holds a run; choose another --out")
            return _run(cfg, run, start, progress, log or _stderr, address)
    except BaseException:
        if created is not None:
            run.remove_if_unused(created)  # a run that never started (bad data, no cluster) leaves no folder
        raise


class Interrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C or SIGTERM: its last checkpoint is on disk, and it can resume."""

    def __init__(self, run: RunDir | str, how: str) -> None:
        super().__init__(kept(run, how))
        self.signal_name = how


def _run(cfg: TrainConfig, run: RunDir, start: Callable[[Driver], None], progress: bool,
         log: Callable[[str], None], address: str | None) -> dict:
    """Load the data, make the driver and its engine, ``start(driver)`` (new run or resumed
    state), train, close."""
    tell("run", run)  # to a watching parent (launch.run.supervise), if there is one
    try:
        return _run_data(cfg, run, start, progress, log, address)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (launch.cli): say how to go on
        raise Interrupted(run, getattr(exc, "signal_name", "interrupted")) from None


def _run_data(cfg: TrainConfig, run: RunDir, start: Callable[[Driver], None], progress: bool,
              log: Callable[[str], None], address: str | None) -> dict:
    topo = cfg.topo  # parsed once, by the config's checks; handed down
    data = load_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, progress=progress)
    check_fit(topo, data)
    arrays = select(data, cfg)
    driver = Driver(cfg, topo, lambda params: make_engine(cfg, topo, params, address,
                                                         on_lost=lambda what: kept(run, what)))
    try:
        start(driver)
        xtr, _, xte, _, xval, _ = arrays
        held = f" / {len(xval)} validation (the last of the training file)" if len(xval) else ""
        log(f"spikegrad: {data.name} from {data.source}: {len(xtr)} train{held} / {len(xte)} test images"
            + (f"; training images moved by up to {cfg.shift} px" if cfg.shift else "")
            + ("; mirrored with probability 1/2" if cfg.flip else ""))
        log(f"spikegrad: topology {topo.describe()}")
        log(f"spikegrad: engine {cfg.engine}: {driver.engine.describe()}")
        log(f"spikegrad: {cfg.dtype}, {cfg.gradient} gradient, alpha {cfg.alpha:g}, theta_ff {cfg.theta_ff:g}, "
            f"theta_bp {cfg.step.theta_bp:g}, lr {cfg.lr:g} ({cfg.schedule}), momentum {cfg.momentum:g}, "
            f"batch {cfg.batch_size}, seed {cfg.seed}; run directory {run}")
        return driver.train(run, arrays, progress, log, source=data.source)
    finally:
        driver.close()


def resume(run_dir: str, data_dir: str | None = None, progress: bool = True,
           log: Callable[[str], None] | None = None, address: str | None = None) -> dict:
    """Continue a stopped run from its last checkpoint (epoch end or ``--checkpoint-every``):
    the same batches in the same order follow, so it ends with the weights of an
    uninterrupted run. ``data_dir`` overrides the run's (the data may have moved)."""
    log = log or _stderr
    run = RunDir.at(run_dir)
    for name in (RunDir.CONFIG, RunDir.CHECKPOINT):
        if not (run.remote.exists(name) if run.remote is not None else run.file(name).is_file()):
            raise SpikeGradError(f"cannot resume {run}: {name} is missing (not a run directory, or stopped "
                                 "before its first checkpoint)")
    if run.remote is not None:
        run.remote.pull()
    with run.lock():  # before reading: a run still writing this directory is refused, not raced
        cfg = run.read_config()
        if data_dir:
            cfg = dataclasses.replace(cfg, data_dir=data_dir)
        check_machine(cfg)
        arrays = run.read_checkpoint()
        done = arrays.get("epochs_done")
        if done is not None and done.shape == () and done.dtype.kind in "iu" and int(done) >= cfg.epochs:
            raise SpikeGradError(f"cannot resume {run}: all {cfg.epochs} epochs are done")

        def start(driver: Driver) -> None:
            driver.load_state(arrays, str(run.checkpoint_path))
            log(f"spikegrad: resuming {run} at epoch {driver.epochs_done + 1}, batch {driver.position}")

        return _run(cfg, run, start, progress, log, address)


def load_run(run_dir: str | os.PathLike, backend: str | None = None) -> Driver:
    """A driver on a local engine, restored from a run directory's config.json and checkpoint.npz
    (a URI is fetched first)."""
    run = RunDir.fetch(str(run_dir))
    run.require(RunDir.CONFIG, RunDir.CHECKPOINT)
    cfg = run.read_config()
    # evaluation runs here, in one process, whichever engine (and chips, capacity or replicas) trained
    # the run: the weights are the same network's
    cfg = dataclasses.replace(cfg, engine="local", wire="counts", chips=None, chip=None, chip_neurons=None,
                              chip_synapses=None, chip_cores=None, replicas=1,
                              **({"backend": backend} if backend else {}))
    check_machine(cfg)
    driver = Driver(cfg)
    driver.load_state(run.read_checkpoint(), str(run.checkpoint_path))
    return driver


def evaluate_run(run_dir: str, data_dir: str | None = None, limit_test: int | None = None,
                 backend: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Test accuracy of a run directory's checkpoint on its dataset's test set."""
    return evaluate_driver(load_run(run_dir, backend=backend), str(run_dir), data_dir, limit_test, progress)


def evaluate_driver(driver: Driver, source: str, data_dir: str | None = None, limit_test: int | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Test accuracy of a driver's weights on its config's dataset (closes the driver); ``source``
    names where the weights came from (``run_dir`` of the result)."""
    cfg = driver.cfg
    try:
        data = load_dataset(cfg.dataset, data_dir or cfg.data_dir, progress=progress)
        check_fit(driver.topo, data)
        driver.check_position(len(select(data, cfg)[0]))  # as resume checks it: the checkpoint fits this data
        xte, yte = data.x_test[:limit_test], data.y_test[:limit_test]
        t0 = time.perf_counter()
        acc = driver.evaluate(xte, yte)
    finally:
        driver.close()
    return dict(test_accuracy=acc, images=len(xte), seconds=round(time.perf_counter() - t0, 3),
                run_dir=source, dataset=cfg.dataset, epochs_done=driver.epochs_done)
