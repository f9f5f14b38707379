"""Chips on a real local Ray instance: identical weights to one process, traffic recorded."""

import numpy as np
import pytest

from launch.cli import main
from launch.run.config import make_config
from launch.run.runs import train


def weights(run):
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def test_chips_replicas_groups_equal_local(ray_session, tmp_path):
    """Same network, seed and batches: one process, one layer per chip (4 micro-batches per batch),
    2 replicas, grouped chips, 2 replicas of one whole-network chip and one such chip alone (batches
    queued ahead, apply by apply) end with the same weights, bit for bit (every layer: the inputs are dyadic, so even
    layer 0's float increments are exact sums)."""
    kw = dict(epochs=2, limit_train=256, limit_test=64, batch_size=32)
    runs = {
        "local": dict(engine="local"),
        "chips": dict(engine="chips", micro_batch=8),  # messages through /dev/shm (transport auto)
        "chips-ray": dict(engine="chips", micro_batch=8, transport="ray"),  # through Ray's object store
        "replicas": dict(engine="chips", replicas=2, micro_batch=8),
        "grouped": dict(engine="chips", chips="0-1,2-3", micro_batch=16),
        # whole-network chips: one call per micro-batch, increments returned by the last one
        "whole": dict(engine="chips", chips="0-3", replicas=2, micro_batch=8),
        # one whole-network chip: its own increments, each APPLY folded into the next batch's call
        "whole1": dict(engine="chips", chips="0-3", micro_batch=16),
    }
    got = {}
    for name, extra in runs.items():
        s = train(make_config("digits", out=str(tmp_path / name), **kw, **extra), progress=False,
                  log=lambda s: None)
        got[name] = (s, weights(tmp_path / name))
    ref_summary, ref = got["local"]
    for name in ("chips", "chips-ray", "replicas", "grouped", "whole", "whole1"):
        summary, w = got[name]
        assert summary["engine"] == "chips"
        assert summary["test_accuracy"] == ref_summary["test_accuracy"], name
        # batches are queued ahead on chips; every batch's loss and hits are still counted
        assert summary["train_accuracy"] == ref_summary["train_accuracy"], name
        # (loss sums in float32, added per micro-batch: equal up to the order of additions)
        assert abs(summary["train_loss"] - ref_summary["train_loss"]) < 1e-6 * ref_summary["train_loss"], name
        for k in ref:
            assert np.array_equal(ref[k], w[k]), f"{name}: {k} differs"


