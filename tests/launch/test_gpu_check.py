"""The prepared GPU script's smoke mode: every stage on the CPU in seconds, so that the one run
on a lent GPU is not the first run of the script."""
import json

import pytest

from launch.tools import gpu_check

from .test_image_folder import write_folder


@pytest.mark.slow
@pytest.mark.data
def test_smoke_mode_runs_every_stage(tmp_path, monkeypatch, shared_dir):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "cifar"
    write_folder(data, train=4, test=2)
    out = tmp_path / "out"
    rc = gpu_check.main(["--smoke", "--cases", str(shared_dir / "conformance"), "--cifar-dir", str(data),
                         "--out", str(out)])
    result = json.loads((out / "gpu_check.json").read_text())
    assert rc == 0, gpu_check.summary(result)
    assert result["tests"]["returncode"] == 0 and "passed" in result["tests"]["summary"]
    assert len(result["conformance"]) == 5 and all(r["exact"] for r in result["conformance"])
    assert [r["wire"] for r in result["chips"]] == ["counts", "events"] and all(r["exact"] for r in result["chips"])
    assert result["timing"][0]["eager_images_per_s"] > 0
    assert len(result["chips_timing"]) == 2 and all(r["chips_images_per_s"] > 0 for r in result["chips_timing"])
    # Ray is in the test environment: the chips also ran as Ray actors (--engine chips)
    assert [r["preset"] for r in result["ray_chips"]] == [r["preset"] for r in result["chips_timing"]]
    assert all(r["ray_chips_images_per_s"] > 0 and r["chip_backend"] == "numpy" for r in result["ray_chips"])
    cifar = result["cifar10"]
    assert cifar["epochs"] >= 1 and len(cifar["curve"]) == cifar["epochs"] == cifar["epochs_done"]
    assert not cifar["stopped_at_deadline"] and cifar["images_per_second"] > 0
    assert not cifar["graph_steps"] and not cifar["probe_graph"]  # NumPy: no CUDA graph, and it says so
    assert "backend numpy" in cifar["engine"]
    # what comes back from the device: the kept files alone, no checkpoint, within its 8 files
    kept = out / "cifar10-run"
    assert sorted(p.name for p in kept.iterdir()) == sorted(cifar["kept"])
    assert "checkpoint.npz" not in cifar["kept"] and (kept / "accuracy.png").stat().st_size > 0
    assert len(result["out_files"]) + 1 <= gpu_check.OUT_FILES_BACK  # + the command's log
    assert (tmp_path / "out").exists() and not any(out.rglob("checkpoint*"))
    # `spikegrad report` works on the kept files alone (a CPU machine, later)
    from launch.tools.report import report
    drawn = report([str(kept)], str(tmp_path / "report"))
    assert "accuracy.png" in drawn["files"] and "fig2_layers_cifar10-run.png" in drawn["files"]


def test_a_failing_stage_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "chip_parity", lambda backend, smoke: 1 / 0)
    out = tmp_path / "out"
    rc = gpu_check.main(["--smoke", "--cases", str(tmp_path), "--cifar-dir", str(tmp_path / "none"),
                         "--out", str(out), "--stages", "chips", "conformance", "cifar10"])
    result = json.loads((out / "gpu_check.json").read_text())
    assert rc == 1
    assert result["chips"]["error"].startswith("ZeroDivisionError")
    assert result["conformance"] == []
    assert "expected --data-dir" in result["cifar10"]["error"] or "DataError" in result["cifar10"]["error"]
    with pytest.raises(KeyError):
        result["timing"]


def test_chips_timing_in_smoke_mode_times_both_sides_and_says_where_the_chips_time_goes(tmp_path):
    import actors.chip
    import actors.wire

    before = (actors.wire.encode, actors.wire.decode, actors.chip.to_host, actors.chip.to_device)
    out = tmp_path / "out"
    rc = gpu_check.main(["--smoke", "--cases", str(tmp_path), "--cifar-dir", str(tmp_path / "none"),
                         "--out", str(out), "--stages", "chips_timing"])
    result = json.loads((out / "gpu_check.json").read_text())
    assert rc == 0, gpu_check.summary(result)
    rows = result["chips_timing"]
    assert [r["preset"] for r in rows] == ["8x8-4C3p1-P2-16-10", gpu_check.SMOKE_RGB]
    for r in rows:
        n = r["chips"]
        assert n == len(r["per_chip"]) == len(r["layers_per_chip"]) > 1  # one layer per chip
        assert r["chips_images_per_s"] > 0 and r["local_eager_images_per_s"] > 0
        assert "local_graph_images_per_s" not in r  # no CUDA graph on NumPy
        t = r["total"]
        # every link carries one message forward and one back per batch: the Arrow wire really ran
        assert t["messages"] == 2 * (n - 1)
        assert t["encode"] > 0 and t["decode"] > 0 and r["wire_bytes_per_batch"] > 0
        assert "outside_calls" not in t
        for c in r["per_chip"]:
            assert c["seconds"] > 0
            assert c["compute"] == pytest.approx(c["seconds"] - c["d2h"] - c["h2d"] - c["encode"] - c["decode"])
            assert c["seconds"] >= c["encode"] + c["decode"]
        assert t["seconds"] == pytest.approx(sum(c["seconds"] for c in r["per_chip"]))
    # the meter put the real functions back
    assert (actors.wire.encode, actors.wire.decode, actors.chip.to_host, actors.chip.to_device) == before
    assert "chips 8x8-4C3p1-" in gpu_check.summary(result)


def test_deadline_interrupts_at_its_time_and_disarms():
    import signal
    import time

    old = signal.getsignal(signal.SIGALRM)
    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt), gpu_check.Deadline(0.05) as stop:
        while time.perf_counter() - t0 < 5:
            time.sleep(0.01)
    assert stop.hit and time.perf_counter() - t0 < 1
    assert signal.getsignal(signal.SIGALRM) is old
    with gpu_check.Deadline(None) as idle:
        time.sleep(0.02)
    assert not idle.hit


def test_ray_chips_is_skipped_and_says_why_where_ray_is_missing(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as on the device
    out = tmp_path / "out"
    rc = gpu_check.main(["--smoke", "--cases", str(tmp_path), "--cifar-dir", str(tmp_path / "none"),
                         "--out", str(out), "--stages", "ray_chips"])
    result = json.loads((out / "gpu_check.json").read_text())
    assert rc == 0 and "not importable" in result["ray_chips"]["skipped"]
    assert "ray_chips: skipped" in gpu_check.summary(result)


def test_a_cifar10_run_past_the_wall_limit_is_stopped_kept_as_far_as_it_got_and_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "cifar"
    write_folder(data, train=4, test=2)
    out = tmp_path / "out"
    # --wall-limit 20 leaves no time at all (20 s are kept for writing): the deadline fires at once
    rc = gpu_check.main(["--smoke", "--cases", str(tmp_path), "--cifar-dir", str(data), "--out", str(out),
                         "--stages", "cifar10", "--wall-limit", "20"])
    result = json.loads((out / "gpu_check.json").read_text())
    cifar = result["cifar10"]
    assert rc == 1 and cifar["stopped_at_deadline"] and cifar["epochs_done"] == 0 and cifar["curve"] == []
    assert result["out_files"] == ["gpu_check.json"]
    assert "STOPPED AT THE DEADLINE" in gpu_check.summary(result)
