"""Runs across emulated hosts (``spikegrad hosts``): three network namespaces, each with its own
address and one token-gated Ray node, joined through a bridge by links shaped with tc tbf. The
driver runs in host 0 (the head), the chips are spread over the three hosts, and every spike
crosses real TCP links; the kernel's interface counters say what the links carried.

Checked: chains, a split mapping and replicas end bit-identical to one process; the traffic tables'
cross-node bytes against the wire's; a worker host lost mid-run and a link cut for seconds both
end with the same weights; a node without the cluster's token is refused. The tool's own
bookkeeping (state file, down removes exactly what up made, hostile state files) is checked
without namespaces, so it runs everywhere.
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
import pytest

from cluster.errors import SpikeGradError
from launch.run.config import make_config
from launch.run.runs import train
from launch.tools import hosts as hosts_mod

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--epochs", "1", "--limit-train", "256", "--limit-test", "64", "--batch-size", "32", "--micro-batch", "8"]


def _local(out: Path, **kw) -> dict[str, np.ndarray]:
    train(make_config("digits", engine="local", out=str(out), **kw), progress=False, log=lambda s: None)
    return _weights(out)


def _weights(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "checkpoint.npz") as z:
        return {k: z[k] for k in z.files if k.startswith(("W", "b"))}


def _chips_run(h: hosts_mod.Hosts, out: Path, *flags: str, log: Path | None = None, timeout: float = 240.0):
    """``spikegrad train`` on the chips, its driver in host 0, the chips spread over the hosts; with
    ``log`` started in the background (its stderr to that file), else waited for."""
    argv = [sys.executable, "-m", "launch.cli", "train", "--engine", "chips", "--placement", "spread",
            "--address", h.address, "--quiet", "--out", str(out), *flags]
    env = h.env({**os.environ, "PYTHONPATH": str(REPO)})
    if log is not None:
        with open(log, "w") as f:
            return subprocess.Popen(h.command(0, argv), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=f)
    r = subprocess.run(h.command(0, argv), env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _equal(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_chain_split_and_replicas_across_three_hosts_equal_one_process(emulated_hosts, tmp_path):
    h = emulated_hosts
    ref = _local(tmp_path / "local", epochs=1, limit_train=256, limit_test=64, batch_size=32)
    report = {}
    for name, flags in [("chain", []), ("split", ["--chip-neurons", "600", "--chip-synapses", "20000"]),
                        ("replicas", ["--replicas", "2"])]:
        before = h.counters()
        _chips_run(h, tmp_path / name, *SMALL, *flags)
        after = h.counters()
        assert _equal(_weights(tmp_path / name), ref), name
        chips = pq.read_table(tmp_path / name / "chips.parquet").to_pylist()
        nodes = {n for r in chips for n in r["node"].split(",")}
        assert len(nodes) == 3, (name, chips)  # the chips really are on three hosts
        links = pq.read_table(tmp_path / name / "traffic.parquet").to_pylist()
        counted = sum(r["bytes"] for r in links if r["cross_node"])
        wire = sum(after[i]["sent"] - before[i]["sent"] for i in after)
        # every counted byte that crosses hosts is on a link; the rest is Ray's control traffic, framing,
        # the driver's messages and Ray's inline route through the driver's host (docs/measurements)
        assert counted > 0 and wire >= counted, (name, counted, wire)
        report[name] = wire / counted
    print(json.dumps({"wire_over_counted": report}))


def test_a_node_without_the_token_is_refused(emulated_hosts):
    h = emulated_hosts
    start = [sys.executable, "-m", "ray.scripts.scripts", "start", "--address", h.address, "--node-ip-address",
             h.hosts[2].ip, "--num-cpus", "1", "--disable-usage-stats"]
    procs = len(h.pids(2))
    no_token = h.env(token=False)
    wrong = dict(no_token, RAY_AUTH_TOKEN="0" * 64)
    for env in (no_token, wrong):
        r = subprocess.run(h.command(2, start), env=env, capture_output=True, text=True, timeout=120)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "token" in out.lower(), out[-2000:]
    assert len(h.pids(2)) == procs  # nothing of the strangers stayed


def _wait_for(proc: subprocess.Popen, log: Path, text: str, timeout: float) -> None:
    """Wait until the run's log shows ``text`` (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"{text!r} not seen within {timeout:g} s: {log.read_text(errors='replace')[-2000:]}")


def _finish(proc: subprocess.Popen, log: Path, timeout: float = 300.0) -> str:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the run did not end in time")
    seen = log.read_text(errors="replace")
    assert proc.returncode == 0, seen[-3000:]
    return seen


FAULT_RUN = ["--epochs", "3", "--micro-batch", "8"]


@pytest.fixture(scope="module")
def fault_reference(tmp_path_factory):
    """The weights an unfaulted run of FAULT_RUN ends with (one process: the chips equal it)."""
    return _local(tmp_path_factory.mktemp("faults") / "local", epochs=3, micro_batch=8)


