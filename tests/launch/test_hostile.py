"""Hostile input, issue 16: every input kind fuzzed (checkpoints, config.json, IDX and CIFAR files,
conformance case files, Parquet), and the data-loss cases as regression tests. Whatever comes in,
the answer is a SpikeGradError (one `spikegrad: error:` line at the CLI) or a valid result, never
another exception, and nothing of an earlier run is lost."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.errors import SpikeGradError
from launch.cli import main
from launch.data import DataError
from launch.data.cifar10 import read_cifar_bin
from launch.data.mnist import read_idx
from launch.run.config import config_from_json, make_config
from launch.run.rundir import RunDir, read_parquet_table
from launch.run.runs import load_run, train
from launch.tools.conformance import load_case, run_case

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
CASES = Path(__file__).resolve().parents[3] / "shared" / "conformance"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 1-epoch digits run: config.json, checkpoint.npz, metrics.parquet, ..."""
    out = tmp_path_factory.mktemp("base") / "run"
    train(make_config("digits", engine="local", epochs=1, limit_train=64, limit_test=32, out=str(out)),
          progress=False, log=lambda s: None)
    return out


def mutate(raw: bytes, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice", "random"]))
    if kind == "random":
        return data.draw(st.binary(max_size=2048))
    at = data.draw(st.integers(0, max(0, len(raw) - 1)))
    if kind == "flip":
        b = bytearray(raw)
        b[at] ^= data.draw(st.integers(1, 255))
        return bytes(b)
    if kind == "truncate":
        return raw[:at]
    return raw[:at] + data.draw(st.binary(min_size=1, max_size=64)) + raw[at:]


@FUZZ
@given(data=st.data())
def test_fuzzed_checkpoints_load_or_are_refused(run_dir, tmp_path, data):
    d = tmp_path / "r"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(run_dir, d)
    raw = (run_dir / "checkpoint.npz").read_bytes()
    (d / "checkpoint.npz").write_bytes(mutate(raw, data))
    try:
        driver = load_run(d)
    except SpikeGradError:
        return
    for W, b in driver.host_params().values():  # what loads is finite and shaped as the topology says
        assert np.isfinite(W).all() and np.isfinite(b).all() and b.shape == W.shape[:1]


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                max_size=3), max_leaves=8)


@FUZZ
@given(data=st.data())
def test_fuzzed_config_json_gives_a_config_or_an_error(run_dir, data):
    saved = json.loads((run_dir / "config.json").read_text())
    key = data.draw(st.sampled_from(sorted(saved)))
    saved[key] = data.draw(JSON)
    try:
        cfg = config_from_json(json.dumps(saved))
    except SpikeGradError:
        return
    assert getattr(cfg, key) == saved[key] or saved[key] != saved[key]  # NaN is refused by range checks


@FUZZ
@given(raw=st.binary(max_size=4096))
def test_random_bytes_as_config_json(raw):
    try:
        config_from_json(raw)
    except SpikeGradError:
        pass


def idx_bytes(dims: tuple[int, ...], payload: bytes) -> bytes:
    magic = 0x0803 if len(dims) == 3 else 0x0801
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@FUZZ
@given(data=st.data())
def test_fuzzed_idx_and_cifar_files(tmp_path, data):
    good_idx = idx_bytes((3, 4, 4), bytes(range(48)))
    good_cifar = bytes(3 * 3073)
    for name, good, reader in (("f.idx", good_idx, read_idx), ("f.bin", good_cifar, read_cifar_bin)):
        raw = mutate(good, data)
        if name == "f.idx" and data.draw(st.booleans()):
            raw = gzip.compress(raw)
        (tmp_path / name).write_bytes(raw)
        try:
            reader(tmp_path / name)
        except DataError:
            pass


def test_idx_headers_that_wrap_sparse_files_and_gzip_bombs(tmp_path):
    p = tmp_path / "wrap.idx"
    p.write_bytes(idx_bytes((2 ** 32 - 1, 2 ** 32 - 1, 2 ** 32 - 1), b""))  # the product wraps in int64
    with pytest.raises(DataError, match="truncated"):
        read_idx(p)
    sparse = tmp_path / "sparse.idx"
    with open(sparse, "wb") as f:
        f.truncate(100 << 30)  # 100 GiB of nothing: refused by its size, before a byte is read
    with pytest.raises(DataError, match="expected at most"):
        read_idx(sparse)
    bomb = tmp_path / "bomb.idx.gz"
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    with open(bomb, "wb") as f:
        f.write(z.compress(idx_bytes((10 ** 6, 28, 28), b"")))
        for _ in range(256):
            f.write(z.compress(bytes(1 << 20)))
        f.write(z.flush())
    assert bomb.stat().st_size < 1 << 20  # 256 MiB of zeros in well under 1 MiB
    with pytest.raises(DataError, match="once decompressed"):
        read_idx(bomb)


@FUZZ
@given(raw=st.binary(max_size=512))
def test_fuzzed_parquet(tmp_path, raw):
    (tmp_path / "m.parquet").write_bytes(b"PAR1" + raw + b"PAR1")
    try:
        read_parquet_table(tmp_path / "m.parquet")
    except SpikeGradError:
        pass


