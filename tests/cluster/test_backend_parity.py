"""The whole engine on CuPy equals NumPy exactly (dyadic values: every sum is exact)."""

import numpy as np
import pytest

from cluster.backend import cupy_available, get_backend
from cluster.errors import SpikeGradError
from cluster.network import StepConfig, backward, export_layer, forward
from cluster.topology import parse_topology

HAVE_CUDA, WHY = cupy_available()


def test_cupy_request_without_cuda_names_the_fix():
    if HAVE_CUDA:
        pytest.skip("CUDA present: the error path cannot be exercised")
    with pytest.raises(SpikeGradError, match="--backend numpy"):
        get_backend("cupy")


def test_unknown_backend():
    with pytest.raises(SpikeGradError, match="numpy, cupy"):
        get_backend("jax")


@pytest.mark.skipif(not HAVE_CUDA, reason=f"CuPy engine parity needs CUDA: {WHY}")
@pytest.mark.parametrize("text", ["28x28-15C5-P2-40C5-P2-300-10", "16x16x3-8C3p1-P2-16C3p1-P2-32-10"])
@pytest.mark.parametrize("gradient", ["spike", "float"])
def test_engine_cupy_equals_numpy(text, gradient):
    import cupy as cp

    topo = parse_topology(text)
    rng = np.random.default_rng(3)
    cfg = StepConfig(theta_ff=0.25, theta_bp=0.25, alpha=64.0, gradient=gradient)
    params = {l: (rng.integers(-16, 17, topo.layers[l].weight_shape) / 256,
                  rng.integers(-16, 17, topo.layers[l].weight_shape[:1]) / 256) for l in topo.trainable}
    x = rng.integers(0, 256, (32, *topo.input_shape)) / 256
    y = rng.integers(0, 10, 32)
    outs = []
    for xp in (np, cp):
        P = {l: (xp.asarray(W), xp.asarray(b)) for l, (W, b) in params.items()}
        fp = forward(xp, topo, P, xp.asarray(x), cfg)
        S = [export_layer(xp, lf.S).copy() for lf in fp.layers]
        bp = backward(xp, topo, P, fp, xp.asarray(y), cfg)
        E = [export_layer(xp, e) for e in bp.E]
        sums = [bp.sums[l] for l in topo.trainable]
        to = (lambda a: a) if xp is np else (lambda a: a.get())
        outs.append(([to(s) for s in S], [to(e) for e in E], [(to(a), to(b)) for a, b in sums]))
    (S0, E0, G0), (S1, E1, G1) = outs
    for a, b in zip(S0, S1):
        np.testing.assert_array_equal(a, b)
    if gradient == "spike":  # integer errors: exact; float errors: rounding order may differ
        for a, b in zip(E0, E1):
            np.testing.assert_array_equal(a, b)
        for (a, c), (b, d) in zip(G0, G1):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(c, d)
    else:
        for a, b in zip(E0, E1):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not HAVE_CUDA, reason=f"CuPy engine parity needs CUDA: {WHY}")
@pytest.mark.parametrize("share", [0.0, 1.1])   # never / always take the sparse-columns path
def test_sparse_error_columns_cupy_equals_numpy(share, monkeypatch):
    import cupy as cp

    from cluster import layers as ops

    monkeypatch.setattr(ops, "SPARSE_COLUMNS", share)
    layer = parse_topology("12x12x3-8C3p1-4").layers[0]
    rng = np.random.default_rng(4)
    W = rng.integers(-8, 9, layer.weight_shape) / 8
    S = rng.integers(0, 4, (3, 12, 12, 32)).astype(float)
    E = np.where(rng.random((8, 12, 12, 32)) < 0.02, rng.integers(-3, 4, (8, 12, 12, 32)), 0).astype(float)
    cols = ops.im2col(np, S, layer)
    want = (ops.conv_backward_input(np, layer, W, E), *ops.conv_increment_sums(W, E, cols, np))
    got = (ops.conv_backward_input(cp, layer, cp.asarray(W), cp.asarray(E)),
           *ops.conv_increment_sums(cp.asarray(W), cp.asarray(E), ops.im2col(cp, cp.asarray(S), layer), cp))
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b.get())
