"""The local engine's worker processes: the numbers of one process, bit for bit; restore and
predict through the shared weights; a dead worker is one clear error; nothing left in /dev/shm."""

import gc
import os
import signal

import numpy as np
import pytest

from cluster.errors import SpikeGradError
from cluster.network import sgd_update
from cluster.synops import SynopCounter
from cluster.topology import parse_topology
from launch.run.config import make_config
from launch.run.driver import seeded_params
from launch.run.local import LocalEngine
from launch.run.workers import micro_step


def batch(topo, n, seed):
    rng = np.random.default_rng(seed)
    return rng.random((n, *topo.input_shape), dtype=np.float32), rng.integers(0, topo.num_classes, n)


def leftovers():
    return sorted(f for f in os.listdir("/dev/shm") if f.startswith("spikegrad-")) if os.path.isdir("/dev/shm") else []


def test_worker_processes_give_the_sequential_step_bit_for_bit():
    """Micro-batches of 8 on the workers (round robin, several per worker) against the same
    micro-steps run one after another here, their sums added in order: identical weights,
    velocities, losses and counters."""
    cfg = make_config("digits", engine="local", momentum=0.9)
    topo = parse_topology(cfg.topology)
    params = seeded_params(cfg)
    engine = LocalEngine(cfg, topo, params)
    engine.micro_batch = 8
    W = {l: (W.copy(), b.copy()) for l, (W, b) in params.items()}
    V = {l: (np.zeros_like(W_), np.zeros_like(b_)) for l, (W_, b_) in W.items()}
    counter = SynopCounter(np, topo, spike_errors=True)
    try:
        for s in range(3):
            x, y = batch(topo, 40, s)
            loss, correct = engine.train_step(x, y, 0.5)
            assert engine._workers is not None and len(engine._workers.procs) == engine.workers
            want_loss, want_correct, total = 0.0, 0, None
            for lo in range(0, 40, 8):
                sums, l_sum, c, counts = micro_step(np, topo, W, x[lo:lo + 8], y[lo:lo + 8].astype(np.int64),
                                                    cfg.step, counter)
                want_loss, want_correct = want_loss + float(l_sum), want_correct + c
                counter.accumulate(counts)
                if total is None:
                    total = sums
                else:
                    for l, (gW, gb) in sums.items():
                        total[l][0][...] += gW
                        total[l][1][...] += gb
            for l, (gW, gb) in total.items():
                sgd_update(np, *W[l], *V[l], gW, gb, cfg.eta * 0.5, cfg.momentum)
            assert (loss, correct) == (pytest.approx(want_loss, rel=1e-12), want_correct)
        state = engine.state()
        for l in W:
            for got, want in zip(state[l], (*W[l], *V[l])):
                np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(engine.counters().layers, counter.totals())
    finally:
        engine.close()
    assert leftovers() == []


def test_restore_and_predict_go_through_the_shared_weights():
    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    params = seeded_params(cfg)
    engine = LocalEngine(cfg, topo, params)
    engine.micro_batch = 8
    x, y = batch(topo, 64, 1)
    try:
        before = engine.predict(x)  # on the workers: 8 micro-batches
        start = engine.state()
        engine.train_step(x, y)
        engine.restore(start)  # back to the initial weights, written into the shared memory
        np.testing.assert_array_equal(engine.predict(x), before)
        reference = LocalEngine(cfg, topo, params)  # a whole batch here, no workers
        np.testing.assert_array_equal(reference.predict(x), before)
        reference.close()
    finally:
        engine.close()


def test_a_worker_that_dies_is_one_clear_error_and_nothing_is_left():
    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    engine = LocalEngine(cfg, topo, seeded_params(cfg))
    engine.micro_batch = 8
    x, y = batch(topo, 32, 2)
    engine.train_step(x, y)
    os.kill(engine._workers.procs[0].pid, signal.SIGKILL)
    engine._workers.procs[0].join(timeout=10)
    with pytest.raises(SpikeGradError, match="local worker process 0 ended unexpectedly"):
        engine.train_step(x, y)
    engine.close()
    assert leftovers() == []


def test_an_engine_never_closed_still_ends_its_workers():
    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    engine = LocalEngine(cfg, topo, seeded_params(cfg))
    engine.micro_batch = 8
    engine.train_step(*batch(topo, 32, 3))
    procs = list(engine._workers.procs)
    del engine
    gc.collect()
    for p in procs:
        p.join(timeout=10)
        assert not p.is_alive()
    assert leftovers() == []


def test_one_core_runs_the_micro_batches_in_turn_with_the_same_numbers():
    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    params = seeded_params(cfg)
    one, two = LocalEngine(cfg, topo, params), LocalEngine(cfg, topo, params)
    one.workers = 1
    for e in (one, two):
        e.micro_batch = 8
    try:
        for s in range(2):
            x, y = batch(topo, 40, 10 + s)
            assert one.train_step(x, y) == two.train_step(x, y)
        assert one._workers is None and two._workers is not None
        for l, arrays in one.state().items():
            for u, v in zip(arrays, two.state()[l]):
                np.testing.assert_array_equal(u, v)
        np.testing.assert_array_equal(one.predict(x), two.predict(x))
    finally:
        one.close()
        two.close()


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_workers_do_not_keep_the_run_directorys_lock(tmp_path):
    """A SIGKILLed run must leave its directory resumable at once: its forked workers close their copy
    of the lock (else the lock would live on until they noticed their engine was gone)."""
    from launch.run.rundir import RunDir

    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    with RunDir(tmp_path).lock():
        engine = LocalEngine(cfg, topo, seeded_params(cfg))
        engine.micro_batch = 8
        engine.train_step(*batch(topo, 32, 4))
        def open_files(pid):
            out = []
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    out.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                except FileNotFoundError:  # the listing's own descriptor, closed since
                    pass
            return out

        try:
            lock = str(tmp_path / RunDir.LOCK)
            for p in engine._workers.procs:
                assert lock not in open_files(p.pid)
            assert lock in open_files(os.getpid())  # while the engine's process keeps it
        finally:
            engine.close()
