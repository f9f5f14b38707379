"""Worker processes for the local engine's micro-batches on the CPU (NumPy).

Two worker *threads* lose about a quarter of their time handing Python's GIL to each other
between the short NumPy calls of a step (docs/measurements/bench-train-torch-2026-12-01.md: a
micro-batch took 1.33x as long with two threads as with one). Worker *processes* have a GIL each.

Memory shared with the workers: files mapped into every process and removed as soon as every
process has mapped them (in ``/dev/shm`` where it has room, else the temporary directory), so
nothing is left behind however the processes end. They hold the weights (the engine updates them
in place between batches, the workers only read them), the batch's input and labels, and one
block of increment sums per micro-batch. Per batch the engine writes the input, sends each worker
the micro-batches it runs (a few bytes through a pipe), and each worker writes each micro-batch's
increment sums to that micro-batch's block and answers with its loss, correct count and
synaptic-operation counts. The engine then adds the blocks in micro-batch order, exactly as it
added the threads' results, so the numbers are those of one process, bit for bit.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import tempfile
import threading
import time
import traceback
import uuid
import weakref
from typing import Any

import numpy as np

from actors.allocator import keep_freed_memory
from cluster.errors import SpikeGradError
from cluster.network import backward, forward
from cluster.synops import SynopCounter
from cluster.topology import parse_topology

from .rundir import HELD_LOCKS

Layout = list[tuple[str, tuple[int, ...], str]]  # (key, shape, dtype) of each array in a block


def _shm_dir(need: int) -> str:
    """Where to put the blocks: /dev/shm if it has room for them (twice over), else the temporary directory."""
    try:
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize > 2 * need + (64 << 20):
            return "/dev/shm"
    except OSError:
        pass
    return tempfile.gettempdir()


class Block:
    """Arrays in one file mapped into memory; ``Block(path, layout)`` in another process maps the same."""

    def __init__(self, path: str, layout: Layout, create: bool = False) -> None:
        self.path, self.layout = path, layout
        offsets, total = [], 0
        for _, shape, dtype in layout:
            offsets.append(total)
            total += -(-math.prod(shape) * np.dtype(dtype).itemsize // 64) * 64
        self.nbytes = max(total, 64)
        if create:
            with open(path, "wb") as f:
                f.truncate(self.nbytes)
        self._map = np.memmap(path, dtype=np.uint8, mode="r+", shape=(self.nbytes,))
        self.arrays = {key: np.ndarray(shape, dtype, buffer=self._map, offset=off)
                       for (key, shape, dtype), off in zip(layout, offsets)}

    def close(self) -> None:
        self.arrays = {}
        self._map = None  # type: ignore[assignment]


def _params_layout(params: dict[int, tuple[np.ndarray, np.ndarray]], dtype: Any) -> Layout:
    out: Layout = []
    for l in sorted(params):
        W, b = params[l]
        out += [(f"W{l}", tuple(W.shape), np.dtype(dtype).str), (f"b{l}", tuple(b.shape), np.dtype(dtype).str)]
    return out


def micro_step(xp: Any, topo: Any, params: dict, x: Any, y: Any, step: Any,
               counter: Any) -> tuple[dict, Any, int, list]:
    """Forward and backward of one micro-batch (x (B, C, H, W), y (B,) int64 on the backend):
    (increment sums {l: (Σ E ⊗ S, Σ E)}, loss sum, correct, synaptic-operation counts). Reads
    the parameters, writes nothing shared: the local engine and its workers run it."""

    fp = forward(xp, topo, params, x, step)
    correct = int((fp.V.argmax(axis=1) == y).sum())
    bp = backward(xp, topo, params, fp, y, step)
    counts = counter.measure(fp.x, [lf.S for lf in fp.layers], bp.E, x.shape[0], bp.emitted)
    return bp.sums, bp.loss.sum(), correct, counts


def forked_child() -> None:
    """Set up a forked helper process (the engine's workers, verify's pool): SIGTERM to the whole
    process group (timeout, a batch scheduler) would raise the CLI's handler here and print a
    traceback, so it just ends the process; Ctrl-C is left to the parent, which stops its helpers;
    one BLAS thread; and the process ends when its parent does, even a SIGKILLed one (forked
    helpers hold copies of the parent's pipe ends, so they would not see the pipes close)."""

    from threadpoolctl import threadpool_limits  # noqa: PLC0415  (threadpoolctl: in the forked workers only)

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1, user_api="blas")
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="spikegrad-parent-watch", daemon=True).start()


