"""A chip process killed in the middle of an epoch: the run restarts its chips from the last
checkpoint, replays, and ends with exactly the weights of an uninterrupted run."""

import os
import signal
import threading
import time

import numpy as np

from launch.config import make_config
from launch.runs import train

KW = dict(epochs=2, limit_train=384, limit_test=64, batch_size=32, micro_batch=16, seed=1,
          checkpoint_every=2)


def weights(run):
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files if k.startswith(("W", "b", "vW", "vb"))}


def test_killed_chip_is_restarted_and_the_weights_equal(ray_session, tmp_path):
    from launch import chip_trainer

    ref_summary = train(make_config("digits", out=str(tmp_path / "ref"), **KW), progress=False, log=lambda s: None)
    killed, logs = [], []
    made = []
    original = chip_trainer.ChipTrainer.__init__

    def record(self, *a, **k):  # the test needs the trainer to find the chips' processes
        original(self, *a, **k)
        made.append(self)

    def killer():
        run = tmp_path / "cut"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
                    ready = int(z["epochs_done"]) == 1 and int(z["position"]) >= 2
            except (OSError, ValueError, KeyError, EOFError):
                ready = False
            if ready and made:
                time.sleep(0.05)  # mid-batch, after the checkpoint
                pid = next(w["pid"] for w in made[0].pipeline.where if w["chip"] == 2)
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.005)

    chip_trainer.ChipTrainer.__init__ = record
    try:
        t = threading.Thread(target=killer)
        t.start()
        summary = train(make_config("digits", out=str(tmp_path / "cut"), **KW), progress=False, log=logs.append)
        t.join()
    finally:
        chip_trainer.ChipTrainer.__init__ = original
    assert killed, "the chip was never killed"
    assert any("chip 2" in line and "failed" in line for line in logs), logs
    assert any("chips restarted (1 of 3)" in line for line in logs), logs
    ref, got = weights(tmp_path / "ref"), weights(tmp_path / "cut")
    for k in ref:
        assert np.array_equal(ref[k], got[k]), k
    assert summary["test_accuracy"] == ref_summary["test_accuracy"]
