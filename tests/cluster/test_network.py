"""The engine against a dense-matrix reference on random small nets (hypothesis)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.backend import get_backend, to_host
from cluster.kernels import round_half_away
from cluster.network import StepConfig, backward, export_layer, forward
from cluster.topology import Pool, parse_topology

from .reference import bias_vector, connection_matrix

TOPOLOGIES = ["6x6-2C3-P2-3", "8x8-2C3-P2-3C2p1-4", "6x6x2-2C3p1-3C3p1-4", "7x7x2-3C3p1-P2-4C2-5-3", "5x5-2C2p1-P3-4-3",
              "1x9-5-4-3", "8x8-2C5p2-3C3-4"]


def dyadic(rng, shape, scale=8, span=8):
    return rng.integers(-span, span + 1, size=shape) / scale


def reference_step(topo, params, x, y, cfg):
    """Everything in float64 with dense matrices and plain loops."""
    L = len(topo.layers) - 1
    S = [x.reshape(x.shape[0], -1)]
    masks, mats = [], []
    for l, layer in enumerate(topo.layers):
        if isinstance(layer, Pool):
            M, _ = connection_matrix(layer)
            pre = S[-1] @ M.T
            mats.append(M * cfg.theta_ff)  # synapse weights theta_ff / k^2
            S.append(round_half_away(pre))
            masks.append(np.ones_like(pre))
            continue
        W, b = params[l]
        M, _ = connection_matrix(layer, W)
        mats.append(M)
        pre = S[-1] @ M.T + bias_vector(layer, b)
        if l == L:
            S.append(pre)
            masks.append(None)
        else:
            pre = pre / cfg.theta_ff
            S.append(np.maximum(0, round_half_away(pre.copy())))
            masks.append((pre > 0).astype(float))
    V = S[-1]
    p = np.exp(V - V.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    U = p.copy()
    U[np.arange(len(y)), y] -= 1
    U *= cfg.error_scale
    U /= cfg.theta_bp
    E = [None] * (L + 1)
    E[L] = round_half_away(U) if cfg.gradient == "spike" else U
    for l in range(L, 0, -1):
        Z = E[l] @ mats[l] / cfg.theta_bp
        if cfg.gradient == "spike":
            Z = round_half_away(Z)
        E[l - 1] = Z * masks[l - 1]
    sums = {}
    for l in topo.trainable:
        layer = topo.layers[l]
        _, C = connection_matrix(layer, params[l][0])
        G = E[l].T @ S[l]  # (n_out, n_in) per-synapse sums
        if layer.kind == "dense":
            gW = G
        else:
            # fold per-synapse sums back onto shared kernel weights
            gW = np.zeros(layer.weight_shape)
            for idx in np.ndindex(*layer.weight_shape):
                Wone = np.zeros(layer.weight_shape)
                Wone[idx] = 1.0
                Mone, _ = connection_matrix(layer, Wone)
                gW[idx] = (G * Mone).sum()
        Co, Ho, Wo = layer.out_shape
        gb = E[l].reshape(len(y), Co, Ho * Wo).sum(axis=(0, 2))
        sums[l] = (gW, gb)
    return S[1:], E, sums


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(TOPOLOGIES), st.integers(1, 3), st.integers(0, 2 ** 31 - 1),
       st.sampled_from([0.5, 1.0, 2.0]), st.sampled_from([0.5, 1.0, 4.0]),
       st.sampled_from(["spike", "float"]))
def test_engine_equals_dense_reference(backend, text, B, seed, theta_ff, theta_bp, gradient):
    """On the test backend (``--backend cupy``: the CuPy kernels and cuBLAS) against float64 loops."""
    xp = get_backend(backend).xp
    topo = parse_topology(text)
    rng = np.random.default_rng(seed)
    cfg = StepConfig(theta_ff=theta_ff, theta_bp=theta_bp, alpha=16.0, gradient=gradient)
    params = {l: (dyadic(rng, topo.layers[l].weight_shape), dyadic(rng, topo.layers[l].weight_shape[:1], span=16))
              for l in topo.trainable}
    x = rng.integers(0, 9, size=(B, *topo.input_shape)) / 8
    y = rng.integers(0, topo.num_classes, size=B)
    dev = {l: (xp.asarray(W), xp.asarray(b)) for l, (W, b) in params.items()}
    fp = forward(xp, topo, dev, xp.asarray(x), cfg)
    S_engine = [to_host(export_layer(xp, lf.S)).copy() for lf in fp.layers]
    bp = backward(xp, topo, dev, fp, xp.asarray(y), cfg)
    S_ref, E_ref, sums_ref = reference_step(topo, params, x, y, cfg)
    # Spike counts S, integer errors E and their dyadic increment sums are exact: compared exactly.
    # Float-gradient errors divide the softmax, whose last bits may differ: compared to 1e-9.
    L = len(topo.layers) - 1
    for l in range(L + 1):
        if l < L:
            np.testing.assert_array_equal(S_engine[l], S_ref[l], err_msg=f"S{l}")
        else:  # Vᴸ: dyadic sums too
            np.testing.assert_array_equal(S_engine[l], S_ref[l], err_msg="V")
        E = to_host(export_layer(xp, bp.E[l]))
        if gradient == "spike":
            np.testing.assert_array_equal(E, E_ref[l], err_msg=f"E{l}")
        else:
            np.testing.assert_allclose(E, E_ref[l], rtol=0, atol=1e-9, err_msg=f"E{l}")
    for l, (gW, gb) in sums_ref.items():
        for got, want, what in ((bp.sums[l][0], gW, "dW"), (bp.sums[l][1], gb, "db")):
            if gradient == "spike":
                np.testing.assert_array_equal(to_host(got), want, err_msg=f"{what} at layer {l}")
            else:
                np.testing.assert_allclose(to_host(got), want, rtol=0, atol=1e-9, err_msg=f"{what} at layer {l}")


def test_float_gradient_drops_rounding_and_alpha():
    topo = parse_topology("1x6-4-3")
    rng = np.random.default_rng(0)
    params = {l: (rng.standard_normal(topo.layers[l].weight_shape), np.zeros(topo.layers[l].weight_shape[0]))
              for l in topo.trainable}
    x = rng.random((2, 1, 1, 6))
    y = np.array([0, 2])
    cfg = StepConfig(theta_ff=1.0, theta_bp=1.0, alpha=100.0, gradient="float")
    fp = forward(np, topo, params, x, cfg)
    V = fp.V.copy()
    bp = backward(np, topo, params, fp, y, cfg)
    p = np.exp(V) / np.exp(V).sum(1, keepdims=True)
    p[[0, 1], y] -= 1
    np.testing.assert_allclose(bp.E[-1], p, rtol=1e-12)   # alpha ignored, no rounding
    assert not np.all(bp.E[0] == np.round(bp.E[0]))       # errors are not integers


def test_sparse_error_columns_give_the_same_products(monkeypatch):
    """The backward products skip error-free columns when few are active: same results exactly."""
    from cluster import layers as ops

    topo = parse_topology("8x8x2-3C3p1-4")
    layer = topo.layers[0]
    rng = np.random.default_rng(0)
    W = rng.integers(-8, 9, layer.weight_shape) / 8
    S = rng.integers(0, 4, (2, 8, 8, 16)).astype(float)
    E = np.zeros((3, 8, 8, 16))
    E[:, 1, 2, 3] = [1, -2, 0]
    E[2, 7, 7, 15] = 5
    cols = ops.im2col(np, S, layer)
    results = {}
    for share in (0.0, 1.1):  # never sparse, always sparse
        monkeypatch.setattr(ops, "SPARSE_COLUMNS", share)
        results[share] = (ops.conv_backward_input(np, layer, W, E), *ops.conv_increment_sums(W, E, cols, np))
    for a, b in zip(results[0.0], results[1.1]):
        np.testing.assert_array_equal(a, b)