def _worker(conn: Any, topology: str, step: Any, spike_errors: bool, params_path: str, layout: Layout) -> None:
    """A worker process: maps the weights, then runs the micro-batches it is sent until told to stop."""

    forked_child()
    for fd in list(HELD_LOCKS):  # forked: the run directory's lock belongs to the engine's process alone
        try:
            os.close(fd)
        except OSError:
            pass
    keep_freed_memory()
    topo = parse_topology(topology)
    block = Block(params_path, layout)
    params = {l: (block.arrays[f"W{l}"], block.arrays[f"b{l}"]) for l in topo.trainable}
    counter = SynopCounter(np, topo, spike_errors)
    mapped: dict[str, Block] = {}

    conn.send(("ok", None))  # the weights are mapped: the engine may remove their file
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the engine's process is gone
            break
        if msg[0] == "stop":
            break
        try:
            if msg[0] == "map":  # a new block: mapped now, its file removed by the engine after
                mapped[msg[1]] = Block(msg[1], msg[2])
                conn.send(("ok", None))
                continue
            if msg[0] == "forget":  # blocks the engine has replaced
                for p in msg[1]:
                    mapped.pop(p, None)
                conn.send(("ok", None))
                continue
            _, kind, data_path, jobs = msg
            data = mapped[data_path].arrays
            x, y = data["x"], data.get("y")
            out = []
            for lo, hi, inc_path in jobs:
                if kind == "predict":
                    out.append(forward(np, topo, params, x[lo:hi], step).V.argmax(axis=1))
                    continue
                sums, loss, correct, counts = micro_step(np, topo, params, x[lo:hi], y[lo:hi], step,  # type: ignore[index]
                                                         counter)
                inc = mapped[inc_path].arrays
                for l, (gW, gb) in sums.items():
                    np.copyto(inc[f"W{l}"], gW)
                    np.copyto(inc[f"b{l}"], gb)
                out.append((float(loss), correct, [[float(v) for v in row] for row in counts]))
            conn.send(("ok", out))
        except Exception:
            conn.send(("error", traceback.format_exc(limit=6)))


