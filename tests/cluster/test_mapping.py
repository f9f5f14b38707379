"""The chip mapper against hand-computed tables, its refusals (every limit named), the weight copies
counted against the capacity, and its invariants over random topologies and capacities."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.errors import SpikeGradError
from cluster.mapping import PROFILES, Plan, copy_per_unit, custom_chip, layer_units, map_network, resolve_spec
from cluster.topology import parse_topology

MNIST = parse_topology("mnist")
CIFAR = parse_topology("cifar10")


def test_mnist_preset_counts_by_hand():
    # neurons: 15·24·24, 15·12·12, 40·8·8, 40·4·4, 300, 10; weights: 15·1·5·5, 0 (pooling),
    # 40·15·5·5, 0, 300·640, 10·300
    m = map_network(MNIST, PROFILES["loihi2"])
    assert len(m.chips) == 1 and m.split_layers == () and m.links() == []
    assert m.chips[0].neurons == 8640 + 2160 + 2560 + 640 + 300 + 10 == 14310
    assert m.chips[0].synapses == 375 + 15000 + 192000 + 3000 == 210375
    assert m.chips[0].copies == 0
    assert m.groups() == [(0, 5)]


def test_loihi_cores_by_hand():
    # Loihi: 1,024 compartments, 4,096 axons, 16,384·64 bits per core; 2 compartments per neuron.
    # 15C5 on 28x28: a whole channel is 576 neurons = 1,152 compartments > 1,024, so bands of rows:
    # 12 rows of 24 = 576 compartments fit (rows of 24 -> a band of 12 reads 16x28 inputs): 2 cores
    # per channel, 30 cores. The dense 300 (fan-in 640) holds 512 neurons by compartments, and
    # 640·n·8 bits <= 1,048,576 -> n = 204: 2 cores. The output 10: 1 core.
    m = map_network(MNIST, PROFILES["loihi"])
    (chip,) = m.chips
    cores = {s.layer: s.cores for s in chip.slices}
    assert cores[0] == 30 and cores[4] == 2 and cores[5] == 1
    fill = {f.limit: f for f in m.fill(chip)}
    assert fill["compartments"].used == 2 * 14310
    assert fill["cores"].capacity == 128 and fill["cores"].used == sum(cores.values())


def test_a_unit_that_breaks_a_core_limit_is_refused_naming_the_limit():
    with pytest.raises(SpikeGradError, match=r"layer 1 \(256C3p1\) cannot be mapped onto truenorth chips: one "
                                             r"neuron's fan-in of 1,152 inputs exceeds a core's 256 input axons"):
        map_network(CIFAR, PROFILES["truenorth"])
    with pytest.raises(SpikeGradError, match=r"layer 2 \(40C5\).*fan-in of 375 inputs exceeds a core's 256"):
        map_network(MNIST, PROFILES["truenorth"])
    with pytest.raises(SpikeGradError, match=r"layer 5 \(1024C3p1\).*fan-in of 4,608 inputs exceeds a core.s 4,096"):
        map_network(CIFAR, PROFILES["loihi"])


def test_speck_is_one_chip_one_layer_per_core():
    digits = parse_topology("digits")
    m = map_network(digits, PROFILES["speck"])
    assert len(m.chips) == 1 and {f.limit: f.used for f in m.fill(m.chips[0])}["cores"] == 3  # P2 joins 16C3p1
    with pytest.raises(SpikeGradError, match=r"layer 4 \(300\) cannot be mapped onto speck.*192,000 kernel entries"):
        map_network(MNIST, PROFILES["speck"])


def test_a_small_chip_splits_every_layer_kind():
    m = map_network(MNIST, custom_chip(2000, 100_000, "small"))
    assert set(m.split_layers) >= {0, 1, 2, 4}  # conv, pool, conv, dense
    assert m.groups() is None
    assert all(c.neurons <= 2000 and c.synapses + c.copies <= 100_000 for c in m.chips)


def test_copies_push_a_layer_over_the_capacity():
    """The second P2 (640 neurons, no weights of its own) fits a 2,000/100,000 chip alone, but below
    the split 300-neuron layer each of its 40 channels keeps 300·16 = 4,800 copied weights: 192,000
    in all, so the mapper must split it too. Counting own weights only would have put it on one chip
    storing 192,000 weights on a 100,000-weight chip."""
    spec = custom_chip(2000, 100_000, "small")
    assert copy_per_unit(MNIST, 3) == 300 * 16
    m = map_network(MNIST, spec)
    assert 4 in m.split_layers and 3 in m.split_layers
    plan = Plan.of(m)
    for c in m.chips:  # the mapper's copies are the ones the chips keep
        assert c.copies == plan.copy_synapses(c.index)
        fill = {f.limit: f for f in m.fill(c)}
        assert fill["synapses"].used == c.synapses + c.copies <= 100_000
    assert max(c.copies for c in m.chips) > 0


def test_a_layer_that_fits_a_chip_of_its_own_is_not_split():
    digits = parse_topology("digits")  # neurons 1024, 256, 64, 10; synapses 144, 0, 16384, 640
    m = map_network(digits, custom_chip(1100, 20_000, "c"))
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
        map_network(MNIST, custom_chip(neurons, synapses, "x"))


def test_capacities_are_checked_and_resolved():
    with pytest.raises(SpikeGradError, match="neurons expected an integer >= 1"):
        custom_chip(0, 5)
    with pytest.raises(SpikeGradError, match="chip must be one of loihi, loihi2, truenorth, spinnaker"):
        resolve_spec("spinnaker9", None, None)
    with pytest.raises(SpikeGradError, match="both a neuron and a synapse capacity"):
        resolve_spec(None, 5, None)
    with pytest.raises(SpikeGradError, match="describe a chip of your own"):
        resolve_spec("loihi", 1000, None)
    with pytest.raises(SpikeGradError, match="compartments per neuron expected 1"):
        resolve_spec("loihi", None, None, compartments=3)
    assert resolve_spec(None, None, None) is None
    assert resolve_spec("loihi", None, None, cores=4).capacity.cores == 4
    assert PROFILES["loihi"].neurons == 128 * 1024 // 2  # two compartments per SpikeGrad neuron
    assert resolve_spec("loihi", None, None, compartments=1).neurons == 128 * 1024


def test_fewer_cores_split_a_layer_across_chips():
    m = map_network(MNIST, resolve_spec("loihi", None, None, cores=8))
    assert len(m.chips) > 1 and m.split_layers
    for c in m.chips:
        assert all(f.used <= f.capacity for f in m.fill(c)), m.fill(c)


TOPOLOGIES = ["8x8-4C3p1-P2-16-10", "8x8x2-6C3-P2-5", "12x12-3C5-P2-8C3-7-4", "6x6-9-3", "16x16-5C3p1-P2-5C3p1-P2-6"]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(TOPOLOGIES), st.integers(1, 3000), st.integers(1, 5000))
def test_every_unit_is_placed_once_within_capacity(text, neurons, synapses):
    topo = parse_topology(text)
    try:
        m = map_network(topo, custom_chip(neurons, synapses, "r"))
    except SpikeGradError as exc:
        # refused only when one unit alone (with its copies, below a layer that does not fit a chip)
        # is bigger than a chip, or the output layer is
        units, n_out, s_out = layer_units(topo, len(topo.layers) - 1)
        assert any(n > neurons or s + copy_per_unit(topo, l) > synapses
                   for l, (n, s) in enumerate(layer_units(topo, l)[1:] for l in range(len(topo.layers)))) \
            or units * n_out > neurons or units * s_out > synapses, str(exc)
        return
    placed = [(s.layer, u) for c in m.chips for s in c.slices for u in range(s.lo, s.hi)]
    expected = [(l, u) for l in range(len(topo.layers)) for u in range(layer_units(topo, l)[0])]
    assert placed == expected  # every unit once, in layer and unit order across the chips
    plan = Plan.of(m)
    for c in m.chips:
        assert c.slices and c.neurons <= neurons and c.synapses + c.copies <= synapses
        assert c.copies == plan.copy_synapses(c.index)
        for s in c.slices:
            _, n, syn = layer_units(topo, s.layer)
            assert (s.neurons, s.synapses) == (s.units * n, s.units * syn)
    groups = m.groups()
    assert (groups is None) == bool(m.split_layers)
    assert len(m.chips_of(len(topo.layers) - 1)) == 1  # the output layer is never split
    assert all(a != b for a, b in m.links())


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(TOPOLOGIES), st.sampled_from(["loihi", "loihi2", "spinnaker", "spinnaker2"]),
       st.integers(1, 6))
def test_core_profiles_hold_every_limit(text, profile, cores):
    topo = parse_topology(text)
    try:
        m = map_network(topo, resolve_spec(profile, None, None, cores=cores))
    except SpikeGradError as exc:
        assert "cannot be mapped" in str(exc) or "must fit on one chip" in str(exc)
        return
    plan = Plan.of(m)
    for c in m.chips:
        assert all(f.used <= f.capacity for f in m.fill(c)), (c, m.fill(c))
        assert c.copies == plan.copy_synapses(c.index)