def test_a_worker_host_lost_mid_run_ends_with_the_same_weights(emulated_hosts, fault_reference, tmp_path):
    h = emulated_hosts
    log = tmp_path / "log"
    proc = _chips_run(h, tmp_path / "run", *FAULT_RUN, "--checkpoint-every", "10", log=log)
    try:
        _wait_for(proc, log, "epoch 1:", 180)
        killed = h.kill(2)  # the host's Ray node and the chips on it, as if the machine were gone
        assert killed
        seen = _finish(proc, log)
    finally:
        if proc.poll() is None:
            proc.kill()
        h.kill(2)
        h.start_node(2)
    assert "chips restarted (1 of" in seen, seen[-3000:]
    assert _equal(_weights(tmp_path / "run"), fault_reference)


def test_a_link_cut_for_seconds_ends_with_the_same_weights(emulated_hosts, fault_reference, tmp_path):
    h = emulated_hosts
    log = tmp_path / "log"
    proc = _chips_run(h, tmp_path / "run", *FAULT_RUN, log=log)
    try:
        _wait_for(proc, log, "epoch 1:", 180)
        h.cut(1)
        time.sleep(3.0)
        h.restore(1)
        _finish(proc, log)
    finally:
        h.restore(1)
        if proc.poll() is None:
            proc.kill()
    assert _equal(_weights(tmp_path / "run"), fault_reference)


# -- the tool's bookkeeping, without namespaces -------------------------------------------------

def test_hostile_state_files_and_names_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(hosts_mod.STATE_ROOT_ENV, str(tmp_path))
    for bad in ("", "Sg", "toolongname", "a-b", "../x"):
        with pytest.raises(SpikeGradError, match="name expected"):
            hosts_mod.load(bad)
    with pytest.raises(SpikeGradError, match="are not up"):
        hosts_mod.load("sg")
    host = hosts_mod.Host(0, "sg-h0", "sg-v0", "10.213.0.1", str(tmp_path / "sg/h0"))
    good = hosts_mod.Hosts(name="sg", hosts=[host],
                           bridge="sg-br", link_mbit=100.0, cpus=1.0, object_store_mb=256, port=6379,
                           dir=str(tmp_path / "sg"))
    (tmp_path / "sg").mkdir()
    hosts_mod._save(good)
    assert hosts_mod.load("sg") == good
    state = json.loads((tmp_path / "sg" / "state.json").read_text())
    # a state file that names something this tool would not have made is refused: down never removes it
    for field, value in [("bridge", "eth0"), ("hosts", [dict(state["hosts"][0], veth="eth0")]),
                         ("hosts", [dict(state["hosts"][0], ns="other")]), ("version", 99),
                         ("hosts", [dict(state["hosts"][0], temp="/etc")]), ("hosts", []), ("cpus", "1"),
                         ("port", True), ("link_mbit", -5), ("extra", 1)]:
        (tmp_path / "sg" / "state.json").write_text(json.dumps({**state, field: value}))
        with pytest.raises(SpikeGradError, match="state file"):
            hosts_mod.load("sg")
    (tmp_path / "sg" / "state.json").write_bytes(b"\xff\x00")
    with pytest.raises(SpikeGradError, match="not a hosts state file"):
        hosts_mod.load("sg")


def test_hosts_commands_refuse_in_one_line(tmp_path, monkeypatch, capsys):
    from launch.cli import main

    monkeypatch.setenv(hosts_mod.STATE_ROOT_ENV, str(tmp_path))
    for args, message in [(["hosts", "down", "--name", "none"], "hosts none are not up"),
                          (["hosts", "exec", "--name", "none", "--", "true"], "hosts none are not up"),
                          (["hosts", "exec", "--"], "needs a command"),
                          (["hosts", "up", "--hosts", "0"], "expected an integer >= 1"),
                          (["hosts", "up", "--link-mbit", "-1"], "expected a finite number > 0"),
                          (["hosts", "status", "--name", "A"], "name expected")]:
        capsys.readouterr()
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0], (args, err)


def test_up_without_root_says_why_in_one_line(tmp_path, monkeypatch, capsys):
    """Where namespaces cannot be made, `hosts up` refuses with the reason the tests skip with."""
    from launch.cli import main

    monkeypatch.setenv(hosts_mod.STATE_ROOT_ENV, str(tmp_path))
    monkeypatch.setattr(hosts_mod.os, "geteuid", lambda: 1000)
    assert hosts_mod.can_make_hosts() == "emulated hosts need root (network namespaces, veth, tc); running as uid 1000"
    assert main(["hosts", "up", "--hosts", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["spikegrad: error: emulated hosts need root (network namespaces, veth, tc); running as uid 1000"]
    assert not any(tmp_path.iterdir())  # nothing made
