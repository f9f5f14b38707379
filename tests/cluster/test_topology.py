import pytest

from cluster.errors import SpikeGradError
from cluster.topology import PRESETS, parse_topology


def test_mnist_preset_shapes():
    t = parse_topology("mnist")
    assert t.text == "28x28-15C5-P2-40C5-P2-300-10"
    assert t.input_shape == (1, 28, 28)
    assert [l.out_shape for l in t.layers] == [(15, 24, 24), (15, 12, 12), (40, 8, 8), (40, 4, 4),
                                               (300, 1, 1), (10, 1, 1)]
    assert t.trainable == (0, 2, 4, 5)
    assert t.num_classes == 10


def test_cifar_preset_padding_and_channels():
    t = parse_topology("cifar10")
    assert t.input_shape == (3, 32, 32)
    assert t.layers[0].padding == 1 and t.layers[0].out_shape == (128, 32, 32)
    assert t.layers[-3].in_shape == (512, 8, 8)  # 1024 dense after 512C3p1 on an 8x8 map
    assert t.layers[-1].out_shape == (10, 1, 1)


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_parse(name):
    assert parse_topology(name).layers


@pytest.mark.parametrize("text, token", [
    ("28x28-15Q5-10", "15Q5"),
    ("28x28-15C29-10", "15C29"),
    ("28x28-P0-10", "P0"),
    ("28x28-15C5-P2", "P2"),          # last layer must be dense
    ("28xx28-10", "28xx28"),
    ("28x28-10-P2-10", "P2"),         # pooling after dense
    ("28x28-15C5p5-10", "15C5p5"),    # padding >= kernel
    ("28x28-0-10", "0"),
])
def test_bad_tokens_are_named(text, token):
    with pytest.raises(SpikeGradError) as e:
        parse_topology(text)
    msg = str(e.value)
    assert f"[{token}]" in msg and "\n" not in msg


def test_too_short():
    with pytest.raises(SpikeGradError, match="presets"):
        parse_topology("28x28")


def test_uneven_pooling_floors():
    t = parse_topology("7x7-P2-3")
    assert t.layers[0].out_shape == (1, 3, 3)