def test_traffic_recorded_and_printed(ray_session, tmp_path, capsys):
    run = tmp_path / "t"
    assert main(["train", "--epochs", "1", "--limit-train", "128", "--limit-test", "32", "--quiet",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    import pyarrow.parquet as pq

    links = pq.read_table(run / "traffic.parquet").to_pylist()
    pairs = {(r["src"], r["dst"]) for r in links}
    assert {(0, 1), (1, 2), (2, 3), (3, 2), (2, 1), (1, 0)} <= pairs
    assert all(r["bytes"] > 0 and r["messages"] > 0 for r in links)
    chips = pq.read_table(run / "chips.parquet").to_pylist()
    assert [r["chip"] for r in chips] == [0, 1, 2, 3]
    from actors.transport import shm_usable

    # how each chip's messages travelled (spikegrad plan reads it): the default, auto, is /dev/shm on one node
    assert {r["transport"] for r in chips} == ({"shm"} if shm_usable() else {"ray"})
    assert main(["traffic", str(run)]) == 0
    out = capsys.readouterr().out
    assert "chip-to-chip traffic" in out and "ACC fwd" in out
    assert main(["traffic", str(tmp_path)]) == 2  # not a run directory


def test_event_wire_on_ray_same_weights(ray_session, tmp_path, capsys):
    """--wire events on real Ray actors: address events between chips, the same weights as the
    count wire (fixed-point weights, K = 12), more events than counts, every value checked."""
    import pyarrow.parquet as pq

    common = ["train", "--epochs", "1", "--limit-train", "96", "--limit-test", "32", "--batch-size", "32",
              "--micro-batch", "16", "--chips", "0-1,2,3", "--weight-frac-bits", "12", "--quiet"]
    assert main([*common, "--out", str(tmp_path / "c")]) == 0
    assert main([*common, "--wire", "events", "--out", str(tmp_path / "e")]) == 0
    out = capsys.readouterr().err
    assert "spikes/sample: address events" in out and "(all)" in out
    wc, we = weights(tmp_path / "c"), weights(tmp_path / "e")
    for k in wc:
        assert np.array_equal(wc[k], we[k]), k
    lc = {(r["src"], r["dst"]): r for r in pq.read_table(tmp_path / "c" / "traffic.parquet").to_pylist()}
    le = {(r["src"], r["dst"]): r for r in pq.read_table(tmp_path / "e" / "traffic.parquet").to_pylist()}
    assert lc.keys() == le.keys()
    for k in lc:
        assert le[k]["messages"] == lc[k]["messages"] and le[k]["spikes"] >= lc[k]["spikes"] > 0
    chips = pq.read_table(tmp_path / "e" / "chips.parquet").to_pylist()
    assert all(r["event_values_checked"] > 0 and r["event_values_differ"] == 0 for r in chips)


def test_bench_chips_takes_turns_and_reports_every_round(ray_session, capsys):
    """`spikegrad bench chips`: local and chips alternate; the ratio is the median of the rounds'
    ratios; chip time shares are fractions; the wire stays within 10 % of the smaller encoding."""
    import json

    def bench(*extra):
        assert main(["bench", "chips", "--batches", "2", "--rounds", "3", "--json", *extra]) == 0
        out = capsys.readouterr()
        assert sum(line.startswith("round ") for line in out.err.splitlines()) == 3
        return json.loads(out.out.strip().splitlines()[-1])

    whole = bench("--topology", "digits", "--batch-size", "16", "--chips", "0-3", "--replicas", "2",
                  "--micro-batch", "8")
    assert len(whole["ratio_rounds"]) == len(whole["local_rounds"]) == len(whole["chips_rounds"]) == 3
    assert whole["ratio"] == pytest.approx(sorted(whole["ratio_rounds"])[1], abs=1e-3)
    for c, l, r in zip(whole["chips_rounds"], whole["local_rounds"], whole["ratio_rounds"]):
        assert r == pytest.approx(c / l, rel=1e-2, abs=1e-3)  # rounded to 3 decimals in the JSON
    assert 0.0 <= whole["waiting_share_of_chip_time"] < 1.0 and whole["messages"] == 0
    # the MNIST network (the benchmark's): messages big enough that the framing is a small part
    layers = bench("--topology", "mnist", "--batch-size", "32", "--chips", "0-2,3-5", "--micro-batch", "16",
                   "--profile")
    assert layers["messages"] > 0 and 0.0 <= layers["wire_overhead"] < 0.10
    assert 0.0 < layers["encode_share_of_chip_time"] + layers["decode_share_of_chip_time"] < 1.0
    # --profile: per chip and in total, ms per micro-batch (2 per batch, 2 batches, 3 rounds)
    prof = layers["profile"]
    assert prof["micro_batches"] == 2 * 2 * 3 and [c["chip"] for c in prof["chips"]] == [0, 1]
    assert prof["ray_calls"] > 0 and prof["ray_calls_small"] > 0 and 0 < prof["driver_submit"] < prof["wall"]
    # the machine's CPU in each engine's turns, and the ceiling it puts on the ratio
    m = layers["machine_cpu"]
    assert m["cores"] >= 1 and m["chips_cpu_ms_per_batch"] > m["chips_own_cpu_ms_per_batch"] > 0
    assert m["local_cpu_ms_per_batch"] > 0 and m["ceiling_ratio"] == pytest.approx(
        m["cores"] * m["local_wall_ms_per_batch"] / m["chips_cpu_ms_per_batch"], rel=1e-2)
    # Ray's calls alone, measured in /proc/stat's clock ticks (10 ms): a few tiny calls may read 0
    assert m["ray_cpu_ms_per_batch"] >= 0 and m["ray_small_cpu_ms_per_batch"] >= 0
    assert m["ceiling_ratio_free_bytes"] >= m["ceiling_ratio"] - 1e-3
    for c in prof["chips"]:
        assert c["compute"] > 0 and c["encode"] > 0 and c["decode"] > 0 and 0 <= c["waiting"] < prof["wall"]
    assert prof["total"]["compute"] == pytest.approx(sum(c["compute"] for c in prof["chips"]), abs=1e-2)


def test_results_of_queued_batches_are_counted_once_collected(ray_session):
    """Chips return a batch's loss and hits up to two batches later: collect() hands back only the
    finished ones (the progress bar divides by the collected samples), and every batch once."""
    from cluster.topology import parse_topology
    from launch.run.chips import ChipEngine
    from launch.run.driver import seeded_params
    from launch.run.local import LocalEngine

    cfg = make_config("digits", engine="chips", batch_size=16, micro_batch=8)
    topo = parse_topology(cfg.topology)
    engine = ChipEngine(cfg, topo, seeded_params(cfg))
    try:
        names = sorted(n for n in ray_session.util.list_named_actors() if n.startswith("spikegrad-"))
        assert [n.split("-", 2)[2] for n in names] == [f"replica0-chip{c}-layers{c}-{c}" for c in range(4)]
        rng = np.random.default_rng(0)
        x = (rng.integers(0, 17, (16, 1, 8, 8)) / 16).astype(np.float32)
        y = rng.integers(0, 10, 16)
        hits = seen = 0
        for step in range(4):
            engine.submit(x, y, 1.0)
            _, c, n = engine.collect()
            hits, seen = hits + c, seen + n
            assert seen == 16 * max(0, step - 1)  # two batches stay in flight
        _, c, n = engine.collect(wait=True)
        assert seen + n == 64
        lcfg = make_config("digits", engine="local", batch_size=16)
        local = LocalEngine(lcfg, topo, seeded_params(lcfg))
        assert hits + c == sum(local.train_step(x, y)[1] for _ in range(4))  # every batch counted once
        local.close()
    finally:
        engine.close()


def test_default_micro_batch_cuts_only_where_chips_have_their_own_core():
    from launch.run.chips import default_micro_batch

    assert default_micro_batch(256, 1, own_core=True) == 64
    assert default_micro_batch(256, 2, own_core=True) == 32
    assert default_micro_batch(20, 1, own_core=True) == 8  # at least 8 samples
    assert default_micro_batch(256, 1, own_core=False) == 256  # shared cores: one call per chip and batch
    assert default_micro_batch(255, 2, own_core=False) == 128


@pytest.mark.parametrize("text", ["soon", "-5", "0", "nan", "inf"])
def test_a_bad_chip_timeout_is_one_clear_error(monkeypatch, text):
    from actors.pipeline import chip_timeout_floor
    from cluster.errors import SpikeGradError

    monkeypatch.setenv("SPIKEGRAD_CHIP_TIMEOUT", text)
    with pytest.raises(SpikeGradError, match="SPIKEGRAD_CHIP_TIMEOUT expected a number of seconds > 0"):
        chip_timeout_floor()
    monkeypatch.setenv("SPIKEGRAD_CHIP_TIMEOUT", "2.5")
    assert chip_timeout_floor() == 2.5


@pytest.mark.parametrize("chips", ["0-3", "0-1,2-3"])
def test_the_replica_exchange_is_counted(ray_session, tmp_path, capsys, chips):
    """--replicas 2: every batch each replica's chips send their increments (ω of their layers) to the
    other replica; traffic.parquet counts them (kind "increments") and `spikegrad traffic` prints them."""
    import pyarrow.parquet as pq

    from cluster.topology import parse_topology

    run = tmp_path / "r"
    train(make_config("digits", chips=chips, replicas=2, epochs=1, limit_train=256, limit_test=32, batch_size=32,
                      out=str(run)), progress=False, log=lambda s: None)
    topo = parse_topology("digits")
    links = [r for r in pq.read_table(run / "traffic.parquet").to_pylist() if r["kind"] == "increments"]
    groups = [tuple(map(int, g.split("-"))) for g in chips.split(",")]
    assert sorted(r["src"] for r in links) == list(range(len(groups))) and all(r["src"] == r["dst"] for r in links)
    for r in links:
        lo, hi = groups[r["src"]]
        floats = sum(w[0] * (w[1] * w[2] * w[3] if len(w) == 4 else w[1]) + w[0]
                     for l in range(lo, hi + 1) if (w := topo.layers[l].weight_shape) is not None)
        # 8 batches x 2 replicas, each sending one message of its chip's increments to the other
        assert r["messages"] == 16 and r["bytes"] == 16 * 4 * floats, (r, floats)
        assert r["spikes"] == 0
    assert main(["traffic", str(run)]) == 0
    assert "replica exchange, chip 0:" in capsys.readouterr().out
