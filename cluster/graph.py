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
and up to float summation order otherwise. They are computed by cuBLAS called directly
(:class:`CublasGemm`): CuPy refuses to call cuBLAS while a stream captures (CuPy 14).

Memory: everything the capture allocates comes from a private CuPy memory pool that no other
code allocates from, so the buffers a replay writes are never handed to another array.

The first call of a batch shape runs eagerly in that pool (compiling kernels, creating the
cuBLAS workspace, filling the pool), the second captures and launches; later calls launch.
Any failure to capture is reported once and the step stays eager (``reason``).
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from .layers import dense_products
from .network import StepConfig, backward, forward, sgd_update
from .synops import COUNTERS, SynopCounter
from .topology import Topology

_OP_N, _OP_T = 0, 1  # cublasOperation_t


def _loaded_library(stem: str) -> str:
    """The path of a shared library this process has loaded (/proc/self/maps), e.g. libcublas.so.13."""
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split(None, 5)[-1].strip()
            if f"/{stem}." in path or path.endswith(f"/{stem}"):
                return path
    raise RuntimeError(f"{stem} is not loaded in this process")


class CublasGemm:
    """Matrix products by cuBLAS, called through ctypes on one stream, with its own handle and
    workspace: callable during a CUDA graph capture, where CuPy refuses to call cuBLAS.

    ``gemm(a, b)`` = a @ b for 2-D float32 or float64 arrays (b may be 1-D); C- or F-contiguous
    operands are passed as they are (a transposed operand is cuBLAS's op T), others copied first.
    """

    def __init__(self, xp: Any, stream: Any) -> None:

        self.xp, self.ct = xp, ctypes
        xp.ones((2, 2), dtype=np.float32) @ xp.ones((2, 2), dtype=np.float32)  # CuPy loads libcublas
        lib = ctypes.CDLL(_loaded_library("libcublas.so"))
        p, i = ctypes.c_void_p, ctypes.c_int
        for name in ("cublasSgemm_v2", "cublasDgemm_v2"):
            fn = getattr(lib, name)
            fn.argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
            fn.restype = i
        self.lib, self.handle = lib, ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream.ptr)), "cublasSetStream")
        self.workspace = xp.empty(32 << 20, dtype=np.uint8)  # set after the stream: setting a stream resets it
        self._check(lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                                              ctypes.c_size_t(self.workspace.nbytes)), "cublasSetWorkspace")
        self.scalars = {np.dtype(np.float32): (ctypes.c_float(1.0), ctypes.c_float(0.0), lib.cublasSgemm_v2),
                        np.dtype(np.float64): (ctypes.c_double(1.0), ctypes.c_double(0.0), lib.cublasDgemm_v2)}

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} returned cuBLAS status {status}")

    def _operand(self, x: Any) -> tuple[int, Any, int]:
        """(op, array, ld) such that op(x read column-major with ld) is xᵀ."""
        if x.flags.c_contiguous:
            return _OP_N, x, max(1, x.shape[1])
        if x.flags.f_contiguous:
            return _OP_T, x, max(1, x.shape[0])
        x = self.xp.ascontiguousarray(x)
        return _OP_N, x, max(1, x.shape[1])

    def __call__(self, a: Any, b: Any) -> Any:
        vector = b.ndim == 1
        if vector:
            b = b.reshape(-1, 1)
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.dtype not in self.scalars \
                or a.shape[1] != b.shape[0]:
            raise NotImplementedError(f"gemm of {a.dtype}{a.shape} and {b.dtype}{b.shape}")
        (m, k), n = a.shape, b.shape[1]
        out = self.xp.empty((m, n), dtype=a.dtype)
        if k == 0:
            out.fill(0)
        elif m and n:
            one, zero, fn = self.scalars[a.dtype]
            # Row-major C = A B is column-major Cᵀ = Bᵀ Aᵀ: C read column-major with ld n is Cᵀ.
            op_b, bb, ldb = self._operand(b)
            op_a, aa, lda = self._operand(a)
            addr = self.ct.addressof
            self._check(fn(self.handle, op_b, op_a, n, m, k, addr(one), bb.data.ptr, ldb, aa.data.ptr, lda,
                           addr(zero), out.data.ptr, n), "gemm")
        return out.reshape(-1) if vector else out

    def __del__(self) -> None:
        try:
            self.lib.cublasDestroy_v2(self.handle)
        except Exception:
            pass


class GraphStep:
    """Forward, backward, counters and the SGD update of one batch shape, as one CUDA graph.

    params / velocity: the local engine's dicts {layer: (W, b)}; their arrays are updated in place,
    and must not be replaced while this object lives (the engine drops it when it loads others).
    """

    def __init__(self, xp: Any, topo: Topology, params: dict[int, tuple[Any, Any]],
                 velocity: dict[int, tuple[Any, Any]], step: StepConfig,
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
            self.gemm = CublasGemm(xp, self.stream)
        self.graph: Any = None
        self.outputs: tuple[Any, Any] | None = None
        self.host_counts: np.ndarray | None = None  # the counters' host-side constants per step
        self.replays = 0
        self.calls = 0
        self.reason: str | None = None               # why the step runs eagerly, once capture failed

    # -- the step itself -------------------------------------------------------------------
    def _body(self) -> tuple[Any, Any, list]:
        xp = self.xp
        with dense_products(self.gemm):
            fp = forward(xp, self.topo, self.params, self.x, self.step)
            bp = backward(xp, self.topo, self.params, fp, self.y, self.step)
            rows = self.counter.measure(fp.x, [lf.S for lf in fp.layers], bp.E, self.batch, bp.emitted)
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
            if self.graph is None and self.calls > 1 and self.reason is None:
                self._capture()
            if self.graph is None:  # the first call (it warms the pool, kernels and cuBLAS), or capture refused
                loss, correct, rows = self._body()
                self._accumulate_on_device(rows)
            else:
                self.graph.launch(self.stream)
                loss, correct = self.outputs  # type: ignore[misc]
            self.replays += 1
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
        except Exception as exc:
            self.reason = f"CUDA graph capture failed ({type(exc).__name__}: {exc}); the step runs eagerly"
            return
        self.graph, self.outputs = graph, (loss, correct)

    # -- counters and state ----------------------------------------------------------------
    def flush_counts(self) -> None:
        """Move the counters of every step run so far into the engine's SynopCounter."""
        if self.replays == 0:
            return
        assert self.host_counts is not None  # set by the first run, which every replay follows
        with self.stream:
            acc = self.acc.get() + self.replays * self.host_counts
            self.acc.fill(0)
        self.counter.accumulate([list(row) for row in acc])
        self.replays = 0
