"""``spikegrad bench``: three benchmarks.

* ``bench train``: training-step throughput of the local engine, optionally against PyTorch on
  the same equivalent ANN, with a per-layer profile (``--profile``, through the engine's own
  ``clock`` hook). A measurement is forward + backward + update (+ the synaptic-operation
  counters) on fixed synthetic batches of the topology's input shape, MNIST-like in range
  ([0, 1), about 19 % nonzero), on initial weights: the errors are then dense, as early in
  training. ``--checkpoint RUN_DIR`` times a trained network on its own test images instead,
  where the errors are sparse, as late in training. Each number is the median over
  ``--repeats`` windows of ``--seconds`` each, after two warm-up steps.
* ``bench chips``: the chip engine against the local engine on the same batches, taking turns.
* ``bench events``: the event-driven simulator's synaptic events per second against the ANN.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from cluster.backend import get_backend, to_device
from cluster.events import simulate
from cluster.network import backward, backward_layers, forward, forward_layers, init_params, output_error, to_chwb
from cluster.topology import parse_topology

from ..data import load_dataset
from ..run.config import TrainConfig
from ..run.driver import initial_params, machine_busy_seconds
from ..run.local import LocalEngine
from ..run.ray_session import start_ray
from ..run.runs import check_fit, load_run
from .timing import rate
from .torch_ref import time_in_subprocess


def synthetic_batch(shape: tuple[int, int, int], B: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.random((B, *shape)) * (rng.random((B, *shape)) < 0.19)).astype(np.float32)
    return x, rng.integers(0, classes, B)


def machine_line() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, numpy {np.__version__}"


def profile_step(params: dict, topo: Any, step: Any, backend: Any, dtype: Any, x: np.ndarray, y: np.ndarray,
                 steps: int = 5) -> dict[str, float]:
    """Milliseconds per step by (layer, phase): the engine's own forward, top error and backward
    (:mod:`cluster.network`), timed through its ``clock`` hook with a device sync around each piece."""
    xp = backend.xp
    xd, yd = to_device(backend, x, dtype), to_device(backend, y.astype(np.int64))
    out: dict[str, float] = {}

    def clock(key: str, fn: Callable[[], Any]) -> Any:
        backend.synchronize()
        t0 = time.perf_counter()
        r = fn()
        backend.synchronize()
        out[key] = out.get(key, 0.0) + (time.perf_counter() - t0) * 1e3 / steps
        return r

    for _ in range(steps):
        kept = forward_layers(xp, topo, params, to_chwb(xp, xd), step, clock=clock)
        E, _ = clock("   output error", partial(output_error, xp, kept[-1].S, yd, step))
        backward_layers(xp, topo, params, kept, E, step, clock=clock)
    return out


def _cycle(engine: LocalEngine, x: np.ndarray, y: np.ndarray, B: int, turn: list[int]) -> None:
    """One training step on the next batch of B rows of x, round and round (x may be one batch)."""
    n = len(x) // B
    i = (turn[0] % n) * B
    turn[0] += 1
    engine.train_step(x[i:i + B], y[i:i + B])


def bench_train(a: Any) -> int:
    topo = parse_topology(a.topology)
    backend = get_backend(a.backend)
    results: dict[str, Any] = dict(topology=topo.text, backend=backend.name, dtype=a.dtype,
                                   machine=machine_line(), date=time.strftime("%Y-%m-%d"), rows=[])
    if a.torch:

        # Asked without importing it: PyTorch runs in a process of its own (torch_ref.time_in_subprocess).
        if importlib.util.find_spec("torch") is None:
            print("spikegrad bench: --torch skipped: torch is not installed", file=sys.stderr)
        else:
            results["torch"] = importlib.metadata.version("torch")
    trained = None
    if getattr(a, "checkpoint", None):
        # A trained network on its own test images: the errors are as sparse as late in training.

        driver = load_run(a.checkpoint)
        topo, trained = driver.topo, driver.host_params()
        driver.close()
        data = load_dataset(driver.cfg.dataset, driver.cfg.data_dir, progress=False)
        results.update(topology=topo.text, inputs=f"{driver.cfg.dataset} test images, trained weights "
                                                   f"from {a.checkpoint}")
    images = None
    if trained is None and getattr(a, "dataset", None):
        # Real training images on initial weights: the errors are dense, as at the start of a run.

        images = load_dataset(a.dataset, a.data_dir, progress=False)
        check_fit(topo, images)
        results.update(inputs=f"the first training images of {images.name} ({images.source}), initial weights")
    for B in a.batch_sizes:
        cfg = TrainConfig(dataset="mnist", engine="local", topology=topo.text, batch_size=B, backend=backend.name,
                          dtype=a.dtype, theta_ff=0.25, lr=1e-5, epochs=1)
        if trained is not None:
            x, y = data.x_test[:B], data.y_test[:B]
        elif images is not None:  # consecutive batches of the first --images, round and round
            x, y = images.x_train[:max(B, a.images - a.images % B)], images.y_train[:max(B, a.images - a.images % B)]
        else:
            x, y = synthetic_batch(topo.input_shape, B, topo.num_classes)
        row: dict[str, Any] = dict(batch=B)
        host = initial_params(cfg, topo, np.random.default_rng(cfg.seed)) if trained is None else \
            {l: (np.asarray(W, a.dtype), np.asarray(b, a.dtype)) for l, (W, b) in trained.items()}
        rounds = getattr(a, "rounds", 1)
        engine: LocalEngine | None = None
        ours: list[float] = []
        theirs: list[float] = []
        ratios: list[float] = []
        for r in range(rounds):  # taking turns: PyTorch (its own process), then ours, each round
            if a.torch and "torch" in results:
                t = statistics.median(time_in_subprocess(
                    topo, host, x, y, dict(theta_ff=cfg.theta_ff, theta_bp=cfg.step.theta_bp, alpha=cfg.alpha,
                                           eta=cfg.eta, momentum=cfg.momentum),
                    a.dtype, "cuda" if backend.is_gpu else "cpu", a.seconds, a.repeats, batch=B))
                theirs.append(t)
            # Each round starts from the same weights on both sides (a fresh engine here, a fresh
            # process there): the errors thin out as a network learns, which would favour the engine.
            if engine is not None:
                engine.close()
            engine = LocalEngine(cfg, topo, host, backend=backend)
            if a.micro_batch:
                engine.micro_batch = a.micro_batch
            ours.append(statistics.median(rate(partial(_cycle, engine, x, y, B, [0]), B, a.seconds, a.repeats,
                                               backend.synchronize)))
            if theirs:
                ratios.append(ours[-1] / theirs[-1])
            if rounds > 1:
                print(f"batch {B:5d} round {r + 1}/{rounds}: {ours[-1]:9.1f} img/s"
                      + (f"   torch {theirs[-1]:9.1f} img/s   ratio {ratios[-1]:.2f}" if theirs else ""),
                      file=sys.stderr)
        row["images_per_second"] = statistics.median(ours)
        row["runs"] = [round(v, 1) for v in ours]
        if theirs:
            row["torch_images_per_second"] = statistics.median(theirs)
            row["torch_runs"] = [round(v, 1) for v in theirs]
            row["ratio_vs_torch"] = statistics.median(ratios)
            row["ratio_runs"] = [round(v, 3) for v in ratios]
        assert engine is not None
        if a.profile:
            prof = profile_step(engine.params, topo, cfg.step, backend, engine.dtype, x[:B], y[:B])
            row["profile_ms"] = {k: round(v, 3) for k, v in prof.items()}
        engine.close()
        results["rows"].append(row)
        line = f"batch {B:5d}: {row['images_per_second']:9.1f} img/s"
        if "torch_images_per_second" in row:
            line += f"   torch {row['torch_images_per_second']:9.1f} img/s   ratio {row['ratio_vs_torch']:.2f}"
        print(line, file=sys.stderr)
        if a.profile:
            total = sum(row["profile_ms"].values())
            for k, v in sorted(row["profile_ms"].items(), key=lambda kv: -kv[1]):
                print(f"    {k:32s} {v:8.2f} ms  {100 * v / total:5.1f} %", file=sys.stderr)
    if a.json:
        print(json.dumps(results), flush=True)
    return 0


def bench_chips(a: Any) -> int:
    """Chips vs one process on the same batches: images/s, where chip time goes, wire efficiency.

    The two engines take turns, ``--rounds`` times (local, then chips, on the same batches each
    round), so that both see the same state of a shared machine; the ratio is the median of the
    rounds' ratios, and every round is reported. The wire's framing against the smaller encoding is
    counted on the warm-up batch (the count costs chip time); ``--profile`` adds
    :func:`chip_profile`.
    """
    from ..run.chips import ChipEngine  # noqa: PLC0415  (imports Ray)

    topo = parse_topology(a.topology)
    B = a.batch_size
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(topo.input_shape, B, topo.num_classes, seed=int(s))
               for s in rng.integers(0, 2**31, a.batches)]
    base = dict(dataset="mnist", topology=topo.text, batch_size=B, theta_ff=0.25, lr=1e-5, epochs=1)
    replicas = getattr(a, "replicas", 1)
    rounds = getattr(a, "rounds", 1)
    cores = os.cpu_count() or 1
    local_cfg = TrainConfig(engine="local", **base)
    chip_cfg = TrainConfig(engine="chips", chips=a.chips, micro_batch=a.micro_batch, replicas=replicas,
                           transport=getattr(a, "transport", "auto"),
                           chip=getattr(a, "chip", None), chip_neurons=getattr(a, "chip_neurons", None),
                           chip_synapses=getattr(a, "chip_synapses", None), **base)
    host = initial_params(local_cfg, topo, np.random.default_rng(local_cfg.seed))
    local = LocalEngine(local_cfg, topo, host)
    chips = ChipEngine(chip_cfg, topo, host)

    machine_cpu = {"local": 0.0, "chips": 0.0}  # the machine's busy CPU seconds in each engine's turns

    def timed(engine: Any, name: str) -> float:
        t0, c0 = time.perf_counter(), machine_busy_seconds()
        for x, y in batches:
            engine.submit(x, y, 1.0)
        engine.collect(wait=True)
        machine_cpu[name] += machine_busy_seconds() - c0
        return time.perf_counter() - t0

    local_rates, chip_rates = [], []
    wall = 0.0
    try:
        # The smaller encoding's size is counted on the warm-up batch only: the count costs chip time
        # that training does not spend.
        chips.audit_sizes(True)
        for engine in (local, chips):  # warm-up: one batch each
            engine.submit(*batches[0], 1.0)
            engine.collect(wait=True)
        audit = chips.counters().chips  # the warm-up's counters: the encodings' sizes
        chips.audit_sizes(False)
        pipe = chips.pipeline
        assert pipe is not None
        pipe.driver = dict.fromkeys(pipe.driver, 0)
        for r in range(rounds):
            local_rates.append(B * len(batches) / timed(local, "local"))
            dt = timed(chips, "chips")
            wall += dt
            chip_rates.append(B * len(batches) / dt)
            print(f"round {r + 1}/{rounds}: local {local_rates[-1]:8.1f} img/s   chips {chip_rates[-1]:8.1f} img/s"
                  f"   ratio {chip_rates[-1] / local_rates[-1]:.2f}", file=sys.stderr)
        reports = chips.counters().chips
        describe = chips.describe()
        driver = dict(pipe.driver)
        links = [l for r in reports for l in r["traffic"].values()]
        mean_bytes = int(sum(l["bytes"] for l in links) / max(1, sum(l["messages"] for l in links)))
        empty = small = None
        if getattr(a, "profile", False):
            c0 = machine_busy_seconds()
            empty = pipe.time_empty_calls(B, len(batches), mean_bytes)
            machine_cpu["ray"] = (machine_busy_seconds() - c0) / len(batches)
            # the same calls with messages of SMALL_MESSAGE bytes: what the bytes themselves cost Ray
            small, machine_cpu["ray_small"] = empty, machine_cpu["ray"]
            if mean_bytes:
                c0 = machine_busy_seconds()
                small = pipe.time_empty_calls(B, len(batches), SMALL_MESSAGE)
                machine_cpu["ray_small"] = (machine_busy_seconds() - c0) / len(batches)
    finally:
        local.close()
        if chips.pipeline is not None:
            chips.pipeline.close()
            chips.pipeline = None
    ratios = [c / l for c, l in zip(chip_rates, local_rates)]
    busy = sum(r["timing"]["busy"] for r in reports)
    enc = sum(r["timing"]["encode"] for r in reports)
    dec = sum(r["timing"]["decode"] for r in reports)
    msgs = sum(l["messages"] for l in links)
    sent = sum(l["bytes"] for l in links)
    audited = [l for r in audit for l in r["traffic"].values()]  # the warm-up batch's links
    a_msgs, a_sent = max(1, sum(l["messages"] for l in audited)), sum(l["bytes"] for l in audited)
    a_smallest = sum(l["min_payload_bytes"] for l in audited)
    n_chips = len(reports) * replicas  # reports are summed over replicas
    # one replica's chain of chips and micro-batches (replicas run side by side)
    floor = ray_floor(len(reports), sent / max(1, msgs), -(-B // (chips.micro * replicas)), len(batches))
    chips.close()
    res = dict(topology=topo.text, batch=B, batches=len(batches), rounds=rounds, chips=describe,
               machine=machine_line(), date=time.strftime("%Y-%m-%d"),
               local_images_per_second=statistics.median(local_rates),
               chips_images_per_second=statistics.median(chip_rates), ratio=statistics.median(ratios),
               local_rounds=[round(v, 1) for v in local_rates], chips_rounds=[round(v, 1) for v in chip_rates],
               ratio_rounds=[round(v, 3) for v in ratios],
               encode_share_of_chip_time=enc / busy, decode_share_of_chip_time=dec / busy,
               waiting_share_of_chip_time=1.0 - busy / (wall * n_chips),
               messages=msgs, bytes_per_message=sent / max(1, msgs),
               smaller_encoding_bytes_per_message=a_smallest / a_msgs,
               wire_overhead=(a_sent - a_smallest) / max(1, a_smallest),
               ray_floor_images_per_second=B / floor)
    print(f"median of {rounds} round(s): local {res['local_images_per_second']:8.1f} img/s   chips "
          f"{res['chips_images_per_second']:8.1f} img/s   ratio {res['ratio']:.2f}   ({describe})", file=sys.stderr)
    print(f"chip time: busy {busy:.2f} s of {wall * n_chips:.2f} s "
          f"(waiting {100 * res['waiting_share_of_chip_time']:.0f} %); "
          f"encode {100 * res['encode_share_of_chip_time']:.1f} % and "
          f"decode {100 * res['decode_share_of_chip_time']:.1f} % of busy time",
          file=sys.stderr)
    print(f"wire: {msgs} messages, {res['bytes_per_message']:.0f} bytes each on average, smaller encoding's payload "
          f"{res['smaller_encoding_bytes_per_message']:.0f} bytes (+{100 * res['wire_overhead']:.1f} % framing)",
          file=sys.stderr)
    print(f"Ray alone (echo actors, same calls and message size, no compute): {B / floor:.1f} img/s",
          file=sys.stderr)
    res["machine_cpu"] = machine_ceiling(machine_cpu, sum(r["timing"]["cpu"] for r in reports),
                                         len(batches) * rounds, B / res["local_images_per_second"], cores)
    if empty is not None:
        assert small is not None
        res["profile"] = chip_profile(reports, driver, wall, empty * len(batches) * rounds, replicas,
                                      small * len(batches) * rounds)
        print_profile(res["profile"])
    print_ceiling(res["machine_cpu"])
    if a.json:
        print(json.dumps(res), flush=True)
    return 0


# Bytes per message of the second run of empty calls in ``bench chips --profile``: small enough to
# travel inline in Ray's calls (below its 100 KiB limit), so the difference from the first run is
# what the messages' bytes cost Ray: the most any other way of moving them could save.
SMALL_MESSAGE = 200


def machine_ceiling(cpu: dict[str, float], chips_own: float, batches: int, local_wall: float,
                    cores: int) -> dict:
    """The machine's busy CPU per batch in each engine's turns (all processes: /proc/stat), and the
    ratio to local that the chips could not exceed on this machine's ``cores`` with their work per
    batch as measured: ``cores × local wall per batch / chips' CPU per batch``, the ratio of a
    schedule that kept every core busy and added no work. It assumes the chips' CPU per batch would
    not fall if their calls overlapped better (more micro-batches add calls, so it is optimistic).
    ``chips_own``: CPU seconds inside the chips' calls (``timing["cpu"]``); the rest of the chips'
    turn is Ray's (driver, workers, raylet) and the machine's background. With ``--profile``, ``cpu``
    also holds the machine's CPU per batch of the empty calls (``ray``, messages of the measured
    size; ``ray_small``, of :data:`SMALL_MESSAGE` bytes): their difference is the CPU that moving
    the bytes costs Ray, and ``ceiling_ratio_free_bytes`` the ceiling without it (a data plane
    whose own cost is taken as nothing: an upper bound on what it could give)."""
    local, chips = cpu["local"] / batches, cpu["chips"] / batches
    own = chips_own / batches
    ceiling = cores * local_wall / chips if chips > 0 else float("nan")
    out = {"cores": cores, "local_cpu_ms_per_batch": round(1e3 * local, 2),
           "chips_cpu_ms_per_batch": round(1e3 * chips, 2), "chips_own_cpu_ms_per_batch": round(1e3 * own, 2),
           "local_wall_ms_per_batch": round(1e3 * local_wall, 2), "ceiling_ratio": round(ceiling, 3)}
    if "ray" in cpu:  # --profile: Ray alone, per batch, with the messages' size and with small ones
        freed = max(0.0, cpu["ray"] - cpu["ray_small"])
        out.update(ray_cpu_ms_per_batch=round(1e3 * cpu["ray"], 2),
                   ray_small_cpu_ms_per_batch=round(1e3 * cpu["ray_small"], 2),
                   ceiling_ratio_free_bytes=round(cores * local_wall / max(1e-9, chips - freed), 3))
    return out


def print_ceiling(m: dict) -> None:
    print(f"machine CPU per batch (all processes, /proc/stat): local {m['local_cpu_ms_per_batch']:.1f} ms, chips "
          f"{m['chips_cpu_ms_per_batch']:.1f} ms ({m['chips_own_cpu_ms_per_batch']:.1f} ms inside the chips' calls, "
          f"the rest Ray, the driver and the background); with that work per batch no schedule on "
          f"{m['cores']} cores gets the chips above {m['ceiling_ratio']:.2f}x local (cores x local's "
          f"{m['local_wall_ms_per_batch']:.1f} ms per batch / the chips' CPU per batch)", file=sys.stderr)
    if "ray_cpu_ms_per_batch" in m:
        print(f"Ray alone, machine CPU per batch: {m['ray_cpu_ms_per_batch']:.1f} ms with messages of the measured "
              f"size, {m['ray_small_cpu_ms_per_batch']:.1f} ms with {SMALL_MESSAGE}-byte ones; a way of moving "
              f"the bytes that cost nothing would lift the ceiling to {m['ceiling_ratio_free_bytes']:.2f}x",
              file=sys.stderr)


def chip_profile(reports: list[dict], driver: dict, wall: float, empty: float, replicas: int,
                 small: float | None = None) -> dict:
    """Where a micro-batch's wall time goes on the chips, in ms per micro-batch.

    Per chip (its replicas summed): ``compute`` (inside its calls, less the wire), ``encode`` and
    ``decode`` (Arrow IPC), and ``waiting`` (the rest of the wall time of each replica: Ray's calls,
    the queue behind other chips, the bubble of the pipeline). In total: the wall time; the
    driver's own submission time (``.remote()`` calls, ``ray.put``, outside its waits); ``ray_calls``,
    the wall time Ray alone takes for the same calls on the same actors with messages of the same
    mean size and no work (``ChipPipeline.time_empty_calls``); ``ray_calls_small``, the same with
    messages of :data:`SMALL_MESSAGE` bytes (their difference is what the bytes cost Ray); and the
    chips' sums. ``empty`` and ``small`` are the seconds of those empty calls for as many batches as
    were timed."""
    n = max(1, driver["micro_batches"])

    def ms(seconds: float) -> float:
        return round(1e3 * seconds / n, 3)

    chips = []
    for r in reports:
        t = r["timing"]
        chips.append({"chip": r["chip"], "layers": r["layers"], "compute": ms(t["busy"] - t["encode"] - t["decode"]),
                      "encode": ms(t["encode"]), "decode": ms(t["decode"]),
                      "waiting": ms(wall * replicas - t["busy"])})
    total = {k: round(sum(c[k] for c in chips), 3) for k in ("compute", "encode", "decode", "waiting")}
    return {"micro_batches": driver["micro_batches"], "wall": ms(wall), "driver_submit": ms(driver["submit"]),
            "driver_wait": ms(driver["wait"]), "ray_calls": ms(empty),
            "ray_calls_small": ms(empty if small is None else small), "chips": chips, "total": total}


def print_profile(p: dict) -> None:
    print(f"profile, ms per micro-batch ({p['micro_batches']} micro-batches): wall {p['wall']:.2f}; driver "
          f"submission {p['driver_submit']:.2f} (waiting {p['driver_wait']:.2f}); Ray calls alone (empty calls, same "
          f"chips, same message size) {p['ray_calls']:.2f}, with {SMALL_MESSAGE}-byte messages "
          f"{p['ray_calls_small']:.2f}", file=sys.stderr)
    print(f"    {'chip':>4} {'layers':>14} {'compute':>9} {'encode':>9} {'decode':>9} {'waiting':>9}", file=sys.stderr)
    for c in p["chips"] + [dict(p["total"], chip="all", layers="")]:
        layers = ",".join(map(str, c["layers"])) if c["layers"] != "" else ""
        print(f"    {c['chip']:>4} {layers:>14} {c['compute']:9.2f} {c['encode']:9.2f} {c['decode']:9.2f} "
              f"{c['waiting']:9.2f}", file=sys.stderr)


def ray_floor(n_chips: int, message_bytes: float, micros: int, batches: int) -> float:
    """Seconds per batch that Ray alone needs for the pipeline's calls: n_chips echo actors,
    one forward and one backward call each per micro-batch, messages of the measured size."""
    import pyarrow as pa  # noqa: PLC0415  (pyarrow: loaded where a table or file system is used, not at start-up)
    import ray  # noqa: PLC0415  (Ray: loaded only where chips run)

    started, _ = start_ray()

    @ray.remote(num_cpus=0.01)
    class Echo:
        def hop(self, msg: Any, *ids: int) -> Any:
            return msg

    # ray's stubs type @ray.remote on a class as returning the class itself, without .remote
    actors = [Echo.remote() for _ in range(n_chips)]  # type: ignore[attr-defined]
    ray.get([a.hop.remote(0) for a in actors])
    payload = pa.py_buffer(np.random.default_rng(0).bytes(int(message_bytes)))
    t0 = time.perf_counter()
    for b in range(batches):
        done = []
        for m in range(micros):
            ref = ray.put(payload)
            for a in actors + actors[::-1]:
                ref = a.hop.remote(ref, b, m)
            done.append(ref)
        ray.get(done)
    per_batch = (time.perf_counter() - t0) / batches
    for a in actors:
        ray.kill(a)
    if started:
        ray.shutdown()
    return per_batch


def bench_events(a: Any) -> int:
    """``spikegrad bench events``: the event-driven simulator's synaptic events per second, and how
    many times faster the equivalent ANN does the same training step (forward, backward,
    increments, float64 NumPy, the same batches) — the paper's reason to train through the ANN.

    With ``--checkpoint`` on the run's own test images (sparse errors, as late in training);
    otherwise on synthetic MNIST-like batches and initial weights of ``--topology``.
    """

    if a.checkpoint:

        driver = load_run(a.checkpoint, backend="numpy")
        topo, step, trained = driver.topo, driver.cfg.step, driver.host_params()
        driver.close()
        data = load_dataset(driver.cfg.dataset, a.data_dir or driver.cfg.data_dir, progress=False)
        check_fit(topo, data)
        if a.samples > len(data.x_test):
            raise SystemExit(f"bench events: --samples {a.samples} is more than the {len(data.x_test)} test images")
        x, y = data.x_test[:a.samples].astype(np.float64), data.y_test[:a.samples]
        params = {l: (np.asarray(W, np.float64), np.asarray(b, np.float64)) for l, (W, b) in trained.items()}
        source = f"checkpoint {a.checkpoint}, first {a.samples} test images"
    else:
        topo = parse_topology(a.topology)
        step = TrainConfig(topology=topo.text).step
        # initial weights on a 2⁻¹² grid, so that the simulation's sums are exact as in training
        params = {l: (np.round(W * 4096) / 4096, b) for l, (W, b) in
                  init_params(topo, np.random.default_rng(0), step.theta_ff, dtype=np.float64).items()}
        x, y = synthetic_batch(topo.input_shape, a.samples, topo.num_classes)
        x = np.floor(x.astype(np.float64) * 256) / 256
        source = f"synthetic batches of {topo.text}, initial weights"
    t_ann = t_snn = 0.0
    events = spikes = waves = 0.0
    exact = True
    for i in range(0, len(x), a.batch_size):
        xc, yc = x[i:i + a.batch_size], y[i:i + a.batch_size]
        t0 = time.perf_counter()
        fp = forward(np, topo, params, xc, step)
        bp = backward(np, topo, params, fp, yc, step)
        t_ann += time.perf_counter() - t0
        t0 = time.perf_counter()
        ev = simulate(topo, params, xc, yc, step, order=a.order, seed=a.seed + i)
        t_snn += time.perf_counter() - t0
        events += sum(ev.counts.events_forward) + sum(ev.counts.events_backward)
        spikes += sum(ev.counts.spikes) + sum(ev.counts.error_spikes)
        waves += sum(ev.counts.waves)
        exact &= all(np.array_equal(ev.sums[l][k], bp.sums[l][k]) for l in bp.sums for k in (0, 1))
    res = dict(source=source, topology=topo.text, samples=int(len(x)), batch_size=a.batch_size, order=a.order,
               synaptic_events=events, spikes_and_error_spikes=spikes, waves=waves,
               seconds_snn=t_snn, seconds_ann=t_ann, synaptic_events_per_second=events / t_snn,
               ann_speedup=t_snn / t_ann, increments_exact=bool(exact), machine=machine_line(),
               date=time.strftime("%Y-%m-%d"))
    print(f"{source}: {res['samples']} samples in batches of {a.batch_size}, order {a.order}", file=sys.stderr)
    print(f"event simulation: {events:.4g} synaptic events, {spikes:.4g} spikes and error spikes in {waves:.0f} waves, "
          f"{t_snn:.2f} s = {events / t_snn / 1e6:.2f} M synaptic events/s", file=sys.stderr)
    print(f"equivalent ANN: the same steps in {t_ann:.3f} s, {t_snn / t_ann:.0f}x faster; "
          f"increments {'equal' if exact else 'NOT equal'} (float64)", file=sys.stderr)
    if a.json:
        print(json.dumps(res), flush=True)
    return 0 if exact else 1
