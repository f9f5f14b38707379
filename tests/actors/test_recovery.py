"""A chip process killed in the middle of an epoch: the run restarts its chips from the last
checkpoint, replays, and ends with exactly the weights of an uninterrupted run."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from actors.transport import process_alive
from launch.run.config import make_config
from launch.run.runs import train

from ..procs import descendants, parcels

pytestmark = pytest.mark.ray  # a Ray instance of its own, or the session's (conftest)

KW = dict(epochs=2, limit_train=384, limit_test=64, batch_size=32, micro_batch=16, seed=1,
          checkpoint_every=2)


def weights(run):
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("W", "b", "vW", "vb"))}


def act_on_chip_mid_run(run, made, chip, act, pause=0.0):
    """Wait for a checkpoint in the middle of epoch 2 of ``run``, then ``act(pid)`` on the process
    of chip ``chip`` of the first trainer in ``made``; returns the pid, or None on timeout."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
                ready = int(z["epochs_done"]) == 1 and int(z["position"]) >= 2
        except (OSError, ValueError, KeyError, EOFError):
            ready = False
        if ready and made:
            time.sleep(pause)
            pid = next(w["pid"] for w in made[0].pipeline.where if w["chip"] == chip)
            act(pid)
            return pid
        time.sleep(0.005)
    return None


def test_killed_chip_is_restarted_and_the_weights_equal(ray_session, tmp_path):
    from launch.run import chips as chip_engine

    ref_summary = train(make_config("digits", out=str(tmp_path / "ref"), **KW), progress=False, log=lambda s: None)
    killed, logs = [], []
    made = []
    original = chip_engine.ChipEngine.__init__

    def record(self, *a, **k):  # the test needs the trainer to find the chips' processes
        original(self, *a, **k)
        made.append(self)

    def killer():  # mid-batch, just after the checkpoint
        pid = act_on_chip_mid_run(tmp_path / "cut", made, 2, lambda p: os.kill(p, signal.SIGKILL), pause=0.05)
        if pid:
            killed.append(pid)

    chip_engine.ChipEngine.__init__ = record
    try:
        t = threading.Thread(target=killer)
        t.start()
        summary = train(make_config("digits", out=str(tmp_path / "cut"), **KW), progress=False, log=logs.append)
        t.join()
    finally:
        chip_engine.ChipEngine.__init__ = original
    assert killed, "the chip was never killed"
    assert any("chip 2" in line and "failed" in line for line in logs), logs
    assert any("chips restarted (1 of 3)" in line for line in logs), logs
    ref, got = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    for k in ref:
        assert np.array_equal(ref[k], got[k]), k
    assert summary["test_accuracy"] == ref_summary["test_accuracy"]
    # the messages in flight when the chip died (shared memory) go with the old chips: the autouse
    # fixture no_parcels_left (tests/conftest.py) fails the test otherwise


def test_a_chip_lost_at_the_end_of_an_epoch_is_restarted_too(ray_session, tmp_path, monkeypatch):
    """A chip killed just as the epoch ends, when the driver gathers the state to save (the window a
    host lost right after an epoch's line hits): the chips restart and the epoch is replayed from the
    last checkpoint; the weights equal an uninterrupted run's."""
    from launch.run import chips as chip_engine
    from launch.run import driver as driver_module

    ref = train(make_config("digits", out=str(tmp_path / "ref"), **KW), progress=False, log=lambda s: None)
    made, killed, logs = [], [], []
    original_init, original_state = chip_engine.ChipEngine.__init__, driver_module.Driver.state_arrays

    def record(self, *a, **k):
        original_init(self, *a, **k)
        made.append(self)

    def state_arrays(self):  # the end of epoch 1 (not a mid-epoch checkpoint): chip 1's process killed first
        if not killed and self.epochs_done == 1 and self.position == 0:
            pid = next(w["pid"] for w in made[0].pipeline.where if w["chip"] == 1)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            deadline = time.monotonic() + 30
            while process_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.01)
        return original_state(self)

    monkeypatch.setattr(chip_engine.ChipEngine, "__init__", record)
    monkeypatch.setattr(driver_module.Driver, "state_arrays", state_arrays)
    summary = train(make_config("digits", out=str(tmp_path / "end"), **KW), progress=False, log=logs.append)
    assert killed, "the chip was never killed"
    assert any("chips restarted (1 of 3)" in line for line in logs), logs
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "end")
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert summary["test_accuracy"] == ref["test_accuracy"]


