"""spikegrad plan: the scaling model against a hand-computed case, and its refusals."""

import json

import pytest

from cluster.errors import SpikeGradError
from launch.cli import main
from launch.run.config import make_config
from launch.run.rundir import RunDir
from launch.tools import plan as plan_module
from launch.tools.plan import CALL_US, CONTROL_BYTES, LATENCY_US, RANGES, REMOTE_CALL, WIRE_FACTOR, place, plan
from launch.tools.report import Run


def chip_run(path, micro=10, cpu=(0.1, 0.3, 0.2, 0.2), replicas=1, messages=100, metrics=None, nodes=None,
             increments=(), placement="pack", transport="ray"):
    """A len(cpu)-chip run of 1,000 images in 2 s: chip c used cpu[c] CPU seconds; the chain's links carry
    1,000 bytes per sample forward and 2,000 backward in ``messages`` messages each (100: one per
    micro-batch of 10, 10 or 20 KB each); ``increments``: (chip, bytes, messages) rows."""
    run = RunDir(path)
    run.path.mkdir(parents=True)
    run.write_config(make_config("digits", replicas=replicas, batch_size=40, placement=placement))
    run.write_table("metrics", [dict(epoch=1, images=1000, seconds=2.0, train_loss=1.0, train_accuracy=50.0,
                                     test_accuracy=50.0, **(metrics or {}))])
    run.write_table("layers", [dict(epoch=1, layer=l, kind=kind, spikes=1.0, error_spikes=1.0,
                                    error_spikes_delivered=1.0, input_macs=1.0 if l == 0 else 0.0, acc_forward=1.0,
                                    acc_backward=1.0, acc_update=1.0, macs=1.0)
                               for l, kind in enumerate(("conv", "pool", "dense", "dense"))])  # digits' 4 layers
    run.write_table("chips", [dict(epoch=1, chip=c, layers=str(c), node=(nodes or ["n"] * len(cpu))[c],
                                   micro_batch=micro, cpu_seconds=s, busy_seconds=s, transport=transport)
                               for c, s in enumerate(cpu)])
    links = []
    for c in range(len(cpu) - 1):
        links.append(dict(epoch=1, src=c, dst=c + 1, kind="spikes", messages=messages, bytes=1e6, spikes=1.0))
        links.append(dict(epoch=1, src=c + 1, dst=c, kind="spikes", messages=messages, bytes=2e6, spikes=1.0))
    for c, nbytes, n in increments:
        links.append(dict(epoch=1, src=c, dst=c, kind="increments", messages=n, bytes=nbytes, spikes=0.0))
    run.write_table("traffic", links)
    return Run(run)


T = [1e-4, 3e-4, 2e-4, 2e-4]  # chip_run's CPU seconds per sample
CONTROL = 8 * CONTROL_BYTES * 0.2  # bits per sample each way for a chip off node 0 (0.2 calls per sample)


@pytest.fixture
def no_fixed_costs(monkeypatch):
    """The model's structure alone: no per-call part of the chips' work, no daemons, no object-store cost."""
    for name in ("CHIP_CALL_US", "NODE_CORES", "OBJECT_US"):
        monkeypatch.setattr(plan_module, name, 0.0)


