"""spikegrad report on real runs: the figures are PNGs with content, the summary has Table 1."""

import json

import pytest

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
    from launch.tools.traffic import format_traffic, traffic_rows

    def rep(chip, node, traffic):
        return {"chip": chip, "layers": [chip], "nodes": [node], "synops": {chip: dict.fromkeys(
            ("spikes", "error_spikes", "acc_forward", "acc_backward", "acc_update", "macs"), 1.0)},
                "traffic": traffic, "timing": {"busy": 0.1}, "event_checks": {"values": 0, "differ": 0}}

    link = {"messages": 2, "bytes": 100, "spikes": 10.0, "min_payload_bytes": 0}
    reports = [rep(0, "a" * 16, {1: link}), rep(1, "b" * 16, {0: link, 2: link}), rep(2, "b" * 16, {1: link})]
    links, chips = traffic_rows(1, reports)
    assert sorted((r["src"], r["dst"], r["cross_node"]) for r in links) == \
        [(0, 1, True), (1, 0, True), (1, 2, False), (2, 1, False)]
    assert [c["node"] for c in chips] == ["aaaaaaaa", "bbbbbbbb", "bbbbbbbb"]
    text = format_traffic(links + [dict(r, epoch=2) for r in links], chips + [dict(c, epoch=2) for c in chips])
    assert "epoch 2: within a node 20 spikes, 200 bytes, 4 messages; across nodes 20 spikes, 200 bytes, 4 messages" \
        in text
    assert "epochs 1-2: within a node 40 spikes, 400 bytes, 8 messages; across nodes 40 spikes" in text
    assert "10 /      100 /      2*" in text  # a cell: spikes / bytes / messages, * across nodes


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
