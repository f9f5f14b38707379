"""The GPU check: one prepared script for a lent GPU machine, writing one JSON of everything.

Usage (on the GPU machine, from the repository root; no Ray needed)::

    python3 -m launch.tools.gpu_check --cases CASES_DIR --cifar-dir CIFAR_DIR --out RESULTS_DIR
    python3 -m launch.tools.gpu_check --smoke --cases CASES_DIR --cifar-dir CIFAR_DIR --out RESULTS_DIR  # CPU, a minute

Stages, each written to ``RESULTS_DIR/gpu_check.json`` as it completes (a failing stage is
recorded with its error and the next one still runs: device time is scarce):

1. ``ceilings``: device-to-device copy bandwidth and the float32 matrix-product rate (no TF32);
2. ``tests``: ``pytest --backend cupy`` over tests/cluster and the Ray-free chip tests
   (the engine against its float64 reference, chips against the local engine, the CUDA graph
   step against the eager step, the CuPy kernels against their NumPy twins);
3. ``conformance``: every conformance case on CuPy in float64 against its expected answer;
4. ``chips``: chips as plain objects in this process on CuPy, the Arrow wire between them
   (:func:`actors.chip.run_chips`), against the same chips on NumPy: fixed-point weights,
   dyadic inputs, float64, so every value must agree exactly (count wire on the ``mnist``
   preset and a narrowed ``cifar10``, event wire on ``digits``);
5. ``timing``: forward + backward + update of the ``mnist`` and ``cifar10`` presets, the CuPy
   engine (eager, and as a replayed CUDA graph) against the same equivalent ANN in PyTorch
   (:mod:`launch.tools.torch_ref`, TF32 off on both sides), median of CUDA-event-timed steps;
6. ``cifar10``: the paper's ``cifar10`` preset trained with spike gradients on the image
   folder given (the JPEG stand-in) for a fixed time budget (``--train-seconds``): the number
   of epochs is set from a timed probe so that the cosine schedule ends inside the budget;
   the 10,000 test images are scored after every epoch; the run directory is kept.

``--smoke`` runs every stage on the CPU (NumPy stands in for CuPy; no graph; narrowed
networks, a few steps, one short epoch) so that CI proves the script before a GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # annotations only: the stages import the project lazily
    from actors.chip import Wire
    from cluster.backend import BackendName

REPO = Path(__file__).resolve().parents[2]
# The paper's cifar10 preset with its channels divided by 8: the smoke mode's and the CPU recipe's network.
CIFAR_NARROW = "32x32x3-16C3p1-32C3p1-P2-64C3p1-P2-128C3p1-64C3p1-128-64-10"
RAY_FREE_TESTS = ("tests/cluster", "tests/actors/test_chip.py", "tests/actors/test_wire.py",
                  "tests/actors/test_wire_events.py")


class Clock:
    """Times on the device (CUDA events) or the host (perf_counter) alike."""

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu

    def time(self, fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
        for _ in range(warmup):
            fn()
        if not self.gpu:
            times = []
            for _ in range(iters):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return times
        import cupy as cp  # noqa: PLC0415

        cp.cuda.Device().synchronize()
        times = []
        for _ in range(iters):
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
        return times


# ----------------------------------------------------------------------------- stages

def ceilings() -> dict[str, float]:
    import cupy as cp  # noqa: PLC0415

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


def run_tests(backend: str, smoke: bool, timeout: int) -> dict[str, Any]:
    """pytest over the Ray-free tests on ``backend``; the summary line and the failures."""
    targets = ["tests/cluster/test_graph.py", "tests/cluster/test_kernels.py"] if smoke else list(RAY_FREE_TESTS)
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
    from .conformance import compare, load_case, run_case  # noqa: PLC0415

    rows = []
    for case in sorted(cases_dir.glob("*.npz")):
        if case.name.endswith(".expected.npz"):
            continue
        got = run_case(load_case(case), backend=backend, name=case.name)
        problems = compare(got, load_case(case.with_name(case.stem + ".expected.npz")))
        rows.append({"case": case.name, "exact": not problems, "problems": problems})
    return rows


def _chip_states(topology: str, groups: str | None, backend: str, wire: Wire, batches: int, B: int,
                 micro: int, seed: int) -> tuple[list, list, list, float]:
    """Train chips in this process: (per-batch (loss, correct), chip states, chip reports, seconds)."""
    from actors.chip import Chip, ChipConfig, parse_chips, run_chips  # noqa: PLC0415
    from cluster.mapping import whole_layers  # noqa: PLC0415
    from cluster.network import StepConfig, init_params, quantize  # noqa: PLC0415
    from cluster.topology import parse_topology  # noqa: PLC0415

    topo = parse_topology(topology)
    rng = np.random.default_rng(seed)
    params = init_params(topo, rng, 0.25, np.float64)
    for W, _b in params.values():
        quantize(np, W, 12)
    ccfg = ChipConfig(topology=topology, step=StepConfig(theta_ff=0.25, theta_bp=0.25, alpha=100.0),
                      eta=1e-6, momentum=0.9, dtype="float64", backend=backend, frac_bits=12, wire=wire)
    spans = parse_chips(groups, len(topo.layers))
    layout = whole_layers(topo, spans)
    chips = [Chip(i, layout, ccfg, {l: params[l] for l in range(lo, hi + 1) if l in params})
             for i, (lo, hi) in enumerate(spans)]
    # Dyadic inputs in [-1, 1) on a 2^-7 grid, sparse like images: every sum below is exact.
    stats, t0 = [], time.perf_counter()
    for b in range(batches):
        x = rng.integers(-128, 128, (B, *topo.input_shape)) / 128 * (rng.random((B, *topo.input_shape)) < 0.5)
        y = rng.integers(0, topo.num_classes, B)
        stats.append(run_chips(chips, x, y, micro, b, lr_scale=1.0 - 0.1 * b))
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


def step_cost(topo: Any, B: int) -> tuple[float, float]:
    """(FLOPs, minimal bytes) of one training step: 2 FLOPs per MAC for forward, error
    below (l ≥ 1) and increments; bytes: weights read twice and written once, each
    layer's activations written once and read twice (forward, increments), errors once each."""
    from cluster.synops import topology_fans  # noqa: PLC0415

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
    from cluster.backend import get_backend  # noqa: PLC0415
    from cluster.topology import parse_topology  # noqa: PLC0415

    from ..run.config import TrainConfig  # noqa: PLC0415
    from ..run.driver import initial_params  # noqa: PLC0415
    from ..run.local import LocalEngine  # noqa: PLC0415
    from .bench import profile_step, synthetic_batch  # noqa: PLC0415
    from .torch_ref import make_torch_step, torch_available  # noqa: PLC0415

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
                import torch  # noqa: PLC0415

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
                import cupy as cp  # noqa: PLC0415

                cp.get_default_memory_pool().free_all_blocks()
    return rows


