"""The single-process trainer (``--engine local``): batches, SGD, metrics, run directory.

Algorithm 3 per batch: forward, backward, then w ← w + ΔW once. With momentum μ
the applied step is v ← μ v + ΔW, w ← w + v (μ = 0 is Algorithm 3 exactly).

Run directory (``--out``): ``config.json`` (the resolved config), ``metrics.parquet``
(one row per epoch), ``layers.parquet`` (one row per epoch and layer: spikes per
neuron, synaptic operations and their ratio to the ANN's MACs), ``checkpoint.npz``
(weights, velocities and the driver's position: epoch, batch, generator state; loaded
with ``allow_pickle=False``; rewritten atomically at each epoch end and every
``--checkpoint-every`` batches) and ``summary.json``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from cluster.backend import Backend, get_backend, to_device, to_host
from cluster.errors import SpikeGradError
from cluster.network import backward, forward, init_params, quantize, sgd_update
from cluster.synops import COUNTERS, SynopCounter
from cluster.topology import Topology, parse_topology

from actors.allocator import keep_freed_memory, resident_bytes
from .config import TrainConfig, config_from_json
from .datasets import Dataset, augment
from .files import write_atomic

CHECKPOINT = "checkpoint.npz"
LOCK = ".lock"  # one writer per run directory (launch.runs.run_lock)
_NO_PARTIAL = {"loss": 0.0, "correct": 0.0, "seen": 0.0, "seconds": 0.0}  # an epoch's sums before its first batch
# Samples per micro-batch on the CPU: enough to keep every worker busy, between these
# bounds (measured with `spikegrad bench train --micro-batch N`, README).
MICRO_BATCH_MIN, MICRO_BATCH_MAX = 16, 128


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    test_accuracy: float
    seconds: float
    images: int
    layer_counts: np.ndarray  # (L+1, len(COUNTERS))


def lr_factor(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier: constant, or cosine from 1 down to 0 over the whole run."""
    if cfg.schedule == "constant":
        return 1.0
    progress = (epoch * steps_per_epoch + step) / max(1, cfg.epochs * steps_per_epoch)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class Trainer:
    """Owns the parameters (on the backend) and runs epochs.

    params: {layer l: (W, b)} in the DESIGN layouts; velocity: same shapes.
    """

    def __init__(self, cfg: TrainConfig, topo: Topology | None = None, backend: Backend | None = None,
                 graph: bool | None = None) -> None:
        self.cfg = cfg
        self.topo = topo or parse_topology(cfg.topology)
        self.backend = backend or get_backend(cfg.backend)
        self.xp = self.backend.xp
        if not self.backend.is_gpu:
            keep_freed_memory()
        self.dtype = np.dtype(cfg.dtype)
        # One generator, seeded once: initial weights, then the batch order of each epoch.
        self.rng = np.random.default_rng(cfg.seed)
        host = init_params(self.topo, self.rng, cfg.theta_ff, self.dtype)
        if cfg.weight_frac_bits is not None:
            for W, b in host.values():
                quantize(np, W, cfg.weight_frac_bits)
        self.params = {l: (to_device(self.backend, W), to_device(self.backend, b)) for l, (W, b) in host.items()}
        self.velocity = {l: (self.xp.zeros_like(W), self.xp.zeros_like(b)) for l, (W, b) in self.params.items()}
        self.counter = SynopCounter(self.xp, self.topo, spike_errors=(cfg.gradient == "spike"))
        self.epochs_done = 0
        # Where a checkpoint can stop and resume (:meth:`run_epoch`): batches of the current
        # epoch applied, the generator before this epoch's permutation, the epoch's sums so far.
        self.position = 0
        self.epoch_rng_state: dict | None = None
        self.partial: dict[str, float] = dict(_NO_PARTIAL)
        self.partial_counts: np.ndarray | None = None
        # CPU parallelism: micro-batches on worker threads (see train_step).
        self.micro_batch: int | None = None  # None: chosen per batch size (see _split)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = max(1, min(cores, 8))
        self._executor: Any = None
        self._blas: Any = None
        # GPU: whole steps of one batch shape captured as a CUDA graph (cluster.graph); None: on with CuPy.
        self.use_graph = self.backend.is_gpu and (cfg.cuda_graph if graph is None else graph)
        self._graph: Any = None
        self.graph_note: str | None = None  # why the graph was given up, if it was

    # -- one batch -------------------------------------------------------------------------
    def _micro_step(self, x: np.ndarray, y: np.ndarray) -> tuple[dict, Any, Any, list]:
        """Forward and backward of one micro-batch: (increment sums, loss sum, correct, counts).

        Reads the parameters, writes nothing shared: several run at once in worker threads.
        """
        xp, step = self.xp, self.cfg.step
        xd = to_device(self.backend, x, self.dtype)
        yd = to_device(self.backend, y.astype(np.int64))
        fp = forward(xp, self.topo, self.params, xd, step)
        correct = (fp.V.argmax(axis=1) == yd).sum()
        S = [lf.S for lf in fp.layers]
        bp = backward(xp, self.topo, self.params, fp, yd, step)
        counts = self.counter.measure(fp.x, S, bp.E, x.shape[0])
        return bp.sums, bp.loss.sum(), correct, counts

    def train_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float = 1.0) -> tuple[float, int]:
        """One batch: x (B, C, H, W) host float, y (B,) host int. Returns (loss sum, correct).

        On NumPy the batch is cut into micro-batches of ``micro_batch`` samples that run on
        ``workers`` threads (NumPy and single-threaded BLAS release the GIL), each small
        enough for its layers to stay in cache. Every sample's forward and backward pass
        is independent of the others, and the increment sums are added in micro-batch
        order, so the result does not depend on thread timing; the layers fed by spikes
        get exactly the same integer sums as one whole-batch step.
        """
        if self.use_graph and (self._graph is None or self._graph.batch == len(x)):
            return self._graph_step(x, y, lr_scale)
        parts = self._split(len(x))
        if len(parts) == 1:
            results = [self._micro_step(x, y)]
        else:
            with self._blas_single_thread():
                results = list(self._pool().map(lambda p: self._micro_step(x[p], y[p]), parts))
        sums = results[0][0]  # fresh arrays of this step: safe to accumulate into
        for r in results[1:]:
            for l, (gW, gb) in r[0].items():
                acc_W, acc_b = sums[l]
                acc_W += gW
                acc_b += gb
        for r in results:
            self.counter.accumulate(r[3])
        self.apply(sums, lr_scale)
        return float(sum(float(r[1]) for r in results)), int(sum(int(r[2]) for r in results))

    def _graph_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> tuple[float, int]:
        """The step as a replayed CUDA graph (the full batches of an epoch; a shorter last batch
        runs eagerly). Gives up, saying why, where capture fails."""
        from cluster.graph import GraphStep  # noqa: PLC0415

        if self._graph is None:
            self._graph = GraphStep(self.xp, self.topo, self.params, self.velocity, self.cfg.step,
                                    self.cfg.momentum, self.cfg.weight_frac_bits, self.counter, len(x), self.dtype)
        out = self._graph.run(x, y, self.cfg.eta * lr_scale)
        if self._graph.reason is not None:
            self.graph_note, self.use_graph = self._graph.reason, False
            self._release_graph()
        return out

    def _release_graph(self) -> None:
        """Fold the graph's counters into the trainer's and drop it (its buffers point at the
        arrays of the moment it was captured)."""
        if self._graph is not None:
            self._graph.flush_counts()
            self._graph = None

    def apply(self, sums: dict, lr_scale: float = 1.0) -> None:
        """w ← w + v, v ← μ v − η Σ E ⊗ S (Eq. (14)); once per batch (Algorithm 3)."""
        eta = self.cfg.eta * lr_scale
        for l, (gW, gb) in sums.items():
            sgd_update(self.xp, *self.params[l], *self.velocity[l], gW, gb, eta, self.cfg.momentum,
                       self.cfg.weight_frac_bits)

    def _split(self, n: int) -> list[slice]:
        mb = self.micro_batch or min(MICRO_BATCH_MAX, max(MICRO_BATCH_MIN, -(-n // self.workers)))
        if self.backend.is_gpu or mb >= n:
            return [slice(0, n)]
        return [slice(i, min(n, i + mb)) for i in range(0, n, mb)]

    def _pool(self) -> Any:
        if self._executor is None:
            from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="spikegrad")
        return self._executor

    def _blas_single_thread(self) -> Any:
        """BLAS limited to one thread while the worker threads run: the threads are the parallelism."""
        if self._blas is None:
            from threadpoolctl import ThreadpoolController  # noqa: PLC0415

            self._blas = ThreadpoolController()
        return self._blas.limit(limits=1, user_api="blas")

    # -- evaluation ------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """argmax Vᴸ for x (B, C, H, W) host float -> (B,) host int, micro-batched like training."""
        def one(p: slice) -> np.ndarray:
            xd = to_device(self.backend, x[p], self.dtype)
            return to_host(forward(self.xp, self.topo, self.params, xd, self.cfg.step).V.argmax(axis=1))

        parts = self._split(len(x))
        if len(parts) == 1:
            return one(parts[0])
        with self._blas_single_thread():
            return np.concatenate(list(self._pool().map(one, parts)))

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch: int = 1024) -> float:
        """Test accuracy in percent over all of x (B, C, H, W), y (B,)."""
        correct = 0
        for i in range(0, len(x), batch):
            correct += int((self.predict(x[i:i + batch]) == y[i:i + batch]).sum())
        return 100.0 * correct / max(1, len(x))

    def finish_steps(self) -> tuple[float, int]:
        """(loss sum, correct) of steps whose results train_step has not returned yet: none here
        (the chip trainer queues batches and returns their results later)."""
        return 0.0, 0

    def pending_samples(self) -> int:
        """Samples of steps whose results train_step has not returned yet (see finish_steps)."""
        return 0

    # -- epochs ----------------------------------------------------------------------------
    def run_epoch(self, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                  progress: bool = True, checkpoint_every: int | None = None,
                  checkpoint: Callable[[], None] | None = None) -> EpochResult:
        """One epoch from ``self.position`` (0, or where a resumed checkpoint stopped).

        Every ``checkpoint_every`` batches the queued steps are finished, the epoch's counters
        banked and ``checkpoint()`` called (it saves :meth:`state_arrays`); a run resumed from
        there redraws the same batch order and ends with the same weights.
        """
        from tqdm import tqdm  # noqa: PLC0415  (only the CLI path draws bars)

        epoch = self.epochs_done
        if self.position == 0:
            self.epoch_rng_state = copy.deepcopy(self.rng.bit_generator.state)
        else:  # resumed mid-epoch: the same permutation again
            self.rng.bit_generator.state = copy.deepcopy(self.epoch_rng_state)
        order = self.rng.permutation(len(x_train))
        k = self.cfg.shift  # augmentation: drawn right after the permutation, so a resume redraws it too
        shifts = self.rng.integers(-k, k + 1, size=(len(order), 2)) if k else None
        flips = self.rng.random(len(order)) < 0.5 if self.cfg.flip else None  # drawn next, likewise
        B = self.cfg.batch_size
        steps = math.ceil(len(order) / B)
        if self.position >= steps:
            raise SpikeGradError(f"checkpoint position {self.position} expected below the epoch's {steps} batches "
                                 f"(the checkpoint does not belong to this data)")
        loss_sum, correct, seen = self.partial["loss"], int(self.partial["correct"]), int(self.partial["seen"])
        t0 = time.perf_counter() - self.partial["seconds"]
        bar = tqdm(range(self.position, steps), desc=f"epoch {epoch + 1}/{self.cfg.epochs}", unit="batch",
                   disable=not progress, file=sys.stderr, leave=True, dynamic_ncols=True,
                   mininterval=0.1 if sys.stderr.isatty() else 30.0,  # job logs (no terminal): a line per 30 s
                   initial=self.position, total=steps)
        for s in bar:
            idx = order[s * B:(s + 1) * B]
            xb = augment(x_train[idx], None if shifts is None else shifts[s * B:(s + 1) * B],
                         None if flips is None else flips[s * B:(s + 1) * B])
            l_sum, c = self.train_step(xb, y_train[idx], lr_factor(self.cfg, epoch, s, steps))
            if not math.isfinite(l_sum):
                raise SpikeGradError(f"training diverged: the loss is {l_sum} at epoch {epoch + 1}, batch {s + 1} "
                                     f"(NaN or inf reached the output layer); the last checkpoint is left as it "
                                     f"was; try a smaller --lr")
            loss_sum += l_sum
            correct += c
            seen += len(idx)
            if s % 20 == 0 or s == steps - 1:
                done = seen - self.pending_samples()  # chips return a batch's results later
                if done > 0:
                    bar.set_postfix(loss=f"{loss_sum / done:.4f}", acc=f"{100.0 * correct / done:.2f}%")
            if checkpoint is not None and checkpoint_every and (s + 1) % checkpoint_every == 0 and s + 1 < steps:
                l_sum, c = self.finish_steps()
                loss_sum += l_sum
                correct += c
                self.backend.synchronize()
                self.bank_counts()
                self.position = s + 1
                self.partial = dict(loss=loss_sum, correct=correct, seen=seen, seconds=time.perf_counter() - t0)
                checkpoint()
        l_sum, c = self.finish_steps()
        loss_sum += l_sum
        correct += c
        self.backend.synchronize()
        seconds = time.perf_counter() - t0
        counts = self.collect_counts()
        test_acc = self.evaluate(x_test, y_test)
        bar.close()
        self.epochs_done += 1
        self.position, self.partial = 0, dict(_NO_PARTIAL)
        return EpochResult(epoch + 1, loss_sum / seen, 100.0 * correct / seen, test_acc, seconds, seen, counts)

    def collect_counts(self) -> np.ndarray:
        """The epoch's synaptic-operation counts, (L+1, len(COUNTERS)), banked ones included, and reset them."""
        if self._graph is not None:
            self._graph.flush_counts()
        counts = self.counter.totals()
        if self.partial_counts is not None:
            counts, self.partial_counts = counts + self.partial_counts, None
        return counts

    def memory(self) -> dict[str, float]:
        """Memory in use now, MiB: this process's resident set (for the soak figures)."""
        return {"rss_driver_mib": resident_bytes() / 2 ** 20}

    def bank_counts(self) -> None:
        """Move the counts so far out of the counters, into the checkpointed state."""
        self.partial_counts = self.collect_counts()

    def _banked(self) -> Any:
        return None if self.partial_counts is None else self.partial_counts.tolist()

    def _unbank(self, banked: Any) -> None:
        self.partial_counts = None if banked is None else np.asarray(banked, dtype=np.float64)

    def close(self) -> None:
        """Release workers (and, for chips, actors)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- checkpoints -----------------------------------------------------------------------
    def progress_arrays(self) -> dict[str, np.ndarray]:
        """The driver's position: epochs done, batches of the current epoch done, the generator
        now and before the epoch's permutation, the epoch's sums and banked counters (as a JSON
        string array: loaded without pickle)."""
        progress = dict(rng=self.rng.bit_generator.state, epoch_rng=self.epoch_rng_state,
                        partial=self.partial, banked=self._banked())
        return {"epochs_done": np.asarray(self.epochs_done), "position": np.asarray(self.position),
                "progress": np.asarray(json.dumps(progress))}

    def load_progress(self, arrays: dict[str, np.ndarray], path: str) -> None:
        for key in ("epochs_done", "position"):
            v = arrays.get(key, np.asarray(0))
            if v.shape != () or v.dtype.kind not in "iu" or not 0 <= int(v) < 2 ** 31:
                raise SpikeGradError(f"checkpoint {path}: {key} expected a non-negative integer, got "
                                     f"{v.dtype} {v.shape} {v.tolist() if v.size < 5 else '...'}")
        self.epochs_done = int(arrays.get("epochs_done", 0))
        self.position = int(arrays.get("position", 0))
        if self.epochs_done > self.cfg.epochs:
            raise SpikeGradError(f"checkpoint {path}: epochs_done expected at most the run's {self.cfg.epochs} "
                                 f"epochs, got {self.epochs_done}")
        if "progress" not in arrays:  # a checkpoint written before resumable runs: epoch ends only
            if self.position:
                raise SpikeGradError(f"checkpoint {path}: position {self.position} without its progress record")
            return
        try:
            p = json.loads(str(arrays["progress"]))
            self.rng.bit_generator.state = p["rng"]
            self.epoch_rng_state = p["epoch_rng"]
            self.partial = {k: float(p["partial"][k]) for k in _NO_PARTIAL}
            self._unbank(p["banked"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SpikeGradError(f"checkpoint {path}: unreadable progress record ({type(exc).__name__}: {exc})") from None
        if self.position and self.epoch_rng_state is None:
            raise SpikeGradError(f"checkpoint {path}: position {self.position} without the epoch's generator state")

    def state_arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = self.progress_arrays()
        for t, l in enumerate(self.topo.trainable):
            W, b = self.params[l]
            vW, vb = self.velocity[l]
            out[f"W{t}"], out[f"b{t}"] = to_host(W), to_host(b)
            out[f"vW{t}"], out[f"vb{t}"] = to_host(vW), to_host(vb)
        return out

    def load_state(self, arrays: dict[str, np.ndarray], path: str) -> None:
        check_state_arrays(arrays, self.topo, path)
        self._release_graph()  # the arrays it updates in place are about to be replaced
        for t, l in enumerate(self.topo.trainable):
            self.params[l] = (to_device(self.backend, arrays[f"W{t}"], self.dtype),
                              to_device(self.backend, arrays[f"b{t}"], self.dtype))
            if f"vW{t}" in arrays:
                self.velocity[l] = (to_device(self.backend, arrays[f"vW{t}"], self.dtype),
                                    to_device(self.backend, arrays[f"vb{t}"], self.dtype))
        self.load_progress(arrays, path)


def check_state_arrays(arrays: dict[str, np.ndarray], topo: Topology, path: str) -> None:
    """Refuse a checkpoint whose weights, biases or velocities do not fit ``topo`` or are not finite
    floats (a NaN or complex bias would otherwise evaluate to a plausible accuracy)."""
    for t, l in enumerate(topo.trainable):
        w_shape = tuple(topo.layers[l].weight_shape)
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


def save_checkpoint(run_dir: Path, trainer: Trainer) -> None:
    write_atomic(run_dir / CHECKPOINT, lambda f: np.savez(f, **trainer.state_arrays()))


def load_run(run_dir: str | os.PathLike, backend: str | None = None) -> Trainer:
    """A Trainer restored from a run directory's config.json and checkpoint.npz."""
    run = Path(run_dir)
    cfg_path, ckpt = run / "config.json", run / CHECKPOINT
    for p in (cfg_path, ckpt):
        if not p.is_file():
            raise SpikeGradError(f"{run} is not a run directory: {p.name} is missing")
    cfg = config_from_json(cfg_path.read_bytes())
    if backend is not None:
        cfg = TrainConfig(**{**json.loads(cfg.to_json()), "backend": backend})
    trainer = Trainer(cfg)
    trainer.load_state(read_checkpoint(ckpt), str(ckpt))
    return trainer


_NPZ_KINDS = "biufU"  # bool, integers, floats, and text (the progress record, a case's topology)


def read_npz(path: Path, what: str = "checkpoint") -> dict[str, np.ndarray]:
    """An .npz file's arrays, read without pickle (checkpoints, conformance cases). Every member's
    header is checked against the bytes the member holds before anything is allocated (a header
    may claim any shape); only numbers, booleans and text are accepted."""
    import zipfile  # noqa: PLC0415

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
                    if need > info.file_size:
                        raise SpikeGradError(f"{what} {path}: {info.filename} claims shape {shape} "
                                             f"({need} bytes) but holds {info.file_size} bytes")
                with zf.open(info) as f:  # read again from the start: read_array wants the header
                    arrays[info.filename[:-4]] = fmt.read_array(f, allow_pickle=False)
    except SpikeGradError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, RuntimeError, MemoryError) as exc:
        raise SpikeGradError(f"{what} {path} is unreadable ({type(exc).__name__}: {exc})") from None
    return arrays


