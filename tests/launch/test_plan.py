"""spikegrad plan: the scaling model against a hand-computed case, and its refusals."""

import json

import pytest

from cluster.errors import SpikeGradError
from launch.cli import main
from launch.run.config import make_config
from launch.run.rundir import RunDir
from launch.tools.plan import CALL_US, LATENCY_US, RANGES, place, plan
from launch.tools.report import Run


def chip_run(path, micro=10, cpu=(0.1, 0.3, 0.2, 0.2), replicas=1):
    """A len(cpu)-chip run of 1,000 images in 2 s: chip c used cpu[c] CPU seconds; the chain's links carry
    1,000 bytes per sample forward and 2,000 backward, one message per micro-batch."""
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config(make_config("digits", replicas=replicas, batch_size=40))
    run.write_table("metrics", [dict(epoch=1, images=1000, seconds=2.0, train_loss=1.0, train_accuracy=50.0,
                                     test_accuracy=50.0)])
    run.write_table("layers", [dict(epoch=1, layer=l, kind=kind, spikes=1.0, error_spikes=1.0,
                                    error_spikes_delivered=1.0, input_macs=1.0 if l == 0 else 0.0, acc_forward=1.0,
                                    acc_backward=1.0, acc_update=1.0, macs=1.0)
                               for l, kind in enumerate(("conv", "pool", "dense", "dense"))])  # digits' 4 layers
    run.write_table("chips", [dict(epoch=1, chip=c, layers=str(c), node="n", micro_batch=micro, cpu_seconds=s,
                                   busy_seconds=s) for c, s in enumerate(cpu)])
    links = []
    for c in range(len(cpu) - 1):
        links.append(dict(epoch=1, src=c, dst=c + 1, kind="spikes", messages=100, bytes=1e6, spikes=1.0))
        links.append(dict(epoch=1, src=c + 1, dst=c, kind="spikes", messages=100, bytes=2e6, spikes=1.0))
    run.write_table("traffic", links)
    return Run(run)


def test_the_model_by_hand(tmp_path):
    run = chip_run(tmp_path / "r")
    # 2 nodes: chips 0, 1 on node 0, chips 2, 3 on node 1; one core per chip (+ the driver on node 0)
    p = plan(run, nodes=2, link_gbps=1.0, latency_us=100.0, micro_batch=10, call_us=0.0)
    t = [1e-4, 3e-4, 2e-4, 2e-4]  # CPU seconds per sample
    assert [c["node"] for c in p["chips"]] == [0, 0, 1, 1]
    assert p["node_seconds_per_sample"] == pytest.approx({0: (t[0] + t[1]) / 2, 1: (t[2] + t[3]) / 2})
    assert p["bounds"]["compute"] == pytest.approx(1 / 2e-4)
    # only the links between chips 1 and 2 cross: node 0 sends 8,000 bits per sample, receives 16,000
    assert p["node_bits_out"][0] == 8000 and p["node_bits_in"][0] == 16000
    assert p["bounds"]["network"] == pytest.approx(1e9 / 16000)
    # 2 crossing messages per micro-batch of the run (100 micro-batches of 10); the path: every chip in turn
    assert p["crossing_messages_per_micro_batch"] == 2
    assert p["bounds"]["latency"] == pytest.approx(4 * 10 / (sum(t) * 10 + 2 * 100e-6))
    assert p["binding"] == "latency" and p["predicted_images_per_second"] == pytest.approx(40 / 0.0082)
    assert plan(run, nodes=2, link_gbps=1.0, latency_us=0.0, micro_batch=10, call_us=0.0)["binding"] == "compute"
    # inputs given are used as given: the range collapses to the prediction
    assert p["predicted_range"]["low"] == p["predicted_range"]["high"] == p["predicted_images_per_second"]
    # Ray's call cost: 2 calls per micro-batch per chip on its node, and all 4 chips' calls again on the
    # driver's node, whose 2 cores (one per chip) the driver shares
    q = plan(run, nodes=2, link_gbps=1.0, latency_us=100.0, micro_batch=10, call_us=50.0)
    call = 2 * 50e-6 / 10
    assert q["node_seconds_per_sample"][0] == pytest.approx((t[0] + t[1] + 2 * call + 4 * call) / 2)
    # everything on one node of 2 cores: the chips and the driver share them
    one = plan(run, nodes=1, link_gbps=1.0, latency_us=0.0, cores=2, micro_batch=10, call_us=0.0)
    assert one["node_bits_out"][0] == 0 and one["bounds"]["compute"] == pytest.approx(2 / sum(t))


