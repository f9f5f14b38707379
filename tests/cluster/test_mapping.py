"""The chip mapper against hand-computed tables, its refusals, and its invariants over random
topologies and capacities."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.errors import SpikeGradError
from cluster.mapping import PROFILES, ChipSpec, layer_units, map_network, resolve_spec
from cluster.topology import parse_topology

MNIST = parse_topology("mnist")


def test_mnist_preset_counts_by_hand():
    # neurons: 15·24·24, 15·12·12, 40·8·8, 40·4·4, 300, 10; synapses (stored weights): 15·1·5·5,
    # 0 (pooling), 40·15·5·5, 0, 300·640, 10·300
    m = map_network(MNIST, PROFILES["loihi2"])
    assert len(m.chips) == 1 and m.split_layers == () and m.links() == []
    assert m.chips[0].neurons == 8640 + 2160 + 2560 + 640 + 300 + 10 == 14310
    assert m.chips[0].synapses == 375 + 15000 + 192000 + 3000 == 210375
    assert m.groups() == [(0, 5)]


def test_a_small_chip_splits_every_layer_kind():
    m = map_network(MNIST, ChipSpec("small", 2000, 100_000))
    assert set(m.split_layers) >= {0, 1, 2, 4}  # conv, pool, conv, dense
    assert m.groups() is None
    assert all(c.neurons <= 2000 and c.synapses <= 100_000 for c in m.chips)
    # pooling channel 14 sits on chip 6 with the first 40C5 channels: its spikes go only to chip 6
    assert (6, 7) in m.links() and (4, 5) in m.links()


def test_a_layer_that_fits_a_chip_of_its_own_is_not_split():
    digits = parse_topology("digits")  # neurons 1024, 256, 64, 10; synapses 144, 0, 16384, 640
    m = map_network(digits, ChipSpec("c", 1100, 20_000))
    assert m.groups() == [(0, 0), (1, 3)]
    assert [c.neurons for c in m.chips] == [1024, 330] and [c.synapses for c in m.chips] == [144, 17024]


@pytest.mark.parametrize("neurons, synapses, message", [
    (10_000, 500,
     "layer 4 (300) cannot be mapped onto x chips: a neuron's fan-in of 640 synapses exceeds a chip's 500"),
    (100, 10**9, "layer 0 (15C5) cannot be mapped onto x chips: one channel's map of 576 neurons exceeds a chip's 100"),
    (10**6, 300, "layer 2 (40C5) cannot be mapped onto x chips: one channel's kernel of 375 synapses exceeds"),
])
def test_a_unit_bigger_than_a_chip_is_refused(neurons, synapses, message):
    with pytest.raises(SpikeGradError, match=message.replace("(", r"\(").replace(")", r"\)")):
        map_network(MNIST, ChipSpec("x", neurons, synapses))


def test_capacities_are_checked_and_resolved():
    with pytest.raises(SpikeGradError, match="neurons expected an integer >= 1"):
        ChipSpec("x", 0, 5)
    with pytest.raises(SpikeGradError, match="chip must be one of loihi, loihi2, truenorth"):
        resolve_spec("spinnaker9", None, None)
    with pytest.raises(SpikeGradError, match="both a neuron and a synapse capacity"):
        resolve_spec(None, 5, None)
    assert resolve_spec(None, None, None) is None
    assert resolve_spec("loihi", 1000, None).neurons == 1000
    assert resolve_spec("loihi", 1000, None).synapses == PROFILES["loihi"].synapses


TOPOLOGIES = ["8x8-4C3p1-P2-16-10", "8x8x2-6C3-P2-5", "12x12-3C5-P2-8C3-7-4", "6x6-9-3", "16x16-5C3p1-P2-5C3p1-P2-6"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TOPOLOGIES), st.integers(1, 3000), st.integers(1, 5000))
def test_every_unit_is_placed_once_within_capacity(text, neurons, synapses):
    topo = parse_topology(text)
    try:
        m = map_network(topo, ChipSpec("r", neurons, synapses))
    except SpikeGradError as exc:
        # refused only when one unit alone is bigger than a chip, or the output layer is
        units, n_out, s_out = layer_units(topo, len(topo.layers) - 1)
        assert any(n > neurons or s > synapses
                   for n, s in (layer_units(topo, l)[1:] for l in range(len(topo.layers)))) \
            or units * n_out > neurons or units * s_out > synapses, str(exc)
        return
    placed = [(s.layer, u) for c in m.chips for s in c.slices for u in range(s.lo, s.hi)]
    expected = [(l, u) for l in range(len(topo.layers)) for u in range(layer_units(topo, l)[0])]
    assert placed == expected  # every unit once, in layer and unit order across the chips
    for c in m.chips:
        assert c.slices and c.neurons <= neurons and c.synapses <= synapses
        for s in c.slices:
            _, n, syn = layer_units(topo, s.layer)
            assert (s.neurons, s.synapses) == (s.units * n, s.units * syn)
    groups = m.groups()
    assert (groups is None) == bool(m.split_layers)
    assert len(m.chips_of(len(topo.layers) - 1)) == 1  # the output layer is never split
    assert all(a != b for a, b in m.links())


def test_weight_copies_below_split_layers_are_counted():
    """Below a split trainable layer the chips of the layer below keep its weights' columns of their
    units: for the small chip, all of 40C5's (15·40·25) over the three chips of P2, and all of the
    300 layer's (300·640) on the chip holding the second P2."""
    from cluster.mapping import Plan

    plan = Plan.of(map_network(MNIST, ChipSpec("small", 2000, 100_000)))
    per_chip = [plan.copy_synapses(c) for c in range(plan.n_chips)]
    assert per_chip == [0, 0, 0, 0, 1000, 13000, 1000, 192000, 0]
    assert plan.copies(7) == [(4, 0, 40)] and plan.param_layers(7) == [2, 4]
