"""Run directories on shared storage (issue 16): `--out s3://...` against a real S3-compatible
server on loopback (moto's server mode): train, resume, eval, report and traffic read and write the
run through pyarrow's filesystem, and a resumed remote run ends with the weights of a local one."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from launch.cli import main

pytest.importorskip("moto", reason="moto (the S3 test server) comes with the test extra")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on loopback; yields a function bucket-path -> URI."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    mp = pytest.MonkeyPatch()
    for k, v in (("AWS_ACCESS_KEY_ID", "test"), ("AWS_SECRET_ACCESS_KEY", "test"), ("AWS_DEFAULT_REGION", "us-east-1")):
        mp.setenv(k, v)
    yield lambda path: (f"s3://spikegrad-test/{path}?endpoint_override=127.0.0.1:{port}&scheme=http"
                        f"&region=us-east-1&allow_bucket_creation=true")
    mp.undo()
    proc.terminate()
    proc.wait(timeout=30)


def remote_files(uri: str) -> dict[str, bytes]:
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    out = {}
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                out[info.path[len(path) + 1:]] = f.read()
    return out


def test_train_resume_eval_report_through_s3(s3, tmp_path, capsys):
    args = ["--engine", "local", "--limit-train", "320", "--limit-test", "64", "--schedule", "constant",
            "--quiet", "--json"]
    uri = s3("runs/a")
    assert main(["train", *args, "--epochs", "2", "--out", uri]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["run_dir"] == uri
    files = remote_files(uri)
    assert {"config.json", "checkpoint.npz", "metrics.parquet", "layers.parquet", "summary.json"} <= set(files)
    assert main(["train", *args, "--epochs", "2", "--out", uri]) == 2  # never over an existing run
    assert "already holds a run" in capsys.readouterr().err

    # Two more epochs wanted: the remote run resumes and ends as a local 3-epoch run does.
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(uri)
    cfg = json.loads(files["config.json"])
    cfg["epochs"] = 3
    with fs.open_output_stream(f"{path}/config.json") as f:
        f.write(json.dumps(cfg).encode())
    assert main(["train", "--resume", uri, "--quiet"]) == 0
    local = tmp_path / "local"
    assert main(["train", *args, "--epochs", "3", "--out", str(local)]) == 0
    capsys.readouterr()
    ckpt = tmp_path / "remote.npz"
    ckpt.write_bytes(remote_files(uri)["checkpoint.npz"])
    with np.load(ckpt) as a, np.load(local / "checkpoint.npz") as b:
        for k in a.files:
            if k.startswith(("W", "b", "vW", "vb")):
                assert np.array_equal(a[k], b[k]), k
    import pyarrow.parquet as pq

    metrics = tmp_path / "m.parquet"
    metrics.write_bytes(remote_files(uri)["metrics.parquet"])
    assert [r["epoch"] for r in pq.read_table(metrics).to_pylist()] == [1, 2, 3]

    assert main(["eval", "--checkpoint", uri, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["epochs_done"] == 3
    assert main(["report", uri, "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "summary.md").is_file()
    shutil.rmtree(tmp_path / "rep")


def test_unreachable_or_malformed_storage_is_one_error_line(s3, tmp_path, capsys):
    assert main(["train", "--engine", "local", "--epochs", "1", "--out", "nosuch://bucket/run"]) == 2
    assert "expected a filesystem URI pyarrow can open" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", s3("runs/none")]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert main(["train", "--resume", s3("runs/none")]) == 2
    assert "config.json is missing" in capsys.readouterr().err


def test_one_writer_per_remote_run_across_processes(s3, tmp_path, capsys, monkeypatch):
    """The remote lease (RemoteRun.claim): a run directory on shared storage that another process
    holds is refused, naming the holder; a lease left by a killed run expires and is taken over; a
    run that ends removes its lease."""
    import pyarrow.fs as pafs

    from launch.run.rundir import RemoteRun, RunDir

    monkeypatch.setattr(RemoteRun, "LEASE_SETTLE_S", 0.2)
    args = ["train", "--engine", "local", "--epochs", "1", "--limit-train", "64", "--limit-test", "16", "--quiet"]
    uri = s3("runs/leased")
    holder = RunDir.at(uri)
    holder.create()
    with holder.lock():  # another writer (its own token), as a run on another machine would be
        assert main([*args, "--out", uri]) == 2
        err = capsys.readouterr().err
        assert "is in use by another spikegrad process" in err and f"PID {__import__('os').getpid()}" in err
        assert ".lock.json" in remote_files(uri)
    assert ".lock.json" not in remote_files(uri)  # released

    fs, path = pafs.FileSystem.from_uri(uri)
    with fs.open_output_stream(f"{path}/.lock.json") as f:  # a lease whose run was killed long ago
        f.write(json.dumps({"owner": "gone-host PID 1", "token": "x", "renewed": time.time() - 3600}).encode())
    assert main([*args, "--out", uri]) == 0, capsys.readouterr().err
    assert ".lock.json" not in remote_files(uri) and "summary.json" in remote_files(uri)

    with fs.open_output_stream(f"{path}/.lock.json") as f:  # a live one (just renewed) is respected by --resume
        f.write(json.dumps({"owner": "other-host PID 7", "token": "y", "renewed": time.time()}).encode())
    assert main(["train", "--resume", uri]) == 2
    assert "other-host PID 7" in capsys.readouterr().err
    with fs.open_output_stream(f"{path}/.lock.json") as f:  # damaged: refused with what to do
        f.write(b"\x00not json")
    assert main(["train", "--resume", uri]) == 2
    assert "unreadable lease .lock.json" in capsys.readouterr().err
