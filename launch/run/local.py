"""``--engine local``: the equivalent ANN in this process (NumPy, micro-batches on worker processes; or CuPy).

Algorithm 3 per batch: forward, backward, then w ← w + ΔW once. With momentum μ the applied
step is v ← μ v + ΔW, w ← w + v (μ = 0 is Algorithm 3 exactly). One implementation of the
:class:`~launch.run.engine.Engine` protocol; its steps finish when they are submitted.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from actors.allocator import keep_freed_memory
from cluster.backend import Backend, get_backend, to_device, to_host
from cluster.graph import GraphStep
from cluster.network import forward, sgd_update
from cluster.synops import SynopCounter
from cluster.topology import Topology

from .config import TrainConfig
from .engine import Counters, HostState
from .workers import WorkerPool, micro_step

# Samples per micro-batch on the CPU: enough to keep every worker busy, between these
# bounds (measured with `spikegrad bench train --micro-batch N`, README).
MICRO_BATCH_MIN, MICRO_BATCH_MAX = 16, 128


class LocalEngine:
    """Holds the parameters on the backend and runs whole steps.

    params: initial {layer l: (W, b)} host arrays in the layouts of docs/design.md §2; velocities start at 0.
    graph: CuPy only: replay each full batch's step as a CUDA graph (None: ``cfg.cuda_graph``).
    """

    def __init__(self, cfg: TrainConfig, topo: Topology, params: dict[int, tuple[np.ndarray, np.ndarray]],
                 backend: Backend | None = None, graph: bool | None = None) -> None:
        self.cfg, self.topo = cfg, topo
        self.backend = backend or get_backend(cfg.backend)
        self.backend_name: str = self.backend.name
        self.xp = self.backend.xp
        if not self.backend.is_gpu:
            keep_freed_memory()
        self.dtype = np.dtype(cfg.dtype)
        self.params = {l: (self._own(W), self._own(b)) for l, (W, b) in params.items()}
        self.velocity = {l: (self.xp.zeros_like(W), self.xp.zeros_like(b)) for l, (W, b) in self.params.items()}
        self.counter = SynopCounter(self.xp, topo, spike_errors=(cfg.gradient == "spike"))
        self._done = (0.0, 0, 0)  # loss sum, correct, samples of steps not yet collected
        # CPU parallelism: micro-batches on worker processes (see train_step).
        self.micro_batch: int | None = None  # None: chosen per batch size (see _split)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.workers = max(1, min(cores, 8))
        self._workers: Any = None
        # GPU: whole steps of one batch shape captured as a CUDA graph (cluster.graph).
        self.use_graph = self.backend.is_gpu and (cfg.cuda_graph if graph is None else graph)
        self._graph: Any = None
        self.graph_note: str | None = None  # why the graph was given up, if it was

    def _own(self, a: np.ndarray) -> Any:
        """A private, writable copy on the backend (updated in place: never the caller's array)."""
        return np.array(a, dtype=self.dtype) if self.xp is np else to_device(self.backend, a, self.dtype)

    def describe(self) -> str:
        return (f"one process, backend {self.backend.name}"
                + (" (steps replayed as CUDA graphs)" if self.use_graph else
                   f" ({self.workers} worker processes)" if not self.backend.is_gpu else ""))

    # -- one batch -------------------------------------------------------------------------
    def _micro_step(self, x: np.ndarray, y: np.ndarray) -> tuple[dict, Any, Any, list]:
        """Forward and backward of a whole batch here, as one micro-batch (:func:`micro_step`)."""
        return micro_step(self.xp, self.topo, self.params, to_device(self.backend, x, self.dtype),
                          to_device(self.backend, y.astype(np.int64)), self.cfg.step, self.counter)

    def train_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float = 1.0) -> tuple[float, int]:
        """One batch: x (B, C, H, W) host float, y (B,) host int. Returns (loss sum, correct).

        On NumPy the batch is cut into micro-batches of ``micro_batch`` samples that run on
        ``workers`` worker processes (:mod:`launch.run.workers`: a GIL each, the weights in
        shared memory), each small enough for its layers to stay in cache. Every sample's
        forward and backward pass is independent of the others, and the increment sums are
        added in micro-batch order, so the result does not depend on timing; the layers fed
        by spikes get exactly the same integer sums as one whole-batch step.
        """
        if self.use_graph and (self._graph is None or self._graph.batch == len(x)):
            return self._graph_step(x, y, lr_scale)
        parts = self._split(len(x))
        if len(parts) == 1 or self.workers == 1:  # one core: the micro-batches in turn, here
            results = [self._micro_step(x[p], y[p]) for p in parts]
        else:
            pool = self._processes()
            part_sums, done = pool.train(np.asarray(x, dtype=self.dtype), np.asarray(y, dtype=np.int64), parts)
            results = [(s, *r) for s, r in zip(part_sums, done)]
        sums = results[0][0]  # this step's own arrays: safe to accumulate into
        for r in results[1:]:
            for l, (gW, gb) in r[0].items():
                acc_W, acc_b = sums[l]
                acc_W += gW
                acc_b += gb
        for r in results:
            self.counter.accumulate(r[3])
        self.apply(sums, lr_scale)
        return float(sum(float(r[1]) for r in results)), int(sum(int(r[2]) for r in results))

    def submit(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> None:
        loss, correct = self.train_step(x, y, lr_scale)
        l0, c0, n0 = self._done
        self._done = (l0 + loss, c0 + correct, n0 + len(x))

    def collect(self, wait: bool = False) -> tuple[float, int, int]:
        out, self._done = self._done, (0.0, 0, 0)
        if wait:
            self.backend.synchronize()
        return out

    def _graph_step(self, x: np.ndarray, y: np.ndarray, lr_scale: float) -> tuple[float, int]:
        """The step as a replayed CUDA graph (the full batches of an epoch; a shorter last batch
        runs eagerly). Gives up, saying why, where capture fails."""

        if self._graph is None:
            self._graph = GraphStep(self.xp, self.topo, self.params, self.velocity, self.cfg.step,
                                    self.cfg.momentum, self.cfg.weight_frac_bits, self.counter, len(x), self.dtype)
        out = self._graph.run(x, y, self.cfg.eta * lr_scale)
        if self._graph.reason is not None:
            self.graph_note, self.use_graph = self._graph.reason, False
            self._release_graph()
        return out

    def _release_graph(self) -> None:
        """Fold the graph's counters into the engine's and drop it (its buffers point at the
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

    def _processes(self) -> Any:
        """The worker processes (:mod:`launch.run.workers`), started at the first batch that needs them;
        from then on the weights live in memory shared with them (updated in place)."""
        if self._workers is None:

            self._workers = WorkerPool(self.workers, self.topo.text, self.cfg.step, self.dtype,
                                       self.cfg.gradient == "spike", self.params)
            self.params = dict(self._workers.params)
        return self._workers

    # -- evaluation ------------------------------------------------------------------------
    def predict(self, x: np.ndarray) -> np.ndarray:
        """argmax Vᴸ for x (B, C, H, W) host float -> (B,) host int, micro-batched like training."""
        def one(p: slice) -> np.ndarray:
            xd = to_device(self.backend, x[p], self.dtype)
            return to_host(forward(self.xp, self.topo, self.params, xd, self.cfg.step).V.argmax(axis=1))

        parts = self._split(len(x))
        if len(parts) == 1 or self.workers == 1:
            return np.concatenate([one(p) for p in parts])
        return self._processes().predict(np.asarray(x, dtype=self.dtype), parts)

    # -- counters and state ----------------------------------------------------------------
    def counters(self) -> Counters:
        if self._graph is not None:
            self._graph.flush_counts()
        return Counters(self.counter.totals())

    def state(self) -> HostState:
        return {l: tuple(np.array(to_host(a)) for a in (W, b, *self.velocity[l]))  # type: ignore[misc]
                for l, (W, b) in self.params.items()}

    def restore(self, state: HostState) -> None:
        self._release_graph()  # the arrays it updates in place are about to be replaced
        for l, (W, b, vW, vb) in state.items():
            if self._workers is not None:  # the shared arrays the workers read, overwritten in place
                np.copyto(self.params[l][0], np.asarray(W, dtype=self.dtype))
                np.copyto(self.params[l][1], np.asarray(b, dtype=self.dtype))
            else:
                self.params[l] = (self._own(W), self._own(b))
            self.velocity[l] = (self._own(vW), self._own(vb))

    def restart(self) -> None:
        """Nothing to restart: a local step's failure is not recoverable (it propagates)."""

    def note(self) -> str | None:
        out, self.graph_note = self.graph_note, None
        return out

    def memory(self) -> dict[str, float]:
        return {}

    def calls(self) -> int:
        return 0

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
            self._workers = None