def _probe_seconds(probe_cfg: Any, x_test: np.ndarray, y_test: np.ndarray, backend: str,
                   smoke: bool) -> tuple[float, float]:
    """(seconds per training step, seconds for one evaluation on x_test) of a Driver on probe_cfg,
    closed and released on return."""
    from ..run.driver import Driver  # noqa: PLC0415
    from .bench import synthetic_batch  # noqa: PLC0415

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
    probe.close()
    return step_s, eval_s


def _torch_item(step: Callable[[Any, Any], Any], tx: Any, ty: Any) -> Any:
    """step(tx, ty).item(): one PyTorch step, its loss fetched to the host."""
    return step(tx, ty).item()


def train_cifar(data_dir: Path, out_dir: Path, seconds: float, backend: str, smoke: bool,
                graph: bool = True) -> dict[str, Any]:
    """The cifar10 preset (narrowed in smoke mode) with spike gradients for ``seconds``, on the
    dataset's defaults (launch.run.config); epochs from a timed probe of the same engine.
    graph: replay steps as CUDA graphs (off where the graph tests failed in this run)."""
    from ..data import load_dataset  # noqa: PLC0415
    from ..run.config import make_config  # noqa: PLC0415
    from ..run.rundir import RunDir  # noqa: PLC0415
    from ..run.runs import train  # noqa: PLC0415

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
    step_s, eval_s = _probe_seconds(probe_cfg, data.x_test[:n_test], data.y_test[:n_test], backend, smoke)
    # + augmentation on the host; + the checkpoint (weights and velocities) written every epoch
    epoch_s = math.ceil(n_train / probe_cfg.batch_size) * step_s * 1.08 + eval_s + 2.0
    epochs = max(1, int(seconds // epoch_s))
    cfg = make_config("cifar10", **overrides, epochs=epochs, out=str(out_dir))
    print(f"cifar10: {n_train} train images, probe {step_s * 1e3:.1f} ms/step, eval {eval_s:.1f} s: "
          f"{epochs} epochs of about {epoch_s:.0f} s in a {seconds:.0f} s budget", flush=True)
    t0 = time.perf_counter()
    result = train(cfg, progress=False, log=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    rows = RunDir(out_dir).read_table("metrics")
    keep = ("epoch", "train_loss", "train_accuracy", "test_accuracy", "images_per_second", "seconds")
    return {"dataset": data.source, "load_seconds": round(load_s, 1), "config": json.loads(cfg.to_json()),
            "epochs": epochs, "wall_seconds": round(wall, 1), "test_accuracy": result["test_accuracy"],
            "best_test_accuracy": max(r["test_accuracy"] for r in rows),
            "curve": [{k: r[k] for k in keep if k in r} for r in rows], "run_dir": str(out_dir)}


# ----------------------------------------------------------------------------- driver

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, required=True, help="folder of conformance cases (*.npz)")
    p.add_argument("--cifar-dir", type=Path, required=True, help="CIFAR-10 data folder (image folder or binary)")
    p.add_argument("--out", type=Path, required=True, help="results folder (gpu_check.json, the cifar10 run)")
    p.add_argument("--run-dir", type=Path, help="where the cifar10 run is written (default OUT/cifar10-run)")
    p.add_argument("--smoke", action="store_true", help="everything on the CPU in about a minute")
    p.add_argument("--train-seconds", type=float, default=360.0, help="cifar10 training budget (default 360)")
    p.add_argument("--wall-limit", type=float, help="seconds this whole script may take: the cifar10 budget "
                                                      "shrinks to fit what the earlier stages left")
    p.add_argument("--stages", nargs="+", default=["ceilings", "tests", "conformance", "chips", "timing", "cifar10"])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 256, 512], help="timing batch sizes")
    p.add_argument("--iters", type=int, default=20, help="timed steps per measurement")
    a = p.parse_args(argv)
    started = time.perf_counter()
    backend: BackendName = "numpy" if a.smoke else "cupy"
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S"), "smoke": a.smoke, "backend": backend,
                              "argv": sys.argv[1:] if argv is None else argv}
    path = a.out / "gpu_check.json"

    def save() -> None:
        path.write_text(json.dumps(result, indent=2, default=str))

    if backend == "cupy":
        import cupy as cp  # noqa: PLC0415

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
        except Exception as exc:  # noqa: BLE001
            import traceback  # noqa: PLC0415

            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"stage {name} failed: {type(exc).__name__}: {exc}", flush=True)
        result[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        save()

    if not a.smoke:
        stage("ceilings", ceilings)
    stage("tests", lambda: run_tests(backend, a.smoke, timeout=60 if a.smoke else 240))
    stage("conformance", lambda: conformance(a.cases, backend))
    stage("chips", lambda: chip_parity(backend, a.smoke))
    presets = ["8x8-4C3p1-P2-16-10"] if a.smoke else ["mnist", "cifar10"]
    stage("timing", lambda: time_presets(presets, [8] if a.smoke else a.batches, 2 if a.smoke else a.iters,
                                         backend))
    tests = result.get("tests")
    graph_ok = not (isinstance(tests, dict) and any("test_graph" in f for f in tests.get("failures", [])))
    budget = 5.0 if a.smoke else a.train_seconds
    if a.wall_limit:  # leave time to load the data, probe, score the last epoch and write everything
        budget = max(10.0, min(budget, a.wall_limit - (time.perf_counter() - started) - 75.0))
    result["cifar10_budget_seconds"] = round(budget, 1)
    stage("cifar10", lambda: train_cifar(a.cifar_dir, a.run_dir or a.out / "cifar10-run", budget, backend,
                                         a.smoke, graph_ok))
    print(summary(result), flush=True)
    ok = all(not (isinstance(v, dict) and "error" in v) for v in result.values())
    ok = ok and all(r["exact"] for r in result.get("conformance", []) if isinstance(r, dict))
    ok = ok and all(r["exact"] for r in result.get("chips", []) if isinstance(r, dict))
    ok = ok and result.get("tests", {}).get("returncode", 0) == 0
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
    cf = result.get("cifar10")
    if isinstance(cf, dict) and "curve" in cf:
        out.append(f"cifar10: {cf['epochs']} epochs in {cf['wall_seconds']} s, test {cf['test_accuracy']:.2f} % "
                   f"(best {cf['best_test_accuracy']:.2f} %)")
    for k, v in result.items():
        if isinstance(v, dict) and "error" in v:
            out.append(f"{k}: FAILED {v['error']}")
    return "\n".join(out)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