@pytest.mark.skipif(not (CASES / "dense.npz").is_file(), reason=f"conformance cases not found in {CASES}")
@FUZZ
@given(data=st.data())
def test_fuzzed_case_files(tmp_path, data):
    p = tmp_path / "case.npz"
    p.write_bytes(mutate((CASES / "dense.npz").read_bytes(), data))
    try:
        out = run_case(load_case(p), name="case")
    except SpikeGradError:
        return
    assert all(np.isfinite(v).all() for v in out.values())


@pytest.mark.parametrize("edit, message", [
    (lambda z: z.update(x=np.array(["a"] * 4)), "x must hold real numbers"),
    (lambda z: z.update(x=z["x"][:0]), "no samples"),
    (lambda z: z["x"].__setitem__((0, 0, 0, 0), np.nan), "x must be finite"),
    (lambda z: z.update(topology=np.asarray(7)), "topology must be one string"),
])
@pytest.mark.skipif(not (CASES / "dense.npz").is_file(), reason=f"conformance cases not found in {CASES}")
def test_case_files_with_strings_no_samples_or_nan_are_refused(tmp_path, edit, message):
    z = dict(np.load(CASES / "dense.npz", allow_pickle=False))
    edit(z)
    np.savez(tmp_path / "c.npz", **z)
    with pytest.raises(SpikeGradError, match=message):
        run_case(load_case(tmp_path / "c.npz"), name="c")


# ----------------------------------------------------------------------------- nothing lost

def test_a_second_writer_of_a_run_directory_is_refused_with_the_owners_pid(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    with RunDir(out).lock():  # as a first run holds it while it trains
        assert main(["train", "--engine", "local", "--epochs", "1", "--quiet", "--out", str(out)]) == 2
        assert f"in use by another spikegrad process (PID {os.getpid()})" in capsys.readouterr().err
        assert not (out / "config.json").exists()
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--quiet",
                 "--out", str(out)]) == 0  # released with its owner


def test_resume_refuses_a_run_that_is_still_being_written(run_dir, tmp_path, capsys):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    with RunDir(d).lock():
        assert main(["train", "--resume", str(d)]) == 2
    assert "in use by another spikegrad process" in capsys.readouterr().err


def test_a_planted_symlink_at_the_temporary_name_is_never_followed(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in ("checkpoint.npz.tmp", "config.json.tmp", "metrics.parquet.tmp", ".checkpoint.npz.tmp"):
        (out / name).symlink_to(victim)
    train(make_config("digits", engine="local", epochs=1, limit_train=64, out=str(out)), progress=False,
          log=lambda s: None)
    assert victim.read_text() == "keep me"
    assert (out / "checkpoint.npz").is_file() and not (out / "checkpoint.npz").is_symlink()


def test_resuming_a_negative_epoch_count_is_refused_and_keeps_the_rows(run_dir, tmp_path, capsys):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["epochs"] = 3
    (d / "config.json").write_text(json.dumps(cfg))
    z = dict(np.load(d / "checkpoint.npz", allow_pickle=False))
    z["epochs_done"] = np.asarray(-5)
    np.savez(d / "checkpoint.npz", **z)
    before = (d / "metrics.parquet").read_bytes()
    assert main(["train", "--resume", str(d)]) == 2
    assert "epochs_done expected a non-negative integer" in capsys.readouterr().err
    assert (d / "metrics.parquet").read_bytes() == before


@pytest.mark.parametrize("args, message", [
    (["--topology", "８x８-16C3p1-P2-64-10"], "expected ASCII"),
    (["--topology", "8x8-١٦C3-10"], "expected ASCII"),
    (["--topology", "8x8-" + "9" * 5000 + "-10"], "at most 9 digits"),
    (["--topology", "8x8-99999999C3-10"], "GiB"),
    (["--seed", "-1"], "expected an integer >= 0"),
    (["--address", "not a host:xx", "--engine", "chips"], "address expected"),
    (["--epochs", "1" + "0" * 30], "epochs must be at most 1,000,000"),  # would train for ever
])
def test_hostile_flags_end_in_one_error_line(tmp_path, capsys, args, message):
    assert main(["train", "--engine", "local", "--quiet", "--out", str(tmp_path / "r"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0], err


@pytest.mark.parametrize("edit, message", [
    (lambda c: c.update(lr=True), "lr must be float, got bool"),
    (lambda c: c.update(epochs=10 ** 30), "epochs must be at most 1,000,000"),
    (lambda c: c.update(topology=5), "topology must be str"),
    (lambda c: c.update(seed=-1), "seed must be an integer in"),
    (lambda c: c.update(dataset=["x"]), "dataset must be str"),
])
def test_edited_config_json_is_refused_on_resume(run_dir, tmp_path, capsys, edit, message):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["epochs"] = 3
    edit(cfg)
    (d / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(d)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("raw, message", [(b"\xff\xfe{}", "not UTF-8"), (b'{"a":' * 100000, "nested too deeply"),
                                          (b'{"epochs": 3, "epochs": 2}', "gives the key 'epochs' twice")])
def test_unreadable_config_json(run_dir, tmp_path, capsys, raw, message):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    (d / "config.json").write_bytes(raw)
    assert main(["eval", "--checkpoint", str(d)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda z: z["b1"].__setitem__(0, np.nan), "b1 expected finite values"),
    (lambda z: z.update(b0=z["b0"].astype(np.complex64)), "expected numbers, got dtype complex64"),
    (lambda z: z.update(b0=np.zeros(3, np.float32)), "b0 has shape (3,)"),
    (lambda z: z.update(W0=z["W0"].astype(np.int8)), "W0 expected float32 or float64"),
])
def test_checkpoints_that_would_evaluate_to_a_plausible_accuracy_are_refused(run_dir, tmp_path, capsys, edit,
                                                                             message):
    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    z = dict(np.load(d / "checkpoint.npz", allow_pickle=False))
    edit(z)
    np.savez(d / "checkpoint.npz", **z)
    assert main(["eval", "--checkpoint", str(d)]) == 2
    assert message in capsys.readouterr().err


def test_a_checkpoint_member_claiming_a_huge_array_is_refused_before_allocation(run_dir, tmp_path, capsys):
    import io
    import zipfile

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    member = io.BytesIO()
    np.lib.format.write_array_header_1_0(member, {"descr": "<f4", "fortran_order": False, "shape": (10 ** 12,)})
    member.write(bytes(64))  # 4 TB claimed, 64 bytes held
    with zipfile.ZipFile(run_dir / "checkpoint.npz") as src, zipfile.ZipFile(d / "checkpoint.npz", "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, member.getvalue() if info.filename == "W0.npy" else src.read(info))
    assert main(["eval", "--checkpoint", str(d)]) == 2
    assert "W0.npy claims shape (1000000000000,)" in capsys.readouterr().err


def test_a_relative_data_dir_is_stored_absolute_so_eval_works_from_elsewhere(tmp_path, monkeypatch, capsys):
    from .test_image_folder import write_folder

    monkeypatch.setenv("SPIKEGRAD_CACHE", str(tmp_path / "cache"))
    write_folder(tmp_path / "data", train=2, test=1)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--dataset", "cifar10", "--data-dir", "data", "--engine", "local", "--epochs", "1",
                 "--topology", "32x32x3-4C3-P2-10", "--quiet", "--out", "run"]) == 0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"] == str(tmp_path / "data")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--json"]) == 0


