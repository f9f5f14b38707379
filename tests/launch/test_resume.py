"""Checkpoints every N batches and ``spikegrad train --resume``: a run killed mid-epoch (SIGKILL,
a real process) and resumed ends with exactly the weights of an uninterrupted run."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

from actors.transport import SHM_DIR, pipeline_prefix, remove_parcels, shm_usable
from launch.cli import main

from ..procs import ppid

# --shift 1 --flip: the augmentation's random draws are part of what a resume must replay
ARGS = ["--epochs", "4", "--limit-train", "640", "--limit-test", "64", "--batch-size", "32", "--seed", "3",
        "--shift", "1", "--flip", "--checkpoint-every", "3", "--quiet"]


def arrays(run):
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def kill_mid_run(run, engine, min_epochs=1):
    """Start a real training process; SIGKILL it once a mid-epoch checkpoint of a later epoch is on disk."""
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "train", *ARGS, "--engine", engine,
                             "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                a = arrays(run)
                if int(a["epochs_done"]) >= min_epochs and int(a["position"]) > 0:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return int(a["epochs_done"]), int(a["position"])
            except (OSError, ValueError, KeyError, EOFError):
                pass
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    pytest.fail(f"the run ended (rc {proc.returncode}) before a mid-epoch checkpoint could be caught: "
                f"{proc.stderr.read().decode()[-2000:]}")


def test_killed_and_resumed_local_run_equals_uninterrupted(tmp_path, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", *ARGS, "--engine", "local", "--out", str(full), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    epoch, position = kill_mid_run(cut, "local")
    assert not (cut / "summary.json").exists()
    assert main(["train", "--resume", str(cut), "--json", "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    a, b = arrays(full), arrays(cut)
    for k in a:
        if k.startswith(("W", "b", "vW", "vb")):
            assert np.array_equal(a[k], b[k]), f"{k} differs after resuming at epoch {epoch + 1}, batch {position}"
    assert got["test_accuracy"] == ref["test_accuracy"] and got["train_accuracy"] == ref["train_accuracy"]
    import pyarrow.parquet as pq

    assert [r["epoch"] for r in pq.read_table(cut / "metrics.parquet").to_pylist()] == [1, 2, 3, 4]
    la = pq.read_table(full / "layers.parquet").to_pylist()
    lb = pq.read_table(cut / "layers.parquet").to_pylist()
    assert [r["spikes"] for r in la] == [r["spikes"] for r in lb]  # banked counters kept across the kill


def test_resume_refuses(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "config.json is missing" in capsys.readouterr().err
    run = tmp_path / "r"
    assert main(["train", "--epochs", "1", "--limit-train", "64", "--limit-test", "16", "--engine", "local",
                 "--quiet", "--out", str(run)]) == 0
    assert main(["train", "--resume", str(run)]) == 2
    assert "all 1 epochs are done" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--epochs", "3"]) == 2
    assert "got also --epochs" in capsys.readouterr().err


def test_divergence_stops_cleanly_with_the_checkpoint_intact(tmp_path, capsys):
    run = tmp_path / "nan"
    rc = main(["train", "--engine", "local", "--epochs", "2", "--limit-train", "256", "--limit-test", "32",
               "--lr", "1e38", "--checkpoint-every", "2", "--quiet", "--out", str(run)])
    err = capsys.readouterr().err
    assert rc == 2 and "training diverged" in err, err
    a = arrays(run)  # the last checkpoint written before the NaN is readable and finite
    assert all(np.isfinite(a[k]).all() for k in a if k.startswith("W"))


def _epochs_done(run) -> int:
    try:
        return int(arrays(run)["epochs_done"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # not written yet
        return 0


@pytest.mark.parametrize("how", ["sigterm", "sigterm-group", "ctrl-c-group"])
def test_sigterm_ends_with_the_resume_command_and_the_run_resumes(tmp_path, how):
    """SIGTERM (a scheduler stopping a job) ends a run with one line naming the --resume command
    and exit status 143, its last checkpoint kept. Sent to the whole process
    group (as ``timeout`` or a batch scheduler does; Ctrl-C in a terminal: exit 130), the engine's
    worker processes get it too and end without a word."""
    run = tmp_path / "t"
    group = how.endswith("group")
    # Ctrl-C as a terminal sends it: SIGINT not ignored (a test run started in the background by a
    # non-interactive shell inherits it ignored, and so would the run).
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "train", "--engine", "local", "--epochs", "100000",
                             "--quiet", "--out", str(run)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=group, preexec_fn=_sigint_default)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _epochs_done(run):  # the first epoch's checkpoint is on disk
        time.sleep(0.05)
    sig = signal.SIGINT if how.startswith("ctrl-c") else signal.SIGTERM
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    err = proc.communicate(timeout=60)[1].decode().strip().splitlines()
    word = "interrupted" if sig == signal.SIGINT else "terminated"
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), err[-5:]
    assert err[-1] == f"spikegrad: {word}; the last checkpoint of {run} is kept: continue with " \
                      f"spikegrad train --resume {run}"
    assert "Traceback" not in "\n".join(err)
    assert int(arrays(run)["epochs_done"]) >= 1


def _sigint_default() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_a_watched_run_passes_ctrl_c_to_its_child(tmp_path):
    """Ctrl-C (SIGINT to the process group) reaches the watched child, which stops with the --resume
    line and 130; the parent adds nothing (it must not leave the signal ignored in the child)."""
    run = tmp_path / "c"
    code = "import sys; from launch.run.supervise import supervise; sys.exit(supervise(sys.argv[1:]))"
    parent = subprocess.Popen([sys.executable, "-c", code, "train", "--engine", "local", "--epochs", "100000",
                               "--quiet", "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True, preexec_fn=_sigint_default)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _epochs_done(run):
        time.sleep(0.05)
    os.killpg(parent.pid, signal.SIGINT)
    try:
        err = parent.communicate(timeout=60)[1].decode().strip().splitlines()
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 130, err[-5:]
    assert err[-1] == (f"spikegrad: interrupted; the last checkpoint of {run} is kept: continue with "
                       f"spikegrad train --resume {run}")


@pytest.mark.slow
def test_a_watched_run_killed_without_a_word_ends_with_the_resume_command(tmp_path):
    """launch.run.supervise without Ray: the parent of a run that is ended abruptly (SIGKILL, as Ray's
    C++ side ends a driver whose cluster is lost) prints one line naming --resume and exits 3; a child
    that ends normally is passed through."""
    run = tmp_path / "w"
    code = ("import sys; from launch.run.supervise import supervise; sys.exit(supervise(sys.argv[1:]))")
    args = ["train", "--engine", "local", "--epochs", "100000", "--quiet", "--out", str(run)]
    parent = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _epochs_done(run):
        time.sleep(0.05)
    kids = [int(p) for p in os.listdir("/proc") if p.isdigit() and ppid(int(p)) == parent.pid]
    assert len(kids) == 1, kids
    workers = [int(p) for p in os.listdir("/proc") if p.isdigit() and ppid(int(p)) == kids[0]]
    assert workers or len(os.sched_getaffinity(0)) < 2  # the local engine's worker processes
    os.kill(kids[0], signal.SIGKILL)
    err = parent.communicate(timeout=60)[1].decode().strip().splitlines()
    deadline = time.monotonic() + 20  # the engine's worker processes end with it (they poll their parent)
    while time.monotonic() < deadline and any(ppid(w) != -1 for w in workers):
        time.sleep(0.2)
    assert all(ppid(w) == -1 for w in workers), [w for w in workers if ppid(w) != -1]
    assert parent.returncode == 3, err[-5:]
    assert err[-1] == (f"spikegrad: error: the run's process ended without a word (signal 9); Ray ends a driver "
                       f"so when its cluster loses the GCS or this node's raylet; the last checkpoint of {run} is "
                       f"kept: continue with spikegrad train --resume {run}")
    # a watched child that refuses its input says so itself, and the parent adds nothing
    bad = subprocess.run([sys.executable, "-c", code, "train", "--epochs", "0"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("spikegrad: error:")



@pytest.mark.skipif(not shm_usable(), reason="this machine has no writable /dev/shm")
def test_a_watched_run_ended_without_a_word_leaves_no_shared_memory_messages(tmp_path):
    """The parent of a run that Ray ends from C++ removes the chips' messages of every pipeline the
    run told it of (actors/transport.py): here the child writes one as a chip would, tells its
    prefix, and is killed; the parent's one line follows, and the file is gone."""
    tag = secrets.token_hex(4)
    child = ("import os, signal, pyarrow as pa\n"
             "from actors.transport import SharedMemory, pipeline_prefix\n"
             "from launch.run.supervise import tell\n"
             f"p = SharedMemory({tag!r}, 'n', {{1}}, replica=0, chip=0).send(pa.py_buffer(b'x' * 4096), 1)\n"
             "print(p.name, flush=True)\n"
             f"tell('parcels', pipeline_prefix({tag!r}))\n"
             "tell('parcels', 'spikegrad-../../etc')\n"  # a garbled word is refused, not followed
             "os.kill(os.getpid(), signal.SIGKILL)\n")
    code = ("import sys; from launch.run.supervise import supervise; "
            "sys.exit(supervise([], program=[sys.executable, '-c', sys.argv[1]]))")
    try:
        out = subprocess.run([sys.executable, "-c", code, child], capture_output=True, text=True, timeout=60)
        name = out.stdout.strip()
        assert name.startswith(pipeline_prefix(tag)), out.stderr
        assert out.returncode == 3, out.stderr
        assert out.stderr.strip() == ("spikegrad: error: the run's process ended without a word (signal 9); Ray "
                                      "ends a driver so when its cluster loses the GCS or this node's raylet, "
                                      "before the run had a directory")
        assert not os.path.exists(os.path.join(SHM_DIR, name))
    finally:
        remove_parcels(pipeline_prefix(tag))