def read_checkpoint(ckpt: Path) -> dict[str, np.ndarray]:
    """A checkpoint's arrays (:func:`read_npz`)."""
    return read_npz(ckpt, "checkpoint")


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


def epoch_rows(res: EpochResult, topo: Topology, cfg: TrainConfig) -> tuple[dict, list[dict]]:
    """The epoch's metrics row and its per-layer rows (for the Parquet files)."""
    counts = res.layer_counts
    c = {name: counts[:, i] for i, name in enumerate(COUNTERS)}
    layer_rows = []
    L = len(topo.layers) - 1
    for l, layer in enumerate(topo.layers):
        macs = c["macs"][l]
        neurons = topo.neurons(l) * res.images
        layer_rows.append(dict(
            epoch=res.epoch, layer=l, kind=layer.kind, token=layer.token(),
            spikes=c["spikes"][l], spikes_per_neuron=(c["spikes"][l] / neurons) if l < L else float("nan"),
            error_spikes=c["error_spikes"][l],
            acc_forward=c["acc_forward"][l], acc_backward=c["acc_backward"][l], acc_update=c["acc_update"][l],
            macs=macs,
            rel_forward=c["acc_forward"][l] / macs,
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
    )
    return row, layer_rows


def write_parquet(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    table = pa.Table.from_pylist(rows)
    write_atomic(path, lambda f: pq.write_table(table, f))


def read_parquet_rows(path: Path) -> list[dict]:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise SpikeGradError(f"{path} is not a readable Parquet file ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
