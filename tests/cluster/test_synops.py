"""Synaptic-operation counts against brute force over explicit connection matrices."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.network import StepConfig, backward, forward, init_params
from cluster.synops import COUNTERS, SynopCounter, layer_fan
from cluster.topology import parse_topology

from .reference import connection_matrix

TOPOLOGIES = ["6x6-2C3-P2-3", "7x7x2-3C3p1-P2-4C2-5-3", "5x5-2C2p1-P3-4-3", "8x8-2C5p2-3C3-4",
              "28x28-15C5-P2-40C5-P2-300-10"]


@pytest.mark.parametrize("text", TOPOLOGIES)
def test_fans_equal_connection_counts(text):
    topo = parse_topology(text)
    for layer in topo.layers:
        _, C = connection_matrix(layer, np.ones(layer.weight_shape) if layer.weight_shape else None)
        fan = layer_fan(layer)
        assert fan.connections == C.sum()
        fan_out = C.sum(axis=0)  # per input neuron, (C, H, W) order
        fan_in = C.sum(axis=1)   # per output neuron
        if fan.fan_out.ndim:
            ci, h, w = layer.in_shape
            np.testing.assert_array_equal(fan_out.reshape(ci, h, w), np.broadcast_to(fan.fan_out, (ci, h, w)))
            co, ho, wo = layer.out_shape
            np.testing.assert_array_equal(fan_in.reshape(co, ho, wo), np.broadcast_to(fan.fan_in, (co, ho, wo)))
        else:
            assert (fan_out == fan.fan_out).all() and (fan_in == fan.fan_in).all()


def test_padding_border_taps_count_only_real_connections():
    # 3x3 input, 1C3p1: the corner output sees 4 inputs, the centre 9
    fan = layer_fan(parse_topology("3x3-1C3p1-2").layers[0])
    assert fan.fan_in.tolist() == [[4, 6, 4], [6, 9, 6], [4, 6, 4]]
    assert fan.connections == 49


@settings(max_examples=15, deadline=None)
@given(st.sampled_from(TOPOLOGIES[:4]), st.integers(1, 3), st.integers(0, 2 ** 31 - 1),
       st.sampled_from(["spike", "float"]))
def test_counter_equals_brute_force(text, B, seed, gradient):
    topo = parse_topology(text)
    rng = np.random.default_rng(seed)
    params = init_params(topo, rng, theta_ff=0.25, dtype=np.float64)
    x = rng.random((B, *topo.input_shape)) * (rng.random((B, *topo.input_shape)) < 0.5)
    y = rng.integers(0, topo.num_classes, B)
    cfg = StepConfig(theta_ff=0.25, theta_bp=0.25, alpha=50, gradient=gradient)
    fp = forward(np, topo, params, x, cfg)
    S = [lf.S for lf in fp.layers]
    bp = backward(np, topo, params, fp, y, cfg)
    counter = SynopCounter(np, topo, spike_errors=(gradient == "spike"))
    counter.add(fp.x, S, bp.E, B, bp.emitted)
    got = counter.totals()
    from cluster.network import export_layer
    flat_S = [x.reshape(B, -1)] + [export_layer(np, s) for s in S]
    flat_E = [export_layer(np, e) for e in bp.E]
    ev = (lambda a: np.abs(a)) if gradient == "spike" else (lambda a: (a != 0).astype(float))
    L = len(topo.layers) - 1
    def emitted(l):
        """Σ |Zˡ| by brute force: the layer above's dense matrix times its δ, rounded, before S′."""
        if l == L:
            return ev(flat_E[L]).sum()
        above = topo.layers[l + 1]
        M, _ = connection_matrix(above, params[l + 1][0] if above.trainable else None)
        if not above.trainable:
            M = M * cfg.theta_ff  # pooling's weights are Θff/k²
        Z = flat_E[l + 1] @ M / cfg.theta_bp
        if gradient == "spike":
            Z = np.sign(Z) * np.floor(np.abs(Z) + 0.5)
        return ev(Z).sum()

    for l, layer in enumerate(topo.layers):
        _, C = connection_matrix(layer, np.ones(layer.weight_shape) if layer.weight_shape else None)
        below = (flat_S[0] != 0).astype(float) if l == 0 else np.abs(flat_S[l])
        want = {
            "input_macs": (below * C.sum(axis=0)).sum() if l == 0 else 0.0,
            "acc_forward": (below * C.sum(axis=0)).sum() if l > 0 else 0.0,
            "acc_backward": (ev(flat_E[l]) * C.sum(axis=1)).sum() if l > 0 else 0.0,
            "acc_update": (ev(flat_E[l]) * C.sum(axis=1)).sum() if layer.trainable else 0.0,
            "macs": C.sum() * B,
            "spikes": np.abs(flat_S[l + 1]).sum() if l < L else 0.0,
            "error_spikes_delivered": ev(flat_E[l]).sum(),
            "error_spikes": emitted(l),
        }
        for name, value in want.items():
            assert got[l, COUNTERS.index(name)] == pytest.approx(value, rel=1e-12, abs=1e-9), (l, name)


def test_counter_resets_after_totals():
    topo = parse_topology("6x6-2C3-P2-3")
    c = SynopCounter(np, topo, spike_errors=True)
    x = np.ones((1, 1, 6, 6))
    params = init_params(topo, np.random.default_rng(0), 1.0, np.float64)
    fp = forward(np, topo, params, x, StepConfig())
    c.add(fp.x, [lf.S for lf in fp.layers], None, 1)
    assert c.totals().sum() > 0
    assert c.totals().sum() == 0


def test_spike_bound_is_eq_21_by_hand():
    """n_max = ⌊N_in · w_max · n_max(below) / Θff⌋ layer by layer, from the input's largest value."""
    from cluster.synops import spike_bound, spike_histogram

    topo = parse_topology("4x4-2C3-P2-3-2")  # conv fan-in 9, pool 4 (w Θff/4), dense fan-in 2, output
    params = {0: (np.full((2, 1, 3, 3), 0.5), np.zeros(2)), 2: (np.full((3, 2), -0.75), np.zeros(3)),
              3: (np.ones((2, 3)), np.zeros(2))}
    # layer 0: 9 · 0.5 · 2 / 0.25 = 36; pooling keeps 36; dense: 2 · 0.75 · 36 / 0.25 = 216
    assert spike_bound(topo, params, 2.0, 0.25) == [36.0, 36.0, 216.0]
    S = [np.array([[0, 2, 2]]), np.array([[1, 0]]), np.array([[3, 3, 0]])]
    assert [h.tolist() for h in spike_histogram(S, topo)] == [[1, 0, 2], [1, 1], [1, 0, 0, 2]]
