"""The CUDA-graph training step (cluster.graph) equals the eager step, value for value.

Runs with ``python -m pytest --backend cupy`` on a machine with CUDA (the GPU check runs it);
with the default NumPy backend only the CPU facts are checked.
"""

import numpy as np
import pytest

from cluster.backend import to_host
from cluster.topology import parse_topology
from launch.run.config import make_config
from launch.run.driver import seeded_params
from launch.run.local import LocalEngine


def _engine(cfg, graph):
    return LocalEngine(cfg, parse_topology(cfg.topology), seeded_params(cfg), graph=graph)


def test_numpy_engine_never_uses_a_graph():
    assert not _engine(make_config("digits", engine="local"), None).use_graph
    assert not _engine(make_config("digits", engine="local"), True).use_graph


def _batches(n, B, last, seed):
    rng = np.random.default_rng(seed)
    sizes = [B] * n + ([last] if last else [])
    return [((rng.integers(0, 17, (s, 1, 8, 8)) / 16).astype(np.float64), rng.integers(0, 10, s)) for s in sizes]


@pytest.mark.parametrize("momentum, frac_bits", [(0.9, 12), (0.0, 10)])
def test_graph_step_equals_eager_step(backend, momentum, frac_bits):
    """Dyadic inputs and fixed-point weights in float64: every sum is exact, so the replayed graph
    (dense products, a device-side learning rate) and the eager step (sparse products) must agree
    exactly: weights, velocities, losses, hits and every synaptic-operation counter, through a
    shorter last batch (eager in both) and a checkpoint reload (the graph is captured anew)."""
    if backend != "cupy":
        pytest.skip("CUDA graphs need a GPU: run with --backend cupy")
    cfg = make_config("digits", engine="local", backend="cupy", dtype="float64", weight_frac_bits=frac_bits,
                      momentum=momentum, lr=3e-3)
    graph, eager = _engine(cfg, True), _engine(cfg, False)
    assert graph.use_graph and not eager.use_graph
    for i, (x, y) in enumerate(_batches(5, 32, 20, seed=1)):
        scale = 1.0 - 0.15 * i  # a schedule: the captured update must read the new rate
        assert graph.train_step(x, y, scale) == eager.train_step(x, y, scale), f"batch {i}"
    assert graph.graph_note is None, graph.graph_note
    assert graph._graph is not None and graph._graph.graph is not None  # it did capture and replay
    np.testing.assert_array_equal(graph.counters().layers, eager.counters().layers)
    state = graph.state()
    for l, arrays in eager.state().items():
        for k, (u, v) in enumerate(zip(state[l], arrays)):
            np.testing.assert_array_equal(u, v, err_msg=f"layer {l} array {k}")
    graph.restore(state)  # new arrays: the old graph must not be replayed on them
    eager.restore(eager.state())
    for i, (x, y) in enumerate(_batches(3, 32, 0, seed=2)):
        assert graph.train_step(x, y, 0.5) == eager.train_step(x, y, 0.5), f"batch {i} after reload"
    for l, (W, b) in eager.params.items():
        np.testing.assert_array_equal(to_host(graph.params[l][0]), to_host(W))
        np.testing.assert_array_equal(to_host(graph.params[l][1]), to_host(b))
    np.testing.assert_array_equal(graph.counters().layers, eager.counters().layers)