def test_the_model_by_hand(tmp_path, no_fixed_costs):
    # 5 messages a link: 200-400 KB each, above Ray's inline limit, so they go straight between nodes
    run = chip_run(tmp_path / "r", messages=5)
    # 2 nodes in blocks: chips 0, 1 on node 0, chips 2, 3 on node 1; one core per chip (+ the driver on node 0)
    p = plan(run, nodes=2, link_gbps=1.0, latency_us=100.0, micro_batch=10, call_us=0.0, placement="blocks")
    assert [c["node"] for c in p["chips"]] == [0, 0, 1, 1]
    assert p["node_seconds_per_sample"] == pytest.approx({0: (T[0] + T[1]) / 2, 1: (T[2] + T[3]) / 2})
    assert p["bounds"]["compute"] == pytest.approx(1 / 2e-4)
    # only the links between chips 1 and 2 cross: node 0 sends 8,000 bits per sample, receives 16,000, times the
    # wire's framing, and each call to chips 2 and 3 carries CONTROL_BYTES each way
    assert p["node_bits_out"][0] == pytest.approx(8000 * WIRE_FACTOR + 2 * CONTROL)
    assert p["node_bits_in"][0] == pytest.approx(16000 * WIRE_FACTOR + 2 * CONTROL)
    net = (16000 * WIRE_FACTOR + 2 * CONTROL) / 1e9
    assert p["bounds"]["network"] == pytest.approx(1 / net)
    # 10 crossing messages in the epoch's 100 micro-batches of 10; the path: every chip in turn, the latency
    # of each crossing, and the 24,000 bits per sample that cross on it, one after the other
    assert p["crossing_messages_per_micro_batch"] == pytest.approx(0.1)
    trip = sum(T) * 10 + 0.1 * 100e-6 + 24000 * WIRE_FACTOR * 10 / 1e9
    assert p["in_flight"] == 4  # batches of 40: 4 micro-batches of 10, all in flight
    assert p["bounds"]["latency"] == pytest.approx(4 * 10 / trip)
    # compute and transfers overlap but for one micro-batch's share of the smaller
    both = 1 / (max(2e-4, net) + min(2e-4, net) / 4)
    assert p["predicted_images_per_second"] == pytest.approx(min(both, 4 * 10 / trip))
    assert p["binding"] == "latency"
    assert plan(run, nodes=2, link_gbps=1.0, latency_us=0.0, micro_batch=10, call_us=0.0, cores=1,
                placement="blocks")["binding"] == "compute"  # one core a node: 4e-4 s per sample on each
    # inputs given are used as given: the fast end of the range is the bounds' smallest; the slow end adds the
    # network's time to the compute's (no overlap)
    r = p["predicted_range"]
    assert r["high"] == pytest.approx(min(p["bounds"].values()))
    assert r["low"] == pytest.approx(min(1 / (2e-4 + net), p["bounds"]["latency"]))
    # Ray's call cost: half on the chip's node, half on the driver's, which makes every call; 2 calls per
    # micro-batch per chip; a call to chips 2 and 3 (off node 0) costs REMOTE_CALL times more; node 0's 2
    # cores (one per chip) are shared with the driver
    q = plan(run, nodes=2, link_gbps=1.0, latency_us=100.0, micro_batch=10, call_us=50.0, placement="blocks")
    call = 2 * 50e-6 / 10
    every = (2 + 2 * REMOTE_CALL) * call
    assert q["node_seconds_per_sample"][0] == pytest.approx((T[0] + T[1] + 2 * call / 2 + every / 2) / 2)
    assert q["node_seconds_per_sample"][1] == pytest.approx((T[2] + T[3] + 2 * REMOTE_CALL * call / 2) / 2)
    # everything on one node of 2 cores: the chips and the driver share them
    one = plan(run, nodes=1, link_gbps=1.0, latency_us=0.0, cores=2, micro_batch=10, call_us=0.0)
    assert one["node_bits_out"][0] == 0 and one["bounds"]["compute"] == pytest.approx(2 / sum(T))
    # a batch of one micro-batch: the chain works and sends in turn, compute and network add up
    whole = plan(run, nodes=2, link_gbps=1.0, latency_us=0.0, micro_batch=40, call_us=0.0, placement="blocks")
    b = whole["bounds"]
    assert whole["in_flight"] == 1
    assert whole["predicted_images_per_second"] == pytest.approx(
        min(1 / (1 / b["compute"] + 1 / b["network"]), b["latency"]))


def test_the_fixed_costs_follow_the_calls(tmp_path):
    """A run's CPU is split into the chips' CHIP_CALL_US per call, Ray's RAY_CALL_US per call, NODE_CORES of
    daemons and a part per sample: at the run's own micro-batch on its own node the model gives back the
    run's rate; at half the micro-batch only the per-call parts double."""
    run = chip_run(tmp_path / "r", cpu=(0.5, 0.7, 0.6, 0.6), metrics=dict(calls=200, machine_cpu_seconds=3.6))
    p = plan(run, nodes=1, link_gbps=1.0, micro_batch=10, shared_cores=2)
    assert p["predicted_images_per_second"] == pytest.approx(1000 / 2.0)  # 1,000 images in 2 s
    assert p["call_us"] == plan_module.RAY_CALL_US and p["chip_call_us"] == plan_module.CHIP_CALL_US
    rest = 3.6 - 2.4 - 200 * plan_module.RAY_CALL_US * 1e-6 - plan_module.NODE_CORES * 2.0
    assert rest > 0
    assert p["ray_per_sample_us"] == pytest.approx(rest / 1000 * 1e6)
    half = plan(run, nodes=1, link_gbps=1.0, micro_batch=5, shared_cores=2)
    assert half["calls_per_sample"] == pytest.approx(0.4) and half["busy_cores"] == 2
    chip = plan_module.CHIP_CALL_US * 1e-6
    per_chip = [c - chip * 0.05 * 1000 for c in (0.5, 0.7, 0.6, 0.6)]  # 0.05 calls per sample each in the run
    assert [c["seconds_per_sample"] for c in half["chips"]] == pytest.approx(
        [(w + chip * 0.1 * 1000) / 1000 for w in per_chip])
    cpu = sum(per_chip) / 1000 + chip * 0.4 + plan_module.RAY_CALL_US * 1e-6 * 0.4 + rest / 1000
    assert half["bounds"]["compute"] == pytest.approx((2 - plan_module.NODE_CORES) / cpu)


