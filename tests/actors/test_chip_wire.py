"""A chip's way onto and off the wire (Chip._outgoing, _send, _layout; wire.transpose, decode's view):
the same bytes, traffic numbers and arrays as the plain reference for any map or rows, exactly."""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import wire
from actors.chip import Chip, ChipConfig, abs_total
from cluster.backend import to_device, to_host
from cluster.mapping import whole_layers
from cluster.topology import parse_topology
from launch.run.config import make_config
from launch.run.driver import seeded_params

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=150)
MAP_LAYER, ROWS_LAYER = 0, 2  # of the digits preset: a conv layer (CHWB maps) and a dense one ((B, N) rows)
# value ranges: int8, int16 and int32 counts, beyond int32 (float32 cannot hold 2**31 - 1: it rounds up
# to 2**31, which int32 conversion cannot hold), and its edges
RANGES = [(0, 8), (-128, 127), (-129, 128), (-32768, 32767), (-40000, 40000), (-(2**31), 2**31 - 129),
          (-(2**40), 2**40)]


@cache
def _chip(gradient: str, backend: str) -> Chip:
    cfg = make_config("digits", engine="local", gradient=gradient)
    topo = parse_topology(cfg.topology)
    ccfg = ChipConfig(topology=cfg.topology, step=cfg.step, eta=cfg.eta, momentum=cfg.momentum, backend=backend)
    chip = Chip(0, whole_layers(topo, [(0, len(topo.layers) - 1)]), ccfg, seeded_params(cfg))
    chip.audit_sizes()
    return chip


def make_chip(gradient: str = "spike", backend: str = "numpy") -> Chip:
    """Chip 0 of the digits preset, holding every layer, with the size audit on and no traffic yet."""
    chip = _chip(gradient, backend)
    chip.traffic.clear()
    return chip


def reference_send(A: np.ndarray, kind: str, shape: tuple[int, ...], counts: bool) -> tuple[bytes, list]:
    """The message and link[0..3] of one send, the plain way (to_host, int32, encode): a CHWB map
    as its (N, B) values in order "units", rows (B, N) in order "samples"."""
    order = "units" if A.ndim == 4 else "samples"
    rows = A.reshape(-1, A.shape[-1]) if A.ndim == 4 else A
    if counts:
        with np.errstate(invalid="ignore"):  # NaN or beyond int32: whatever int32 conversion makes of them
            rows = rows.astype(np.int32, order="C")
    buf = wire.encode(rows, kind=kind, src=0, dst=1, batch=4, micro=5, shape=shape, order=order)
    return buf.to_pybytes(), [1, buf.size, float(np.abs(rows).sum()), min(wire.encoded_sizes(rows, order).values())]


def reference_layout(buf: bytes, is_map: bool, shape: tuple[int, ...], dtype) -> np.ndarray:
    """The message's values in the chip's layout, the plain way (cast, then turn to (N, B) for a
    map, (B, N) for rows, whichever order the message has)."""
    h, v = wire.decode(buf)
    v = v.astype(dtype)
    if is_map != (h.order == "units"):
        v = np.ascontiguousarray(v.T)
    return v.reshape(*shape, h.samples) if is_map else v


