"""A whole training step captured once as a CUDA graph and replayed for every batch (CuPy).

On a GPU the equivalent ANN of a small network (the ``mnist`` preset: about 70 kernels per
step) is bound by launches, not arithmetic: every kernel costs Python and driver time on the
host while the device idles. Here the step of Algorithm 3 (forward Eqs. (10), (15); top error;
backward Eqs. (11), (12), (18); increments and the update Eq. (14); the synaptic-operation
counters) is recorded once with CUDA stream capture and then launched as one graph per batch.

What a replay may change, and how:

* the batch: copied into fixed input buffers (``x``, ``y``) before each launch;
* the learning rate: a 0-d device array read by the captured update (a scalar argument would be
  baked into the graph); it holds ``float(dtype(eta · lr_scale))``, the value the eager update
  rounds its Python scalar to, so both updates are the same numbers;
* weights, velocities and counters: updated in place in their own buffers, so each replay reads
  what the previous one wrote.

The captured products are dense (:func:`cluster.layers.dense_products`): skipping error-free
columns needs the number of active columns on the host, which a graph cannot wait for. Dense
and sparse products give the same sums (zero columns add exact zeros), so a replayed step
equals the eager step value for value where float sums are exact (dyadic values: the tests),
and up to float summation order otherwise.

Memory: everything the capture allocates comes from a private CuPy memory pool that no other
code allocates from, so the buffers a replay writes are never handed to another array.

The first call of a batch shape runs eagerly in that pool (compiling kernels, creating the
cuBLAS workspace, filling the pool), the second captures and launches; later calls launch.
Any failure to capture is reported once and the step stays eager (``reason``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .layers import dense_products
from .network import StepConfig, backward, forward, sgd_update
from .synops import COUNTERS, SynopCounter
from .topology import Topology


class GraphStep:
    """Forward, backward, counters and the SGD update of one batch shape, as one CUDA graph.

    params / velocity: the trainer's dicts {layer: (W, b)}; their arrays are updated in place,
    and must not be replaced while this object lives (call :meth:`reset` after loading others).
    """

    def __init__(self, xp: Any, topo: Topology, params: dict, velocity: dict, step: StepConfig,
                 momentum: float, frac_bits: int | None, counter: SynopCounter, batch: int, dtype: Any) -> None:
        self.xp, self.topo, self.params, self.velocity = xp, topo, params, velocity
        self.step, self.momentum, self.frac_bits, self.counter = step, momentum, frac_bits, counter
        self.batch, self.dtype = batch, np.dtype(dtype)
        self.stream = xp.cuda.Stream()        # capture cannot run on the legacy default stream
        self.pool = xp.cuda.MemoryPool()      # private: see the module docstring
        with self.stream, xp.cuda.using_allocator(self.pool.malloc):
            self.x = xp.empty((batch, *topo.input_shape), dtype=self.dtype)
            self.y = xp.empty(batch, dtype=np.int64)
            self.eta = xp.zeros((), dtype=self.dtype)
            self.acc = xp.zeros((len(topo.layers), len(COUNTERS)), dtype=np.float64)
        self.graph: Any = None
        self.outputs: tuple[Any, Any] | None = None
        self.host_counts: np.ndarray | None = None  # the counters' host-side constants per step
        self.replays = 0
        self.calls = 0
        self.reason: str | None = None               # why the step runs eagerly, once capture failed

    # -- the step itself -------------------------------------------------------------------
    def _body(self) -> tuple[Any, Any, list]:
        xp = self.xp
        with dense_products():
            fp = forward(xp, self.topo, self.params, self.x, self.step)
            bp = backward(xp, self.topo, self.params, fp, self.y, self.step)
            rows = self.counter.measure(fp.x, [lf.S for lf in fp.layers], bp.E, self.batch)
        for l, (gW, gb) in bp.sums.items():
            sgd_update(xp, *self.params[l], *self.velocity[l], gW, gb, self.eta, self.momentum, self.frac_bits)
        loss = bp.loss.sum()
        correct = (fp.V.argmax(axis=1) == self.y).sum()
        return loss, correct, rows

    def _accumulate_on_device(self, rows: list) -> None:
        """acc[l, i] += every counter the device computed; the host constants are kept aside."""
        host = np.zeros(self.acc.shape)
        for l, row in enumerate(rows):
            for i, v in enumerate(row):
                if isinstance(v, self.xp.ndarray):
                    self.acc[l, i] += v
                else:
                    host[l, i] = float(v)
        self.host_counts = host

    def run(self, x: np.ndarray, y: np.ndarray, eta: float) -> tuple[float, int]:
        """One batch (host x (B, C, H, W), y (B,)) with learning rate eta: (loss sum, correct)."""
        xp = self.xp
        with self.stream, xp.cuda.using_allocator(self.pool.malloc):
            self.x.set(np.ascontiguousarray(x, dtype=self.dtype))
            self.y.set(np.ascontiguousarray(y, dtype=np.int64))
            self.eta.fill(self.dtype.type(eta))
            self.calls += 1
            if self.graph is None and (self.calls == 1 or self.reason is not None):
                loss, correct, rows = self._body()  # eager: warms the pool, kernels and cuBLAS
                self._accumulate_on_device(rows)
                self.replays += 1
                out = float(loss), int(correct)
                self.stream.synchronize()
                return out
            if self.graph is None:
                self._capture()
                if self.graph is None:
                    return self.run(x, y, eta)  # capture failed: eager from now on (self.reason)
            self.graph.launch(self.stream)
            self.replays += 1
            loss, correct = self.outputs  # type: ignore[misc]
            out = float(loss), int(correct)
            self.stream.synchronize()
            return out

    def _capture(self) -> None:
        try:
            self.stream.begin_capture()
            try:
                loss, correct, rows = self._body()
                self._accumulate_on_device(rows)
            finally:
                graph = self.stream.end_capture()
        except Exception as exc:  # noqa: BLE001  (an unsupported call: stay eager, say why)
            self.reason = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); the step runs eagerly"
            self.calls -= 1
            return
        self.graph, self.outputs = graph, (loss, correct)

    # -- counters and state ----------------------------------------------------------------
    def flush_counts(self) -> None:
        """Move the counters of every step run so far into the trainer's SynopCounter."""
        if self.replays == 0:
            return
        with self.stream:
            acc = self.acc.get() + self.replays * self.host_counts
            self.acc.fill(0)
        self.counter.accumulate([list(row) for row in acc])
        self.replays = 0

    def reset(self) -> None:
        """Forget the graph (after the trainer's arrays were replaced): the next call recaptures."""
        self.flush_counts()
        self.graph, self.outputs, self.calls = None, None, 0