def test_stopped_chip_is_a_failed_chip_and_the_weights_equal(ray_session, tmp_path, monkeypatch):
    """SIGSTOP: the chip's process lives but answers nothing. The driver's bounded waits call it
    failed (here after the 5 s floor), restart the chips from the last checkpoint, and the run
    ends with the weights of an uninterrupted run."""
    from launch.run import chips as chip_engine

    monkeypatch.setenv("SPIKEGRAD_CHIP_TIMEOUT", "5")
    ref = train(make_config("digits", out=str(tmp_path / "ref"), **KW), progress=False, log=lambda s: None)
    stopped, logs, made = [], [], []
    original = chip_engine.ChipEngine.__init__

    def record(self, *a, **k):
        original(self, *a, **k)
        made.append(self)

    def stopper():
        pid = act_on_chip_mid_run(tmp_path / "cut", made, 1, lambda p: os.kill(p, signal.SIGSTOP))
        if pid:
            stopped.append(pid)

    monkeypatch.setattr(chip_engine.ChipEngine, "__init__", record)
    t = threading.Thread(target=stopper)
    t.start()
    try:
        summary = train(make_config("digits", out=str(tmp_path / "cut"), **KW), progress=False, log=logs.append)
    finally:
        t.join()
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    assert stopped, "the chip was never stopped"
    assert any("answered nothing" in line for line in logs), logs
    assert any("chips restarted (1 of 3)" in line for line in logs), logs
    a, b = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert summary["test_accuracy"] == ref["test_accuracy"]


def test_losing_the_private_ray_instance_ends_with_one_line_and_the_resume_command(tmp_path):
    """The GCS server of the run's private Ray instance killed: one line, exit status 3, and the
    run resumes (Ray alone would retry for 60 s, then end the process with its own C++ log line)."""
    import subprocess
    import sys

    from launch.run.ray_session import RAY_LOST_EXIT, ray_daemons

    run = tmp_path / "g"
    files_before = parcels()
    proc = subprocess.Popen([sys.executable, "-m", "launch.cli", "train", "--epochs", "1000", "--quiet",
                             "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (run / "metrics.parquet").exists():
            time.sleep(0.1)
        daemons = ray_daemons(proc.pid)
        ours = descendants(proc.pid)  # the instance's processes, some of which outlive the raylet
        gcs = daemons["gcs_server"]
        os.kill(gcs, signal.SIGKILL)
        err = proc.communicate(timeout=60)[1].decode().strip().splitlines()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The driver left a cleaner that ends the rest of its instance (Ray's dashboard and runtime-env
    # agents would outlive a lost GCS), chips first, then removes their messages: within seconds,
    # nothing is left (no file in /dev/shm either: the autouse fixture no_parcels_left checks).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (any(process_alive(p) for p in ours) or parcels() - files_before):
        time.sleep(0.1)
    left = {pid: name for pid, name in ours.items() if process_alive(pid)}
    for pid in left:  # ended here, so that a failure leaves nothing either
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of the run's Ray instance outlived it: {left}"
    assert proc.returncode == RAY_LOST_EXIT, err[-5:]
    assert err[-1] == (f"spikegrad: error: the Ray instance lost its gcs_server (process {gcs}); the last "
                       f"checkpoint of {run} is kept: continue with spikegrad train --resume {run}")
    assert "Traceback" not in "\n".join(err)
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        assert int(z["epochs_done"]) >= 1


def test_a_chip_run_on_its_private_instance_ends_cleanly(tmp_path):
    """The default job's path (chips on a private Ray instance, watched): shutting Ray down at the
    end is not mistaken for losing it."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "launch.cli", "train", "--epochs", "1", "--limit-train", "256",
                           "--quiet", "--out", str(tmp_path / "d")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "test accuracy" in proc.stdout and "lost its" not in proc.stderr
