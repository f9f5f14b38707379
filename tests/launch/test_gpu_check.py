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
    cifar = result["cifar10"]
    assert cifar["epochs"] >= 1 and len(cifar["curve"]) == cifar["epochs"]
    assert (out / "cifar10-run" / "metrics.parquet").is_file()


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
