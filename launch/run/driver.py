"""The driver: one training run's epochs over an engine it composes and never inspects.

It owns the generator (initial weights, then each epoch's order and augmentation), the
learning-rate schedule, progress, checkpoints and resume, recovery from chip failures and the
metrics; the engine (:mod:`launch.run.engine`: local or chips) runs the steps.

Checkpoint arrays (``checkpoint.npz``, :class:`~launch.run.rundir.RunDir`): ``W{t}``, ``b{t}``,
``vW{t}``, ``vb{t}`` per trainable layer t, and the driver's position: ``epochs_done``,
``position`` (batches of the current epoch applied) and ``progress`` (a JSON text: the generator
now and before the epoch's permutation, the epoch's sums so far and its banked counters).
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actors.allocator import resident_bytes
from cluster.errors import SpikeGradError
from cluster.network import export_layer, forward, init_params, quantize
from cluster.synops import COUNTERS, layer_fan, spike_bound, spike_histogram
from cluster.topology import Topology

from ..data import augment
from .config import TrainConfig
from .engine import ChipFailure, Counters, Engine, HostState
from .rundir import RunDir
from .traffic import format_traffic, traffic_rows

_NO_PARTIAL = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}  # an epoch's sums before its first batch
MAX_CHIP_RESTARTS = 3  # per epoch


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    images: int
    counters: Counters
    calls: int = 0  # actor calls made while training (chips; 0 in one process)
    machine_cpu_seconds: float = float("nan")  # busy CPU of the driver's machine meanwhile (machine_busy_seconds)

    @property
    def layer_counts(self) -> np.ndarray:
        """(L+1, len(COUNTERS)) synaptic-operation counts of the epoch."""
        return self.counters.layers


def machine_busy_seconds() -> float:
    """CPU seconds this machine's cores have been busy since boot (all processes: the driver, Ray's
    daemons, chips here), from Linux /proc/stat; NaN elsewhere. A difference over an epoch is what
    the epoch cost the machine (``spikegrad plan`` takes Ray's cost per call from it)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def lr_factor(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier: constant; cosine from 1 down to 0 over the whole run, batch by batch;
    or ``epoch-cosine``, the same curve taken once per epoch (1 in the first epoch, constant within
    each): the learning rate changes at most once per epoch, so with momentum 0 every update of a
    batch is Algorithm 3's w ← w + ΔW with the epoch's one η (the accumulate-only protocol)."""
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "epoch-cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / max(1, cfg.epochs)))
    progress = (epoch * steps_per_epoch + step) / max(1, cfg.epochs * steps_per_epoch)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def initial_params(cfg: TrainConfig, topo: Topology,
                   rng: np.random.Generator) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The run's initial weights on the host (:func:`cluster.network.init_params`), on the
    fixed-point grid with ``--weight-frac-bits``. Draws from ``rng`` (the run's one generator)."""
    host = init_params(topo, rng, cfg.theta_ff, np.dtype(cfg.dtype))
    if cfg.weight_frac_bits is not None:
        for W, _b in host.values():
            quantize(np, W, cfg.weight_frac_bits)
    return host


def seeded_params(cfg: TrainConfig, topo: Topology | None = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The initial weights a run of ``cfg`` starts from (its seed's generator, first draws)."""
    return initial_params(cfg, topo or cfg.topo, np.random.default_rng(cfg.seed))


def check_state_arrays(arrays: dict[str, np.ndarray], topo: Topology, path: str) -> None:
    """Refuse a checkpoint whose weights, biases or velocities do not fit ``topo`` or are not finite
    floats (a NaN or complex bias would otherwise evaluate to a plausible accuracy)."""
    for t, l in enumerate(topo.trainable):
        w_shape = topo.weight_shape(l)
        want = {f"W{t}": w_shape, f"b{t}": w_shape[:1], f"vW{t}": w_shape, f"vb{t}": w_shape[:1]}
        for key, shape in want.items():
            if key not in arrays:
                if key.startswith("v"):
                    continue  # checkpoints without velocities: momentum starts at zero
                raise SpikeGradError(f"checkpoint {path}: missing {key} for layer {l}")
            a = arrays[key]
            if a.dtype.kind != "f":
                raise SpikeGradError(f"checkpoint {path}: {key} expected float32 or float64, got {a.dtype}")
            if a.shape != shape:
                raise SpikeGradError(f"checkpoint {path}: {key} has shape {a.shape}, topology {topo.text!r} "
                                     f"expects {shape}")
            if not np.isfinite(a).all():
                raise SpikeGradError(f"checkpoint {path}: {key} expected finite values, got "
                                     f"{int((~np.isfinite(a)).sum())} NaN or infinite")


@dataclass
class Progress:
    """A checkpoint's position, checked (:func:`check_progress`); ``rng`` None: no progress record."""

    epochs_done: int
    position: int
    rng: dict | None = None
    epoch_rng: dict | None = None
    partial: dict = field(default_factory=lambda: dict(_NO_PARTIAL))
    banked: Any = None


def check_progress(arrays: dict[str, np.ndarray], cfg: TrainConfig, topo: Topology, path: str) -> Progress:
    """A checkpoint's position and progress record, checked as every command that reads a checkpoint
    checks them (resume, eval, verify, export): non-negative integers, at most the run's epochs, a
    progress record whose generator states a generator accepts and whose counters fit the network."""
    for key in ("epochs_done", "position"):
        v = arrays.get(key, np.asarray(0))
        if v.shape != () or v.dtype.kind not in "iu" or not 0 <= int(v) < 2 ** 31:
            raise SpikeGradError(f"checkpoint {path}: {key} expected a non-negative integer, got "
                                 f"{v.dtype} {v.shape} {v.tolist() if v.size < 5 else '...'}")
    out = Progress(int(arrays.get("epochs_done", 0)), int(arrays.get("position", 0)))
    if out.epochs_done > cfg.epochs:
        raise SpikeGradError(f"checkpoint {path}: epochs_done expected at most the run's {cfg.epochs} "
                             f"epochs, got {out.epochs_done}")
    if "progress" not in arrays:  # a checkpoint written before resumable runs: epoch ends only
        if out.position:
            raise SpikeGradError(f"checkpoint {path}: position {out.position} without its progress record")
        return out
    try:
        p = json.loads(str(arrays["progress"]))
        probe = np.random.default_rng(0)
        probe.bit_generator.state = p["rng"]  # a state the generator refuses is refused here
        if p["epoch_rng"] is not None:
            probe.bit_generator.state = p["epoch_rng"]
        out.rng, out.epoch_rng = p["rng"], p["epoch_rng"]
        out.partial = {k: float(p["partial"][k]) for k in _NO_PARTIAL}
        out.banked = Counters.from_json(p["banked"], len(topo.layers))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise SpikeGradError(f"checkpoint {path}: unreadable progress record "
                             f"({type(exc).__name__}: {exc})") from None
    if out.position and out.epoch_rng is None:
        raise SpikeGradError(f"checkpoint {path}: position {out.position} without the epoch's generator state")
    return out


class Driver:
    """A run's epochs on an engine. ``make_engine(params)`` builds the engine from the initial
    weights the driver draws (:func:`launch.run.factory.make_engine` when not given)."""

    def __init__(self, cfg: TrainConfig, topo: Topology | None = None,
                 make_engine: Callable[[dict], Engine] | None = None) -> None:
        self.cfg = cfg
        self.topo = topo or cfg.topo
        # One generator, seeded once: initial weights, then the batch order of each epoch.
        self.rng = np.random.default_rng(cfg.seed)
        params = initial_params(cfg, self.topo, self.rng)
        if make_engine is None:
            from .factory import make_engine as default  # noqa: PLC0415  (the factory imports the engines)

            self.engine: Engine = default(cfg, self.topo, params)
        else:
            self.engine = make_engine(params)
        self.epochs_done = 0
        # Where a checkpoint can stop and resume (:meth:`run_epoch`): batches of the current
        # epoch applied, the generator before this epoch's permutation, the epoch's sums so far.
        self.position = 0
        self.epoch_rng_state: Mapping[str, Any] | None = None
        self.partial: dict[str, float] = dict(_NO_PARTIAL)
        self.banked = Counters.zeros(len(self.topo.layers))

    # -- epochs ----------------------------------------------------------------------------
    def _take(self, wait: bool, epoch: int, batch: int) -> tuple[float, int, int]:
        loss, correct, n = self.engine.collect(wait)
        if not math.isfinite(loss):
            raise SpikeGradError(f"training diverged: the loss is {loss} at epoch {epoch + 1}, batch {batch + 1} "
                                 f"(NaN or inf reached the output layer); the last checkpoint is left as it "
                                 f"was; try a smaller --lr")
        return loss, correct, n

    def run_epoch(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  progress: bool = True, checkpoint_every: int | None = None,
                  checkpoint: Callable[[], None] | None = None) -> EpochResult:
        """One epoch from ``self.position`` (0, or where a resumed checkpoint stopped).

        Every ``checkpoint_every`` batches the submitted steps are finished, the epoch's counters
        banked and ``checkpoint()`` called (it saves :meth:`state_arrays`); a run resumed from
        there redraws the same batch order and ends with the same weights.
        """
        from tqdm import tqdm  # noqa: PLC0415  (only the CLI path draws bars)

        epoch = self.epochs_done
        if self.position == 0:
            self.epoch_rng_state = copy.deepcopy(self.rng.bit_generator.state)
        else:  # resumed mid-epoch: the same permutation again
            assert self.epoch_rng_state is not None  # load_progress refuses a position without it
            self.rng.bit_generator.state = copy.deepcopy(self.epoch_rng_state)
        order = self.rng.permutation(len(x_train))
        k = self.cfg.shift  # augmentation: drawn right after the permutation, so a resume redraws it too
        shifts = self.rng.integers(-k, k + 1, size=(len(order), 2)) if k else None
        flips = self.rng.random(len(order)) < 0.5 if self.cfg.flip else None  # drawn next, likewise
        B = self.cfg.batch_size
        steps = self.check_position(len(order))
        loss_sum, correct, seen = self.partial["loss"], int(self.partial["correct"]), int(self.partial["seen"])
        t0 = time.perf_counter() - self.partial["seconds"]
        calls0, busy0 = self.engine.calls(), machine_busy_seconds()
        bar = tqdm(range(self.position, steps), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch",
                   disable=not progress, file=sys.stderr, leave=True, dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0,  # job logs (no terminal): a line per 30 s
                   initial=self.position, total=steps)
        for s in bar:
            idx = order[s * B:(s + 1) * B]
            xb = augment(x_train[idx], None if shifts is None else shifts[s * B:(s + 1) * B],
                         None if flips is None else flips[s * B:(s + 1) * B])
            self.engine.submit(xb, y_train[idx], lr_factor(self.cfg, epoch, s, steps))
            finish = checkpoint is not None and checkpoint_every and (s + 1) % checkpoint_every == 0 and s + 1 < steps
            l_sum, c, n = self._take(bool(finish), epoch, s)
            loss_sum, correct, seen = loss_sum + l_sum, correct + c, seen + n
            if (s % 20 == 0 or s == steps - 1) and seen > 0:  # chips return a batch's results later
                # refresh=False: the bar draws on its own clock (30 s in job logs), with its count up to date
                bar.set_postfix(loss=f"{loss_sum / seen:.4f}", acc=f"{100.0 * correct / seen:.2f}%", refresh=False)
            if finish:
                self.banked = self.banked + self.engine.counters()
                self.position = s + 1
                self.partial = dict(loss=loss_sum, correct=correct, seen=seen, seconds=time.perf_counter() - t0)
                checkpoint()  # type: ignore[misc]
        l_sum, c, n = self._take(True, epoch, steps - 1)
        loss_sum, correct, seen = loss_sum + l_sum, correct + c, seen + n
        seconds = time.perf_counter() - t0
        calls, busy = self.engine.calls() - calls0, machine_busy_seconds() - busy0
        counters, self.banked = self.banked + self.engine.counters(), Counters.zeros(len(self.topo.layers))
        test_acc = self.evaluate(x_test, y_test)
        bar.close()
        self.epochs_done += 1
        self.position, self.partial = 0, dict(_NO_PARTIAL)
        return EpochResult(epoch + 1, loss_sum / seen, 100.0 * correct / seen, test_acc, seconds, seen, counters,
                           calls, busy)

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
        """Test accuracy in percent over all of x (B, C, H, W), y (B,)."""
        correct = 0
        for i in range(0, len(x), batch):
            correct += int((self.engine.predict(x[i:i + batch]) == y[i:i + batch]).sum())
        return 100.0 * correct / max(1, len(x))

    def host_params(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """The current {layer: (W, b)} as host arrays."""
        return {l: (W, b) for l, (W, b, _, _) in self.engine.state().items()}

    def close(self) -> None:
        self.engine.close()

    # -- a whole run -----------------------------------------------------------------------
    def _epoch_surviving_chip_failures(self, run: RunDir, arrays: tuple, progress: bool,
                                       log: Callable[[str], None],
                                       finish: Callable[[], Any]) -> tuple[EpochResult, Any]:
        """One epoch, then ``finish()`` (what the epoch's end asks of the chips: the validation
        accuracy, the state to save); when a chip dies in either, the engine restarts from the last
        checkpoint and the batches since are replayed in the same order (so the weights end as
        without the failure), at most MAX_CHIP_RESTARTS times, then a clear error."""
        xtr, ytr, xte, yte = arrays
        restarts = 0
        while True:
            try:
                if restarts:  # inside the try: a failure while the new chips start counts like any other
                    self.engine.restart()
                    self.load_state(run.read_checkpoint(), str(run.checkpoint_path))
                    log(f"spikegrad: chips restarted ({restarts} of {MAX_CHIP_RESTARTS}); replaying from epoch "
                        f"{self.epochs_done + 1}, batch {self.position}")
                res = self.run_epoch(xtr, ytr, xte, yte, progress=progress, checkpoint_every=self.cfg.checkpoint_every,
                                     checkpoint=lambda: self.save(run))
                return res, finish()
            except ChipFailure as exc:
                if restarts == MAX_CHIP_RESTARTS:
                    raise SpikeGradError(f"{exc}; gave up after {MAX_CHIP_RESTARTS} restarts in epoch "
                                         f"{self.epochs_done + 1} "
                                         f"(last checkpoint intact: {run.checkpoint_path})") from None
                log(f"spikegrad: {exc}")
                restarts += 1

    def train(self, run: RunDir, arrays: tuple, progress: bool, log: Callable[[str], None],
              source: str = "") -> dict[str, Any]:
        """The remaining epochs; each one's rows and checkpoint written to ``run``, then the
        summary. arrays: (x_train, y_train, x_test, y_test, x_val, y_val); source: where the data
        came from. Returns the summary (the final metrics)."""
        cfg, topo = self.cfg, self.topo
        xtr, ytr, xte, yte, xval, yval = arrays
        done = self.epochs_done
        # rows of the epochs a resumed run has already finished (later rows were never confirmed)
        tables = {t: [r for r in run.read_table(t) if r["epoch"] <= done] for t in RunDir.TABLES}
        train_seconds = sum(r["seconds"] for r in tables["metrics"])
        images = sum(r["images"] for r in tables["metrics"])

        def finish() -> tuple[float, dict[str, np.ndarray]]:  # the epoch's end, from the chips
            return (self.evaluate(xval, yval) if len(xval) else float("nan")), self.state_arrays()

        for _ in range(done, cfg.epochs):
            res, (val_accuracy, saved) = self._epoch_surviving_chip_failures(run, (xtr, ytr, xte, yte), progress,
                                                                             log, finish)
            row, lrows = epoch_rows(res, topo, cfg)
            row["val_accuracy"] = val_accuracy
            row.update(rss_driver_mib=resident_bytes() / 2 ** 20, **self.engine.memory())
            tables["metrics"].append(row)
            tables["layers"].extend(lrows)
            train_seconds += res.seconds
            images += res.images
            log(f"epoch {res.epoch}: train loss {res.train_loss:.4f}, train acc {res.train_accuracy:.2f}%, "
                + (f"val acc {row['val_accuracy']:.2f}%, " if len(xval) else "")
                + f"test acc {res.test_accuracy:.2f}%, {row['images_per_second']:.0f} img/s, "
                f"spikes/neuron {row['spikes_per_neuron']:.3f}, rel. synops fwd {row['rel_synops_forward']:.3f} "
                f"bwd {row['rel_synops_backward']:.4f}")
            if res.counters.chips:
                links, chips = traffic_rows(res.epoch, res.counters.chips)
                tables["traffic"] += links
                tables["chips"] += chips
            tables["operations"] += operation_rows(res, topo)
            tables["spikes"] += spike_rows(res.epoch, topo, cfg, {l: (saved[f"W{t}"], saved[f"b{t}"])
                                                                  for t, l in enumerate(topo.trainable)}, xte)
            for name, rows in tables.items():
                if rows or name in ("metrics", "layers"):
                    run.write_table(name, rows)
            self.save(run, saved)
            note = self.engine.note()
            if note:
                log(f"spikegrad: warning: {note}")
        if tables["chips"]:
            per_epoch = {r["epoch"]: r["images"] for r in tables["metrics"]}
            log(format_traffic(tables["traffic"], tables["chips"], per_epoch))
        last = tables["metrics"][-1]
        summary = dict(
            test_accuracy=last["test_accuracy"], val_accuracy=last["val_accuracy"] if len(xval) else None,
            train_accuracy=last["train_accuracy"], train_loss=last["train_loss"],
            train_seconds=round(train_seconds, 3),
            images_per_second=round(images / train_seconds, 1) if train_seconds > 0 else None,
            engine=cfg.engine, backend=self.engine.backend_name, dataset=cfg.dataset, data_source=source,
            gradient=cfg.gradient, epochs=cfg.epochs, seed=cfg.seed, run_dir=run.label,
        )
        run.write_summary(summary)
        run.sync()
        return summary

    # -- checkpoints -----------------------------------------------------------------------
    def save(self, run: RunDir, arrays: dict[str, np.ndarray] | None = None) -> None:
        """The checkpoint (``arrays``, else :meth:`state_arrays` now), written whole, then pushed where
        the run lives."""
        run.write_checkpoint(self.state_arrays() if arrays is None else arrays)
        run.sync()

    def progress_arrays(self) -> dict[str, np.ndarray]:
        """The driver's position: epochs done, batches of the current epoch done, the generator
        now and before the epoch's permutation, the epoch's sums and banked counters (as a JSON
        string array: loaded without pickle)."""
        progress = dict(rng=self.rng.bit_generator.state, epoch_rng=self.epoch_rng_state,
                        partial=self.partial, banked=self.banked.to_json())
        return {"epochs_done": np.asarray(self.epochs_done), "position": np.asarray(self.position),
                "progress": np.asarray(json.dumps(progress))}

    def check_position(self, n_train: int) -> int:
        """The batches of an epoch of ``n_train`` images; a checkpoint's position must lie below them
        (resume checks it when it starts the epoch, eval and verify when they have loaded the data)."""
        steps = math.ceil(n_train / self.cfg.batch_size)
        if self.position >= max(1, steps):
            raise SpikeGradError(f"checkpoint position {self.position} expected below the epoch's {steps} batches "
                                 f"(the checkpoint does not belong to this data)")
        return steps

    def load_progress(self, arrays: dict[str, np.ndarray], path: str) -> None:
        p = check_progress(arrays, self.cfg, self.topo, path)
        self.epochs_done, self.position = p.epochs_done, p.position
        if p.rng is not None:
            self.rng.bit_generator.state = p.rng
            self.epoch_rng_state, self.partial, self.banked = p.epoch_rng, p.partial, p.banked

    def state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = self.progress_arrays()
        state = self.engine.state()
        for t, l in enumerate(self.topo.trainable):
            out[f"W{t}"], out[f"b{t}"], out[f"vW{t}"], out[f"vb{t}"] = state[l]
        return out

    def set_weights(self, params: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        """Replace the weights and biases ({layer l: (W, b)}, every trainable layer) with zero velocities:
        a run that starts from given weights (``--init-from``) instead of its seed's draws."""
        arrays = {}
        for t, l in enumerate(self.topo.trainable):
            arrays[f"W{t}"], arrays[f"b{t}"] = params[l]
        check_state_arrays(arrays, self.topo, "the initial weights")
        self.engine.restore({l: (W, b, np.zeros_like(W), np.zeros_like(b)) for l, (W, b) in
                             ((l, params[l]) for l in self.topo.trainable)})

    def load_state(self, arrays: dict[str, np.ndarray], path: str) -> None:
        check_state_arrays(arrays, self.topo, path)
        state: HostState = {}
        for t, l in enumerate(self.topo.trainable):
            W, b = arrays[f"W{t}"], arrays[f"b{t}"]
            vW = arrays[f"vW{t}"] if f"vW{t}" in arrays else np.zeros_like(W)
            vb = arrays[f"vb{t}"] if f"vb{t}" in arrays else np.zeros_like(b)
            state[l] = (W, b, vW, vb)
        self.load_progress(arrays, path)
        self.engine.restore(state)


PASSES = ("forward", "backward", "update")


def operation_rows(res: EpochResult, topo: Topology) -> list[dict]:
    """Per layer and pass, the epoch's operations per training sample (``operations.parquet``): the
    SNN's accumulations and multiply-accumulates, the equivalent ANN's MACs, and the spikes (forward)
    or error spikes emitted and delivered (backward, update) that cause them (:mod:`cluster.synops`)."""
    c = {name: res.layer_counts[:, i] / res.images for i, name in enumerate(COUNTERS)}
    out = []
    for l, layer in enumerate(topo.layers):
        ann = {"forward": c["macs"][l], "backward": c["macs"][l] if l > 0 else 0.0,
               "update": c["macs"][l] if layer.trainable else 0.0}
        for p in PASSES:
            fwd = p == "forward"
            out.append({"epoch": res.epoch, "layer": l, "kind": layer.kind, "token": layer.token(), "pass": p,
                        "snn_acc": c[f"acc_{p}"][l], "snn_mac": c["input_macs"][l] if fwd else 0.0,
                        "ann_mac": ann[p], "spikes": c["spikes"][l] if fwd else 0.0,
                        "error_spikes": 0.0 if fwd else c["error_spikes"][l],
                        "error_spikes_delivered": 0.0 if fwd else c["error_spikes_delivered"][l]})
    return out


def spike_rows(epoch: int, topo: Topology, cfg: TrainConfig, params: dict[int, tuple[np.ndarray, np.ndarray]],
               x: np.ndarray) -> list[dict]:
    """The spikes per neuron per sample of every hidden layer (``spikes.parquet``): a histogram over
    (neuron, sample) of the equivalent ANN's Σ|S| on the first test images (1,000, fewer for large
    networks: about 2·10⁹ MACs in all), with Eq. (21)'s bound n_max (:func:`cluster.synops.spike_bound`)."""

    if not len(x) or len(topo.layers) < 2:
        return []
    per_image = sum(layer_fan(layer).connections for layer in topo.layers)
    n = int(max(16, min(1000, 2e9 // max(per_image, 1), len(x))))
    n = min(n, len(x))
    xs = np.asarray(x[:n], dtype=np.float32)
    fp = forward(np, topo, {l: (np.asarray(W, np.float32), np.asarray(b, np.float32)) for l, (W, b) in params.items()},
                 xs, cfg.step)
    hist = spike_histogram([export_layer(np, lf.S) for lf in fp.layers], topo)
    bound = spike_bound(topo, params, float(np.max(np.abs(xs))), cfg.theta_ff)
    return [dict(epoch=epoch, layer=l, token=topo.layers[l].token(), spikes=k, count=int(cnt), samples=n,
                 n_max=bound[l]) for l, h in enumerate(hist) for k, cnt in enumerate(h) if cnt]


def epoch_rows(res: EpochResult, topo: Topology, cfg: TrainConfig) -> tuple[dict, list[dict]]:
    """The epoch's metrics row and its per-layer rows (for the Parquet files)."""
    counts = res.layer_counts
    c = {name: counts[:, i] for i, name in enumerate(COUNTERS)}
    layer_rows = []
    L = len(topo.layers) - 1
    for l, layer in enumerate(topo.layers):
        macs = c["macs"][l]
        layer_neurons = topo.neurons(l) * res.images
        layer_rows.append(dict(
            epoch=res.epoch, layer=l, kind=layer.kind, token=layer.token(),
            spikes=c["spikes"][l], spikes_per_neuron=(c["spikes"][l] / layer_neurons) if l < L else float("nan"),
            error_spikes=c["error_spikes"][l], error_spikes_delivered=c["error_spikes_delivered"][l],
            input_macs=c["input_macs"][l],
            acc_forward=c["acc_forward"][l], acc_backward=c["acc_backward"][l], acc_update=c["acc_update"][l],
            macs=macs,
            # layer 0's forward operations are MACs (the float input), the others' ACCs
            rel_forward=(c["input_macs"][l] if l == 0 else c["acc_forward"][l]) / macs,
            rel_backward=(c["acc_backward"][l] / macs) if l > 0 else float("nan"),
            rel_update=(c["acc_update"][l] / macs) if layer.trainable else float("nan"),
            input_is_float=(l == 0),
        ))
    hidden = range(L)
    spikes = float(sum(c["spikes"][l] for l in hidden))
    neurons = float(sum(topo.neurons(l) for l in hidden)) * res.images
    back_l = [l for l in range(1, L + 1)]
    row = dict(
        epoch=res.epoch, train_loss=res.train_loss, train_accuracy=res.train_accuracy,
        test_accuracy=res.test_accuracy, seconds=res.seconds, images=res.images,
        images_per_second=res.images / res.seconds if res.seconds > 0 else float("nan"),
        spikes_per_neuron=spikes / neurons if neurons else float("nan"),
        rel_synops_forward=float(sum(c["acc_forward"][1:]) / sum(c["macs"][1:])) if L else float("nan"),
        rel_synops_backward=float(sum(c["acc_backward"][l] for l in back_l) / sum(c["macs"][l] for l in back_l)),
        gradient=cfg.gradient, alpha=cfg.alpha,
        calls=res.calls, machine_cpu_seconds=res.machine_cpu_seconds, machine_cores=os.cpu_count() or 0,
    )
    return row, layer_rows