def test_two_runs_at_different_micro_batches_give_the_per_call_parts(tmp_path):
    """--calls-from: the same mapping at micro-batch 5 made 200 more calls over the same 1,000 images; the
    chips spent 0.2 s more (1,000 µs a call), the machine outside them 0.6 s more (3,000 µs a call)."""
    g = plan_module.NODE_CORES * 2.0
    a = chip_run(tmp_path / "a", cpu=(0.5, 0.7, 0.6, 0.6), metrics=dict(calls=200, machine_cpu_seconds=3.3 + g))
    b = chip_run(tmp_path / "b", micro=5, cpu=(0.55, 0.75, 0.65, 0.65),
                 metrics=dict(calls=400, machine_cpu_seconds=4.1 + g))
    p = plan(a, nodes=1, link_gbps=1.0, shared_cores=2, micro_batch=5, calls_from=b)
    assert p["chip_call_us"] == pytest.approx(1000.0) and p["call_us"] == pytest.approx(3000.0)
    assert any("--calls-from" in x for x in p["assumptions"])
    assert p["ray_per_sample_us"] == pytest.approx(300.0)  # 0.3 s over 1,000 images, the same in both runs
    # refused, each in one line: the same micro-batch, another network, a difference smaller than the spread
    same = chip_run(tmp_path / "same", metrics=dict(calls=200, machine_cpu_seconds=3.4))
    other = chip_run(tmp_path / "other", cpu=(0.1, 0.2), metrics=dict(calls=400, machine_cpu_seconds=3.0))
    noisy = chip_run(tmp_path / "noisy", micro=5, cpu=(0.4, 0.6, 0.5, 0.5),
                     metrics=dict(calls=400, machine_cpu_seconds=4.0))
    untimed = chip_run(tmp_path / "untimed", micro=5)
    for second, message in [(same, "expected a run at another micro-batch"), (other, "same network on the same chips"),
                            (noisy, "negative cost per call"), (untimed, "has no calls, busy recorded")]:
        with pytest.raises(SpikeGradError, match=message):
            plan(a, nodes=1, link_gbps=1.0, calls_from=second)


def test_shared_memory_keeps_a_node_s_messages_off_the_links(tmp_path):
    """Chips whose messages went through /dev/shm in the run (chips.parquet's transport) send those between
    chips of one node off the links and outside Ray's object store; to other nodes through Ray as before."""
    ray_run = chip_run(tmp_path / "ray", messages=5)
    shm_run = chip_run(tmp_path / "shm", messages=5, transport="shm")
    kw = dict(nodes=2, link_gbps=1.0, micro_batch=10, placement="blocks")
    p, q = plan(ray_run, **kw), plan(shm_run, **kw)
    assert p["node_bits_out"] == q["node_bits_out"]  # big messages go straight between nodes either way
    # through Ray, every link's 5 messages of 200-400 KB a direction go through the object store; with
    # shared memory only those between chips 1 and 2 (the crossing link)
    per = plan_module.OBJECT_US * 1e-6 * 5 / 1000
    assert sum(p["object_seconds_per_sample"].values()) == pytest.approx(6 * per)
    assert sum(q["object_seconds_per_sample"].values()) == pytest.approx(2 * per)
    # small messages (100 a link) between chips 2 and 3 of node 1: through the driver's node with Ray, not at all
    # with shared memory
    small_ray = plan(chip_run(tmp_path / "sr", messages=100), **kw)
    small_shm = plan(chip_run(tmp_path / "ss", messages=100, transport="shm"), **kw)
    f = 8 * WIRE_FACTOR
    assert small_ray["node_bits_out"][1] - small_shm["node_bits_out"][1] == pytest.approx(f * (1000 + 2000))
    # the replicas' increments go through Ray whatever the transport: chip 1's two copies, both on node 1 of
    # 2 (spread: copies 1 and 5), still send theirs through the driver's node
    spread = dict(nodes=2, link_gbps=1.0, micro_batch=10)
    plain, inc = (plan(chip_run(tmp_path / name, replicas=2, messages=5, placement="spread", transport="shm",
                                increments=rows), **spread)
                  for name, rows in (("p", []), ("i", [(1, 4e5, 50)])))
    assert inc["node_bits_out"][1] - plain["node_bits_out"][1] == pytest.approx(f * 4e5 / 1000 / 2 * 2)


