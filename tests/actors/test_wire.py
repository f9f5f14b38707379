"""The Arrow spike wire (actors/wire.py): round trips, encoding choice, corrupt input, each check."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors.wire import ENCODINGS, KINDS, ORDERS, WIRE_VERSION, Header, WireError, decode, encode, encoded_sizes
from cluster.errors import SpikeGradError

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=120)
INT_NAMES = ("int8", "int16", "int32", "int64")
VALUE_NAMES = INT_NAMES + ("float32", "float64")
# Fixed IPC overhead of one message beyond its column bytes: the schema message (fields and
# metadata), the record-batch message header, 8-byte buffer padding and the end-of-stream
# marker. Measured with pyarrow 26 (see test_fixed_overhead): 616-656 bytes for a dense message
# and 816-856 bytes for a sparse one (the range covers empty to large messages and short to
# 13-digit header numbers); 1024 bytes bounds both.
OVERHEAD = 1024


def narrowest_int(lo: int, hi: int) -> str:
    for bits in (8, 16, 32, 64):
        if -(1 << (bits - 1)) <= lo and hi < (1 << (bits - 1)):
            return f"int{bits}"
    raise AssertionError((lo, hi))


def expected_dtype(v: np.ndarray) -> str:
    """An oracle written independently of wire.py, in plain Python on the distinct values."""
    vals = [float(x) if v.dtype.kind == "f" else int(x) for x in np.unique(v)]
    if all(float(x).is_integer() and -(2**63) <= x < 2**63 for x in vals):
        return narrowest_int(int(min(vals, default=0)), int(max(vals, default=0)))
    if all(float(np.float32(x)) == x for x in vals):
        return "float32"
    return "float64"


def enc(values, shape=None, **kw):
    args = dict(kind="forward", src=0, dst=1, batch=2, micro=3,
                shape=shape if shape is not None else (values.shape[1],))
    args.update(kw)
    return encode(values, **args)


def wire_schema(buf) -> pa.Schema:
    return pa.ipc.open_stream(buf).schema


def check_decoded(h: Header, out: np.ndarray) -> None:
    """What every successful decode must satisfy, whatever bytes it came from."""
    assert h.kind in KINDS and h.encoding in ENCODINGS and h.dtype in VALUE_NAMES
    assert h.src >= -1 and h.dst >= -1 and h.batch >= 0 and h.micro >= 0 and h.samples >= 0
    assert h.shape and all(d >= 1 for d in h.shape)
    assert h.order in ORDERS and out.shape == h.array_shape and out.dtype == np.dtype(h.dtype)
    assert h.array_shape == ((h.neurons, h.samples) if h.order == "units" else (h.samples, h.neurons))
    assert out.flags.writeable
    if out.dtype.kind == "f":
        assert np.isfinite(out).all()
    h2, out2 = decode(encode(out, kind=h.kind, src=h.src, dst=h.dst, batch=h.batch, micro=h.micro,
                             shape=h.shape, encoding=h.encoding, order=h.order))
    assert np.array_equal(out2, out) and h2.shape == h.shape and h2.samples == h.samples


# ---------------------------------------------------------------- round trips


@st.composite
def cases(draw):
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=1, max_size=3)))
    b = draw(st.integers(0, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.02, 0.2, 0.7, 1.0]))
    family = draw(st.sampled_from(["int", "int", "integral-float", "float32", "float64", "float64-as-32"]))
    size = (b, math.prod(shape))
    if family in ("int", "integral-float"):
        lo = draw(st.integers(-(2**63), 2**63 - 1))
        hi = draw(st.integers(lo, 2**63 - 1))
        if family == "integral-float":
            lo, hi = sorted((max(lo, -(2**53)), min(hi, 2**53)))
        v = rng.integers(lo, hi, size=size, endpoint=True, dtype=np.int64)
        if family == "int":
            in_dtype = draw(st.sampled_from(["int64", "narrowest", "int32-if-fits"]))
            if in_dtype == "narrowest" and v.size:
                v = v.astype(narrowest_int(int(v.min()), int(v.max())))
            elif in_dtype == "int32-if-fits" and v.size and -(2**31) <= v.min() and v.max() < 2**31:
                v = v.astype(np.int32)
        else:
            v = v.astype(np.float64)
    else:
        v = rng.standard_normal(size) * draw(st.sampled_from([1e-3, 1.0, 1e6]))
        if family != "float64":
            v = v.astype(np.float32)
        if family == "float64-as-32":
            v = v.astype(np.float64)
    v = np.where(rng.random(size) < density, v, np.zeros((), v.dtype))
    encoding = draw(st.sampled_from([None, "dense", "sparse"]))
    header = dict(kind=draw(st.sampled_from(KINDS)), src=draw(st.integers(-1, 40)), dst=draw(st.integers(-1, 40)),
                  batch=draw(st.integers(0, 10**9)), micro=draw(st.integers(0, 1000)))
    return v, shape, encoding, header


@FAST
@given(cases())
def test_round_trip(case):
    v, shape, encoding, header = case
    buf = encode(v, shape=shape, encoding=encoding, **header)
    assert isinstance(buf, pa.Buffer)
    h, out = decode(buf, kind=header["kind"], dst=header["dst"], shape=shape,
                    batch=header["batch"], micro=header["micro"])
    assert np.array_equal(out, v)
    assert out.dtype == np.dtype(expected_dtype(v)) and h.dtype == expected_dtype(v)
    sizes = encoded_sizes(v)
    chosen = encoding or ("sparse" if sizes["sparse"] < sizes["dense"] else "dense")
    assert h == Header(shape=shape, samples=v.shape[0], encoding=chosen, dtype=h.dtype, **header)
    assert h.neurons == math.prod(shape)
    check_decoded(h, out)
    # the same values units-major (N, B), order "units": the same sizes, the same values back turned
    t = np.ascontiguousarray(v.T)
    assert encoded_sizes(t, "units") == sizes
    hu, back = decode(encode(t, shape=shape, encoding=encoding, order="units", **header))
    assert np.array_equal(back, t) and back.dtype == out.dtype
    assert hu == Header(shape=shape, samples=v.shape[0], encoding=chosen, dtype=h.dtype, order="units", **header)
    check_decoded(hu, back)


@pytest.mark.parametrize("encoding", ["dense", "sparse"])
@pytest.mark.parametrize(
    "values, dtype",
    [
        ([[-128, 127, 0]], "int8"),
        ([[128, 0, 1]], "int16"),
        ([[-129, 0, 1]], "int16"),
        ([[32767, -32768, 0]], "int16"),
        ([[32768, 0, 0]], "int32"),
        ([[2**31 - 1, -(2**31), 0]], "int32"),
        ([[2**31, 0, 0]], "int64"),
        ([[-(2**63), 2**63 - 1, 0]], "int64"),
        ([[0, 0, 0]], "int8"),
    ],
)
def test_extreme_integers(values, dtype, encoding):
    v = np.array(values, dtype=np.int64)
    h, out = decode(enc(v, encoding=encoding))
    assert h.dtype == dtype and out.dtype == np.dtype(dtype) and np.array_equal(out, v)
    assert wire_schema(enc(v, encoding=encoding)).field("value").type == pa.from_numpy_dtype(np.dtype(dtype))


@pytest.mark.parametrize(
    "values, dtype",
    [
        (np.array([[1.0, -3.0, 0.0]]), "int8"),  # integral floats travel as integers
        (np.array([[-0.0, 200.0]], np.float32), "int16"),
        (np.array([[0.5, -0.25, 0.0]], np.float32), "float32"),
        (np.array([[0.5, 1e-3]], np.float32), "float32"),
        (np.array([[0.1, 0.0]]), "float64"),  # 0.1 is not exact in float32
        (np.array([[0.75, 2.0**-20]]), "float32"),
        (np.array([[2.0**70, 0.0]]), "float32"),  # integral but beyond int64: a float
        (np.array([[1e19, 0.0]]), "float64"),  # 1e19 is not exact in float32
        (np.array([[1e300, 1.0]]), "float64"),
        (np.array([[1.5, 0.0]], np.float16), "float32"),
        (np.array([[True, False]]), "int8"),
        (np.array([[255, 0]], np.uint8), "int16"),
        (np.array([[2**63 - 1]], np.uint64), "int64"),
    ],
)
@pytest.mark.parametrize("encoding", [None, "dense", "sparse"])
def test_value_types(values, dtype, encoding):
    h, out = decode(enc(values, encoding=encoding))
    assert h.dtype == dtype and out.dtype == np.dtype(dtype)
    assert np.array_equal(out, values)


def test_float_gradients_exact():
    rng = np.random.default_rng(7)
    g = (rng.standard_normal((16, 300)) * 1e-3).astype(np.float32)
    g[rng.random(g.shape) < 0.5] = 0
    for encoding in (None, "dense", "sparse"):
        h, out = decode(enc(g, kind="error", encoding=encoding), kind="error")
        assert h.dtype == "float32" and out.dtype == np.float32
        assert np.array_equal(out, g) and out.tobytes() == g.tobytes()


@pytest.mark.parametrize("encoding", [None, "dense", "sparse"])
@pytest.mark.parametrize("shape", [(5,), (2, 3), (15, 12, 12)])
def test_empty_and_zero(shape, encoding):
    n = math.prod(shape)
    for v in (np.zeros((0, n), np.int32), np.zeros((0, n)), np.zeros((4, n), np.int64), np.zeros((3, n), np.float32)):
        h, out = decode(enc(v, shape=shape, encoding=encoding), shape=shape)
        assert out.shape == v.shape and h.samples == v.shape[0] and h.dtype == "int8"
        assert not out.any()


@pytest.mark.parametrize("b, sample_type", [(256, pa.uint8()), (257, pa.uint16())])
def test_max_sample_index(b, sample_type):
    v = np.zeros((b, 3), np.int8)
    v[0, 0], v[b - 1, 2], v[b - 1, 1] = 1, -1, 5
    buf = enc(v, encoding="sparse")
    assert wire_schema(buf).field("sample").type == sample_type
    assert wire_schema(buf).field("neuron").type == pa.uint8()
    h, out = decode(buf)
    assert np.array_equal(out, v) and h.samples == b


@pytest.mark.parametrize("shape, neuron_type", [((256, 256), pa.uint16()), ((65537,), pa.uint32())])
def test_max_neuron_index(shape, neuron_type):
    n = math.prod(shape)
    v = np.zeros((2, n), np.int16)
    v[1, n - 1], v[0, 0], v[0, n - 2] = 300, -2, 1
    buf = enc(v, shape=shape, encoding=None)  # 3 nonzeros: sparse wins
    assert wire_schema(buf).field("neuron").type == neuron_type
    assert wire_schema(buf).field("sample").type == pa.uint8()
    h, out = decode(buf, shape=shape)
    assert h.encoding == "sparse" and np.array_equal(out, v)


def test_decode_input_types_and_fresh_array():
    v = np.arange(-6, 6, dtype=np.int64).reshape(3, 4)
    for encoding in ENCODINGS:
        buf = enc(v, encoding=encoding)
        raw = buf.to_pybytes()
        unaligned = bytearray(b"x" + raw)
        for src in (buf, raw, bytearray(raw), memoryview(raw), memoryview(unaligned)[1:]):
            h, out = decode(src)
            assert np.array_equal(out, v) and out.flags.writeable
            out[:] = 99
            assert np.array_equal(decode(buf)[1], v)
        assert not np.shares_memory(decode(buf)[1], np.frombuffer(buf, dtype=np.uint8))


def test_wire_error_type():
    assert issubclass(WireError, SpikeGradError) and issubclass(WireError, ValueError)
    assert WIRE_VERSION == 2


# ---------------------------------------------------------------- encoding choice and size


@FAST
@given(st.integers(0, 2**32 - 1), st.sampled_from([0.0, 0.01, 0.1, 0.2, 0.34, 0.5, 0.9, 1.0]),
       st.sampled_from(["int8", "int32", "float32"]))
def test_automatic_choice_and_size(seed, density, kind):
    rng = np.random.default_rng(seed)
    v = rng.integers(-100, 100, size=(64, 1000)) if kind != "float32" else rng.standard_normal((64, 1000))
    v = np.where(rng.random(v.shape) < density, v, 0).astype(kind)
    sizes = encoded_sizes(v)
    itemsize = np.dtype(expected_dtype(v)).itemsize
    nnz = int(np.count_nonzero(v))
    assert sizes == {"dense": v.size * itemsize, "sparse": nnz * (1 + 2 + itemsize)}
    buf = enc(v)
    h, out = decode(buf)
    best = "sparse" if sizes["sparse"] < sizes["dense"] else "dense"
    assert h.encoding == best and np.array_equal(out, v)
    for encoding in ENCODINGS:
        assert len(enc(v, encoding=encoding)) >= sizes[encoding]
    assert sizes[best] <= len(buf) <= 1.1 * sizes[best] + OVERHEAD


def test_tie_goes_to_dense():
    v = np.zeros((1, 3), np.int8)  # nothing nonzero ... sparse 0 < dense 3: sparse
    assert decode(enc(v))[0].encoding == "sparse"
    e = np.zeros((0, 3), np.int8)  # both 0 bytes: a tie
    assert encoded_sizes(e) == {"dense": 0, "sparse": 0} and decode(enc(e))[0].encoding == "dense"
    v = np.array([[1, 1, 1, 0, 0, 0]], np.int8)  # sparse 3 x 3 bytes > dense 6
    assert decode(enc(v))[0].encoding == "dense"
    v = np.array([[1, 0, 0, 0, 0, 0]], np.int8)  # sparse 3 < dense 6
    assert decode(enc(v))[0].encoding == "sparse"
    v = np.array([[1, 1, 0, 0, 0, 0]], np.int8)  # sparse 6 == dense 6: dense
    assert decode(enc(v))[0].encoding == "dense"


def test_fixed_overhead():
    big = dict(src=10**6, dst=10**6, batch=10**12, micro=10**6, shape=(1000, 1000, 1000))
    for encoding in ENCODINGS:
        for v, kw in ((np.zeros((0, 5), np.int8), {}), (np.zeros((0, 10**9), np.int8), big)):
            overhead = len(enc(v, encoding=encoding, **kw)) - encoded_sizes(v)[encoding]
            assert 0 < overhead <= OVERHEAD - 3 * 8  # leave room for per-column padding


def test_a_sparse_layer_message_picks_the_sparse_encoding():
    """A 10 %-active int8 layer (MNIST's 40C5 after pooling, batch 64) travels sparse and round-trips
    (its speed is a benchmark's business: `spikegrad bench chips` reports encode/decode time)."""
    rng = np.random.default_rng(1)
    v = np.where(rng.random((64, 8640)) < 0.1, rng.integers(-3, 4, (64, 8640)), 0).astype(np.int8)
    h, out = decode(enc(v, shape=(60, 12, 12)), shape=(60, 12, 12))
    assert np.array_equal(out, v) and h.encoding == "sparse"
    assert encoded_sizes(v)["sparse"] < encoded_sizes(v)["dense"]


# ---------------------------------------------------------------- corrupt bytes never crash


def _valid_messages():
    rng = np.random.default_rng(3)
    v = np.where(rng.random((3, 10)) < 0.3, rng.integers(-200, 200, (3, 10)), 0)
    g = np.where(rng.random((2, 6)) < 0.5, rng.standard_normal((2, 6)), 0).astype(np.float32)
    return [enc(v, shape=(2, 5), encoding="sparse").to_pybytes(), enc(v, shape=(2, 5), encoding="dense").to_pybytes(),
            enc(g, kind="error", encoding="sparse").to_pybytes(), enc(g, kind="error", encoding="dense").to_pybytes(),
            enc(v.T, shape=(2, 5), encoding="sparse", order="units").to_pybytes(),
            enc(v.T, shape=(2, 5), encoding="dense", order="units").to_pybytes()]


VALID = _valid_messages()


def decode_or_wire_error(data):
    try:
        h, out = decode(data)
    except WireError as e:
        assert str(e).startswith("wire: ")
        return False
    check_decoded(h, out)
    return True


@pytest.mark.parametrize("msg", range(len(VALID)))
def test_truncations(msg):
    data = VALID[msg]
    assert decode_or_wire_error(data)
    for cut in range(len(data)):
        with pytest.raises(WireError, match="^wire: "):
            decode(data[:cut])
    with pytest.raises(WireError, match="got 8 bytes after it"):
        decode(data + data[-8:])  # a second end-of-stream marker
    with pytest.raises(WireError, match="without it"):
        decode(data + b"\x00" * 8)


@settings(deadline=None, max_examples=400)
@given(st.sampled_from(range(len(VALID))), st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                     min_size=1, max_size=3))
def test_byte_flips(msg, flips):
    data = bytearray(VALID[msg])
    for pos, xor in flips:
        data[pos % len(data)] ^= xor
    decode_or_wire_error(bytes(data))


@settings(deadline=None, max_examples=200)
@given(st.binary(max_size=1500), st.booleans(), st.sampled_from([None, *range(len(VALID))]))
def test_random_bytes(data, with_eos, prefix_of):
    if prefix_of is not None:  # a real header followed by garbage
        data = VALID[prefix_of][: len(VALID[prefix_of]) // 2] + data
    if with_eos:
        data += b"\xff\xff\xff\xff\x00\x00\x00\x00"
    decode_or_wire_error(data)


@pytest.mark.parametrize("data", [b"", b"\x00", b"\xff\xff\xff\xff\x00\x00\x00\x00", bytearray(), memoryview(b"")])
def test_empty(data):
    with pytest.raises(WireError, match="^wire: "):
        decode(data)


@pytest.mark.parametrize("data", [None, "text", 12, [1, 2], np.zeros(4, np.uint8)])
def test_not_a_buffer(data):
    with pytest.raises(WireError, match="expected pa.Buffer"):
        decode(data)


# ---------------------------------------------------------------- each check, on hand-made streams


def meta(**over):
    m = dict(kind="forward", src="0", dst="1", batch="2", micro="3", shape="1,3", samples="2", encoding="sparse",
             order="samples")
    m["spikegrad.wire"] = "2"
    m.update(over)
    return {k: v for k, v in m.items() if v is not None}


def stream(columns: dict, metadata: dict | None, batches: int = 1) -> bytes:
    md = None if metadata is None else {str(k).encode(): str(v).encode() for k, v in metadata.items()}
    schema = pa.schema([(k, a.type) for k, a in columns.items()], metadata=md)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        for _ in range(batches):
            w.write_batch(pa.record_batch(list(columns.values()), schema=schema))
    return sink.getvalue().to_pybytes()


UINT8, INT8 = pa.uint8(), pa.int8()


def sparse(s=(0, 1), n=(2, 0), v=(1, -1), st_=UINT8, nt=UINT8, vt=INT8):
    return {"sample": pa.array(s, st_), "neuron": pa.array(n, nt), "value": pa.array(v, vt)}


def dense(v=(0, 1, 0, -1, 0, 0), vt=INT8):
    return {"value": pa.array(v, vt)}


def test_hand_made_streams_are_valid():
    h, out = decode(stream(sparse(), meta()), kind="forward", dst=1, shape=(1, 3), batch=2, micro=3)
    assert np.array_equal(out, [[0, 0, 1], [-1, 0, 0]]) and h.encoding == "sparse"
    h, out = decode(stream(dense(), meta(encoding="dense")))
    assert np.array_equal(out, [[0, 1, 0], [-1, 0, 0]]) and h.encoding == "dense"


BAD = [
    # (columns, metadata, decode kwargs, expected message regex)
    (sparse(), meta(**{"spikegrad.wire": "7"}), {}, r"^wire: version expected 2, got 7$"),
    (sparse(), meta(**{"spikegrad.wire": "1", "order": None}), {}, r"^wire: version expected 2, got 1$"),
    (sparse(), meta(order=None), {}, r"missing \['order'\]"),
    (sparse(), meta(order="columns"), {}, r"order expected one of \('samples', 'units'\), got 'columns'"),
    (sparse(s=(0, 1), n=(2, 0)), meta(order="units"), {},
     r"sorted by \(neuron, sample\) without duplicates, got unsorted \(0, 1\) after \(2, 0\) at row 1"),
    (sparse(s=(1, 1), n=(0, 0)), meta(order="units"), {}, r"got duplicate \(0, 1\) after \(0, 1\) at row 1"),
    (sparse(), meta(**{"spikegrad.wire": None}), {}, r"expected key 'spikegrad.wire'"),
    (sparse(), None, {}, r"expected key 'spikegrad.wire', got keys \[\]"),
    (sparse(), meta(kind="bogus"), {}, r"kind expected one of \('forward', 'error', 'event'\), got 'bogus'"),
    (sparse(), meta(), {"kind": "error"}, r"kind expected 'error', got 'forward'"),
    (sparse(), meta(), {"dst": 5}, r"dst expected 5, got 1"),
    (sparse(), meta(), {"shape": (300,)}, r"shape expected \(300,\), got \(1, 3\)"),
    (sparse(), meta(), {"batch": 9}, r"batch expected 9, got 2"),
    (sparse(), meta(), {"micro": 0}, r"micro expected 0, got 3"),
    (sparse(), meta(src=None), {}, r"missing \['src'\]"),
    (sparse(), meta(extra="1"), {}, r"unknown \['extra'\]"),
    (sparse(), meta(src="-2"), {}, r"src expected an integer >= -1, got '-2'"),
    (sparse(), meta(dst="x"), {}, r"dst expected an integer >= -1, got 'x'"),
    (sparse(), meta(batch="1.5"), {}, r"batch expected an integer >= 0, got '1.5'"),
    (sparse(), meta(micro="+1"), {}, r"micro expected an integer >= 0, got '\+1'"),
    (sparse(), meta(samples="-1"), {}, r"samples expected an integer >= 0, got '-1'"),
    (sparse(), meta(batch="99999999999999999999"), {}, r"batch expected an integer >= 0"),
    (sparse(), meta(shape="0,6"), {}, r"shape dimension expected an integer >= 1, got '0'"),
    (sparse(), meta(shape=""), {}, r"shape dimension expected an integer >= 1, got ''"),
    (sparse(), meta(encoding="rle"), {}, r"encoding expected one of \('dense', 'sparse', 'events'\), got 'rle'"),
    (sparse(s=(0, 2)), meta(), {}, r"sample index out of bounds: expected < 2, got 2"),
    (sparse(n=(2, 3)), meta(), {}, r"neuron index out of bounds: expected < 3, got 3"),
    (sparse(s=(1, 1), n=(0, 0)), meta(), {}, r"got duplicate \(1, 0\) after \(1, 0\) at row 1"),
    (sparse(s=(1, 0), n=(0, 2)), meta(), {}, r"got unsorted \(0, 2\) after \(1, 0\) at row 1"),
    (sparse(s=(0, 0), n=(2, 1)), meta(), {}, r"got unsorted \(0, 1\) after \(0, 2\) at row 1"),
    (sparse(v=(1, 0)), meta(), {}, r"sparse value expected nonzero, got 0 at row 1"),
    (sparse(v=(1, None)), meta(), {}, r"column value expected no nulls, got 1"),
    (sparse(s=(None, 1)), meta(), {}, r"column sample expected no nulls, got 1"),
    (sparse(st_=pa.int32()), meta(), {}, r"sample column expected an unsigned integer type, got int32"),
    (sparse(nt=pa.int8()), meta(), {}, r"neuron column expected an unsigned integer type, got int8"),
    (sparse(v=(1, 2), vt=pa.uint8()), meta(), {}, r"value column expected one of .*, got uint8"),
    (sparse(v=np.array([1.5, 2.5], np.float16), vt=pa.float16()), meta(), {},
     r"value column expected one of .*, got halffloat"),
    (sparse(v=(1.5, float("nan")), vt=pa.float32()), meta(), {}, r"values expected finite, got 1 NaN/inf"),
    (dense(v=(0, 1, 0, float("inf"), 0, 0), vt=pa.float64()), meta(encoding="dense"), {}, r"expected finite"),
    (dense(v=(0, 1, 0, -1, 0)), meta(encoding="dense"), {},
     r"dense value column expected 6 values \(2 samples x 3 neurons\), got 5"),
    (dense(), meta(encoding="dense", samples="3"), {}, r"expected 9 values .*, got 6"),
    (dense(), meta(), {}, r"sparse columns expected \['sample', 'neuron', 'value'\], got \['value'\]"),
    (sparse(), meta(encoding="dense"), {}, r"dense columns expected \['value'\], got \['sample', 'neuron', 'value'\]"),
    ({"values": pa.array([1] * 6, pa.int8())}, meta(encoding="dense"), {}, r"expected \['value'\], got \['values'\]"),
    (dense(), meta(encoding="dense", shape="100000,100000", samples="100"),
     {}, r"expected at most \d+ values, got 100 x 10000000000"),
]


@pytest.mark.parametrize("columns, metadata, kwargs, pattern", BAD)
def test_each_check(columns, metadata, kwargs, pattern):
    with pytest.raises(WireError, match=pattern) as info:
        decode(stream(columns, metadata), **kwargs)
    assert str(info.value).startswith("wire: ")


def test_batch_count_and_bad_utf8():
    with pytest.raises(WireError, match="exactly one record batch, got none"):
        decode(stream(sparse(), meta(), batches=0))
    with pytest.raises(WireError, match="exactly one record batch, got more"):
        decode(stream(sparse(), meta(), batches=2))
    schema = pa.schema([("value", pa.int8())], metadata={b"kind": b"\xff\xfe"})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as w:
        w.write_batch(pa.record_batch([pa.array([1], pa.int8())], schema=schema))
    with pytest.raises(WireError, match="UnicodeDecodeError"):
        decode(sink.getvalue())


@pytest.mark.parametrize(
    "values, kw, pattern",
    [
        (np.zeros((2, 3, 4)), {}, r"2-D .* got shape \(2, 3, 4\)"),
        (np.zeros(6), {}, r"2-D .* got shape \(6,\)"),
        (np.zeros((2, 6)), {"shape": (2, 2)}, r"expected 4 neurons per sample for shape \(2, 2\), got 6"),
        (np.zeros((2, 6)), {"kind": "spike"}, r"kind expected one of .*, got 'spike'"),
        (np.zeros((2, 6)), {"encoding": "rle"}, r"encoding expected one of .*, got 'rle'"),
        (np.zeros((2, 6)), {"src": -2}, r"src expected an integer >= -1, got -2"),
        (np.zeros((2, 6)), {"dst": 1.0}, r"dst expected an integer >= -1, got 1.0"),
        (np.zeros((2, 6)), {"batch": -1}, r"batch expected an integer >= 0, got -1"),
        (np.zeros((2, 6)), {"micro": True}, r"micro expected an integer >= 0, got True"),
        (np.zeros((2, 6)), {"shape": ()}, r"shape expected a non-empty tuple"),
        (np.zeros((2, 6)), {"shape": (6, 0)}, r"shape dimension expected an integer >= 1, got 0"),
        (np.array([[1.0, np.nan]]), {}, r"values expected finite, got 1 NaN/inf"),
        (np.array([[np.inf, -np.inf]]), {}, r"values expected finite, got 2 NaN/inf"),
        (np.array([[1 + 2j]]), {}, r"integer or float array, got dtype complex128"),
        (np.array([["a"]]), {}, r"integer or float array, got dtype <U1"),
        (np.array([[2**64 - 1]], np.uint64), {},
         r"within int64 .*, got \[18446744073709551615, 18446744073709551615\]"),
    ],
)
def test_encode_rejects(values, kw, pattern):
    with pytest.raises(WireError, match=pattern):
        enc(values, **{"shape": (values.shape[-1],), **kw})
