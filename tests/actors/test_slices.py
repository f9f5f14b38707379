"""Chips holding slices of layers, without Ray: the plan's messages, exactness against the local
engine for every kind of split (and over random topologies and capacities), the weight copies'
check, and what a bad message or layout gets."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from actors import wire
from actors.chip import Chip, ChipConfig, run_chips
from actors.slices import assemble_state, check_copies
from cluster.errors import SpikeGradError
from cluster.mapping import Plan, custom_chip, layer_units, map_network
from cluster.network import init_params
from cluster.topology import parse_topology
from launch.run.config import make_config
from launch.run.local import LocalEngine

FRAC = 12


def dyadic(params):
    return {l: (np.round(W * 2 ** FRAC) / 2 ** FRAC, np.round(b * 2 ** FRAC) / 2 ** FRAC)
            for l, (W, b) in params.items()}


def data(topo, n, seed):
    """Inputs on a 1/16 grid (exact products with 2⁻¹² weights) and labels."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(0, 17, (n, *topo.input_shape)) / 16).astype(np.float32)
    return x, rng.integers(0, topo.num_classes, n)


def slice_chips(cfg, plan, params, backend="numpy", replicas=1, wire="counts"):
    ccfg = ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum,
                      frac_bits=cfg.weight_frac_bits, backend=backend, replicas=replicas, wire=wire)
    return [Chip(i, plan.layout, ccfg, {l: params[l] for l in plan.param_layers(i)})
            for i in range(plan.n_chips)]


def compare_with_local(topology, spec, batches=3, n=24, micro=8, seed=0, backend="numpy"):
    """Train ``batches`` batches on chips of capacity ``spec`` and on the local engine: the losses,
    the weights and velocities (bit for bit) and the weight copies must agree. Returns the plan."""
    cfg = make_config("digits", engine="local", topology=topology, weight_frac_bits=FRAC, backend=backend)
    topo = parse_topology(topology)
    params = dyadic(init_params(topo, np.random.default_rng(seed), cfg.theta_ff))
    plan = Plan.of(map_network(topo, spec))
    chips = slice_chips(cfg, plan, params, backend)
    local = LocalEngine(cfg, topo, params, graph=False)
    local.micro_batch = micro
    for b in range(batches):
        x, y = data(topo, n, seed + b)
        want = local.train_step(x, y)
        got = run_chips(chips, x, y, micro, b)
        assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-6)
    state = assemble_state(plan, [c.state() for c in chips])
    for l, arrays in local.state().items():
        for u, v in zip(arrays, state[l]):
            np.testing.assert_array_equal(u, v)
    check_copies(plan, state, [c.copy_state() for c in chips])
    return plan, chips


@pytest.mark.parametrize("spec, split", [
    (custom_chip(300, 5000, "conv"), {0, 1, 2}),     # the conv layer over 4 chips, the dense and P2 too
    (custom_chip(100, 2000, "pool"), {0, 1, 2}),     # pooling channels spread over chips too
    # the dense layer split, so P2 below it keeps copies of its columns (16,384 in all): split too
    (custom_chip(2000, 5000, "dense"), {1, 2}),
])
def test_each_kind_of_split_trains_the_local_weights(spec, split, backend):
    plan, _ = compare_with_local("digits", spec, backend=backend)
    assert {l for l in range(4) if len(plan.owners[l]) > 1} == split


def test_mnist_geometry_split_everywhere_equals_local():
    """The MNIST preset's layer kinds on chips that split 15C5, P2, 40C5 and 300, with a chip
    holding the end of one layer and the start of the next."""
    plan, chips = compare_with_local("mnist", custom_chip(2000, 100_000, "small"), batches=2, n=8, micro=4)
    assert {l for l in range(6) if len(plan.owners[l]) > 1} >= {0, 1, 2, 4}
    assert any(len(s) > 1 for s in plan.layout)
    # error spikes of the split 300 layer travel down to the chips of P2, which keep weight copies of
    # their channels' columns (the copies split P2 itself over three chips: 4,800 weights a channel)
    assert plan.copies(7) == [(4, 0, 19)] and plan.copies(8) == [(4, 19, 39)] and plan.copies(9) == [(4, 39, 40)]
    rep = chips[8].report()
    assert rep["traffic"][7]["messages"] > 0 and rep["traffic"][7]["spikes"] > 0