def test_small_messages_go_through_the_driver_node(tmp_path):
    # 100 messages a link: 10-20 KB each, returned inline to the driver (node 0) and sent on from there, so
    # the link between chips 2 and 3, both on node 1, crosses twice (1 -> 0 -> 1)
    run = chip_run(tmp_path / "r", messages=100)
    p = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=0.0, placement="blocks")
    f = 8 * WIRE_FACTOR
    out0 = f * (1000 + 2000 + 1000) + 2 * CONTROL  # 1 -> 2 forward, 3 -> 2 and 2 -> 1 ... via node 0
    assert p["node_bits_out"][0] == pytest.approx(f * 1000 + f * 1000 + f * 2000 + 2 * CONTROL)
    assert p["node_bits_out"][0] == pytest.approx(out0)
    assert p["node_bits_in"][1] == p["node_bits_out"][0]
    assert p["node_bits_out"][1] == pytest.approx(f * (2000 + 1000 + 2000) + 2 * CONTROL)


def test_replicas_spread_and_exchange_increments(tmp_path, no_fixed_costs):
    # 2 replicas of 4 chips spread over 3 nodes: copy b = r*4 + c on node b mod 3
    plain = chip_run(tmp_path / "plain", replicas=2, messages=5, placement="spread")
    inc = chip_run(tmp_path / "inc", replicas=2, messages=5, placement="spread", increments=[(0, 4e5, 50)])
    p, q = (plan(r, nodes=3, link_gbps=1.0, micro_batch=10, call_us=0.0) for r in (plain, inc))
    assert p["copies"] == {"0.0": 0, "0.1": 1, "0.2": 2, "0.3": 0, "1.0": 1, "1.1": 2, "1.2": 0, "1.3": 1}
    assert p["replicas"] == 2 and [c["nodes"] for c in p["chips"]] == [[0, 1], [1, 2], [0, 2], [0, 1]]
    # chip 0's copies on nodes 0 and 1 send each other 8 KB messages (inline: via node 0): 0 -> 1 and 1 -> 0
    each = 8 * WIRE_FACTOR * 4e5 / 1000 / 2
    assert q["node_bits_out"][0] - p["node_bits_out"][0] == pytest.approx(each)
    assert q["node_bits_out"][1] - p["node_bits_out"][1] == pytest.approx(each)
    assert q["node_bits_out"][2] == p["node_bits_out"][2]
    # each copy does half the samples: the chips' work per sample is the whole chip's, over its two copies
    assert [c["seconds_per_sample"] for c in p["chips"]] == pytest.approx(T)


def test_the_call_cost_measured_in_the_run(tmp_path):
    # the run's machine was busy 1.6 s of its 2 s; its chips took 0.8 s of it, and its 400 calls at
    # RAY_CALL_US and the daemons leave nothing: the model says so, and keeps the rest at 0
    run = chip_run(tmp_path / "r", metrics=dict(calls=400, machine_cpu_seconds=1.6))
    p = plan(run, nodes=1, link_gbps=1.0, micro_batch=10, shared_cores=2)
    assert p["call_us"] == plan_module.RAY_CALL_US and p["calls_per_sample"] == pytest.approx(0.4)
    assert p["ray_per_sample_us"] == 0 and any("measured" in a and "less than" in a for a in p["assumptions"])
    # all on 2 shared cores, as busy as the run kept them (1.6 s of CPU in 2 s: 0.8 cores)
    assert p["busy_cores"] == pytest.approx(0.8)
    # smaller micro-batches than the run's let the chips overlap: all the shared cores, and calls per sample
    # in proportion (the run's 0.4 at micro-batch 10 are 0.8 at 5)
    q = plan(run, nodes=1, link_gbps=1.0, micro_batch=5, shared_cores=2)
    assert q["busy_cores"] == 2 and q["calls_per_sample"] == pytest.approx(0.8)
    assert p["predicted_range"]["call_us"] == (p["call_us"], p["call_us"])  # measured: no range for it
    # chips that ran on two nodes: the machine's CPU does not hold them all, so the figure from the notes
    spread = chip_run(tmp_path / "s", metrics=dict(calls=400, machine_cpu_seconds=1.6), nodes=["a", "a", "b", "b"])
    assert plan(spread, nodes=1, link_gbps=1.0, micro_batch=10)["call_us"] == CALL_US


