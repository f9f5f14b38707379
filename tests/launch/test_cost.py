"""Packets, bandwidth and the energy estimate against hand-computed cases."""

import math

import pytest

from cluster.topology import parse_topology
from launch.tools.cost import Energies, energy_per_sample, link_costs, packet_bits

TOPO = parse_topology("8x8-4C3p1-P2-16-10")  # neurons: 256, 64, 16, 10
CHIPS = [{"chip": 0, "layers": "0"}, {"chip": 1, "layers": "1-2"}, {"chip": 2, "layers": "3"}]


def test_packet_sizes():
    assert packet_bits("spinnaker", 10**6) == 40
    assert packet_bits("aer", 256) == 8 + 8 + 1   # header, log2 256 address bits, sign
    assert packet_bits("aer", 257) == 8 + 9 + 1
    assert packet_bits("aer", 1) == 8 + 1 + 1
    with pytest.raises(ValueError, match="spinnaker, aer"):
        packet_bits("ethernet", 5)


def test_links_per_sample_and_bandwidth():
    links = [dict(src=0, dst=1, spikes=1000.0, bytes=0, messages=4),       # layer 0's spikes, 256 neurons
             dict(src=1, dst=0, spikes=300.0, bytes=0, messages=4),        # layer 0's error spikes
             dict(src=2, dst=1, spikes=50.0, bytes=0, messages=4, cross_node=True),  # layer 2's (16 neurons)
             dict(src=1, dst=1, kind="increments", spikes=0.0, bytes=2500, messages=2)]
    rows = link_costs(links, CHIPS, images=100, seconds=2.0, topo=TOPO, fmt="aer", rate=1000.0)
    fwd, bwd, top, inc = rows
    assert (fwd["what"], fwd["spikes"], fwd["packet_bits"], fwd["bits"]) == ("spikes", 10.0, 17, 170.0)
    assert math.isclose(fwd["mbps_measured"], 170.0 * 50 / 1e6) and math.isclose(fwd["mbps_at_rate"], 0.17)
    assert (bwd["what"], bwd["packet_bits"], bwd["bits"]) == ("error spikes", 17, 3.0 * 17)
    assert (top["packet_bits"], top["bits"], top["cross_node"]) == (8 + 4 + 1, 0.5 * 13, True)
    assert (inc["what"], inc["bits"]) == ("increments", 8 * 2500 / 100)


def test_energy_per_pass():
    rows = [dict(layer=0, kind="conv", acc_forward=100.0, acc_backward=0.0, acc_update=40.0, macs=200.0),
            dict(layer=1, kind="pool", acc_forward=30.0, acc_backward=20.0, acc_update=0.0, macs=60.0),
            dict(layer=2, kind="dense", acc_forward=10.0, acc_backward=5.0, acc_update=5.0, macs=100.0)]
    e = Energies(mac=4.0, acc=1.0, hop=2.0)
    fwd, bwd, upd, links = energy_per_sample(rows, images=10, e=e, packets=3.0)
    assert (fwd["snn_mac"], fwd["snn_acc"]) == (10.0, 4.0)          # layer 0's float input: MACs
    assert (fwd["snn_pj"], fwd["ann_pj"]) == (10 * 4.0 + 4 * 1.0, 36.0 * 4.0)
    assert (bwd["snn_pj"], bwd["ann_pj"]) == (2.5, 16.0 * 4.0)     # layers >= 1
    assert (upd["snn_pj"], upd["ann_pj"]) == (4.5, 30.0 * 4.0)     # layers with weights
    assert (links["pass_"], links["snn_pj"]) == ("links", 6.0)


def test_traffic_on_a_local_run_prints_the_energy_estimate(tmp_path, capsys):
    from launch.cli import main

    run = tmp_path / "r"
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "128", "--limit-test", "32",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["traffic", str(run), "--e-mac", "5", "--packet", "aer"]) == 0
    out = capsys.readouterr().out
    assert "no chips, no links" in out and "an ESTIMATE: MAC 5 pJ" in out
    assert all(p in out for p in (" forward ", "backward ", "  update ", "   total "))
    assert main(["traffic", str(run), "--epoch", "7"]) == 2
