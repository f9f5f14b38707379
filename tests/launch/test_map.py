"""`spikegrad map` and training on a capacity: the table, the refusals, and chips mapped by capacity
training the same weights as one process."""

import json
import re

import numpy as np
import pytest

from cluster.errors import SpikeGradError
from launch.cli import main
from launch.run.config import check_machine, make_config
from launch.run.runs import train


def test_map_prints_the_table(capsys, tmp_path):
    assert main(["map", "--topology", "mnist", "--chip", "loihi2"]) == 0
    out = capsys.readouterr().out
    assert "1 chip(s), 14,310 neurons, 210,375 weights of their own and 0 copies; no layer split" in out
    assert "Intel Loihi 2" in out and "[REG]" in out and "binding limit (*): cores" in out  # limits cite sources
    assert main(["map", "--topology", "mnist", "--chip-neurons", "2000", "--chip-synapses", "100000", "--json",
                 "--figure", str(tmp_path / "fill.png")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert len(d["chips"]) == 12 and d["split_layers"] == [0, 1, 2, 3, 4]
    assert sum(c["neurons"] for c in d["chips"]) == 14310
    assert all(c["synapses"] + c["copy_synapses"] <= 100_000 for c in d["chips"])
    assert (tmp_path / "fill.png").stat().st_size > 10_000
    assert main(["train", "--chip", "truenorth", "--epochs", "1"]) == 2
    assert "truenorth cannot learn on chip" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    ([], "map needs a chip"),
    (["--chip-neurons", "5"], "both a neuron and a synapse capacity"),
    (["--chip-neurons", "100", "--chip-synapses", "1000000"], "one channel's map of 576 neurons exceeds"),
    (["--chip", "nope"], "invalid choice"),
])
def test_map_refuses_in_one_line(args, message, capsys):
    assert main(["map", "--topology", "mnist", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0]


def test_a_capacity_gives_the_chip_groups_or_a_clear_refusal():
    cfg = make_config("digits", chip_neurons=1100, chip_synapses=20000)
    assert cfg.chip_layout() == ([(0, 0), (1, 3)], None)
    groups, layout = make_config("digits", chip_neurons=600, chip_synapses=20000).chip_layout()
    assert layout == (((0, 0, 9),), ((0, 9, 16),), ((1, 0, 16), (2, 0, 64), (3, 0, 10)))
    assert groups == [(0, 0), (0, 0), (1, 3)]
    # a configuration is valid by itself; whether its chips can be laid out is checked when a run starts
    floats = make_config("digits", chip_neurons=600, chip_synapses=20000, gradient="float")
    with pytest.raises(SpikeGradError, match=r"layers 0 \(16C3p1\) are split .* need --gradient spike"):
        check_machine(floats)
    with pytest.raises(SpikeGradError, match=r"layers 0 \(16C3p1\) are split .* need --gradient spike"):
        train(floats, progress=False, log=lambda s: None)
    with pytest.raises(SpikeGradError, match="needs --engine chips"):
        make_config("digits", engine="local", chip="loihi")
    with pytest.raises(SpikeGradError, match="not both"):
        make_config("digits", chips="0-1,2-3", chip="loihi")


@pytest.mark.slow
@pytest.mark.parametrize("capacity, described", [
    (dict(chip_neurons=1100, chip_synapses=20000), "2 chips (0, 1-3)"),
    # the conv, pooling and dense layers split over 10 chips (P2's copies of the dense layer's columns
    # included): slices on Ray actors, only spikes between them
    (dict(chip_neurons=250, chip_synapses=8000), "10 chips holding slices of layers"),
])
def test_chips_mapped_by_capacity_train_the_weights_of_one_process(ray_session, tmp_path, capsys, capacity,
                                                                   described):
    """Chips mapped by a capacity, whole layers or slices of them: the checkpoint of one process, bit
    for bit; the traffic tables show the links, error spikes included."""
    kw = dict(epochs=1, limit_train=128, limit_test=64, batch_size=32)
    local = train(make_config("digits", engine="local", out=str(tmp_path / "l"), **kw), progress=False,
                  log=lambda s: None)
    logs: list[str] = []
    chips = train(make_config("digits", **capacity, out=str(tmp_path / "c"), **kw), progress=False,
                  log=logs.append)
    assert any(described in line for line in logs), logs
    a, b = (np.load(tmp_path / d / "checkpoint.npz") for d in ("l", "c"))
    for k in a.files:
        if k.startswith(("W", "b", "vW", "vb")):
            assert np.array_equal(a[k], b[k]), k
    assert chips["test_accuracy"] == local["test_accuracy"]
    capsys.readouterr()
    # a run trained on a capacity is evaluated and verified afterwards like any other
    assert main(["eval", "--checkpoint", str(tmp_path / "c"), "--limit-test", "64", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == local["test_accuracy"]
    assert main(["verify", "--checkpoint", str(tmp_path / "c"), "--samples", "8", "--workers", "1"]) == 0
    capsys.readouterr()
    assert main(["traffic", str(tmp_path / "c")]) == 0
    assert re.search(r"\d+->\d+ +error spikes", capsys.readouterr().out)