def test_real_mnist_on_split_chips_equals_local(mnist_dir):
    """Real MNIST images (not dyadic: k/255) on the chips that split 15C5, P2, 40C5 and 300, with
    2⁻¹² weights, as the README's MNIST run: the local engine's weights bit for bit."""
    from launch.data import load_dataset

    ds = load_dataset("mnist", mnist_dir, progress=False)
    cfg = make_config("mnist", engine="local", weight_frac_bits=FRAC)
    topo = parse_topology(cfg.topology)
    params = dyadic(init_params(topo, np.random.default_rng(0), cfg.theta_ff))
    plan = Plan.of(map_network(topo, custom_chip(2000, 100_000, "small")))
    chips = slice_chips(cfg, plan, params)
    local = LocalEngine(cfg, topo, params, graph=False)
    local.micro_batch = 16
    for b in range(2):
        x, y = ds.x_train[32 * b:32 * (b + 1)], ds.y_train[32 * b:32 * (b + 1)]
        want = local.train_step(x, y)
        assert run_chips(chips, x, y, 16, b)[1] == want[1]
    state = assemble_state(plan, [c.state() for c in chips])
    for l, arrays in local.state().items():
        for u, v in zip(arrays, state[l]):
            np.testing.assert_array_equal(u, v)


@st.composite
def networks(draw):
    """A small random topology and a capacity that maps it (not always split)."""
    c = draw(st.sampled_from([1, 2]))
    h = draw(st.sampled_from([6, 8]))
    tokens = [f"{h}x{h}" + (f"x{c}" if c > 1 else "")]
    size = h
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["conv", "pool", "dense"] if size >= 4 else ["dense"]))
        if kind == "conv":
            k = draw(st.sampled_from([1, 3]))
            p = draw(st.sampled_from([0, 1])) if k == 3 else 0
            tokens.append(f"{draw(st.integers(2, 7))}C{k}" + (f"p{p}" if p else ""))
            size = size - k + 1 + 2 * p
        elif kind == "pool" and tokens[-1][0] not in "P" and len(tokens) > 1:
            tokens.append("P2")
            size //= 2
        elif kind == "dense":
            tokens.append(str(draw(st.integers(3, 20))))
            size = 0
    if size and tokens[-1].startswith("P") and len(tokens) == 2:
        tokens.pop()
    tokens.append(str(draw(st.integers(2, 5))))
    topo = parse_topology("-".join(tokens))
    # capacities from the smallest that maps it (a unit, and the whole output layer) upwards: most split
    units = [layer_units(topo, l) for l in range(len(topo.layers))]
    n_min = max(max(n for _, n, _ in units), units[-1][0])
    s_min = max(max(s for _, _, s in units), units[-1][0] * units[-1][2])
    n_all, s_all = sum(u * n for u, n, _ in units), sum(u * s for u, _, s in units)
    return topo.text, custom_chip(draw(st.integers(n_min, max(n_min, n_all))),
                               draw(st.integers(s_min, max(s_min, s_all))))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(networks(), st.integers(0, 3))
def test_random_topologies_and_capacities_train_the_local_weights(net, seed):
    topology, spec = net
    try:
        parse_topology(topology)
        map_network(parse_topology(topology), spec)
    except SpikeGradError:
        assume(False)
    compare_with_local(topology, spec, batches=2, n=12, micro=6, seed=seed)


def test_a_copy_that_drifts_is_caught():
    cfg = make_config("digits", engine="local", weight_frac_bits=FRAC)
    topo = parse_topology(cfg.topology)
    params = dyadic(init_params(topo, np.random.default_rng(0), cfg.theta_ff))
    plan = Plan.of(map_network(topo, custom_chip(2000, 5000, "dense")))
    chips = slice_chips(cfg, plan, params)
    x, y = data(topo, 16, 1)
    run_chips(chips, x, y, 8)
    state = assemble_state(plan, [c.state() for c in chips])
    copies = [c.copy_state() for c in chips]
    assert check_copies(plan, state, copies) > 0
    holder = next(i for i, c in enumerate(copies) if c)
    l = next(iter(copies[holder]))
    copies[holder][l][0][0, 0] += 2.0 ** -FRAC
    with pytest.raises(SpikeGradError, match=f"chip {holder}'s copy of layer {l}'s weights .* differs .* at 1 of"):
        check_copies(plan, state, copies)


def test_replicas_of_split_chips_add_the_same_increments():
    """Two replicas of a split layout, each on half the batch, adding both replicas' increments
    (rows and copies) in replica order: the same weights as one replica on the whole batch."""
    cfg = make_config("digits", engine="local", weight_frac_bits=FRAC)
    topo = parse_topology(cfg.topology)
    params = dyadic(init_params(topo, np.random.default_rng(2), cfg.theta_ff))
    plan = Plan.of(map_network(topo, custom_chip(2000, 5000, "dense")))
    one = slice_chips(cfg, plan, params)
    two = [slice_chips(cfg, plan, params, replicas=2) for _ in range(2)]
    x, y = data(topo, 16, 4)
    run_chips(one, x, y, 8)
    for r, chips in enumerate(two):  # forward and backward only: the APPLY comes below
        for c in chips:
            c.apply = lambda *a, **k: None
        run_chips(chips, x[r * 8:(r + 1) * 8], y[r * 8:(r + 1) * 8], 8)
        for c in chips:
            del c.apply
    for i in range(plan.n_chips):
        incs = [two[0][i].increments(), two[1][i].increments()]
        for r in range(2):
            two[r][i].apply(1.0, *incs)
    want = assemble_state(plan, [c.state() for c in one])
    for chips in two:
        got = assemble_state(plan, [c.state() for c in chips])
        for l in want:
            for u, v in zip(want[l], got[l]):
                np.testing.assert_array_equal(u, v)
        check_copies(plan, got, [c.copy_state() for c in chips])


