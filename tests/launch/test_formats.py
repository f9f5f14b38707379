"""Run directories of every earlier format (tests/fixtures/runs, made by the commits that wrote them)
read by every command with the same results as then; newer formats refused; new files stamped."""

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from launch.cli import main
from launch.run import formats
from launch.run.rundir import RunDir

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
RUNS = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


@pytest.fixture
def old(tmp_path, request):
    d = tmp_path / request.param
    shutil.copytree(FIXTURES / request.param, d)
    return d


def test_the_fixtures_are_of_the_formats_they_claim():
    assert RUNS == ["format0-chips", "format0-local", "format1-chips", "format1-local"]
    for name in RUNS:
        rows, meta, columns = (lambda t: (t.to_pylist(), t.schema.metadata, t.column_names))(
            pq.read_table(FIXTURES / name / "layers.parquet"))
        assert formats.table_version(meta, columns, name) == int(name[6])
        assert "format" not in json.loads((FIXTURES / name / "config.json").read_text())


@pytest.mark.parametrize("old", RUNS, indirect=True)
def test_every_command_reads_an_old_run(old, tmp_path, capsys):
    summary = json.loads((old / "summary.json").read_text())
    assert main(["eval", "--checkpoint", str(old), "--limit-test", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == summary["test_accuracy"]  # as then
    assert main(["verify", "--checkpoint", str(old), "--samples", "4", "--workers", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["exact_fraction"] == 1.0
    assert main(["report", str(old), "--out", str(tmp_path / "rep")]) == 0
    capsys.readouterr()
    assert main(["traffic", str(old), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    layers = RunDir(old).read_table("layers")
    assert all("error_spikes_delivered" in r and "input_macs" in r for r in layers)  # migrated on reading
    if old.name.startswith("format0"):
        assert any("format 0" in n for n in out["system"]["notes"])
    assert main(["forecast", str(old)]) == 0
    pytest.importorskip("nir", reason="the [nir] extra is not installed")
    assert main(["export", str(old), "--to", str(tmp_path / "m.nir")]) == 0
    if old.name.endswith("chips"):
        assert main(["plan", str(old), "--nodes", "2"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("old", ["format0-local", "format1-local"], indirect=True)
def test_an_old_run_resumes_and_is_written_in_todays_format(old, capsys):
    cfg = json.loads((old / "config.json").read_text())
    cfg["epochs"] = 3  # one more epoch than it ran
    (old / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(old), "--quiet"]) == 0
    run = RunDir(old)
    assert int(run.read_checkpoint()["epochs_done"]) == 3
    assert "format" not in json.loads((old / "config.json").read_text())  # the run's config, as it was
    assert int(np.load(old / "checkpoint.npz")["format"]) == formats.FORMAT
    assert pq.read_table(old / "metrics.parquet").schema.metadata[formats.PARQUET_KEY] == b"2"
    assert [r["epoch"] for r in run.read_table("metrics")] == [1, 2, 3]
    layers = pq.read_table(old / "layers.parquet")  # the old epochs' rows migrated, then written in format 2
    assert layers.schema.metadata[formats.PARQUET_KEY] == b"2" and "error_spikes_delivered" in layers.column_names


@pytest.mark.parametrize("old", ["format1-local"], indirect=True)
def test_a_newer_format_is_refused(old, capsys):
    cfg = json.loads((old / "config.json").read_text())
    (old / "config.json").write_text(json.dumps({**cfg, "format": formats.FORMAT + 1}))
    assert main(["eval", "--checkpoint", str(old)]) == 2
    assert f"config.json is of format {formats.FORMAT + 1}, written by a newer spikegrad" in capsys.readouterr().err
    (old / "config.json").write_text(json.dumps({**cfg, "format": "2"}))
    assert main(["eval", "--checkpoint", str(old)]) == 2
    assert "format expected an integer >= 0" in capsys.readouterr().err
    (old / "config.json").write_text(json.dumps(cfg))
    arrays = dict(np.load(old / "checkpoint.npz"))
    np.savez(old / "checkpoint.npz", **arrays, format=np.asarray(9))
    assert main(["eval", "--checkpoint", str(old)]) == 2
    assert "is of format 9, written by a newer spikegrad" in capsys.readouterr().err
    np.savez(old / "checkpoint.npz", **arrays)
    table = pq.read_table(old / "layers.parquet")
    pq.write_table(table.replace_schema_metadata({formats.PARQUET_KEY: b"7"}), old / "layers.parquet")
    assert main(["traffic", str(old)]) == 2
    assert "is of format 7" in capsys.readouterr().err
    pq.write_table(table.replace_schema_metadata({formats.PARQUET_KEY: b"x"}), old / "layers.parquet")
    assert main(["report", str(old), "--out", str(old / "rep")]) == 2
    assert "format expected an integer" in capsys.readouterr().err
    assert isinstance(table, pa.Table)
