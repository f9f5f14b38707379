"""Packets, routing (placement, hops, multicast), energy terms and the hardware forecast against
hand-computed cases, and the traffic and forecast commands on a real run."""

import json
import math

import pytest

from cluster.energy import SampleCounts, ann_terms, forecast, snn_terms
from cluster.errors import SpikeGradError
from cluster.hardware import PROFILES as HARDWARE
from cluster.hardware import energy_from_dict
from cluster.mapping import Plan, custom_chip, map_network
from cluster.routing import Flow, flows, parse_placement, path, place, route, snake
from cluster.topology import parse_topology
from launch.tools.cost import link_costs, message_neurons
from launch.tools.system import packet_bits

TOPO = parse_topology("8x8-4C3p1-P2-16-10")  # neurons: 256, 64, 16, 10


def test_packet_sizes():
    assert packet_bits("spinnaker", 10**6) == 40
    assert packet_bits("aer", 256) == 8 + 8 + 1   # header, log2 256 address bits, sign
    assert packet_bits("aer", 257) == 8 + 9 + 1
    assert packet_bits("aer", 1) == 8 + 1 + 1
    with pytest.raises(SpikeGradError, match="spinnaker or aer"):
        packet_bits("ethernet", 5)


def test_aer_address_is_the_slice_not_the_layer():
    # the dense 16 split over chips: each message names the neurons of its slice only
    m = map_network(TOPO, custom_chip(300, 1000, "c"))
    plan = Plan.of(m)
    sizes = message_neurons(plan)
    assert sizes and all(n <= 256 for n in sizes.values())
    assert any(n < TOPO.neurons(f.layer) for f in flows(plan, [1.0] * 4, [1.0] * 4, [1.0] * 4, on_chip=False)
               for n in [f.neurons])
    rows = link_costs([dict(src=0, dst=1, spikes=1000.0, bytes=0, messages=4)], images=100, seconds=2.0, fmt="aer",
                      rate=1000.0, neurons={(0, 1): 8})
    assert (rows[0]["packet_bits"], rows[0]["bits"]) == (8 + 3 + 1, 10.0 * 12)
    assert math.isclose(rows[0]["mbps_measured"], 120 * 50 / 1e6) and math.isclose(rows[0]["mbps_at_rate"], 0.12)


def test_flows_of_a_chain_carry_each_layers_spikes():
    plan = Plan(TOPO, (((0, 0, 4),), ((1, 0, 4), (2, 0, 16)), ((3, 0, 10),)))
    fl = flows(plan, [256.0, 64.0, 16.0, 10.0], [128.0, 32.0, 8.0, 0.0], [100.0, 30.0, 6.0, 5.0])
    cross = {(f.src, f.dst, f.direction, f.layer): f.spikes for f in fl if f.src != f.dst}
    # forward: S0 from chip 0 to 1, S2 from chip 1 to 2; backward: Z2 from chip 2 to 1, Z0 from 1 to 0
    assert cross == {(0, 1, "forward", 0): 256.0, (1, 2, "forward", 2): 16.0, (2, 1, "backward", 2): 8.0,
                     (1, 0, "backward", 0): 128.0}
    on_chip = {(f.direction, f.layer): f.spikes for f in fl if f.src == f.dst}
    assert on_chip == {("forward", 1): 64.0, ("backward", 1): 32.0}


def test_mesh_paths_and_classes():
    pos = snake(6, (2, 2), 1)  # boards of 2x2 chips: chips 0-3 on board 0 (snake order), 4-5 on board 1
    assert pos[:4] == [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 1, 1), (0, 0, 0, 1)] and pos[4] == (1, 1, 0, 0)
    assert len(path(pos[0], pos[2])) == 2 and len(path(pos[0], pos[0])) == 0
    assert len(path(pos[2], pos[5])) == 2 + 1 + 1  # to the corner, the node link, to chip 5


def test_multicast_sends_shared_spikes_once_per_tree_link():
    pos = [(0, 0, 0, 0), (0, 0, 1, 0), (0, 0, 2, 0)]  # a row of three chips
    fl = [Flow(0, 1, "forward", 0, 0, 4, 40, 10.0), Flow(0, 2, "forward", 0, 0, 4, 40, 10.0)]
    _, load_u, cls_u = route(fl, pos, multicast=False)
    _, load_m, cls_m = route(fl, pos, multicast=True)
    assert cls_u["chip-to-chip"] == 10.0 * 1 + 10.0 * 2 and cls_m["chip-to-chip"] == 10.0 * 2
    assert load_u[((0, 0, 0, 0), (0, 0, 1, 0))] == 20.0 and load_m[((0, 0, 0, 0), (0, 0, 1, 0))] == 10.0