def test_messages_from_the_wrong_chip_or_of_the_wrong_shape_are_refused():
    cfg = make_config("digits", engine="local")
    topo = parse_topology(cfg.topology)
    params = init_params(topo, np.random.default_rng(0), cfg.theta_ff)
    plan = Plan.of(map_network(topo, custom_chip(300, 20000, "conv")))  # 16C3p1 over chips 0-3, P2 whole on 4
    chips = slice_chips(cfg, plan, params)
    x, _ = data(topo, 4, 0)
    msgs = [chips[c].forward(0, 0, 0, x, 0, 4)[0] for c in range(4)]
    receiver = plan.owners[1][0].chip
    good = list(msgs)
    good[0], good[1] = msgs[1], msgs[0]  # swapped senders
    with pytest.raises(SpikeGradError, match="expected from chip 0, got one from chip 1"):
        chips[receiver].forward(1, 0, 0, None, 0, None, True, *good)
    with pytest.raises(SpikeGradError, match="more messages than the plan's"):
        chips[receiver].forward(1, 0, 0, None, 0, None, True, *msgs, msgs[0])
    bad = wire.encode(np.zeros((4, 3 * 8 * 8), np.int32), kind="forward", src=0, dst=receiver, batch=0, micro=2,
                      shape=(3, 8, 8))
    with pytest.raises(wire.WireError, match="shape"):
        chips[receiver].forward(1, 0, 2, None, 0, None, True, bad, *msgs[1:])


def test_layouts_that_do_not_tile_or_split_the_output_are_refused():
    topo = parse_topology("digits")
    with pytest.raises(SpikeGradError, match="do not tile its 16 units once"):
        Plan(topo, (((0, 0, 8),), ((0, 9, 16), (1, 0, 16), (2, 0, 64), (3, 0, 10))))
    with pytest.raises(SpikeGradError, match="output layer 3 is split"):
        Plan(topo, (((0, 0, 16), (1, 0, 16), (2, 0, 64), (3, 0, 5)), ((3, 5, 10),)))
    with pytest.raises(SpikeGradError, match=r"output layer 3 \(10: 10 neurons, 640 synapses\) .* must fit on one"):
        map_network(parse_topology("8x8-4C3p1-P2-64-10"), custom_chip(100, 200, "tiny"))
    cfg = make_config("digits", engine="local", gradient="float")
    ccfg = ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum)
    plan = Plan.of(map_network(topo, custom_chip(2000, 5000, "dense")))
    with pytest.raises(SpikeGradError, match="need --gradient spike"):
        Chip(0, plan.layout, dataclasses.replace(ccfg), {})


@pytest.mark.parametrize("spec, batches, n", [
    (custom_chip(300, 5000, "conv"), 3, 16),
    pytest.param(custom_chip(100, 2000, "pool"), 2, 8, marks=pytest.mark.slow),  # 40 chips, many small waves: 10 s
    (custom_chip(2000, 5000, "dense"), 3, 16),
])
def test_event_wire_on_split_chips_checks_the_spiking_network_and_trains_the_same_weights(spec, batches, n):
    """--wire events on chips holding slices: every S, E and Z of the spiking network's slices (their
    own neurons, the U compartments they sum for, the copies' sums) equals the ANN's, value for value,
    and a few batches give the count wire's weights bit for bit."""
    cfg = make_config("digits", engine="local", weight_frac_bits=FRAC)
    topo = parse_topology(cfg.topology)
    params = dyadic(init_params(topo, np.random.default_rng(1), cfg.theta_ff))
    plan = Plan.of(map_network(topo, spec))
    counts = slice_chips(cfg, plan, params)
    events = slice_chips(cfg, plan, params, wire="events")
    for b in range(batches):
        x, y = data(topo, n, 10 + b)
        assert run_chips(counts, x, y, 8, b) == run_chips(events, x, y, 8, b)
    for c, e in zip(counts, events):
        for l, arrays in c.state().items():
            for u, v in zip(arrays, e.state()[l]):
                np.testing.assert_array_equal(u, v)
    reps = [e.report() for e in events]
    assert all(r["event_checks"]["values"] > 0 and r["event_checks"]["differ"] == 0 for r in reps), \
        [r["event_checks"] for r in reps]
    count_reps = [c.report() for c in counts]
    for r, rc in zip(reps, count_reps):
        for dst, link in r["traffic"].items():  # every spike count is at least one event
            assert link["messages"] == rc["traffic"][dst]["messages"]
            assert link["spikes"] >= rc["traffic"][dst]["spikes"]
