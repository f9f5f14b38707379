"""The GPU check, one script for a lent GPU machine: parity, conformance, timing, ceilings.

Usage (on the GPU machine, from the repository root)::

    python3 -m launch.gpu_check --cases DIR_WITH_CONFORMANCE_CASES --out RESULTS_DIR

Steps, each written to ``RESULTS_DIR/gpu_check.json`` as it completes:

1. ceilings: device-to-device copy bandwidth (bytes read + written) and float32
   matrix-product rate (cuBLAS through CuPy, no TF32), measured here;
2. every conformance case on ``--backend cupy`` in float64 against its expected
   answer (exact, 1e-9);
3. forward + backward + update of the ``mnist`` and ``cifar10`` presets at batch
   128 and 512, CuPy engine vs the same equivalent ANN in PyTorch (``launch.torch_ref``,
   TF32 off so both do float32 arithmetic), median of CUDA-event-timed steps after
   warm-up, on synthetic inputs of the right shape;
4. FLOPs and minimal bytes per step, achieved TFLOP/s against the ceilings, and a
   per-layer/phase profile of the CuPy step at the larger batch.

The CuPy kernel parity tests run separately under pytest (``tests/cluster``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np


def _event_time(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    import cupy as cp  # noqa: PLC0415

    for _ in range(warmup):
        fn()
    cp.cuda.get_current_stream().synchronize()
    times = []
    for _ in range(iters):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3)
    return times


def ceilings() -> dict[str, float]:
    import cupy as cp  # noqa: PLC0415

    n = 1 << 29  # 2 GiB of float32
    a = cp.random.random(n, dtype=cp.float32)
    b = cp.empty_like(a)
    t = statistics.median(_event_time(lambda: cp.copyto(b, a), 3, 10))
    bw = 2 * a.nbytes / t
    m = 8192
    A = cp.random.random((m, m), dtype=cp.float32)
    B = cp.random.random((m, m), dtype=cp.float32)
    t = statistics.median(_event_time(lambda: A @ B, 3, 10))
    del a, b, A, B
    cp.get_default_memory_pool().free_all_blocks()
    return {"copy_bytes_per_s": bw, "fp32_matmul_flop_per_s": 2 * m ** 3 / t}


def conformance(cases_dir: Path) -> list[dict]:
    from .conformance import compare, load_case, run_case  # noqa: PLC0415

    rows = []
    for case in sorted(cases_dir.glob("*.npz")):
        if case.name.endswith(".expected.npz"):
            continue
        got = run_case(load_case(case), backend="cupy", name=case.name)
        problems = compare(got, load_case(case.with_name(case.stem + ".expected.npz")))
        rows.append({"case": case.name, "exact": not problems, "problems": problems})
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


def time_presets(presets: list[str], batches: list[int], iters: int) -> list[dict]:
    import cupy as cp  # noqa: PLC0415

    from cluster.backend import get_backend  # noqa: PLC0415
    from cluster.topology import parse_topology  # noqa: PLC0415

    from .bench import profile_step, synthetic_batch  # noqa: PLC0415
    from .config import TrainConfig  # noqa: PLC0415
    from .torch_ref import make_torch_step, torch_available  # noqa: PLC0415
    from .trainer import Trainer  # noqa: PLC0415

    have_torch, torch_version = torch_available()
    rows = []
    for name in presets:
        topo = parse_topology(name)
        for B in batches:
            cfg = TrainConfig(dataset="mnist", engine="local", topology=topo.text, batch_size=B, backend="cupy",
                              theta_ff=0.25, lr=1e-5, epochs=1)
            trainer = Trainer(cfg, topo=topo, backend=get_backend("cupy"))
            x, y = synthetic_batch(topo.input_shape, B, topo.num_classes)
            t_ours = _event_time(lambda: trainer.train_step(x, y), 3, iters)
            flops, nbytes = step_cost(topo, B)
            row = {"preset": name, "batch": B, "cupy_step_s": statistics.median(t_ours),
                   "cupy_images_per_s": B / statistics.median(t_ours), "flops": flops, "min_bytes": nbytes}
            row["cupy_tflops"] = flops / row["cupy_step_s"] / 1e12
            if have_torch:
                import torch  # noqa: PLC0415

                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
                host = {l: (np.asarray(W), np.asarray(b)) for l, (W, b) in
                        Trainer(TrainConfig(**{**cfg.__dict__, "backend": "numpy"}), topo=topo).params.items()}
                step = make_torch_step(topo, host, "cuda", "float32", cfg.theta_ff, cfg.step.theta_bp,
                                       cfg.alpha, cfg.eta, cfg.momentum)
                tx = torch.tensor(x, device="cuda")
                ty = torch.tensor(y, device="cuda")

                def tstep() -> None:
                    step(tx, ty).item()  # the same host sync per step as the trainer's loss read

                t_torch = _event_time(tstep, 3, iters)
                row["torch_step_s"] = statistics.median(t_torch)
                row["torch_images_per_s"] = B / row["torch_step_s"]
                row["ratio_cupy_over_torch"] = row["cupy_images_per_s"] / row["torch_images_per_s"]
                row["torch_version"] = torch_version
                del step, tx, ty
                torch.cuda.empty_cache()
            if B == max(batches):
                row["profile_ms"] = {k: round(v, 3) for k, v in
                                     profile_step(trainer, x, y, steps=3).items()}
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "profile_ms"}), flush=True)
            del trainer
            cp.get_default_memory_pool().free_all_blocks()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--presets", nargs="+", default=["mnist", "cifar10"])
    p.add_argument("--batches", type=int, nargs="+", default=[128, 512])
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = a.out / "gpu_check.json"

    def save() -> None:
        path.write_text(json.dumps(result, indent=2, default=str))

    import cupy as cp  # noqa: PLC0415

    props = cp.cuda.runtime.getDeviceProperties(0)
    result["device"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    result["cupy"] = cp.__version__
    def stage(name: str, fn: Callable[[], Any]) -> None:
        # A failing stage is recorded with its error and the next one still runs: device time is scarce.
        t0 = time.perf_counter()
        try:
            result[name] = fn()
        except Exception as exc:  # noqa: BLE001
            import traceback  # noqa: PLC0415

            result[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            print(f"stage {name} failed: {type(exc).__name__}: {exc}", flush=True)
        result[f"{name}_seconds"] = round(time.perf_counter() - t0, 2)
        save()

    stage("ceilings", ceilings)
    print(json.dumps(result["ceilings"]), flush=True)
    stage("conformance", lambda: conformance(a.cases))
    if isinstance(result["conformance"], list):
        print("conformance:", [(r["case"], r["exact"]) for r in result["conformance"]], flush=True)
    stage("timing", lambda: time_presets(a.presets, a.batches, a.iters))
    for r in result["timing"] if isinstance(result["timing"], list) else []:
        line = (f"{r['preset']:8s} B={r['batch']:4d} cupy {r['cupy_images_per_s']:9.0f} img/s "
                f"({r['cupy_tflops']:.1f} TFLOP/s)")
        if "torch_images_per_s" in r:
            line += f"  torch {r['torch_images_per_s']:9.0f} img/s  ratio {r['ratio_cupy_over_torch']:.2f}"
        print(line)
    ok = isinstance(result["conformance"], list) and all(r["exact"] for r in result["conformance"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
