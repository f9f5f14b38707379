"""Address-event messages (kind event): round trips of random phases and waves, checks, corrupt bytes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.wire import WireError, decode, decode_events, encode, encode_events

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=80)
HEAD = dict(src=1, dst=0, batch=3, micro=2)


@st.composite
def phases(draw):
    b = draw(st.integers(1, 9))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 31 - 1)))
    tags = draw(st.lists(st.integers(-1, 300), unique=True, max_size=4))
    out = []
    for tag in tags:
        waves = []
        for _ in range(draw(st.integers(0, 3))):
            k = int(rng.integers(1, b + 1))
            cols = np.sort(rng.choice(b, k, replace=False))
            rows = (rng.integers(-1, 2, (k, n)).astype(np.int8)
                    * (rng.random((k, n)) < draw(st.sampled_from([0.1, 1.0]))))
            waves.append((cols, rows.astype(np.int8)))
        out.append((tag, waves))
    return b, shape, out


def canonical(ph):
    """What the receiver sees: empty waves and empty phases dropped, only samples with a spike."""
    out = []
    for tag, waves in ph:
        kept = []
        for cols, rows in waves:
            keep = rows.any(axis=1)
            if keep.any():
                kept.append((cols[keep], rows[keep]))
        if kept:
            out.append((tag, kept))
    return out


@FAST
@given(phases())
def test_round_trip(case):
    b, shape, ph = case
    buf = encode_events(ph, shape=shape, samples=b, **HEAD)
    h, got = decode_events(buf, dst=0, shape=shape, batch=3, micro=2)
    assert h.kind == "event" and h.encoding == "events" and h.samples == b
    want = canonical(ph)
    assert [t for t, _ in got] == [t for t, _ in want]
    for (_, gw), (_, ww) in zip(got, want):
        assert len(gw) == len(ww)
        for (gc, gr), (wc, wr) in zip(gw, ww):
            np.testing.assert_array_equal(gc, wc)
            np.testing.assert_array_equal(gr, wr)
    events = sum(int(np.abs(r).sum()) for _, w in want for _, r in w)
    assert h.dtype == "int8"
    if events:  # 7 bytes per event at most here (phase int16, wave, sample, neuron uint8/16, sign)
        assert len(buf) < 1200 + 9 * events


@FAST
@given(phases(), st.data())
def test_corrupt_bytes_give_a_clear_error(case, data):
    b, shape, ph = case
    buf = bytearray(encode_events(ph, shape=shape, samples=b, **HEAD).to_pybytes())
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] ^= data.draw(st.integers(1, 255))
    try:
        decode_events(bytes(buf))
    except WireError:
        pass
    cut = data.draw(st.integers(0, len(buf) - 1))
    with pytest.raises(WireError):
        decode_events(bytes(buf[:cut]))


def test_checks():
    one = [(-1, [(np.array([0]), np.array([[1, 0, -1]], np.int8))])]
    with pytest.raises(WireError, match="signs expected -1 or \\+1"):
        encode_events([(-1, [(np.array([0]), np.array([[2, 0, 0]], np.int8))])], shape=(3,), samples=1, **HEAD)
    with pytest.raises(WireError, match="sample expected < 1"):
        encode_events([(-1, [(np.array([4]), np.array([[1, 0, 0]], np.int8))])], shape=(3,), samples=1, **HEAD)
    with pytest.raises(WireError, match="wave expected"):
        encode_events(one, shape=(4,), samples=1, **HEAD)
    buf = encode_events(one, shape=(3,), samples=1, **HEAD)
    with pytest.raises(WireError, match="shape expected \\(4,\\)"):
        decode_events(buf, shape=(4,))
    with pytest.raises(WireError, match="got address events"):
        decode(buf)
    counts = encode(np.ones((1, 3), np.int8), kind="forward", shape=(3,), **HEAD)
    with pytest.raises(WireError, match="kind expected 'event'"):
        decode_events(counts)
    with pytest.raises(WireError, match="kind expected one of"):
        encode(np.ones((1, 3), np.int8), kind="event", shape=(3,), **HEAD)
    h, got = decode_events(encode_events([], shape=(3,), samples=2, **HEAD))
    assert got == [] and h.samples == 2