def test_help_lists_the_per_dataset_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "cifar10: --topology cifar10" in out and "--shift 4, --flip" in out


def test_under_a_ray_job_the_run_directory_must_be_absolute(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray's job manager sets for an entrypoint
    monkeypatch.chdir(tmp_path)
    for out in ([], ["--out", "runs/x"]):
        assert main(["train", "--engine", "local", "--epochs", "1", "--quiet", *out]) == 2
        assert "under 'ray job submit' the run directory must be an absolute path" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    assert main(["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--quiet",
                 "--out", str(tmp_path / "abs")]) == 0


@pytest.mark.parametrize("env, args, message", [
    ({}, ["--address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1 within 15 s"),
    ({"RAY_AUTH_MODE": "disabled"}, [], "RAY_AUTH_MODE=disabled would start the private Ray instance without"),
])
def test_unreachable_clusters_and_an_open_private_instance_are_refused(tmp_path, env, args, message):
    """In a fresh process (a Ray instance of this test session would be joined instead)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "launch.cli", "train", "--epochs", "1", "--quiet",
                           "--out", str(tmp_path / "r"), *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("table, edit, message", [
    ("metrics", lambda r: {k: v for k, v in r.items() if k != "images"}, "missing images"),
    ("metrics", lambda r: {**r, "images": "many"}, "column images expected a number"),
    ("metrics", lambda r: {**r, "epoch": 1.5}, "column epoch expected a number"),
    ("metrics", lambda r: {**r, "images": 0}, "expected a positive image count"),
    ("layers", lambda r: {**r, "kind": 3}, "column kind expected text"),
])
def test_edited_run_tables_are_refused_by_traffic_and_report(run_dir, tmp_path, capsys, table, edit, message):
    """Parquet files that read but do not hold what a run writes: one error line from traffic and report."""
    from launch.run.rundir import write_parquet

    d = tmp_path / "r"
    shutil.copytree(run_dir, d)
    run = RunDir(d)
    write_parquet(run.table_file(table), [edit(r) for r in run.read_table(table)])
    for args in (["traffic", str(d)], ["report", str(d), "--out", str(tmp_path / "rep")]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("spikegrad: error:") and message in err[0], err


def test_mapping_a_network_onto_too_many_chips_is_refused_at_once(capsys):
    assert main(["map", "--topology", "28x28-99999999-1", "--chip-neurons", "1", "--chip-synapses", "100000000"]) == 2
    assert "needs at least 100,000,000 custom chips" in capsys.readouterr().err
    assert main(["map", "--topology", "28x28-999999999-10", "--chip-neurons", "1", "--chip-synapses", "100000"]) == 2
    assert "a neuron's fan-in of 999,999,999 synapses exceeds a chip's 100,000" in capsys.readouterr().err
