"""spikegrad report on real runs: the figures are PNGs with content, the summary has Table 1."""

import json

import pytest

from cluster.errors import SpikeGradError
from launch.cli import main

PNG = b"\x89PNG\r\n\x1a\n"


def test_report_from_two_runs(tmp_path, capsys):
    runs = []
    for name, extra in (("a50", ["--alpha", "50"]), ("a100", ["--alpha", "100"]),
                        ("a100s1", ["--alpha", "100", "--seed", "1"]), ("shifted", ["--shift", "1"]),
                        ("a100again", ["--alpha", "100"])):
        run = tmp_path / name
        assert main(["train", "--engine", "local", "--epochs", "2", "--limit-train", "200", "--limit-test", "60",
                     *extra, "--quiet", "--out", str(run)]) == 0
        runs.append(str(run))
    out = tmp_path / "report"
    assert main(["report", *runs, "--out", str(out)]) == 0
    capsys.readouterr()
    for name in ("fig1_backward_synops.png", "fig2_layers_a50.png", "fig2_layers_a100.png", "accuracy.png",
                 "loss.png", "energy_a50.png", "spikes_a50.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
    summary = (out / "summary.md").read_text()
    assert "| a50 | digits | spike | 50 | 0 | 2 |" in summary and "Table 1" in summary
    assert "### a50: operations per training sample, epoch 2" in summary and "| backward |" in summary
    t1 = json.loads((out / "table1.json").read_text())
    # runs that differ only in the seed are one protocol; another --shift is another one; a run that
    # repeats seed 0 of its protocol is reported, not counted as a third seed
    assert sorted((g["alpha"], g["shift"], g["seeds"], g["runs"]) for g in t1) == \
        [(50.0, 0, 1, 1), (100.0, 0, 2, 3), (100.0, 1, 1, 1)]
    group = next(g for g in t1 if g["alpha"] == 100.0 and g["shift"] == 0)
    assert group["seed_list"] == [0, 1] and [r["run"] for r in group["repeated"]] == ["a100again"]
    assert group["repeated"][0]["counted"] == "a100"
    assert "a100again: seed 0" in summary and "not counted as more seeds" in summary
    assert main(["report", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_traffic_tables_mark_links_across_nodes_and_total_them():
    """traffic_rows and format_traffic on hand-made chip reports: chip 0 on node a, chips 1-2 on node b."""
    from cluster.synops import COUNTERS
    from launch.run.traffic import format_traffic, traffic_rows

    def rep(chip, node, traffic):
        return {"chip": chip, "layers": [chip], "nodes": [node], "synops": {chip: dict.fromkeys(COUNTERS, 1.0)},
                "traffic": traffic, "timing": {"busy": 0.1}, "event_checks": {"values": 0, "differ": 0}}

    link = {"messages": 2, "bytes": 100, "spikes": 10.0, "min_payload_bytes": 0}
    reports = [rep(0, "a" * 16, {1: link}), rep(1, "b" * 16, {0: link, 2: link}), rep(2, "b" * 16, {1: link})]
    links, chips = traffic_rows(1, reports)
    assert sorted((r["src"], r["dst"], r["cross_node"]) for r in links) == \
        [(0, 1, True), (1, 0, True), (1, 2, False), (2, 1, False)]
    assert [c["node"] for c in chips] == ["aaaaaaaa", "bbbbbbbb", "bbbbbbbb"]
    both = links + [dict(r, epoch=2) for r in links]
    text = format_traffic(both, chips + [dict(c, epoch=2) for c in chips], {1: 10, 2: 20})
    # epoch 2 of 20 images: each link 10 spikes and 100 bytes = 0.5 spikes and 40 wire bits per sample
    assert "   0    1   forward   nodes            0.5                40         100         2" in text
    assert "   2    1  backward       -            0.5                40         100         2" in text
    assert "                    forward              1                80         200         4" in text
    assert "               across nodes              1                80         200         4" in text
    # the whole run per sample: 40 spikes forward over 30 images
    assert "    forward, epochs 1-2          1.333             106.7         400         8" in text
    assert "busiest link: chip 0 -> 1 (forward), 40 wire bits/sample, 0.5 spikes/sample" in text


def test_traffic_names_the_busiest_link_totals_each_direction_and_stays_narrow():
    """30 chips in a chain: one row per directed link, never a matrix as wide as the chips are many."""
    from launch.run.traffic import format_traffic, traffic_json

    links, chips = [], []
    for c in range(30):
        chips.append(dict(epoch=1, chip=c, layers=str(c), node="n", spikes=1.0, error_spikes=2.0,
                          error_spikes_delivered=1.0, input_macs=0.0, acc_forward=1.0, acc_backward=1.0,
                          acc_update=1.0, macs=1.0, busy_seconds=0.5, cpu_seconds=0.25))
        if c < 29:  # forward c -> c+1 carries 10 (c+1) spikes in 8 (c+1) bytes; backward twice the spikes
            links.append(dict(epoch=1, src=c, dst=c + 1, kind="spikes", messages=3, bytes=8.0 * (c + 1),
                              spikes=10.0 * (c + 1), cross_node=c == 14))
            links.append(dict(epoch=1, src=c + 1, dst=c, kind="spikes", messages=3, bytes=4.0 * (c + 1),
                              spikes=20.0 * (c + 1), cross_node=c == 14))
    t = traffic_json(links, chips, 1, 10)
    assert len(t["links"]) == 58 and {r["direction"] for r in t["links"]} == {"forward", "backward"}
    # by wire bits the busiest is the last forward link (8 * 29 bytes), by spikes the last backward one
    assert (t["busiest"]["by_wire_bits"]["src"], t["busiest"]["by_wire_bits"]["dst"]) == (28, 29)
    assert (t["busiest"]["by_spikes"]["src"], t["busiest"]["by_spikes"]["dst"]) == (29, 28)
    n = 29 * 30 / 2  # 1 + 2 + ... + 29
    assert t["totals"]["forward"] == dict(spikes_per_sample=n, wire_bits_per_sample=6.4 * n, bytes=8 * n, messages=87)
    assert t["totals"]["backward"]["spikes_per_sample"] == 2 * n and t["totals"]["backward"]["bytes"] == 4 * n
    assert t["totals"]["across_nodes"]["spikes_per_sample"] == 15 * 3
    assert t["chips"][3]["error_spikes_per_sample"] == 0.2 and t["chips"][3]["cpu_seconds"] == 0.25
    text = format_traffic(links, chips, {1: 10})
    assert max(len(line) for line in text.splitlines()) <= 110, max(text.splitlines(), key=len)
    assert "busiest link: chip 28 -> 29 (forward), 185.6 wire bits/sample, 29 spikes/sample" in text
    assert "busiest by spikes: chip 29 -> 28 (backward), 58 spikes/sample, 92.8 wire bits/sample" in text
    with pytest.raises(SpikeGradError, match="expected a positive image count, got 0"):
        traffic_json(links, chips, 1, 0)


def test_traffic_json_holds_the_traffic_and_the_cost(tmp_path, capsys):
    """`traffic --json` on a chip run (the plan tests' 4-chip run) and on a local run (no links)."""
    from tests.launch.test_plan import chip_run

    chip_run(tmp_path / "chips")
    assert main(["traffic", str(tmp_path / "chips"), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"traffic", "cost", "system"} and set(d["cost"]) == {"links"}
    assert d["system"]["epochs"][-1]["busiest"] is not None  # the system model of the run's own chips
    # 1,000 images; the chain's forward links 1e6 bytes each, the backward ones 2e6
    assert d["traffic"]["totals"]["forward"]["wire_bits_per_sample"] == 3 * 8000
    assert d["traffic"]["totals"]["backward"]["wire_bits_per_sample"] == 3 * 16000
    assert d["traffic"]["busiest"]["by_wire_bits"]["direction"] == "backward"
    assert len(d["cost"]["links"]) == 6
    local = tmp_path / "local"
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                 "--quiet", "--out", str(local)]) == 0
    capsys.readouterr()
    assert main(["traffic", str(local), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["traffic"]["links"] == [] and d["traffic"]["busiest"]["by_spikes"] is None
    assert d["cost"] is None and d["system"]["epochs"]  # no chips measured; the system model on a profile
    assert main(["traffic", str(local), "--json", "--chip", "loihi2"]) == 0
    d = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))
    assert d["cost"] is None and d["system"]["chip"] and d["system"]["epochs"]


def test_operation_and_spike_tables_agree_with_the_layer_counts(tmp_path):
    """operations.parquet is layers.parquet per training sample and pass; spikes.parquet's histogram
    covers every (neuron, sample) pair of each hidden layer once, under Eq. (21)'s bound."""
    import pyarrow.parquet as pq

    run = tmp_path / "r"
    assert main(["train", "--engine", "local", "--epochs", "2", "--limit-train", "200", "--limit-test", "60",
                 "--quiet", "--out", str(run)]) == 0
    layers = pq.read_table(run / "layers.parquet").to_pylist()
    ops = pq.read_table(run / "operations.parquet").to_pylist()
    images = {r["epoch"]: r["images"] for r in pq.read_table(run / "metrics.parquet").to_pylist()}
    for lr in layers:
        mine = {r["pass"]: r for r in ops if (r["epoch"], r["layer"]) == (lr["epoch"], lr["layer"])}
        n = images[lr["epoch"]]
        for p, col, layer_col in (("forward", "snn_acc", "acc_forward"), ("forward", "snn_mac", "input_macs"),
                                  ("backward", "snn_acc", "acc_backward"), ("update", "snn_acc", "acc_update"),
                                  ("backward", "error_spikes", "error_spikes"), ("forward", "spikes", "spikes"),
                                  ("update", "error_spikes_delivered", "error_spikes_delivered")):
            assert mine[p][col] * n == pytest.approx(lr[layer_col], rel=1e-12, abs=1e-9), (p, col)
    spikes = pq.read_table(run / "spikes.parquet").to_pylist()
    neurons = {0: 16 * 8 * 8, 1: 16 * 4 * 4, 2: 64}  # digits: 16C3p1, P2, 64
    for epoch in (1, 2):
        for l, per_sample in neurons.items():
            rows = [r for r in spikes if (r["epoch"], r["layer"]) == (epoch, l)]
            assert sum(r["count"] for r in rows) == per_sample * rows[0]["samples"] == per_sample * 60
            assert max(r["spikes"] for r in rows) <= rows[0]["n_max"]


def test_traffic_figures_of_a_chip_run_and_none_for_a_local_run(tmp_path):
    """The heat maps per sample and the Mbit/s bars (forward and backward apart) of a 4-chip run whose
    middle links cross nodes; a local run has neither."""
    from launch.run.rundir import RunDir, write_parquet
    from launch.tools.report import Run, bandwidth_figure, traffic_map
    from tests.launch.test_plan import chip_run

    chip_run(tmp_path / "chips")
    run = RunDir(tmp_path / "chips")
    write_parquet(run.table_file("traffic"), [dict(r, cross_node={r["src"], r["dst"]} == {1, 2})
                                              for r in run.read_table("traffic")])
    for draw, name in ((traffic_map, "traffic_chips.png"), (bandwidth_figure, "bandwidth_chips.png")):
        assert draw(Run(run), tmp_path) == name
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
    local = tmp_path / "local"
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--limit-test", "32",
                 "--quiet", "--out", str(local)]) == 0
    assert traffic_map(Run(local), tmp_path) is None and bandwidth_figure(Run(local), tmp_path) is None
