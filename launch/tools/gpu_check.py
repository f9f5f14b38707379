"""The GPU check: one prepared script for a lent GPU machine, writing one folder of everything.

Usage (on the GPU machine, from the repository root; Ray only for ``ray_chips``)::

    python3 -m launch.tools.gpu_check --cases CASES_DIR --cifar-dir CIFAR_DIR --out RESULTS_DIR
    python3 -m launch.tools.gpu_check --smoke --cases CASES_DIR --cifar-dir CIFAR_DIR --out RESULTS_DIR  # CPU, a minute

The device command (docs/measurements/gpu-plan-2026-12-07.md says how ``.carry`` is made here:
conformance cases, the CIFAR-10 JPEG folder as a tar.gz, a stripped Ray wheel and 4 wheels it
needs, 62 MB, 64 MB with the tree; one call, ``timeout_s`` 600, ``carry`` [".carry"]; about
575 s)::

    set -o pipefail; python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site
    .carry/whl/*.whl && export PYTHONPATH=/tmp/site; mkdir -p /tmp/c &&
    tar -C /tmp/c -xzf .carry/cifar10-jpeg.tar.gz && PYTHONUNBUFFERED=1 SPIKEGRAD_CACHE=/tmp/sgc
    python3 -m launch.tools.gpu_check --cases .carry/conformance --cifar-dir /tmp/c/cifar10-jpeg
    --out $OUT --quick-tests --batches 64 --iters 10 --ray-seconds 90 --train-seconds 540
    --wall-limit 550 2>&1 | tee $OUT/log.txt

Stages, each written to ``RESULTS_DIR/gpu_check.json`` as it completes (a failing stage is
recorded with its error and the next one still runs: device time is scarce):

1. ``ceilings``: device-to-device copy bandwidth and the float32 matrix-product rate (no TF32);
2. ``tests``: ``pytest --backend cupy`` over tests/cluster and the Ray-free chip tests
   (the engine against its float64 reference, chips against the local engine, the CUDA graph
   step against the eager step, the CuPy kernels against their NumPy twins); with
   ``--quick-tests`` only the graph and kernel tests, what the cifar10 run's step rests on;
3. ``conformance``: every conformance case on CuPy in float64 against its expected answer;
4. ``chips``: chips as plain objects in this process on CuPy, the Arrow wire between them
   (:func:`actors.chip.run_chips`), against the same chips on NumPy: fixed-point weights,
   dyadic inputs, float64, so every value must agree exactly (count wire on the ``mnist``
   preset and a narrowed ``cifar10``, event wire on ``digits``);
5. ``chips_timing``: the ``mnist`` and ``cifar10`` presets on chips in this process (CuPy, the
   Arrow wire between them, one layer per chip as ``--engine chips`` has by default, batch
   ``--chip-batch``) against the local GPU engine (CUDA graph and eager) from the same weights,
   taking turns, img/s side by side; then where the chips' time goes, per chip and in total:
   device-to-host copies, host-to-device copies, Arrow encode and decode, and compute (kernels
   and their launches), CUDA events on the GPU (:class:`ChipMeter`);
6. ``ray_chips``: where Ray imports, the same presets trained by ``--engine chips``: every
   chip a Ray actor of a private instance, sharing the GPU (:func:`ray_chip_timing`), img/s
   beside ``chips_timing``'s; at most ``--ray-seconds``; skipped, saying why, without Ray;
7. ``timing``: forward + backward + update of the ``mnist`` and ``cifar10`` presets, the CuPy
   engine (eager, and as a replayed CUDA graph) against the same equivalent ANN in PyTorch
   (:mod:`launch.tools.torch_ref`, TF32 off on both sides), median of CUDA-event-timed steps;
8. ``cifar10``: the paper's ``cifar10`` preset trained with spike gradients on the image folder
   given (the JPEG stand-in), its steps replayed as CUDA graphs (``cuda_graph``; off only where
   the graph tests failed in this run), for at most ``--train-seconds`` and inside
   ``--wall-limit``: the number of epochs is set from a timed probe of the same engine so that
   the cosine schedule ends inside the budget; the 10,000 test images are scored after every
   epoch. The result says whether the steps really were graphs (``probe_graph``,
   ``graph_steps``, the engine's line and any warning) and the run's img/s against the probe's,
   so a fall-back to eager steps cannot pass unseen. The whole run (with its checkpoint, about
   160 MB) goes to a temporary folder; ``RESULTS_DIR/cifar10-run`` gets what ``spikegrad report``
   needs on a CPU machine (config, summary, metrics, layers, operations) and the accuracy curve
   drawn from those copies alone. A run still going 20 s before the wall limit is stopped, its
   finished epochs kept (``stopped_at_deadline``).

What comes back: ``gpu_check.json``, ``log.txt`` (the command's ``tee``) and ``cifar10-run/``'s 6
files, 8 files in all, 2 folders deep: the device returns at most 8 (``out_files`` lists them).

Ray is not on the device. Ray 2.60.0's wheel for CPython 3.12 is 79.3 MB;
:mod:`launch.tools.strip_ray` drops its Java jars and its libraries (rllib, data, serve, train,
tune, llm, air): 41.7 MB zipped, 150 MB unpacked (the dashboard package stays: the raylet exits
when its agent cannot start). With jsonschema and the three packages it needs that the device
lacks (0.5 MB of wheels), the tree and the CIFAR carry, 64.2 MB travel, under the 64 MiB
(67.1 MB) limit: the device command installs it into /tmp/site, and ``ray_chips`` runs there.
If the install fails, ``ray_chips`` is skipped and says so; nothing else depends on it.

``--smoke`` runs every stage on the CPU (NumPy stands in for CuPy; no graph; tiny networks, a
few steps, one short epoch) so that CI proves the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the stages import the project lazily
    from actors.chip import ChipConfig, Wire
    from cluster.backend import BackendName

REPO = Path(__file__).resolve().parents[2]
# The paper's cifar10 preset with its channels divided by 8: the smoke mode's and the CPU recipe's network.
CIFAR_NARROW = "32x32x3-16C3p1-32C3p1-P2-64C3p1-P2-128C3p1-64C3p1-128-64-10"
# A tiny colour network: the smoke mode's stand-in for cifar10 where seconds count (chips_timing).
SMOKE_RGB = "8x8x3-4C3p1-P2-8C3p1-16-10"
RAY_FREE_TESTS = ("tests/cluster", "tests/actors/test_chip.py", "tests/actors/test_wire.py",
                  "tests/actors/test_wire_events.py", "tests/actors/test_chip_wire.py")


class Clock:
    """Times on the device (CUDA events) or the host (perf_counter) alike."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu

    def sync(self) -> None:
        """Wait for the device's queued work (nothing to wait for on the host)."""
        if self.gpu:
            import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

            cp.cuda.get_current_stream().synchronize()

    def span(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        """(fn(), its seconds): the queue drained first; on a GPU the span between CUDA events
        recorded before and after fn on the current stream, the end waited for."""
        self.sync()
        if not self.gpu:
            t0 = time.perf_counter()
            out = fn()
            return out, time.perf_counter() - t0
        import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        out = fn()
        end.record()
        end.synchronize()
        return out, cp.cuda.get_elapsed_time(start, end) / 1e3

    def time(self, fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
        for _ in range(warmup):
            fn()
        return [self.span(fn)[1] for _ in range(iters)]


# ----------------------------------------------------------------------------- stages

def ceilings() -> dict[str, float]:
    import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

    clock = Clock(True)

    # Each measurement in its own function: its arrays are released when it returns.
    def copy_bytes_per_s() -> float:
        n = 1 << 29  # 2 GiB of float32
        a = cp.random.random(n, dtype=cp.float32)
        b = cp.empty_like(a)
        t = statistics.median(clock.time(lambda: cp.copyto(b, a), 3, 10))
        return 2 * a.nbytes / t

    def matmul_seconds(m: int) -> float:
        A = cp.random.random((m, m), dtype=cp.float32)
        B = cp.random.random((m, m), dtype=cp.float32)
        return statistics.median(clock.time(lambda: A @ B, 3, 10))

    bw = copy_bytes_per_s()
    m = 8192
    t = matmul_seconds(m)
    cp.get_default_memory_pool().free_all_blocks()
    return {"copy_bytes_per_s": bw, "fp32_matmul_flop_per_s": 2 * m ** 3 / t}


def run_tests(backend: str, quick: bool, timeout: int) -> dict[str, Any]:
    """pytest over the Ray-free tests on ``backend`` (quick: :data:`QUICK_TESTS` only); the summary
    line and the failures."""
    targets = list(QUICK_TESTS if quick else RAY_FREE_TESTS)
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backend", backend, *targets]
    try:
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {"command": " ".join(cmd), "error": f"timed out after {timeout} s",
                "tail": (exc.stdout or b"")[-3000:] if isinstance(exc.stdout, str) else ""}
    lines = proc.stdout.strip().splitlines()
    return {"command": " ".join(cmd), "returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))],
            "tail": "\n".join(lines[-40:]) if proc.returncode else ""}


def conformance(cases_dir: Path, backend: str) -> list[dict]:
    from .conformance import compare, load_case, run_case  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    rows = []
    for case in sorted(cases_dir.glob("*.npz")):
        if case.name.endswith(".expected.npz"):
            continue
        got = run_case(load_case(case), backend=backend, name=case.name)
        problems = compare(got, load_case(case.with_name(case.stem + ".expected.npz")))
        rows.append({"case": case.name, "exact": not problems, "problems": problems})
    return rows


# ----------------------------------------------------------------------------- the chip API, in one place
CHIP_CALLS = ("forward", "backward", "apply")   # the chip's phases (cluster.mapping.Phase), as run_chips calls them
CHIP_COPY_MODULES = ("actors.chip",)  # modules whose to_host / to_device the chips call
WIRE_CODECS = {"encode": "encode", "encode_events": "encode", "decode": "decode", "decode_events": "decode"}


def chip_chain(topology: str, groups: str | None, ccfg: ChipConfig,
               params: dict[int, tuple[np.ndarray, np.ndarray]]) -> tuple[list, Callable[..., tuple[float, int]]]:
    """Chips as plain objects in this process, holding ``params`` (``groups``: ``--chips`` text, None
    one layer per chip), and the function that runs one batch through them with the Arrow wire
    between them, ``step(x, y, micro, batch, lr_scale) -> (loss sum, correct)``
    (:func:`actors.chip.run_chips`). The one place gpu_check builds and drives chips."""
    from actors.chip import Chip, parse_chips, run_chips  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.mapping import whole_layers  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.topology import parse_topology  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    topo = parse_topology(topology)
    spans = parse_chips(groups, len(topo.layers))
    layout = whole_layers(topo, spans)
    chips = [Chip(i, layout, ccfg, {l: params[l] for l in range(lo, hi + 1) if l in params})
             for i, (lo, hi) in enumerate(spans)]
    return chips, partial(run_chips, chips)


def _chip_states(topology: str, groups: str | None, backend: str, wire: Wire, batches: int, B: int,
                 micro: int, seed: int) -> tuple[list, list, list, float]:
    """Train chips in this process: (per-batch (loss, correct), chip states, chip reports, seconds)."""
    from actors.chip import ChipConfig  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.network import StepConfig, init_params, quantize  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.topology import parse_topology  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    topo = parse_topology(topology)
    rng = np.random.default_rng(seed)
    params = init_params(topo, rng, 0.25, np.float64)
    for W, _b in params.values():
        quantize(np, W, 12)
    ccfg = ChipConfig(topology=topology, step=StepConfig(theta_ff=0.25, theta_bp=0.25, alpha=100.0),
                      eta=1e-6, momentum=0.9, dtype="float64", backend=backend, frac_bits=12, wire=wire)
    chips, step = chip_chain(topology, groups, ccfg, params)
    # Dyadic inputs in [-1, 1) on a 2^-7 grid, sparse like images: every sum below is exact.
    stats, t0 = [], time.perf_counter()
    for b in range(batches):
        x = rng.integers(-128, 128, (B, *topo.input_shape)) / 128 * (rng.random((B, *topo.input_shape)) < 0.5)
        y = rng.integers(0, topo.num_classes, B)
        stats.append(step(x, y, micro, b, 1.0 - 0.1 * b))
    seconds = time.perf_counter() - t0
    return stats, [c.state() for c in chips], [c.report() for c in chips], seconds


def chip_parity(backend: str, smoke: bool) -> list[dict]:
    """Chips on ``backend`` against chips on NumPy, value for value (see the module docstring)."""
    cases: list[tuple[str, str, Wire]] = [("mnist", "0-1,2-3,4,5", "counts"), (CIFAR_NARROW, "0-2,3-5,6-9", "counts"),
                                          ("digits", "0-1,2-3", "events")]
    if smoke:
        cases = [("8x8-4C3p1-P2-16-10", "0-1,2-3", "counts"), ("8x8-4C3p1-P2-16-10", "0-1,2-3", "events")]
    rows = []
    for topology, groups, wire in cases:
        B, micro, batches = (16, 8, 2) if smoke or wire == "events" else (64, 32, 3)
        ref = _chip_states(topology, groups, "numpy", wire, batches, B, micro, seed=11)
        got = _chip_states(topology, groups, backend, wire, batches, B, micro, seed=11)
        values = differ = 0
        for a, b in zip(ref[1], got[1]):
            for l in a:
                for u, v in zip(a[l], b[l]):
                    values += u.size
                    differ += int(np.count_nonzero(u != v))
        traffic_equal = all(ra["traffic"] == rb["traffic"] for ra, rb in zip(ref[2], got[2]))
        checks = [r.get("event_checks") for r in got[2] if r.get("event_checks")]
        # Hits must agree exactly; the loss goes through exp and log, whose last bit NumPy and CuPy
        # may round differently (measured on an H200), so it is compared to 1e-12.
        stats_equal = all(rc == gc and abs(rl - gl) <= 1e-12 * max(1.0, abs(rl))
                          for (rl, rc), (gl, gc) in zip(ref[0], got[0]))
        row = {"topology": topology, "chips": groups, "wire": wire, "batches": batches, "batch": B,
               "micro_batch": micro, "stats_equal": stats_equal,
               "loss_max_abs_diff": max(abs(r[0] - g[0]) for r, g in zip(ref[0], got[0])), "state_values": values,
               "state_values_differ": differ, "traffic_equal": traffic_equal,
               "numpy_seconds": round(ref[3], 3), f"{backend}_seconds": round(got[3], 3)}
        if checks:
            row["event_values_checked"] = sum(c["values"] for c in checks)
            row["event_values_differ"] = sum(c["differ"] for c in checks)
        row["exact"] = bool(row["stats_equal"] and differ == 0 and traffic_equal
                            and row.get("event_values_differ", 0) == 0)
        rows.append(row)
        print(f"chips {topology} [{groups}] {wire}: exact {row['exact']}", flush=True)
    return rows


class ChipMeter:
    """Where a chain of chips spends a batch, per chip (``rows``, seconds and bytes summed over
    the batches run while :meth:`attached`):

    - ``seconds``: its protocol calls (:data:`CHIP_CALLS`), each ended by waiting for its device
      work, so that every chip is charged its own kernels (CUDA events on a GPU);
    - ``d2h`` / ``h2d``: its device-to-host and host-to-device copies (the only ones,
      ``cluster.backend.to_host`` / ``to_device`` as the chip modules call them), CUDA events around
      each copy; ``wait``: the host waiting for the chip's kernels before a device-to-host copy
      (part of compute: the device was busy);
    - ``encode`` / ``decode``: the Arrow wire's encoding and decoding (``actors.wire``), host time;
    - ``compute`` = seconds − d2h − h2d − encode − decode: kernels, their launches and the
      host-side casts between;
    - ``d2h_bytes`` / ``h2d_bytes``: the bytes copied; ``messages``: the messages it encoded.

    On NumPy (``--smoke``) every span is perf_counter and the copies are (nearly) free. The
    functions wrapped are the real ones, called unchanged; all are put back on leaving."""

    BUCKETS = ("seconds", "wait", "d2h", "h2d", "encode", "decode", "d2h_bytes", "h2d_bytes", "messages")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.chip = -1  # the chip whose call is running (-1: none)
        self.rows: dict[int, dict[str, float]] = {}

    def add(self, bucket: str, value: float) -> None:
        row = self.rows.setdefault(self.chip, dict.fromkeys(self.BUCKETS, 0.0))
        row[bucket] += value

    def _copy(self, fn: Callable[..., Any], bucket: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if bucket == "d2h":
                t0 = time.perf_counter()
                self.clock.sync()
                self.add("wait", time.perf_counter() - t0)
            out, seconds = self.clock.span(lambda: fn(*args, **kwargs))
            self.add(bucket, seconds)
            self.add(f"{bucket}_bytes", float(getattr(out, "nbytes", 0)))
            return out
        return timed

    def _host(self, fn: Callable[..., Any], bucket: str) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.add(bucket, time.perf_counter() - t0)
            if bucket == "encode":
                self.add("messages", 1.0)
            return out
        return timed

    def _call(self, chip: Any, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if self.chip != -1:  # a protocol call inside another (an APPLY folded into a FORWARD): counted there
                return fn(*args, **kwargs)
            self.chip = chip.index
            try:
                out, seconds = self.clock.span(lambda: fn(*args, **kwargs))
                self.add("seconds", seconds)
            finally:
                self.chip = -1
            return out
        return timed

    @contextmanager
    def attached(self, chips: list) -> Iterator[ChipMeter]:

        undo: list[tuple[Any, str, Any]] = []
        targets = [(importlib.import_module("actors.wire"), name, self._host, bucket)
                   for name, bucket in WIRE_CODECS.items()]
        for mod_name in CHIP_COPY_MODULES:
            mod = importlib.import_module(mod_name)
            targets += [(mod, "to_host", self._copy, "d2h"), (mod, "to_device", self._copy, "h2d")]
        try:
            for obj, name, wrap, bucket in targets:
                if hasattr(obj, name):
                    undo.append((obj, name, getattr(obj, name)))
                    setattr(obj, name, wrap(getattr(obj, name), bucket))
            for chip in chips:
                for name in CHIP_CALLS:
                    undo.append((chip, name, None))  # an instance attribute: deleted on leaving
                    setattr(chip, name, self._call(chip, getattr(chip, name)))
            yield self
        finally:
            for obj, name, orig in reversed(undo):
                if orig is None:
                    delattr(obj, name)
                else:
                    setattr(obj, name, orig)

    def table(self, chips: list, batches: int) -> tuple[list[dict], dict[str, float]]:
        """(per chip, total): seconds and bytes per batch, compute derived (see the class)."""
        per_chip = []
        for chip in chips:
            r = {k: v / batches for k, v in self.rows.get(chip.index, dict.fromkeys(self.BUCKETS, 0.0)).items()}
            r["compute"] = r["seconds"] - r["d2h"] - r["h2d"] - r["encode"] - r["decode"]
            per_chip.append({"chip": chip.index, "layers": list(getattr(chip, "layers", [])), **r})
        total = {k: sum(r[k] for r in per_chip) for k in (*self.BUCKETS, "compute")}
        outside = self.rows.get(-1)  # copies or codecs outside any chip call: none expected
        if outside:
            total["outside_calls"] = sum(outside[k] for k in ("d2h", "h2d", "encode", "decode")) / batches
        return per_chip, total


def chip_timing(presets: list[str], batch: int, rounds: int, backend: BackendName) -> list[dict]:
    """Chips in this process (the Arrow wire between them, one layer per chip as ``--engine chips``
    by default, one micro-batch per batch) against the local engine on the same backend: both
    built from the preset's training defaults and the same initial weights, one synthetic batch,
    taking turns (chips, local graph, local eager) for ``rounds`` timed rounds after 2 warm-up
    rounds; medians. Then 2 more chip batches under :class:`ChipMeter`: where their time goes."""
    from actors.chip import ChipConfig  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.backend import get_backend  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.topology import parse_topology  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    from ..run.config import make_config  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.driver import initial_params  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.local import LocalEngine  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from .bench import synthetic_batch  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    gpu = backend == "cupy"
    clock = Clock(gpu)
    rows = []
    for name in presets:
        topo = parse_topology(name)
        cfg = make_config("cifar10" if topo.input_shape[0] == 3 else "mnist", topology=topo.text, engine="local",
                          backend=backend, batch_size=batch)
        host = initial_params(cfg, topo, np.random.default_rng(cfg.seed))
        x, y = synthetic_batch(topo.input_shape, batch, topo.num_classes)
        ccfg = ChipConfig(topology=topo.text, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum, dtype=cfg.dtype,
                          backend=backend, frac_bits=cfg.weight_frac_bits, wire="counts")
        chips, chain = chip_chain(topo.text, cfg.chips, ccfg, host)
        engines = {"local_graph": LocalEngine(cfg, topo, host, backend=get_backend(backend), graph=True)} if gpu else {}
        engines["local_eager"] = LocalEngine(cfg, topo, host, backend=get_backend(backend), graph=False)
        modes: dict[str, Callable[[], Any]] = {"chips": partial(chain, x, y, batch, 0, 1.0)}
        modes.update({m: partial(e.train_step, x, y) for m, e in engines.items()})
        times: dict[str, list[float]] = {m: [] for m in modes}
        for r in range(2 + rounds):
            for m, fn in modes.items():
                seconds = clock.span(fn)[1]
                if r >= 2:
                    times[m].append(seconds)
        row: dict[str, Any] = {"preset": name, "batch": batch, "micro_batch": batch, "chips": len(chips),
                               "layers_per_chip": [list(c.layers) for c in chips]}
        for m, ts in times.items():
            row[f"{m}_step_s"] = statistics.median(ts)
            row[f"{m}_images_per_s"] = batch / row[f"{m}_step_s"]
        if gpu and engines["local_graph"].graph_note:
            row["graph_note"] = engines["local_graph"].graph_note
        best = max(row[f"{m}_images_per_s"] for m in engines)
        row["chips_over_local"] = row["chips_images_per_s"] / best
        for c in chips:
            c.report()  # counters reset: the traffic below is the metered batches'
        meter = ChipMeter(clock)
        metered = 2
        with meter.attached(chips):
            for b in range(metered):
                chain(x, y, batch, b, 1.0)
        row["per_chip"], row["total"] = meter.table(chips, metered)
        row["wire_bytes_per_batch"] = sum(link["bytes"] for c in chips for link in c.report()["traffic"].values()
                                          ) / metered
        rows.append(row)
        t = row["total"]
        print(f"chip timing {name[:24]} B={batch}: chips {row['chips_images_per_s']:.0f} img/s, "
              + ", ".join(f"{m} {row[f'{m}_images_per_s']:.0f}" for m in engines)
              + f"; chips' batch {t['seconds'] * 1e3:.1f} ms: "
              + ", ".join(f"{k} {t[k] * 1e3:.1f}" for k in ("compute", "d2h", "h2d", "encode", "decode")), flush=True)
        for e in engines.values():
            e.close()
        del chips, chain, engines, modes
        if gpu:
            import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

            cp.get_default_memory_pool().free_all_blocks()
    return rows


def ray_chip_timing(presets: list[str], batch: int, rounds: int, backend: BackendName,
                    cap: float) -> list[dict] | dict[str, str]:
    """The same presets trained by ``--engine chips`` (:class:`launch.run.chips.ChipEngine`: every
    chip a Ray actor of a private local instance, the chips' backend chosen per process, the GPU
    shared), where Ray is importable: the same initial weights, synthetic batch and batch size as
    :func:`chip_timing`; 2 warm-up batches, then the median of ``rounds`` (submit, then wait for
    the results). Ray's start is timed apart. Stopped after ``cap`` seconds (a hung start must
    not eat the cifar10 budget): then the rows so far and an ``error`` row."""
    try:
        import ray  # noqa: PLC0415  (Ray: loaded only where chips run)
    except ImportError as exc:
        return {"skipped": f"Ray is not importable here ({exc}); the plan (docs/measurements/gpu-plan-*) "
                           f"says how a stripped Ray travels with the run"}
    from cluster.topology import parse_topology  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    from ..run.chips import ChipEngine  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.config import make_config  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.driver import initial_params  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.ray_session import start_ray  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from .bench import synthetic_batch  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    rows: list[dict] = []
    started = False
    with Deadline(cap) as stop:
        try:
            t0 = time.perf_counter()
            started, resources = start_ray(None)
            ray_start_s = time.perf_counter() - t0
            for name in presets:
                topo = parse_topology(name)
                cfg = make_config("cifar10" if topo.input_shape[0] == 3 else "mnist", topology=topo.text,
                                  engine="chips", backend=backend, batch_size=batch)
                host = initial_params(cfg, topo, np.random.default_rng(cfg.seed))
                x, y = synthetic_batch(topo.input_shape, batch, topo.num_classes)
                t0 = time.perf_counter()
                engine = ChipEngine(cfg, topo, host)
                chips_start_s = time.perf_counter() - t0
                try:
                    times = []
                    for r in range(2 + rounds):
                        t0 = time.perf_counter()
                        engine.submit(x, y, 1.0)
                        engine.collect(wait=True)
                        if r >= 2:
                            times.append(time.perf_counter() - t0)
                    step = statistics.median(times)
                    rows.append({"preset": name, "batch": batch, "ray_chips_step_s": step,
                                 "ray_chips_images_per_s": batch / step, "engine": engine.describe(),
                                 "chip_backend": engine.backend_name, "ray_start_s": round(ray_start_s, 2),
                                 "chips_start_s": round(chips_start_s, 2),
                                 "resources": {k: v for k, v in resources.items() if k in ("CPU", "GPU")}})
                    print(f"ray chips {name[:24]} B={batch}: {rows[-1]['ray_chips_images_per_s']:.0f} img/s "
                          f"({rows[-1]['engine']})", flush=True)
                finally:
                    engine.close()
        except KeyboardInterrupt:
            if not stop.hit:
                raise
            rows.append({"error": f"stopped after {cap:.0f} s"})
        finally:
            if started and ray.is_initialized():
                ray.shutdown()
    return rows


def step_cost(topo: Any, B: int) -> tuple[float, float]:
    """(FLOPs, minimal bytes) of one training step: 2 FLOPs per MAC for forward, error
    below (l ≥ 1) and increments; bytes: weights read twice and written once, each
    layer's activations written once and read twice (forward, increments), errors once each."""
    from cluster.synops import topology_fans  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    flops, nbytes = 0.0, 0.0
    for l, (layer, fan) in enumerate(zip(topo.layers, topology_fans(topo))):
        passes = 1 + (1 if l > 0 else 0) + (1 if layer.trainable else 0)
        flops += 2.0 * fan.connections * B * passes
        if layer.weight_shape:
            nbytes += 3 * 4 * float(np.prod(layer.weight_shape))
        nbytes += 4 * B * topo.neurons(l) * (3 + 2)
    return flops, nbytes


def time_presets(presets: list[str], batches: list[int], iters: int, backend: BackendName) -> list[dict]:
    """Images/s of one training step: eager, graph (CuPy) and PyTorch (where importable)."""
    from cluster.backend import get_backend  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from cluster.topology import parse_topology  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    from ..run.config import TrainConfig  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.driver import initial_params  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.local import LocalEngine  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from .bench import profile_step, synthetic_batch  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from .torch_ref import make_torch_step, torch_available  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    gpu = backend == "cupy"
    clock = Clock(gpu)
    have_torch, torch_version = torch_available()
    rows = []
    for name in presets:
        topo = parse_topology(name)
        for B in batches:
            cfg = TrainConfig(dataset="mnist", engine="local", topology=topo.text, batch_size=B, backend=backend,
                              theta_ff=0.25, lr=1e-5, epochs=1)
            x, y = synthetic_batch(topo.input_shape, B, topo.num_classes)
            flops, nbytes = step_cost(topo, B)
            row: dict[str, Any] = {"preset": name, "batch": B, "flops": flops, "min_bytes": nbytes}
            modes = [("eager", False)] + ([("graph", True)] if gpu else [])
            host = initial_params(cfg, topo, np.random.default_rng(cfg.seed))
            for mode, graph in modes:
                engine = LocalEngine(cfg, topo, host, backend=get_backend(backend), graph=graph)
                t = statistics.median(clock.time(partial(engine.train_step, x, y), 3, iters))
                row[f"{mode}_step_s"], row[f"{mode}_images_per_s"] = t, B / t
                row[f"{mode}_tflops"] = flops / t / 1e12
                if graph and engine.graph_note:
                    row["graph_note"] = engine.graph_note
                if mode == "eager" and B == max(batches):
                    row["profile_ms"] = {k: round(v, 3) for k, v in profile_step(
                        engine.params, topo, cfg.step, engine.backend, engine.dtype, x, y, steps=3).items()}
                engine.close()
                del engine
            if have_torch and gpu:
                import torch  # noqa: PLC0415  (torch: the benchmark's, not a dependency)

                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                step = make_torch_step(topo, host, "cuda", "float32", cfg.theta_ff, cfg.step.theta_bp,
                                       cfg.alpha, cfg.eta, cfg.momentum)
                tx = torch.tensor(x, device="cuda")
                ty = torch.tensor(y, device="cuda")
                # .item(): one sync per step, as ours
                t = statistics.median(clock.time(partial(_torch_item, step, tx, ty), 3, iters))
                row["torch_step_s"], row["torch_images_per_s"] = t, B / t
                row["torch_version"] = torch_version
                for mode, _ in modes:
                    row[f"{mode}_over_torch"] = row[f"{mode}_images_per_s"] / row["torch_images_per_s"]
                del step, tx, ty
                torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
                              if k != "profile_ms"}), flush=True)
            if gpu:
                import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

                cp.get_default_memory_pool().free_all_blocks()
    return rows


def _probe_seconds(probe_cfg: Any, x_test: np.ndarray, y_test: np.ndarray, backend: str,
                   smoke: bool) -> dict[str, Any]:
    """A Driver on probe_cfg, timed, closed and released on return: ``step_s`` (seconds per
    training step, median), ``eval_s`` (one evaluation of x_test), ``graph`` (whether its steps
    were still CUDA graphs at the end) and ``note`` (why the graph was given up, if it was)."""
    from ..run.driver import Driver  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from .bench import synthetic_batch  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    probe = Driver(probe_cfg)
    x, y = synthetic_batch((3, 32, 32), probe_cfg.batch_size, 10)
    clock = Clock(backend == "cupy")

    def probe_step() -> None:
        probe.engine.submit(x, y, 0.0)
        probe.engine.collect(wait=True)

    step_s = statistics.median(clock.time(probe_step, 3, 5 if smoke else 20))
    t0 = time.perf_counter()
    probe.evaluate(x_test, y_test)
    eval_s = time.perf_counter() - t0
    graph = bool(getattr(probe.engine, "use_graph", False))
    note = probe.engine.note()
    probe.close()
    return {"step_s": step_s, "eval_s": eval_s, "graph": graph, "note": note}


def _torch_item(step: Callable[[Any, Any], Any], tx: Any, ty: Any) -> Any:
    """step(tx, ty).item(): one PyTorch step, its loss fetched to the host."""
    return step(tx, ty).item()


class Deadline:
    """Stops a training run at a wall-clock deadline: SIGALRM raises KeyboardInterrupt in the main
    thread, which the driver takes as Ctrl-C (its finished epochs stay on disk); ``hit`` tells
    this apart from a person's Ctrl-C. No deadline (None) or no SIGALRM: nothing is armed."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds, self.hit = seconds, False
        self._old: Any = None

    def _fire(self, signum: int, frame: Any) -> None:
        self.hit = True
        raise KeyboardInterrupt("gpu_check: the wall-clock deadline was reached")

    def __enter__(self) -> Deadline:
        if self.seconds is not None and hasattr(signal, "setitimer"):
            self._old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, max(0.01, self.seconds))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._old is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._old)


# What of the cifar10 run comes back from the device (its 8-file limit; the checkpoint, about
# 160 MB with its velocities, stays behind): enough for `spikegrad report` on a CPU machine.
KEPT_RUN_FILES = ("config.json", "summary.json", "metrics.parquet", "layers.parquet", "operations.parquet")
CURVE = "accuracy.png"


def keep_run(run_dir: Path, keep_dir: Path) -> dict[str, Any]:
    """Copy the run's :data:`KEPT_RUN_FILES` (those there) to ``keep_dir``, draw ``spikegrad report``'s
    figures from the copies alone (proving they suffice) and keep its accuracy curve beside them."""

    from .report import report  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    keep_dir.mkdir(parents=True, exist_ok=True)
    kept = []
    for name in KEPT_RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, keep_dir / name)
            kept.append(name)
    with tempfile.TemporaryDirectory(prefix="gpu_check-report-") as tmp:
        drawn = report([str(keep_dir)], tmp)
        shutil.copy2(Path(tmp) / CURVE, keep_dir / CURVE)
    return {"kept": [*kept, CURVE], "report_files": drawn["files"]}


def train_cifar(data_dir: Path, keep_dir: Path, seconds: float, backend: str, smoke: bool,
                graph: bool = True, deadline: float | None = None, run_dir: Path | None = None) -> dict[str, Any]:
    """The cifar10 preset (narrowed in smoke mode) with spike gradients, on the dataset's defaults
    (launch.run.config), for at most ``seconds`` of training, ending by ``deadline`` (a
    ``time.perf_counter()`` value) when given: the epochs are set from a timed probe of the same
    engine so that the cosine schedule ends inside the budget; the test images are scored after
    every epoch. The run is written to ``run_dir`` (default: a new temporary folder; it holds the
    checkpoint) and :func:`keep_run` copies what comes back to ``keep_dir``. If the run outlasts
    the deadline anyway it is stopped there, its finished epochs kept, and the result says so.
    graph: replay steps as CUDA graphs (off where the graph tests failed in this run); whether the
    run's steps really were graphs is read back from the probe and the run's log."""

    from ..data import load_dataset  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.config import make_config  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.rundir import RunDir  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)
    from ..run.runs import train  # noqa: PLC0415  (a stage imports what it runs: one failing import fails one stage, not the run)

    t_load = time.perf_counter()
    data = load_dataset("cifar10", data_dir, progress=False)
    load_s = time.perf_counter() - t_load
    overrides: dict[str, Any] = dict(engine="local", backend=backend, data_dir=str(data_dir), gradient="spike",
                                     cuda_graph=graph)
    if smoke:
        overrides.update(topology=CIFAR_NARROW, limit_train=256, limit_test=128, batch_size=32)
    probe_cfg = make_config("cifar10", **overrides, epochs=1)
    n_train = min(len(data.y_train), probe_cfg.limit_train or len(data.y_train)) - probe_cfg.validation
    n_test = min(len(data.y_test), probe_cfg.limit_test or len(data.y_test))
    probe = _probe_seconds(probe_cfg, data.x_test[:n_test], data.y_test[:n_test], backend, smoke)
    step_s, eval_s = probe["step_s"], probe["eval_s"]
    # + augmentation on the host; + the checkpoint (weights and velocities) written every epoch
    epoch_s = math.ceil(n_train / probe_cfg.batch_size) * step_s * 1.08 + eval_s + 2.0
    budget = seconds
    if deadline is not None:  # the first epoch also captures the graph: 10 s of slack
        budget = min(budget, deadline - time.perf_counter() - 10.0)
    epochs = max(1, int(budget // epoch_s))
    run_dir = run_dir or Path(tempfile.mkdtemp(prefix="gpu_check-cifar10-")) / "run"
    cfg = make_config("cifar10", **overrides, epochs=epochs, out=str(run_dir))
    print(f"cifar10: {n_train} train images, probe {step_s * 1e3:.1f} ms/step "
          f"({'CUDA graph' if probe['graph'] else 'eager'}), eval {eval_s:.1f} s: "
          f"{epochs} epochs of about {epoch_s:.0f} s in a {budget:.0f} s budget", flush=True)
    lines: list[str] = []

    def log(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    t0 = time.perf_counter()
    with Deadline(None if deadline is None else deadline - time.perf_counter()) as stop:
        try:
            result: dict[str, Any] | None = train(cfg, progress=False, log=log)
        except KeyboardInterrupt:
            if not stop.hit:
                raise
            result = None
            print("cifar10: stopped at the wall-clock deadline; its finished epochs are kept", flush=True)
    wall = time.perf_counter() - t0
    rows = RunDir(run_dir).read_table("metrics")
    keep = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "images_per_second", "seconds")
    ips = [r["images_per_second"] for r in rows]
    engine_line = next((ln for ln in lines if ln.startswith("spikegrad: engine")), "")
    warnings = [ln for ln in lines if "warning" in ln]
    return {"dataset": data.source, "load_seconds": round(load_s, 1), "config": json.loads(cfg.to_json()),
            "probe_step_ms": round(step_s * 1e3, 2), "probe_images_per_s": round(cfg.batch_size / step_s, 1),
            "probe_graph": probe["graph"], "probe_note": probe["note"], "eval_seconds": round(eval_s, 2),
            "epoch_seconds_planned": round(epoch_s, 1), "budget_seconds": round(budget, 1),
            "epochs": epochs, "epochs_done": len(rows), "stopped_at_deadline": result is None,
            "wall_seconds": round(wall, 1), "test_images": n_test, "scored": "every epoch",
            "test_accuracy": rows[-1]["test_accuracy"] if rows else None,
            "best_test_accuracy": max((r["test_accuracy"] for r in rows), default=None),
            "train_accuracy": rows[-1]["train_accuracy"] if rows else None,
            "images_per_second": round(statistics.mean(ips), 1) if ips else None,
            "images_per_second_after_first": round(statistics.mean(ips[1:]), 1) if len(ips) > 1 else None,
            # a silent fallback to eager steps shows here: the engine's own line and its warnings
            "engine": engine_line, "warnings": warnings,
            "graph_steps": bool(backend == "cupy" and cfg.cuda_graph and "CUDA graph" in engine_line
                                and not any("graph" in w.lower() for w in warnings)),
            "curve": [{k: r[k] for k in keep if k in r} for r in rows], "run_dir": str(run_dir),
            **(keep_run(run_dir, keep_dir) if rows else {})}


# ----------------------------------------------------------------------------- driver

STAGES = ("ceilings", "tests", "conformance", "chips", "chips_timing", "ray_chips", "timing", "cifar10")
QUICK_TESTS = ("tests/cluster/test_graph.py", "tests/cluster/test_kernels.py")
OUT_FILES_BACK = 8  # the device returns at most this many files from $OUT (device README, Limits)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of conformance cases (*.npz)")
    p.add_argument("--cifar-dir", type=Path, required=True, help="CIFAR-10 data folder (image folder or binary)")
    p.add_argument("--out", type=Path, required=True, help="results folder (gpu_check.json, cifar10-run/)")
    p.add_argument("--run-dir", type=Path, help="where the whole cifar10 run is written, checkpoint included "
                                                "(default: a new temporary folder; OUT/cifar10-run gets the files "
                                                "kept)")
    p.add_argument("--smoke", action="store_true", help="everything on the CPU in about a minute")
    p.add_argument("--train-seconds", type=float, default=360.0, help="cifar10 training budget (default 360)")
    p.add_argument("--wall-limit", type=float, help="seconds this whole script may take: the tests' timeout and "
                                                      "the cifar10 budget shrink to fit, and a cifar10 run still "
                                                      "going near the end is stopped with its finished epochs kept")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--quick-tests", action="store_true", help="tests: only " + " and ".join(QUICK_TESTS)
                   + " (what the cifar10 run's graph step rests on) instead of every Ray-free test")
    p.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512], help="timing batch sizes")
    p.add_argument("--iters", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--chip-batch", type=int, default=64, help="chips_timing batch size (default 64: cifar10's)")
    p.add_argument("--chip-rounds", type=int, default=5, help="chips_timing timed rounds (default 5)")
    p.add_argument("--ray-seconds", type=float, default=120.0, help="ray_chips: at most this long (default 120)")
    a = p.parse_args(argv)
    started = time.perf_counter()
    deadline = None if a.wall_limit is None else started + a.wall_limit - 20.0  # 20 s: report, copies, json
    backend: BackendName = "numpy" if a.smoke else "cupy"
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": a.smoke, "backend": backend,
                              "argv": sys.argv[1:] if argv is None else argv}
    path = a.out / "gpu_check.json"

    def save() -> None:
        path.write_text(json.dumps(result, indent=2, default=str))

    if backend == "cupy":
        import cupy as cp  # noqa: PLC0415  (CuPy: only on a GPU)

        props = cp.cuda.runtime.getDeviceProperties(0)
        result["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        result["cupy"] = cp.__version__
    result["numpy"] = np.__version__
    save()

    def stage(name: str, fn: Callable[[], Any]) -> None:
        if name not in a.stages:
            return
        t0 = time.perf_counter()
        print(f"== {name}", flush=True)
        try:
            result[name] = fn()
        except Exception as exc:

            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"stage {name} failed: {type(exc).__name__}: {exc}", flush=True)
        result[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        save()

    def left(cap: float) -> int:
        """cap seconds, or less where the deadline leaves less (a minute kept for what follows)."""
        return int(cap if deadline is None else max(10.0, min(cap, deadline - time.perf_counter() - 60.0)))

    if not a.smoke:
        stage("ceilings", ceilings)
    stage("tests", lambda: run_tests(backend, a.smoke or a.quick_tests, timeout=left(60 if a.smoke else 240)))
    stage("conformance", lambda: conformance(a.cases, backend))
    stage("chips", lambda: chip_parity(backend, a.smoke))
    presets = ["8x8-4C3p1-P2-16-10"] if a.smoke else ["mnist", "cifar10"]
    stage("chips_timing", lambda: chip_timing(["8x8-4C3p1-P2-16-10", SMOKE_RGB] if a.smoke else presets,
                                              8 if a.smoke else a.chip_batch, 2 if a.smoke else a.chip_rounds,
                                              backend))
    stage("ray_chips", lambda: ray_chip_timing(["8x8-4C3p1-P2-16-10", SMOKE_RGB] if a.smoke else presets,
                                               8 if a.smoke else a.chip_batch, 2 if a.smoke else a.chip_rounds,
                                               backend, left(a.ray_seconds)))
    stage("timing", lambda: time_presets(presets, [8] if a.smoke else a.batches, 2 if a.smoke else a.iters,
                                         backend))
    tests = result.get("tests")
    graph_ok = not (isinstance(tests, dict) and any("test_graph" in f for f in tests.get("failures", [])))
    stage("cifar10", lambda: train_cifar(a.cifar_dir, a.out / "cifar10-run", 5.0 if a.smoke else a.train_seconds,
                                         backend, a.smoke, graph_ok, deadline, a.run_dir))
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["out_files"] = sorted(str(f.relative_to(a.out)) for f in a.out.rglob("*") if f.is_file())
    save()
    print(summary(result), flush=True)
    ok = all(not (isinstance(v, dict) and "error" in v) for v in result.values())
    ok = ok and all(r["exact"] for r in result.get("conformance", []) if isinstance(r, dict))
    ok = ok and all(r["exact"] for r in result.get("chips", []) if isinstance(r, dict))
    ok = ok and result.get("tests", {}).get("returncode", 0) == 0
    ok = ok and not any("error" in r for r in result.get("ray_chips", []) if isinstance(r, dict))
    ok = ok and not (isinstance(result.get("cifar10"), dict) and result["cifar10"].get("stopped_at_deadline"))
    return 0 if ok else 1


def summary(result: dict[str, Any]) -> str:
    """A short table of the results (the device tool returns the end of the output)."""
    out = [f"gpu_check {result.get('device', 'cpu')} backend {result['backend']}"]
    t = result.get("tests")
    if isinstance(t, dict):
        out.append(f"tests: {t.get('summary') or t.get('error')}")
    c = result.get("conformance")
    if isinstance(c, list):
        out.append(f"conformance: {sum(r['exact'] for r in c)}/{len(c)} exact")
    for r in result.get("chips", []) if isinstance(result.get("chips"), list) else []:
        out.append(f"chips {r['topology'][:24]} {r['wire']}: exact {r['exact']} ({r['state_values']} values)")
    for r in result.get("timing", []) if isinstance(result.get("timing"), list) else []:
        line = f"{r['preset'][:10]:10s} B={r['batch']:4d} eager {r['eager_images_per_s']:9.0f} img/s"
        if "graph_images_per_s" in r:
            line += f" graph {r['graph_images_per_s']:9.0f}"
        if "torch_images_per_s" in r:
            line += f" torch {r['torch_images_per_s']:9.0f} ratio(best) " \
                    f"{max(r.get('graph_over_torch', 0), r['eager_over_torch']):.2f}"
        out.append(line)
    for r in result.get("chips_timing", []) if isinstance(result.get("chips_timing"), list) else []:
        t = r["total"]
        local = ", ".join(f"{m} {r[f'{m}_images_per_s']:.0f}" for m in ("local_graph", "local_eager")
                          if f"{m}_images_per_s" in r)
        parts = ", ".join(f"{k} {100 * t[k] / t['seconds']:.0f} %"
                          for k in ("compute", "d2h", "h2d", "encode", "decode")) if t["seconds"] > 0 else ""
        out.append(f"chips {r['preset'][:10]:10s} B={r['batch']} x{r['chips']}: {r['chips_images_per_s']:.0f} img/s "
                   f"vs {local} ({r['chips_over_local']:.3f} of local); chips' time: {parts}")
    rc = result.get("ray_chips")
    if isinstance(rc, dict) and "skipped" in rc:
        out.append(f"ray_chips: skipped ({rc['skipped'][:60]})")
    for r in rc if isinstance(rc, list) else []:
        out.append(f"ray chips {r['preset'][:10]:10s} B={r['batch']}: {r['ray_chips_images_per_s']:.0f} img/s, "
                   f"chip backend {r['chip_backend']}" if "preset" in r else f"ray chips: {r.get('error')}")
    cf = result.get("cifar10")
    if isinstance(cf, dict) and cf.get("curve"):
        out.append(f"cifar10: {cf['epochs_done']}/{cf['epochs']} epochs in {cf['wall_seconds']} s, test "
                   f"{cf['test_accuracy']:.2f} % (best {cf['best_test_accuracy']:.2f} %), train "
                   f"{cf['train_accuracy']:.2f} %, {cf['images_per_second']:.0f} img/s, graph steps {cf['graph_steps']}"
                   + (" STOPPED AT THE DEADLINE" if cf["stopped_at_deadline"] else ""))
    if isinstance(cf, dict) and "curve" in cf and not cf["curve"]:
        out.append(f"cifar10: no epoch finished ({cf['epochs']} planned in a {cf['budget_seconds']} s budget)"
                   + (" STOPPED AT THE DEADLINE" if cf["stopped_at_deadline"] else ""))
    files = result.get("out_files")
    if files is not None:
        out.append(f"{len(files)} files in OUT (the device returns at most {OUT_FILES_BACK}): {', '.join(files)}"
                   + (" TOO MANY" if len(files) > OUT_FILES_BACK else ""))
    if "wall_seconds" in result:
        out.append(f"wall {result['wall_seconds']} s")
    for k, v in result.items():
        if isinstance(v, dict) and "error" in v:
            out.append(f"{k}: FAILED {v['error']}")
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