@st.composite
def layer_arrays(draw):
    """A CHWB map (or a channel slice of one) or (B, N) rows (or a column slice), float, of integer
    (rarely fractional or NaN) values in one of RANGES at some density."""
    is_map = draw(st.booleans())
    B = draw(st.sampled_from([1, 2, 7, 64, 130]))
    lo, hi = draw(st.sampled_from(RANGES))
    density = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    full = (draw(st.integers(1, 6)), draw(st.integers(1, 9)), draw(st.integers(1, 9)), B) if is_map else \
        (B, draw(st.integers(1, 300)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    A = rng.integers(lo, hi, full, endpoint=True, dtype=np.int64).astype(np.float64)
    A[rng.random(full) >= density] = 0
    if draw(st.integers(0, 9)) == 0:
        A[(0,) * A.ndim] = draw(st.sampled_from([lo, hi, 0.5, -0.5, 127.5, -128.7, np.nan]))
    A = A.astype(draw(st.sampled_from([np.float32, np.float64])))
    units = A.shape[0] if is_map else A.shape[1]
    a = draw(st.integers(0, units - 1))
    b = draw(st.integers(a + 1, units))
    return A[a:b] if is_map else A[:, a:b]  # a piece of the layer, as slices.units cuts it


@FAST
@given(layer_arrays(), st.sampled_from(["forward", "error"]))
def test_send_equals_the_plain_reference(A, kind):
    chip = make_chip()
    shape = A.shape[:3] if A.ndim == 4 else (A.shape[1],)
    want, link = reference_send(A, kind, shape, counts=True)
    with np.errstate(invalid="ignore"):
        buf = chip._send(to_device(chip.backend, A), kind, 1, 4, 5, shape)
    assert buf.to_pybytes() == want
    assert chip.traffic[1] == link


@pytest.mark.parametrize("B", [1, 3, 256])
def test_send_and_receive_on_the_backend(B, backend):
    """Spike counts of a map and of rows go out and come back as the plain way sends and lays them
    out, on the chosen backend (--backend cupy: the narrowing runs on the GPU)."""
    chip = make_chip(backend=backend)
    rng = np.random.default_rng(B)
    for l in (MAP_LAYER, ROWS_LAYER):
        shape = chip.topo.layers[l].out_shape
        full = (*shape, B) if chip.topo.layers[l].is_map else (B, int(np.prod(shape)))
        for lo, hi in RANGES[:6]:
            A = rng.integers(lo, hi, full, endpoint=True).astype(np.float32)
            want, link = reference_send(A, "error", shape, counts=True)
            chip.traffic.clear()
            buf = chip._send(to_device(chip.backend, A), "error", 1, 4, 5, shape)
            assert buf.to_pybytes() == want and chip.traffic[1] == link
            h, view = wire.decode(buf, copy=False)
            got = to_host(chip._layout(view, l, shape, order=h.order))
            np.testing.assert_array_equal(got, reference_layout(want, chip.topo.layers[l].is_map, shape, np.float32))
            assert got.dtype == np.float32 and got.flags.c_contiguous


def test_float_gradients_are_sent_and_laid_out_as_before():
    """The float baseline's errors stay floats: the same bytes, spike total (float32 sum) and layout."""
    chip = make_chip(gradient="float")
    rng = np.random.default_rng(0)
    for l in (MAP_LAYER, ROWS_LAYER):
        layer = chip.topo.layers[l]
        shape = layer.out_shape
        full = (*shape, 5) if layer.is_map else (5, int(np.prod(shape)))
        A = (rng.standard_normal(full) * 3).astype(np.float32)
        want, link = reference_send(A, "error", shape, counts=False)
        chip.traffic.clear()
        assert chip._send(A, "error", 1, 4, 5, shape).to_pybytes() == want and chip.traffic[1] == link
        h, view = wire.decode(want, copy=False)
        got = chip._layout(view, l, shape, order=h.order)
        np.testing.assert_array_equal(got, reference_layout(want, layer.is_map, shape, np.float32))
        # the chip's own array, never the message's memory, even where no cast was needed
        assert got.flags.writeable and not np.shares_memory(got, view)


@FAST
@given(layer_arrays())
def test_receive_equals_the_plain_reference(A):
    """Whatever counts a message carries (dense or sparse, any integer type), _layout of decode's
    view is the plain way's array, bit for bit, and the chip's own."""
    chip = make_chip()
    is_map = A.ndim == 4
    shape = A.shape[:3] if is_map else (A.shape[1],)
    rows = A.reshape(-1, A.shape[-1]).T if is_map else A
    with np.errstate(invalid="ignore"):
        rows = rows.astype(np.int32)
    for encoding in wire.ENCODINGS:
        for order in wire.ORDERS:  # either order reaches the same array: turned where it differs
            vals = np.ascontiguousarray(rows.T) if order == "units" else rows
            buf = wire.encode(vals, kind="forward", src=0, dst=0, batch=0, micro=0, shape=shape,
                              encoding=encoding, order=order).to_pybytes()
            h, view = wire.decode(buf, copy=False)
            assert h.order == order and view.shape == vals.shape
            got = chip._layout(view, MAP_LAYER if is_map else ROWS_LAYER, shape, order=order)
            np.testing.assert_array_equal(got, reference_layout(buf, is_map, shape, np.float32))
            assert got.dtype == np.float32 and got.flags.writeable and not np.shares_memory(got, view)


def test_decode_view_is_the_message_and_read_only():
    v = np.arange(-6, 6, dtype=np.int64).reshape(3, 4)
    for encoding in wire.ENCODINGS:
        buf = wire.encode(v, kind="forward", src=0, dst=1, batch=2, micro=3, shape=(4,), encoding=encoding)
        h, out = wire.decode(buf, copy=False)
        assert np.array_equal(out, v) and h.encoding == encoding
        if encoding == "dense":  # no copy: the values are the message's own bytes, which stay as they are
            assert not out.flags.writeable and np.shares_memory(out, np.frombuffer(buf, dtype=np.uint8))
    # every check still runs: a message for another chip is refused
    with pytest.raises(wire.WireError, match="dst expected 7, got 1"):
        wire.decode(buf, dst=7, copy=False)


@pytest.mark.parametrize("values", [np.arange(-300, 300, 7, dtype=np.int16), np.arange(86) * 0.25 - 3])
def test_a_view_of_an_unaligned_message_is_laid_out_exactly(values):
    """A message in memory that starts at an odd address (bytes from anywhere): decode's view of
    its int16 or float64 values, and the chip's array made from it, are still exact."""
    chip = make_chip(gradient="spike" if values.dtype.kind == "i" else "float")
    layer = chip.topo.layers[MAP_LAYER]
    C, H, W = layer.out_shape
    rows = np.resize(values, (2, C * H * W))
    raw = wire.encode(rows, kind="error", src=0, dst=0, batch=0, micro=0, shape=(C, H, W)).to_pybytes()
    unaligned = memoryview(bytearray(b"x" + raw))[1:]
    view = wire.decode(unaligned, copy=False)[1]
    np.testing.assert_array_equal(view, rows)
    got = chip._layout(view, MAP_LAYER, (C, H, W))
    np.testing.assert_array_equal(got, reference_layout(raw, True, (C, H, W), np.float32))


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (1, 1), (127, 129), (128, 256), (300, 257), (8640, 3)])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.float32, np.float64])
def test_transpose_equals_numpy(shape, dtype):
    rng = np.random.default_rng(1)
    a = rng.integers(-100, 100, shape).astype(dtype)
    for src in (a, a[:, ::2], a.T.copy().T):  # C-contiguous, strided, F-contiguous
        got = wire.transpose(src)
        np.testing.assert_array_equal(got, src.T)
        assert got.flags.c_contiguous and got.dtype == src.dtype and not np.shares_memory(got, src)


@pytest.mark.parametrize("rows", [
    np.array([[-128, 127, 0, -1]], np.int8),
    np.full((3, 70_000), -32768, np.int16),     # one row's Σ|v| (2.29e9) fits uint32
    np.full((2, 140_000), -32768, np.int16),    # one row's Σ|v| (4.59e9) does not: uint64 partial sums
    np.array([[-(2**31) + 1, 2**31 - 1]], np.int32),
    np.zeros((4, 0), np.int8),
    np.array([[0.5, -1.25]], np.float32),
])
def test_abs_total_is_the_exact_sum(rows):
    assert abs_total(rows) == float(np.abs(rows.astype(np.float64 if rows.dtype.kind == "f" else np.int64)).sum())
