"""spikegrad verify on a real (digits) checkpoint: the spiking network agrees with the ANN exactly."""

import json

import pytest

from launch.cli import main
from launch.run.config import make_config
from launch.run.runs import train


@pytest.mark.slow
def test_verify_digits_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    train(make_config("digits", engine="local", epochs=2, limit_train=300, out=str(run)), progress=False,
          log=lambda s: None)
    assert main(["verify", "--checkpoint", str(run), "--samples", "40", "--json", "--quiet"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert res["samples"] == 40
    assert res["exact_fraction"] == 1.0
    assert 0 < res["max_abs_sde_no_residual"] < 1
    assert res["spikes"] >= res["spikes_min"] > 0
    # the forward pass alone: the same S and spike counts, nothing of the backward pass
    assert main(["verify", "--checkpoint", str(run), "--samples", "40", "--json", "--quiet", "--forward-only"]) == 0
    fwd = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert fwd["backward"] is False and res["backward"] is True and fwd["exact_fraction"] == 1.0
    assert (fwd["spikes"], fwd["spikes_min"]) == (res["spikes"], res["spikes_min"])
    assert fwd["max_abs_sde_no_residual"] == res["max_abs_sde_no_residual"]
    for order in ("layered", "random"):
        assert main(["verify", "--checkpoint", str(run), "--samples", "20", "--json", "--quiet",
                     "--order", order, "--seed", "3"]) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert res["exact_fraction"] == 1.0 and res["order"] == order
        assert res["spikes"] >= res["spikes_min"] > 0


def test_bench_events_counts_and_agrees(capsys):
    """bench events on synthetic batches: events counted, ANN faster, increments equal to the ANN's."""
    assert main(["bench", "events", "--topology", "8x8-3C3-P2-10", "--samples", "12", "--batch-size", "6",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["samples"] == 12 and res["increments_exact"] is True
    assert res["synaptic_events"] > 0 and res["synaptic_events_per_second"] > 0
    assert res["waves"] >= 2


@pytest.mark.slow
def test_verify_in_worker_processes_equals_one_process(tmp_path):
    """Chunks simulated by two processes add up to the same report as one process, every count."""
    from launch.tools.verify import verify

    run = tmp_path / "run"
    train(make_config("digits", engine="local", epochs=1, limit_train=200, out=str(run)), progress=False,
          log=lambda s: None)
    one, two = (verify(str(run), samples=30, chunk=8, order="random", seed=5, progress=False, workers=w)
                for w in (1, 2))
    assert (one["processes"], two["processes"]) == (1, 2)
    for res in (one, two):
        for k in ("seconds_ann", "seconds_snn", "processes"):
            res.pop(k)
    # as JSON text: the rows hold NaN where a column does not apply (a pooling layer's ω), and NaN != NaN
    assert json.dumps(one) == json.dumps(two)
    assert one["exact_fraction"] == 1.0 and one["samples"] == 30 and one["spikes"] > 0
