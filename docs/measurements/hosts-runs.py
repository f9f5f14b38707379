"""Runs across emulated hosts (spikegrad hosts): bit-identity, wire vs counted bytes, cluster faults,
and spikegrad plan's predictions against measured runs. Needs root; run from the repository root:

    python docs/measurements/hosts-runs.py PART OUT_DIR [--mnist DIR]

PART: identity, faults, scaling, validate, calls, validate3 or validate4.

Each part brings its hosts up (names hm1..hm3) and takes them down however it ends; it prints
Markdown and writes OUT_DIR/<part>.json. The weights of every chip run are compared with
``--engine local`` runs of the same flags, array by array, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from launch.run.driver import machine_busy_seconds  # noqa: E402
from launch.run.rundir import RunDir  # noqa: E402
from launch.tools import hosts as H  # noqa: E402
from launch.tools.plan import plan  # noqa: E402
from launch.tools.report import Run  # noqa: E402

LAYOUTS = {"chain": [], "split": ["--chip-neurons", "600", "--chip-synapses", "20000"],
           "replicas": ["--replicas", "2"]}


def weights(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k.startswith(("W", "b"))}


def same(a: Path, b: Path) -> bool:
    x, y = weights(a), weights(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def local(out: Path, flags: list[str]) -> Path:
    if not (out / "checkpoint.npz").exists():
        r = subprocess.run([sys.executable, "-m", "launch.cli", "train", "--engine", "local", "--quiet", "--out",
                            str(out), *flags], cwd=REPO, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, r.stderr[-2000:]
    return out


def chips(h: H.Hosts, out: Path, flags: list[str], log: Path | None = None, env: dict | None = None):
    argv = [sys.executable, "-m", "launch.cli", "train", "--engine", "chips", "--placement", "spread",
            "--address", h.address, "--quiet", "--out", str(out), *flags]
    e = h.env({**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    if log is not None:
        with open(log, "w") as f:
            return subprocess.Popen(h.command(0, argv), env=e, cwd=REPO, stdout=subprocess.DEVNULL, stderr=f)
    t0 = time.monotonic()
    r = subprocess.run(h.command(0, argv), env=e, cwd=REPO, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return time.monotonic() - t0


def table(run: Path, name: str) -> list[dict]:
    return pq.read_table(run / f"{name}.parquet").to_pylist()


def bring_up(n: int, mbit: float, name: str) -> H.Hosts:
    try:
        H.down(name)
    except Exception:
        pass
    return H.up(n, mbit, name=name, cpus=1.0, object_store_mb=256, log=lambda s: print(f"  {s}", file=sys.stderr))


# -- identity and the wire ------------------------------------------------------------------------

def identity(out: Path, mnist: str | None) -> dict:
    cases = [("digits", ["--epochs", "1"])]
    if mnist:
        cases.append(("mnist", ["--dataset", "mnist", "--data-dir", mnist, "--epochs", "1", "--limit-train", "4096",
                                "--limit-test", "1000", "--weight-frac-bits", "12"]))
    h = bring_up(3, 1000.0, "hm3")
    rows = []
    try:
        for data, base in cases:
            ref = local(out / f"{data}-local", base)
            for name, flags in LAYOUTS.items():
                run = out / f"{data}-{name}"
                if data == "mnist" and name == "split":
                    flags = ["--chip-neurons", "2000", "--chip-synapses", "100000"]
                before = h.counters()
                wall = chips(h, run, base + flags)
                after = h.counters()
                sent = {i: after[i]["sent"] - before[i]["sent"] for i in after}
                received = {i: after[i]["received"] - before[i]["received"] for i in after}
                links = table(run, "traffic")
                counted = sum(r["bytes"] for r in links if r["cross_node"])
                spikes = sum(r["bytes"] for r in links if r["cross_node"] and r["kind"] == "spikes")
                cfg_nodes = sorted({n for r in table(run, "chips") for n in r["node"].split(",")})
                metrics = table(run, "metrics")[-1]
                p = plan(Run(RunDir(run)), nodes=3, link_gbps=1.0, shared_cores=os.cpu_count())
                images = metrics["images"]
                predicted_wire = sum(p["node_bits_out"].values()) / 8 * images
                rows.append(dict(data=data, layout=name, identical=same(run, ref), nodes=len(cfg_nodes),
                                 wall_s=wall, calls=metrics.get("calls"), wire_sent=sum(sent.values()),
                                 wire_received=sum(received.values()), sent_by_host=sent, counted_cross=counted,
                                 counted_spikes=spikes, ratio=sum(sent.values()) / counted if counted else None,
                                 predicted_wire=predicted_wire,
                                 chips_nodes=[(r["chip"], r["node"]) for r in table(run, "chips")],
                                 predicted_nodes=p["copies"]))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        H.down("hm3")
    return {"rows": rows}


# -- faults ---------------------------------------------------------------------------------------

FAULT_FLAGS = ["--epochs", "4", "--micro-batch", "8", "--checkpoint-every", "10"]


def wait_text(proc, log: Path, text: str, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if text in log.read_text(errors="replace"):
            return time.monotonic()
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{text!r} not seen: {log.read_text(errors='replace')[-1500:]}")


def faults(out: Path) -> dict:
    ref = local(out / "local", FAULT_FLAGS)
    h = bring_up(3, 1000.0, "hm3")
    rows = []

    def lines(log: Path) -> list[str]:
        keep = ("spikegrad: chip", "spikegrad: chips restarted", "spikegrad: error", "spikegrad: a chip")
        return [ln.strip()[:300] for ln in log.read_text(errors="replace").splitlines() if ln.startswith(keep)]

    def one(name: str, act, env: dict | None = None, resume: bool = False) -> None:
        h.restart()
        run, log = out / name, out / f"{name}.log"
        t_start = time.monotonic()
        proc = chips(h, run, FAULT_FLAGS, log=log, env=env)
        wait_text(proc, log, "epoch 1:", 300)
        t_fault = time.monotonic()
        act()
        try:
            rc = proc.wait(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "killed after 900 s"
        t_end = time.monotonic()
        said = lines(log)
        restarted = [ln for ln in said if "restarted" in ln]
        row = dict(fault=name, exit=rc, said=said, seconds_after_fault=t_end - t_fault, wall=t_end - t_start)
        if resume and rc != 0:
            h.restart()
            t0 = time.monotonic()
            r = subprocess.run(h.command(0, [sys.executable, "-m", "launch.cli", "train", "--resume", str(run),
                                             "--address", h.address, "--quiet"]),
                               env=h.env({**os.environ, "PYTHONPATH": str(REPO)}), cwd=REPO, capture_output=True,
                               text=True, timeout=900)
            row.update(resume_exit=r.returncode, resume_seconds=time.monotonic() - t0)
        row["identical"] = (run / "checkpoint.npz").exists() and same(run, ref) and (
            rc == 0 or row.get("resume_exit") == 0)
        row["restarts"] = len(restarted)
        rows.append(row)
        print(json.dumps(row), flush=True)

    try:
        t0 = time.monotonic()
        chips(h, out / "unfaulted", FAULT_FLAGS)
        rows.append(dict(fault="none", exit=0, said=[], wall=time.monotonic() - t0,
                         identical=same(out / "unfaulted", ref)))
        print(json.dumps(rows[-1]), flush=True)
        one("worker host lost", lambda: h.kill(2))
        one("two worker hosts lost", lambda: (h.kill(1), h.kill(2)))
        one("link cut 3 s", lambda: (h.cut(1), time.sleep(3), h.restore(1)))
        one("link cut 75 s (hang timeout 8 s)", lambda: (h.cut(1), time.sleep(75), h.restore(1)),
            env={"SPIKEGRAD_CHIP_TIMEOUT": "8"})
        one("link cut 75 s (hang timeout 60 s, the default)", lambda: (h.cut(1), time.sleep(75), h.restore(1)))

        def head_lost() -> None:
            driver = [p for p in h.pids(0) if "launch.cli" in Path(f"/proc/{p}/cmdline").read_bytes().decode(
                errors="replace")]
            h.kill(0, spare=driver)
        one("head host's Ray lost (driver spared)", head_lost, resume=True)
        # a stranger
        h.restart()
        t0 = time.monotonic()
        r = subprocess.run(h.command(2, [sys.executable, "-m", "ray.scripts.scripts", "start", "--address", h.address,
                                         "--node-ip-address", h.hosts[2].ip, "--num-cpus", "1"]),
                           env=dict(h.env(token=False), RAY_AUTH_TOKEN="0" * 64), capture_output=True, text=True,
                           timeout=300)
        said = [ln.strip()[:300] for ln in (r.stdout + r.stderr).splitlines() if "Error" in ln][-1:]
        rows.append(dict(fault="a node joins with a wrong token", exit=r.returncode, said=said,
                         seconds_after_fault=time.monotonic() - t0, identical=None))
        print(json.dumps(rows[-1]), flush=True)
    finally:
        H.down("hm3")
    return {"rows": rows}


# -- scaling: plan's predictions, then the runs -----------------------------------------------------

SCALE_FLAGS = ["--epochs", "2"]
# fresh workloads for the model as revised after `scaling`, predicted before they run
VALIDATE = {"groups": ["--epochs", "2", "--chips", "0-1,2-3"],
            "mnist-chain": ["--epochs", "2", "--limit-train", "1024", "--limit-test", "500"]}
# fresh workloads for v3 (the per-call parts, the overlap, /dev/shm), predicted before they run
VALIDATE3 = {"digits-mb8": ["--epochs", "2"],
             "mnist-split": ["--epochs", "2", "--limit-train", "1024", "--limit-test", "500",
                             "--chip-neurons", "2000", "--chip-synapses", "100000"]}
# and a second set after v3's first check: replicas (their increments through Ray) and chip groups
VALIDATE4 = {"mnist-replicas": ["--epochs", "2", "--limit-train", "1024", "--limit-test", "500", "--replicas", "2"],
             "groups-mb8": ["--epochs", "2", "--chips", "0-1,2-3"]}
TARGET_FLAGS = {"digits-mb8": ["--micro-batch", "8"], "groups-mb8": ["--micro-batch", "8"]}


def scaling(out: Path, workloads: dict[str, list[str]] | None = None, host_counts=(1, 2, 3),
            mnist: str | None = None) -> dict:
    """Calibration runs on one host (1,000 Mbit/s), plan's predictions for every (hosts, rate,
    workload) written first, then the runs."""
    workloads = workloads or {name: SCALE_FLAGS + flags for name, flags in LAYOUTS.items()}
    workloads = {k: (v + ["--dataset", "mnist", "--data-dir", mnist] if k.startswith("mnist") else v)
                 for k, v in workloads.items()}
    # flags only the targets take (TARGET_FLAGS: another micro-batch than the calibration's)
    target = {k: workloads[k] + TARGET_FLAGS.get(k, []) for k in workloads}
    target_micro = {k: int(f[f.index("--micro-batch") + 1]) if "--micro-batch" in f else None
                    for k, f in target.items()}
    rows = []
    cal = {}
    h = bring_up(1, 1000.0, "hm1")
    try:
        for name, flags in workloads.items():  # the runs the predictions come from: one host
            cal[name] = out / f"cal-{name}"
            chips(h, cal[name], flags)
    finally:
        H.down("hm1")
    predictions = {}
    for n in host_counts:
        for mbit in (10.0, 100.0, 1000.0):
            for name in workloads:
                p = plan(Run(RunDir(cal[name])), nodes=n, link_gbps=mbit / 1000, shared_cores=os.cpu_count(),
                         micro_batch=target_micro[name])
                predictions[(n, mbit, name)] = p
    (out / "predictions.json").write_text(json.dumps({f"{k[0]}-{k[1]:g}-{k[2]}": dict(
        predicted=v["predicted_images_per_second"], range=[v["predicted_range"]["low"], v["predicted_range"]["high"]],
        binding=v["binding"], bounds=v["bounds"], call_us=v["call_us"]) for k, v in predictions.items()},
        default=float))
    for n in host_counts:
        h = bring_up(n, 1000.0, f"hm{n}")
        try:
            for mbit in (10.0, 100.0, 1000.0):
                h.set_rate(mbit)
                for name in workloads:
                    run = out / f"{n}-{mbit:g}-{name}"
                    before = h.counters()
                    chips(h, run, target[name])
                    after = h.counters()
                    m = table(run, "metrics")[-1]
                    p = predictions[(n, mbit, name)]
                    rows.append(dict(hosts=n, mbit=mbit, layout=name, measured=m["images_per_second"],
                                     predicted=p["predicted_images_per_second"], binding=p["binding"],
                                     low=p["predicted_range"]["low"], high=p["predicted_range"]["high"],
                                     ratio=m["images_per_second"] / p["predicted_images_per_second"],
                                     bounds=p["bounds"], call_us=p["call_us"],
                                     wire_sent=sum(after[i]["sent"] - before[i]["sent"] for i in after),
                                     nodes=len({x for r in table(run, "chips") for x in r["node"].split(",")})))
                    print(json.dumps(rows[-1], default=float), flush=True)
        finally:
            H.down(f"hm{n}")
    return {"rows": rows}


# -- calls: what a call costs apart from the samples it carries (spikegrad plan's per-call parts) ----------

CALL_WORKLOADS = {"chain": ["--epochs", "2"], "split": ["--epochs", "2", *LAYOUTS["split"]]}


def idle_cores(n: int, seconds: float = 20.0) -> float:
    """The cores the machine keeps busy with n idle hosts up (Ray's daemons on each), over ``seconds``."""
    bring_up(n, 1000.0, f"hm{n}")
    try:
        time.sleep(5.0)  # the nodes' start-up settles
        b0, t0 = machine_busy_seconds(), time.monotonic()
        time.sleep(seconds)
        return (machine_busy_seconds() - b0) / (time.monotonic() - t0)
    finally:
        H.down(f"hm{n}")


def calls(out: Path) -> dict:
    """Each workload at micro-batches 32 and 8 on one host, in turn, twice: the chips' CPU and the
    machine's CPU outside the chips against the calls made; then the cores idle hosts keep busy
    (0 hosts, 1 and 3)."""
    rows = []
    h = bring_up(1, 1000.0, "hm1")
    try:
        for rep in range(2):
            for name, flags in CALL_WORKLOADS.items():
                for micro in (32, 8):
                    run = out / f"{name}-mb{micro}-{rep}"
                    chips(h, run, [*flags, "--micro-batch", str(micro)])
                    m = table(run, "metrics")[-1]
                    cpu = sum(r["cpu_seconds"] for r in table(run, "chips") if r["epoch"] == m["epoch"])
                    rows.append(dict(workload=name, micro_batch=micro, rep=rep, images=m["images"],
                                     seconds=m["seconds"], calls=m["calls"], chips_cpu=cpu,
                                     machine_cpu=m["machine_cpu_seconds"], rest=m["machine_cpu_seconds"] - cpu))
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        H.down("hm1")
    fits = []
    for name in CALL_WORKLOADS:
        for rep in range(2):
            a, b = (next(r for r in rows if r["workload"] == name and r["rep"] == rep and r["micro_batch"] == mb)
                    for mb in (32, 8))
            d = b["calls"] - a["calls"]
            fits.append(dict(workload=name, rep=rep, chip_call_us=(b["chips_cpu"] - a["chips_cpu"]) / d * 1e6,
                             rest_call_us=(b["rest"] - a["rest"]) / d * 1e6))
            print(json.dumps(fits[-1]), flush=True)
    b0, t0 = machine_busy_seconds(), time.monotonic()
    time.sleep(20.0)
    idle = {0: (machine_busy_seconds() - b0) / (time.monotonic() - t0)}
    for n in (1, 3):
        idle[n] = idle_cores(n)
    print(json.dumps(dict(idle_cores=idle)), flush=True)
    return {"rows": rows, "fits": fits, "idle_cores": idle}


if __name__ == "__main__":
    part, out = sys.argv[1], Path(sys.argv[2])
    mnist = sys.argv[sys.argv.index("--mnist") + 1] if "--mnist" in sys.argv else None
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault(H.STATE_ROOT_ENV, "/tmp/sgm")
    result = {"identity": lambda: identity(out, mnist), "faults": lambda: faults(out),
              "scaling": lambda: scaling(out),
              "validate": lambda: scaling(out, VALIDATE, (2, 3), mnist), "calls": lambda: calls(out),
              "validate3": lambda: scaling(out, VALIDATE3, (2, 3), mnist),
              "validate4": lambda: scaling(out, VALIDATE4, (2, 3), mnist)}[part]()
    (out / f"{part}.json").write_text(json.dumps(result, indent=1, default=float))