def test_defaults_are_the_measured_call_cost_with_a_range(tmp_path):
    run = chip_run(tmp_path / "r")
    p = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, placement="blocks")
    assert (p["call_us"], p["latency_us"]) == (CALL_US, LATENCY_US) and CALL_US > 0
    same = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=CALL_US, latency_us=LATENCY_US,
                placement="blocks")
    assert p["predicted_images_per_second"] == same["predicted_images_per_second"]
    r = p["predicted_range"]
    assert r["low"] < p["predicted_images_per_second"] < r["high"]
    lo_call, hi_call, _ = RANGES["call_us"]
    lo_lat, hi_lat, _ = RANGES["latency_us"]
    fast = plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=lo_call, latency_us=lo_lat, placement="blocks")
    assert r["high"] == pytest.approx(min(fast["bounds"].values()))  # the fast end: wholly overlapped
    assert plan(run, nodes=2, link_gbps=1.0, micro_batch=10, call_us=0.0,
                placement="blocks")["predicted_images_per_second"] > r["low"]


def test_every_node_asked_for_holds_a_chip(tmp_path):
    assert place([0, 1, 2, 3, 4, 5], 4) == {0: 0, 1: 0, 2: 1, 3: 1, 4: 2, 5: 3}
    assert place([0, 1, 2, 3, 4, 5, 6], 3) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 2, 6: 2}
    assert place(list(range(9)), 9) == {c: c for c in range(9)}
    assert place([0, 1, 2], 5) == {0: 0, 1: 1, 2: 2}  # fewer chips than nodes: one each, the rest idle
    run = chip_run(tmp_path / "six", cpu=(0.1, 0.3, 0.2, 0.2, 0.1, 0.1))
    p = plan(run, nodes=4, link_gbps=1.0, micro_batch=10, placement="blocks")
    assert [c["node"] for c in p["chips"]] == [0, 0, 1, 1, 2, 3] and p["nodes_used"] == 4
    assert p["cores_per_node"] == 2  # one per chip of the fullest node
    assert plan(run, nodes=8, link_gbps=1.0, micro_batch=10, placement="blocks")["nodes_used"] == 6
    # pack (the run's default): one node holds every chip; spread: round robin
    assert {c["node"] for c in plan(run, nodes=4, link_gbps=1.0, micro_batch=10)["chips"]} == {0}
    assert [c["node"] for c in plan(run, nodes=4, link_gbps=1.0, micro_batch=10,
                                    placement="spread")["chips"]] == [0, 1, 2, 3, 0, 1]


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
    local = tmp_path / "local"
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                 "--quiet", "--out", str(local)]) == 0
    chip_run(tmp_path / "neg", cpu=(0.1, -5.0, 0.2, 0.2))
    chip_run(tmp_path / "mb", micro="many")
    for args, message in [([str(local), "--nodes", "2"], "not a chip run"),
                          ([str(tmp_path / "neg"), "--nodes", "2"], "chip 1 a cpu_seconds that is not a number >= 0"),
                          ([str(tmp_path / "mb"), "--nodes", "2"], "micro_batch expected a number > 0, got 'many'"),
                          ([str(tmp_path / "r"), "--nodes", "0"], "expected an integer >= 1"),
                          ([str(tmp_path / "r"), "--nodes", "2", "--link-gbps", "0"], "expected a finite number > 0"),
                          ([str(tmp_path / "r"), "--nodes", "2", "--epoch", "3"], "epoch 3 expected one of"),
                          ([str(tmp_path / "r"), "--nodes", "2", "--calls-from", str(tmp_path / "r")],
                           "has no calls, busy recorded for epoch 1"),
                          ([str(tmp_path / "nope"), "--nodes", "2"], "config.json is missing")]:
        capsys.readouterr()
        assert main(["plan", *args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0], (args, err)
    with pytest.raises(SpikeGradError, match="latency-us expected a finite number >= 0"):
        plan(Run(RunDir(tmp_path / "r")), 2, 1.0, float("nan"))