class WorkerPool:
    """``n`` worker processes sharing the engine's weights (module docstring).

    params: the engine's {layer: (W, b)}; the pool copies them into shared memory, and
    :attr:`params` are the arrays the engine must update in place from then on.
    """

    def __init__(self, n: int, topology: str, step: Any, dtype: Any, spike_errors: bool,
                 params: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        self.layout = _params_layout(params, dtype)
        need = sum(math.prod(s) * np.dtype(d).itemsize for _, s, d in self.layout)
        self.dir = _shm_dir(need * 4)
        self.blocks: dict[str, Block] = {}
        self.broken: str | None = None  # why the pool can no longer be used
        self.procs: list[Any] = []
        self.conns: list[Any] = []
        try:
            self.weights = self._block("params", self.layout, share=False)  # mapped by the workers as they start
            self.params = {l: (self.weights.arrays[f"W{l}"], self.weights.arrays[f"b{l}"]) for l in params}
            for l, (W, b) in params.items():
                np.copyto(self.params[l][0], W)
                np.copyto(self.params[l][1], b)
            # fork: a worker starts in milliseconds and imports nothing again (spawn would re-run the
            # caller's main script); the workers touch only NumPy and this project's code, never the
            # parent's threads (Ray's, tqdm's). Where there is no fork (Windows), spawn.
            ctx: Any = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            for _ in range(n):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, topology, step, spike_errors, self.weights.path,
                                                      self.layout), daemon=True)
                p.start()
                child.close()
                self.procs.append(p)
                self.conns.append(parent)
            self._answers()  # every worker has mapped the weights
        except BaseException:
            self.close()
            raise
        finally:
            _unlink(self.weights.path if hasattr(self, "weights") else None)
        self.data: Block | None = None
        self.incs: list[Block] = []
        # An engine that is never closed (or a process that exits first) still ends its workers
        # and removes the shared files.
        self._finalizer = weakref.finalize(self, _shut_down, self.procs, self.conns)

    def _block(self, name: str, layout: Layout, share: bool = True) -> Block:
        """A new block; with ``share`` mapped by every worker, then its file removed (the memory
        stays while a process maps it, and nothing is left behind however the processes end)."""
        path = os.path.join(self.dir, f"spikegrad-{os.getpid()}-{name}-{uuid.uuid4().hex[:8]}")
        block = Block(path, layout, create=True)
        self.blocks[path] = block
        if share:
            try:
                self._send_all(("map", path, layout))
                self._answers()
            finally:
                _unlink(path)
        return block

    def _data(self, x: np.ndarray, y: np.ndarray | None) -> Block:
        """The input block (x and y copied into its first rows), replaced by a bigger one when x
        has more samples than it holds, or other per-sample shapes."""
        n = len(x)
        cap = 0 if self.data is None else self.data.arrays["x"].shape[0]
        layout: Layout = [("x", (max(n, cap), *x.shape[1:]), x.dtype.str), ("y", (max(n, cap),), "<i8")]
        if self.data is None or self.data.layout != layout:
            old = self.data
            self.data = self._block("data", layout)
            if old is not None:
                self._forget([old.path])
        self.data.arrays["x"][:n] = x
        if y is not None:
            self.data.arrays["y"][:n] = y
        return self.data

    def _send_all(self, msg: Any, per_worker: list | None = None) -> None:
        """msg to every worker (with ``per_worker``, msg + (its item,)); a dead one is an error."""
        if self.broken:
            raise SpikeGradError(f"the local worker processes failed earlier: {self.broken}")
        for i, c in enumerate(self.conns):
            try:
                c.send(msg if per_worker is None else (*msg, per_worker[i]))
            except (OSError, ValueError):
                self._fail(i)

    def _fail(self, i: int, why: str | None = None) -> None:
        """Worker i is gone (or failed): the pool is of no further use (the other workers' answers
        would be out of step); one clear error."""
        self.broken = why or (f"local worker process {i} ended unexpectedly (exit code "
                              f"{self.procs[i].exitcode if self.procs else None})")
        raise SpikeGradError(self.broken)

    def _forget(self, paths: list[str]) -> None:
        self._send_all(("forget", paths))
        self._answers()
        for p in paths:
            self.blocks.pop(p).close()

    def _answers(self) -> list[Any]:
        out = []
        for i, c in enumerate(self.conns):
            try:
                status, value = c.recv()
            except (EOFError, OSError):
                self._fail(i)
            if status != "ok":
                self._fail(i, f"local worker process {i} failed: {value.strip().splitlines()[-1]}\n{value}")
            out.append(value)
        return out

    def _run(self, kind: str, x: np.ndarray, y: np.ndarray | None, parts: list[slice]) -> list[Any]:
        """Micro-batches ``parts`` of x on the workers, round robin; their results in part order."""
        data = self._data(x, y)
        if kind == "train":
            while len(self.incs) < len(parts):
                self.incs.append(self._block("inc", self.layout))
        jobs: list[list] = [[] for _ in self.conns]
        for i, p in enumerate(parts):
            jobs[i % len(self.conns)].append((p.start, p.stop, self.incs[i].path if kind == "train" else None))
        self._send_all(("run", kind, data.path), jobs)
        answers = self._answers()
        return [answers[i % len(self.conns)][i // len(self.conns)] for i in range(len(parts))]

    def train(self, x: np.ndarray, y: np.ndarray, parts: list[slice]) -> tuple[list[dict], list[Any]]:
        """Forward and backward of every micro-batch: (each part's increment sums {l: (W, b)}, read
        from its shared block: valid until the next call; each part's (loss, correct, counts))."""
        results = self._run("train", x, y, parts)
        sums = [{l: (self.incs[i].arrays[f"W{l}"], self.incs[i].arrays[f"b{l}"]) for l in self.params}
                for i in range(len(parts))]
        return sums, results

    def predict(self, x: np.ndarray, parts: list[slice]) -> np.ndarray:
        return np.concatenate(self._run("predict", x, None, parts))

    def close(self) -> None:
        for b in self.blocks.values():
            b.close()
        self.blocks = {}
        if hasattr(self, "_finalizer"):
            self._finalizer()
        else:  # failed while starting
            _shut_down(self.procs, self.conns)


def _unlink(path: str | None) -> None:
    if path is not None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _shut_down(procs: list[Any], conns: list[Any]) -> None:
    """Stop the workers (kill those that do not stop)."""
    for c in conns:
        try:
            c.send(("stop",))
        except (OSError, ValueError):
            pass
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    for c in conns:
        c.close()
    procs.clear()
    conns.clear()