def test_defaults_are_the_measured_call_cost_with_a_range(tmp_path):
    run = chip_run(tmp_path / "r")
    p = plan(run, nodes=2, link_gbps=1.0, micro_batch=10)
    assert (p["call_us"], p["latency_us"]) == (CALL_US, LATENCY_US) and CALL_US > 0
    same = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=CALL_US, latency_us=LATENCY_US)
    assert p["predicted_images_per_second"] == same["predicted_images_per_second"]
    # the range: both uncertain inputs at their low ends (fast) and at their high ends (slow)
    lo_call, hi_call, _ = RANGES["call_us"]
    lo_lat, hi_lat, _ = RANGES["latency_us"]
    fast = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=lo_call, latency_us=lo_lat)
    slow = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=hi_call, latency_us=hi_lat)
    r = p["predicted_range"]
    assert r["high"] == fast["predicted_images_per_second"] and r["low"] == slow["predicted_images_per_second"]
    assert r["low"] < p["predicted_images_per_second"] < r["high"]
    # with no call cost the chips' work alone binds: the optimistic case is higher still
    assert plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=0.0)["predicted_images_per_second"] > r["high"]


def test_every_node_asked_for_holds_a_chip(tmp_path):
    assert place([0, 1, 2, 3, 4, 5], 4) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 3}
    assert place([0, 1, 2, 3, 4, 5, 6], 3) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}
    assert place(list(range(9)), 9) == {c: c for c in range(9)}
    assert place([0, 1, 2], 5) == {0: 0, 1: 1, 2: 2}  # fewer chips than nodes: one each, the rest idle
    run = chip_run(tmp_path / "six", cpu=(0.1, 0.3, 0.2, 0.2, 0.1, 0.1))
    p = plan(run, nodes=4, link_gbps=1.0, micro_batch=10)
    assert [c["node"] for c in p["chips"]] == [0, 0, 1, 1, 2, 3] and p["nodes_used"] == 4
    assert p["cores_per_node"] == 2  # one per chip of the fullest node
    # the chain's links cross between nodes 0-1, 1-2 and 2-3: 3 forward and 3 backward, 100 messages each
    assert sum(link["crosses"] for link in p["links"]) == 6
    assert plan(run, nodes=8, link_gbps=1.0, micro_batch=10)["nodes_used"] == 6


def test_plan_prints_and_refuses_in_one_line(tmp_path, capsys):
    chip_run(tmp_path / "r")
    assert main(["plan", str(tmp_path / "r"), "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "predicted:" in out and "bounds (samples/s)" in out and "assumptions:" in out
    assert out.startswith("plan: the EMULATOR") and "spikegrad forecast" in out and "checked against:" in out
    assert f"{CALL_US:g} µs per call" in out and "range " in out and "plan-mnist-2026-12-01.md" in out
    assert "plan-2026-12-07.md" in out
    assert main(["plan", str(tmp_path / "r"), "--nodes", "2", "--call-us", "0", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert p["call_us"] == 0 and p["predicted_range"]["call_us"] == [0, 0] and "emulator" in p["what"]
    # strict JSON: on one node no link crosses, the network bound is infinite, printed as null
    assert main(["plan", str(tmp_path / "r"), "--nodes", "1", "--json"]) == 0
    p = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert p["bounds"]["network"] is None and p["nodes_used"] == 1
    chip_run(tmp_path / "rep", replicas=2)
    local = tmp_path / "local"
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                 "--quiet", "--out", str(local)]) == 0
    chip_run(tmp_path / "neg", cpu=(0.1, -5.0, 0.2, 0.2))
    chip_run(tmp_path / "mb", micro="many")
    for args, message in [([str(local), "--nodes", "2"], "not a chip run"),
                          ([str(tmp_path / "rep"), "--nodes", "2"], "replicas are not modelled"),
                          ([str(tmp_path / "neg"), "--nodes", "2"], "chip 1 a cpu_seconds that is not a number >= 0"),
                          ([str(tmp_path / "mb"), "--nodes", "2"], "micro_batch expected a number > 0, got 'many'"),
                          ([str(tmp_path / "r"), "--nodes", "0"], "expected an integer >= 1"),
                          ([str(tmp_path / "r"), "--nodes", "2", "--link-gbps", "0"], "expected a finite number > 0"),
                          ([str(tmp_path / "r"), "--nodes", "2", "--epoch", "3"], "epoch 3 expected one of"),
                          ([str(tmp_path / "nope"), "--nodes", "2"], "config.json is missing")]:
        capsys.readouterr()
        assert main(["plan", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0], (args, err)
    with pytest.raises(SpikeGradError, match="latency-us expected a finite number >= 0"):
        plan(Run(RunDir(tmp_path / "r")), 2, 1.0, float("nan"))