def test_auto_placement_never_costs_more_hops_than_snake():
    m = map_network(parse_topology("mnist"), custom_chip(2000, 100_000))
    plan = Plan.of(m)
    fl = flows(plan, [10.0] * 6, [5.0] * 6, [4.0] * 6, on_chip=False)

    def cost(pos):
        return sum(f.spikes * len(path(pos[f.src], pos[f.dst])) for f in fl)

    assert cost(place(plan.n_chips, fl, (4, 4), 1, "auto")) <= cost(place(plan.n_chips, fl, (4, 4), 1, "snake"))
    with pytest.raises(SpikeGradError, match="two chips on one position"):
        parse_placement("0.0.0.0,0.0.0.0", 2)


def test_energy_terms_by_hand():
    e = HARDWARE["loihi"].energy
    c = SampleCounts(synops=1000.0, updates=100.0, compartments=50.0, spikes_emitted=30.0, macs_forward=2000.0,
                     macs_backward=1000.0, macs_update=1500.0,
                     packets={"on-chip": 20.0, "chip-to-chip": 6.0, "board-to-board": 0.0, "node-to-node": 2.0},
                     values={"on-chip": 40.0, "chip-to-chip": 10.0, "board-to-board": 0.0, "node-to-node": 3.0})
    snn = {t.name: t.pj for t in snn_terms(c, e, 40, 16)}
    assert snn["synaptic operations"] == 1000 * 23.6 and snn["weight updates"] == 100 * 120.0
    assert snn["compartment updates"] == 80 * 81.0 and snn["spikes sent"] == 28 * 111.0
    assert math.isclose(snn["hops on chip"], 20 * 3.5 * 2 * 4 / 3)  # mean hops on a 4x4 core mesh
    assert snn["bits between chips"] == 6 * 40 * 10.0 and snn["bits between nodes"] == 2 * 40 * 100.0
    ann = {t.name: t.pj for t in ann_terms(c, e, 16)}
    assert ann["MACs"] == 4500 * 4.6 and math.isclose(ann["weight reads (32 bit)"], 4500 * 32 * 0.31)
    assert math.isclose(ann["values between chips (16 bit)"], 10 * 16 * 10.0)


def test_energy_file_is_validated():
    base = HARDWARE["loihi"].energy
    e = energy_from_dict({"synop": {"value": 5, "source": "my chip", "low": 4, "high": 6}, "hop": 1.5}, base)
    assert (e.synop.value, e.synop.range, e.hop.value, e.update) == (5.0, (4.0, 6.0), 1.5, base.update)
    for bad, msg in [({"synopz": 1}, "unknown key"), ({"synop": -1}, "finite number >= 0"),
                     ({"synop": float("nan")}, "finite number"), ({"synop": True}, "a number or an object"),
                     ([1], "a JSON object"), ({"synop": {"value": 5, "low": 6}}, "low <= value <= high")]:
        with pytest.raises(SpikeGradError, match=msg):
            energy_from_dict(bad, base)


def test_forecast_by_hand():
    from cluster.energy import ChipWork

    r = HARDWARE["loihi"].rates
    work = [ChipWork(0, 2, 2.6e8 * 2 * 1e-3, 0.0, 0.0), ChipWork(1, 1, 0.0, 0.0, 0.0)]
    f = forecast(work, {"0-1": 0.0}, {}, 1, r)
    assert f["binding"] == "chip compute" and math.isclose(f["samples_per_second"], 1000.0)


def test_traffic_and_forecast_on_a_local_run(tmp_path, capsys):
    from launch.cli import main

    run = tmp_path / "r"
    assert main(["train", "--engine", "local", "--epochs", "2", "--limit-train", "128", "--limit-test", "32",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["traffic", str(run)]) == 0
    assert "mapped onto loihi chips (a one-process run: no chips named" in capsys.readouterr().out
    assert main(["traffic", str(run), "--chip-neurons", "600", "--chip-synapses", "20000", "--packet", "aer",
                 "--energy", "spinnaker2", "--multicast", "--placement", "auto"]) == 0
    out = capsys.readouterr().out
    assert "busiest link:" in out and "unicast would be" in out and "SNN/ANN" in out and "[KS]" in out
    assert out.count("\n    1 ") + out.count("\n    2 ") >= 2  # one energy row per epoch
    assert main(["forecast", str(run), "--chip", "loihi", "--json"]) == 0
    fc = json.loads(capsys.readouterr().out)
    assert fc["low"]["samples_per_second"] <= fc["value"]["samples_per_second"] <= fc["high"]["samples_per_second"]
    assert main(["forecast", str(run), "--chip", "truenorth"]) == 2  # it maps digits, but cannot learn on chip
    bad = tmp_path / "e.json"
    bad.write_text("{\"synop\": \"lots\"}")
    assert main(["traffic", str(run), "--chip", "loihi", "--energy", str(bad)]) == 2
    assert main(["traffic", str(run), "--chip", "loihi", "--placement", "0.0.0.0,0.0.1.0"]) == 2
    assert main(["traffic", str(run), "--epoch", "7"]) == 2
