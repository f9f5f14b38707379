"""The spike wire: one micro-batch of signed spike counts (or float errors) as an Arrow IPC stream.

A message is a complete Arrow IPC *stream* (schema message, exactly one record batch, the
8-byte end-of-stream marker, nothing after it). :func:`encode` returns a self-contained
``pa.Buffer`` that Ray ships zero-copy; :func:`decode` accepts a ``pa.Buffer``, ``bytes``,
``bytearray`` or ``memoryview``, checks everything and raises :class:`WireError` (a
:class:`~cluster.errors.SpikeGradError`) for anything that is not a well-formed message.

Values are a ``(B, N)`` array (``B`` samples, ``N = prod(shape)`` neurons), or with ``order``
``units`` its transpose ``(N, B)``: a chip holds a map units-major (C, H, W, B), so it sends and
receives maps in that order and neither end turns them (docs/design.md §5). If every value
is an integer they travel as the narrowest signed integer type holding their min and max
(int8, int16, int32, int64); otherwise as float32 when every value is exact in float32, else
float64. NaN and inf are refused. Integral floats outside the int64 range travel as floats.

Schema metadata (UTF-8 bytes keys and values; exactly these keys):

============== ============================================ ====================
key            meaning                                      example
============== ============================================ ====================
spikegrad.wire wire format version, ``WIRE_VERSION``        ``2``
kind           one of ``KINDS`` (counts) or ``event``       ``forward``
src            source chip index, >= -1 (-1 = the driver)   ``0``
dst            destination chip index, >= -1                ``1``
batch          batch id, >= 0                               ``12``
micro          micro-batch id, >= 0                         ``3``
shape          per-sample neuron shape, dims >= 1           ``15,12,12``
samples        ``B``, samples in the micro-batch, >= 0      ``64``
encoding       one of ``ENCODINGS``, or ``events``          ``sparse``
order          one of ``ORDERS``: ``samples`` (B, N) or     ``units``
               ``units`` (N, B); ``samples`` for events
============== ============================================ ====================

Columns. ``dense``: ``value`` with ``B*N`` entries, row-major (sample, neuron), or with order
``units`` row-major (neuron, sample). ``sparse``: ``sample`` (narrowest of uint8/16/32 holding
``B-1``), ``neuron`` (narrowest unsigned holding ``N-1``), ``value``; one row per nonzero value,
sorted by (sample, neuron), or with order ``units`` by (neuron, sample); no duplicates. Version 1
(no ``order``; always ``samples``) is refused: messages live for one micro-batch, never on disk.
No nulls anywhere. The value dtype is not in the metadata: it is the type of
the ``value`` column. ``encoding=None`` picks the encoding with fewer column bytes (ties:
dense), as reported by :func:`encoded_sizes`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from cluster.errors import SpikeGradError

WIRE_VERSION = 2
KINDS = ("forward", "error")  # spike counts; address events are kind "event" (encode_events)
ENCODINGS = ("dense", "sparse")
ORDERS = ("samples", "units")  # (B, N) rows, or (N, B): a units-major map's own order
EVENTS = "events"  # the encoding of kind "event": address events, see encode_events
EVENT_COLUMNS = ["phase", "wave", "sample", "neuron", "sign"]
MAX_VALUES = 1 << 28  # B * N cap, so a corrupt header cannot make decode allocate gigabytes

_KEYS = ("spikegrad.wire", "kind", "src", "dst", "batch", "micro", "shape", "samples", "encoding", "order")
_TILE = 128  # transpose's tile side
_EOS = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_INT64_MAX = (1 << 63) - 1
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_SIGNED = (np.dtype(np.int8), np.dtype(np.int16), np.dtype(np.int32), np.dtype(np.int64))
_UNSIGNED = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.uint32), np.dtype(np.uint64))
_VALUE_TYPES = {pa.int8(): "int8", pa.int16(): "int16", pa.int32(): "int32", pa.int64(): "int64",
                pa.float32(): "float32", pa.float64(): "float64"}
_INDEX_TYPES = (pa.uint8(), pa.uint16(), pa.uint32(), pa.uint64())
_CAUGHT = (pa.ArrowException, ValueError, TypeError, IndexError, OverflowError, KeyError,
           UnicodeDecodeError, MemoryError, OSError, EOFError, BufferError)


class WireError(SpikeGradError):
    """A spike message, or the values given to encode one, is not what the wire expects."""


@dataclass(frozen=True)
class Header:
    kind: str
    src: int
    dst: int
    batch: int
    micro: int
    shape: tuple[int, ...]
    samples: int
    encoding: str
    dtype: str
    order: str = "samples"

    @property
    def neurons(self) -> int:
        return math.prod(self.shape)

    @property
    def array_shape(self) -> tuple[int, int]:
        """The values' 2-D shape in the message's order: (B, N), or (N, B) for order ``units``."""
        return (self.neurons, self.samples) if self.order == "units" else (self.samples, self.neurons)


def int_type(lo: int, hi: int) -> np.dtype:
    """The narrowest signed integer type holding [lo, hi]: the type integer values travel as."""
    for dt in _SIGNED:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return dt
    raise WireError(f"wire: values expected within int64 [{-_INT64_MAX - 1}, {_INT64_MAX}], got [{lo}, {hi}]")


def _unsigned_for(top: int) -> np.dtype:
    return next(dt for dt in _UNSIGNED if top <= np.iinfo(dt).max)


def transpose(a: np.ndarray) -> np.ndarray:
    """A fresh C-contiguous (C, R) copy of a host (R, C) array, any dtype: the turn between a chip's
    units-major layout (CHWB maps as (N, B)) and the wire's rows (B, N), both ways.

    Copied in square tiles of ``_TILE``: on the MNIST preset's first map, (8640, 256) int8, NumPy's
    own copy of the transposed view took 9.2-10 ms, the tiles 2.6-2.7 ms; the other way round
    NumPy's took 1.3-1.4 ms, the tiles 1.7-1.9 ms; on the smaller maps they were within 0.2 ms
    (docs/measurements/wire-encode-2026-12-07.md). Equal to ``np.ascontiguousarray(a.T)``.
    """
    r, c = a.shape
    out = np.empty((c, r), dtype=a.dtype)
    for i in range(0, r, _TILE):
        for j in range(0, c, _TILE):
            out[j:j + _TILE, i:i + _TILE] = a[i:i + _TILE, j:j + _TILE].T
    return out


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= _INT64_MAX:
        raise WireError(f"wire: {name} expected an integer >= {lo}, got {value!r}")
    return int(value)


def _check_shape(shape) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not shape:
        raise WireError(f"wire: shape expected a non-empty tuple of integers >= 1, got {shape!r}")
    return tuple(_check_int("shape dimension", d, 1) for d in shape)


def _wire_values(values) -> np.ndarray:
    """The 2-D values converted to their wire dtype (may share memory with the input)."""
    try:
        v = np.asarray(values)
    except (ValueError, TypeError) as e:
        raise WireError(f"wire: values expected a numeric 2-D array, got {type(values).__name__}") from e
    if v.ndim != 2:
        raise WireError(f"wire: values expected a 2-D (samples, neurons) array, got shape {v.shape}")
    kind = v.dtype.kind
    if kind == "b":
        v, kind = v.astype(np.uint8), "u"
    if kind in "iu":
        return v.astype(int_type(int(v.min()), int(v.max())) if v.size else np.int8, copy=False)
    if kind != "f":
        raise WireError(f"wire: values expected an integer or float array, got dtype {v.dtype}")
    if v.dtype.itemsize > 8:
        f = v.astype(np.float64)
        if not np.array_equal(f, v, equal_nan=True):
            raise WireError(f"wire: values expected representable in float64, got dtype {v.dtype}")
        v = f
    elif v.dtype.itemsize < 4:
        v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise WireError(f"wire: values expected finite, got {int((~np.isfinite(v)).sum())} NaN/inf")
    if v.size == 0:
        return v.astype(np.int8)
    lo, hi = float(v.min()), float(v.max())
    if -(2.0**63) <= lo and hi < 2.0**63 and np.array_equal(np.trunc(v), v):
        return v.astype(int_type(int(lo), int(hi)))
    if v.dtype == np.float32:
        return v
    with np.errstate(over="ignore"):
        f32 = v.astype(np.float32)
    return f32 if np.array_equal(f32, v) else v


def _check_order(order) -> str:
    if order not in ORDERS:
        raise WireError(f"wire: order expected one of {ORDERS}, got {order!r}")
    return order


def _sizes(v: np.ndarray, order: str = "samples") -> tuple[dict[str, int], np.dtype, np.dtype]:
    b, n = v.shape[::-1] if order == "units" else v.shape
    st, nt = _unsigned_for(max(b - 1, 0)), _unsigned_for(n - 1 if n else 0)
    nnz = int(np.count_nonzero(v))
    sizes = {"dense": v.size * v.itemsize, "sparse": nnz * (st.itemsize + nt.itemsize + v.itemsize)}
    return sizes, st, nt


def encoded_sizes(values: np.ndarray, order: str = "samples") -> dict[str, int]:
    """Column bytes of each encoding of ``values`` ((B, N), or (N, B) for order ``units``), not
    counting schema or framing: the same for either order of the same values."""
    return _sizes(_wire_values(values), _check_order(order))[0]


def encode(values: np.ndarray, *, kind: str, src: int, dst: int, batch: int, micro: int,
           shape: tuple[int, ...], encoding: str | None = None, order: str = "samples") -> pa.Buffer:
    """One micro-batch of values (B, prod(shape)), or for order ``units`` (prod(shape), B), as a
    self-contained Arrow IPC stream."""
    if kind not in KINDS:
        raise WireError(f"wire: kind expected one of {KINDS}, got {kind!r}")
    if encoding is not None and encoding not in ENCODINGS:
        raise WireError(f"wire: encoding expected one of {ENCODINGS} or None, got {encoding!r}")
    nums = {"src": _check_int("src", src, -1), "dst": _check_int("dst", dst, -1),
            "batch": _check_int("batch", batch, 0), "micro": _check_int("micro", micro, 0)}
    shape = _check_shape(shape)
    order = _check_order(order)
    v = _wire_values(values)
    b, n = v.shape[::-1] if order == "units" else v.shape
    if n != math.prod(shape):
        raise WireError(f"wire: values expected {math.prod(shape)} neurons per sample for shape {shape}, got {n}")
    if b * n > MAX_VALUES:
        raise WireError(f"wire: message expected at most {MAX_VALUES} values, got {b} x {n}")
    sizes, st, nt = _sizes(v, order)
    if encoding is None:
        encoding = "sparse" if sizes["sparse"] < sizes["dense"] else "dense"
    flat = np.ascontiguousarray(v).reshape(-1)
    if encoding == "dense":
        names, arrays = ["value"], [pa.array(flat)]
    else:
        idx = np.flatnonzero(flat)
        if order == "units":
            neuron, sample = np.divmod(idx, b)
        else:
            sample, neuron = np.divmod(idx, n)
        names = ["sample", "neuron", "value"]
        arrays = [pa.array(sample.astype(st)), pa.array(neuron.astype(nt)), pa.array(flat[idx])]
    return _write(kind, nums, shape, b, encoding, names, arrays, order)


def _write(kind: str, nums: dict[str, int], shape: tuple[int, ...], samples: int, encoding: str,
           names: list[str], arrays: list[pa.Array], order: str = "samples") -> pa.Buffer:
    """One record batch with the wire's schema metadata, as a self-contained IPC stream."""
    meta = {"spikegrad.wire": str(WIRE_VERSION), "kind": kind, **{k: str(x) for k, x in nums.items()},
            "shape": ",".join(map(str, shape)), "samples": str(samples), "encoding": encoding, "order": order}
    schema = pa.schema([pa.field(nm, a.type, nullable=False) for nm, a in zip(names, arrays)],
                       metadata={k.encode(): x.encode() for k, x in meta.items()})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        writer.write_batch(pa.record_batch(arrays, schema=schema))
    return sink.getvalue()


def decode(buf, *, kind: str | None = None, dst: int | None = None, shape: tuple[int, ...] | None = None,
           batch: int | None = None, micro: int | None = None, copy: bool = True) -> tuple[Header, np.ndarray]:
    """Check a message completely and return its header and a fresh array, (B, N), or (N, B) for
    order ``units`` (``Header.array_shape``); ``copy`` False:
    a dense message's values as a read-only view of the message (for a reader that converts
    them anyway), a sparse one's still fresh."""
    try:
        return _decode(buf, kind, dst, shape, batch, micro, copy)
    except WireError:
        raise
    except _CAUGHT as e:
        raise WireError(f"wire: message expected a readable Arrow IPC stream, got "
                        f"{type(e).__name__}: {str(e)[:200]}") from e


def _parse_int(meta: dict[str, str], key: str, lo: int) -> int:
    text = meta[key]
    if not _INT_RE.fullmatch(text) or not lo <= int(text) <= _INT64_MAX:
        raise WireError(f"wire: {key} expected an integer >= {lo}, got {text[:40]!r}")
    return int(text)


def _header(meta: dict[str, str], schema: pa.Schema) -> Header:
    if "spikegrad.wire" not in meta:
        raise WireError(f"wire: metadata expected key 'spikegrad.wire', got keys {sorted(meta)[:12]}")
    version = meta["spikegrad.wire"]
    if version != str(WIRE_VERSION):
        raise WireError(f"wire: version expected {WIRE_VERSION}, got {version[:40]}")
    missing, unknown = [k for k in _KEYS if k not in meta], sorted(set(meta) - set(_KEYS))
    if missing or unknown:
        raise WireError(f"wire: metadata expected keys {list(_KEYS)}, got missing {missing}, unknown {unknown[:12]}")
    if meta["kind"] not in (*KINDS, "event"):
        raise WireError(f"wire: kind expected one of {(*KINDS, 'event')}, got {meta['kind'][:40]!r}")
    enc = meta["encoding"]
    if enc not in (*ENCODINGS, EVENTS):
        raise WireError(f"wire: encoding expected one of {(*ENCODINGS, EVENTS)}, got {enc[:40]!r}")
    if (meta["kind"] == "event") != (enc == EVENTS):
        raise WireError(f"wire: kind event expected with encoding {EVENTS} and only with it, got kind "
                        f"{meta['kind']!r}, encoding {enc!r}")
    order = meta["order"]
    if order not in ORDERS:
        raise WireError(f"wire: order expected one of {ORDERS}, got {order[:40]!r}")
    if enc == EVENTS and order != "samples":
        raise WireError(f"wire: events expected in order 'samples', got {order!r}")
    expected = {"dense": ["value"], "sparse": ["sample", "neuron", "value"], EVENTS: EVENT_COLUMNS}[enc]
    if schema.names != expected:
        raise WireError(f"wire: {enc} columns expected {expected}, got {schema.names[:8]}")
    rb_type = schema.field("sign" if enc == EVENTS else "value").type
    dims = meta["shape"].split(",")
    if len(dims) > 32:
        raise WireError(f"wire: shape expected at most 32 dimensions, got {len(dims)}")
    shape = tuple(_parse_int({"shape dimension": d}, "shape dimension", 1) for d in dims)
    if rb_type not in _VALUE_TYPES:
        raise WireError(f"wire: value column expected one of {sorted(_VALUE_TYPES.values())}, got {rb_type}")
    return Header(kind=meta["kind"], src=_parse_int(meta, "src", -1), dst=_parse_int(meta, "dst", -1),
                  batch=_parse_int(meta, "batch", 0), micro=_parse_int(meta, "micro", 0), shape=shape,
                  samples=_parse_int(meta, "samples", 0), encoding=meta["encoding"], dtype=_VALUE_TYPES[rb_type],
                  order=order)


def _decode(buf, kind, dst, shape, batch, micro, copy) -> tuple[Header, np.ndarray]:
    h, rb = _read(buf, kind, dst, shape, batch, micro)
    if h.encoding == EVENTS:
        raise WireError("wire: message expected spike counts, got address events (use decode_events)")
    return h, _counts(h, rb, copy)


def _read(buf, kind, dst, shape, batch, micro) -> tuple[Header, pa.RecordBatch]:
    """Read one message and check its framing, header and expectations; the columns follow."""
    if isinstance(buf, pa.Buffer):
        data = buf
    elif isinstance(buf, (bytes, bytearray, memoryview)):
        data = pa.py_buffer(buf)
    else:
        raise WireError(f"wire: message expected pa.Buffer, bytes, bytearray or memoryview, got {type(buf).__name__}")
    if data.size < len(_EOS) or data.slice(data.size - len(_EOS)).to_pybytes() != _EOS:
        raise WireError(f"wire: message expected to end with the end-of-stream marker, got {data.size} bytes "
                        "without it (empty or truncated?)")
    source = pa.BufferReader(data)
    reader = pa.ipc.open_stream(source)
    batches: list[pa.RecordBatch] = []
    while len(batches) < 2:
        try:
            batches.append(reader.read_next_batch())
        except StopIteration:
            break
    if len(batches) != 1:
        raise WireError(f"wire: message expected exactly one record batch, got {'none' if not batches else 'more'}")
    if source.tell() != data.size:
        raise WireError(f"wire: message expected to end at its end-of-stream marker, got "
                        f"{data.size - source.tell()} bytes after it")
    rb = batches[0]
    rb.validate(full=True)
    meta = {k.decode("utf-8"): x.decode("utf-8") for k, x in (rb.schema.metadata or {}).items()}
    names = rb.schema.names
    h = _header(meta, rb.schema)
    want = {"kind": kind, "dst": dst, "shape": tuple(shape) if isinstance(shape, (list, tuple)) else shape,
            "batch": batch, "micro": micro}
    for key, expect in want.items():
        if expect is not None and getattr(h, key) != expect:
            raise WireError(f"wire: {key} expected {expect!r}, got {getattr(h, key)!r}")
    b, n = h.samples, h.neurons
    if b * n > MAX_VALUES:
        raise WireError(f"wire: message expected at most {MAX_VALUES} values, got {b} x {n}")
    for name, col in zip(names, rb.columns):
        if col.null_count:
            raise WireError(f"wire: column {name} expected no nulls, got {col.null_count}")
    return h, rb


def _counts(h: Header, rb: pa.RecordBatch, copy: bool) -> np.ndarray:
    b, n = h.samples, h.neurons
    names = rb.schema.names
    vals = rb.column(names.index("value")).to_numpy(zero_copy_only=False)
    if vals.dtype.kind == "f" and not np.isfinite(vals).all():
        raise WireError(f"wire: values expected finite, got {int((~np.isfinite(vals)).sum())} NaN/inf")
    if h.encoding == "dense":
        if len(vals) != b * n:
            raise WireError(f"wire: dense value column expected {b * n} values ({b} samples x {n} neurons), "
                            f"got {len(vals)}")
        rows = vals.reshape(h.array_shape)
        return rows.copy() if copy else rows
    for name in ("sample", "neuron"):
        if rb.schema.field(name).type not in _INDEX_TYPES:
            raise WireError(f"wire: {name} column expected an unsigned integer type, got {rb.schema.field(name).type}")
    s, j = (rb.column(i).to_numpy(zero_copy_only=False) for i in (0, 1))
    for name, idx, bound in (("sample", s, b), ("neuron", j, n)):
        if len(idx) and int(idx.max()) >= bound:
            raise WireError(f"wire: sparse {name} index out of bounds: expected < {bound}, got {int(idx.max())}")
    units = h.order == "units"
    key = j.astype(np.int64) * b + s.astype(np.int64) if units else s.astype(np.int64) * n + j.astype(np.int64)
    step = np.diff(key)
    if (step <= 0).any():
        r = int(np.argmax(step <= 0)) + 1
        what = "duplicate" if step[r - 1] == 0 else "unsorted"
        pair = "(neuron, sample)" if units else "(sample, neuron)"
        at, before = ((j[r], s[r]), (j[r - 1], s[r - 1])) if units else ((s[r], j[r]), (s[r - 1], j[r - 1]))
        raise WireError(f"wire: sparse entries expected sorted by {pair} without duplicates, got {what} "
                        f"({int(at[0])}, {int(at[1])}) after ({int(before[0])}, {int(before[1])}) at row {r}")
    if len(vals) and not vals.all():
        r = int(np.argmin(vals != 0))
        raise WireError(f"wire: sparse value expected nonzero, got 0 at row {r}")
    out = np.zeros(b * n, dtype=vals.dtype)
    out[key] = vals
    return out.reshape(h.array_shape)


# -- address events ---------------------------------------------------------------------------
# Kind "event", encoding "events": one row per spike, in the order the spikes were emitted:
# phase (signed: -1 the standard phase, r the residual phase of layer r), wave (0, 1, 2, ...
# across the message, nondecreasing, one phase per wave, a phase's waves together), sample,
# neuron (narrowest unsigned types, as for sparse counts), sign (int8, -1 or +1). Within a
# wave rows are sorted by (sample, neuron) without duplicates: a neuron spikes at most once
# per wave. ``samples`` and ``shape`` are those of the micro-batch, as for counts.

Wave = tuple  # (sample indices (k,) int64, spikes (k, N) int8 of those samples)


def encode_events(phases: list, *, src: int, dst: int, batch: int, micro: int, shape: tuple[int, ...],
                  samples: int) -> pa.Buffer:
    """Phases [(tag, [(sample indices, spikes (k, N) of -1/0/+1)])] as one address-event message."""
    nums = {"src": _check_int("src", src, -1), "dst": _check_int("dst", dst, -1),
            "batch": _check_int("batch", batch, 0), "micro": _check_int("micro", micro, 0)}
    shape = _check_shape(shape)
    b, n = _check_int("samples", samples, 0), math.prod(shape)
    parts: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]] = []
    wave = 0
    for tag, waves in phases:
        tag = _check_int("phase", tag, -1)
        for cols, rows in waves:
            rows = np.asarray(rows)
            cols = np.asarray(cols)
            if rows.ndim != 2 or rows.shape[1] != n or len(cols) != rows.shape[0]:
                raise WireError(f"wire: wave expected ({len(cols)}, {n}) spikes, got shape {rows.shape}")
            idx = np.flatnonzero(rows)
            if not len(idx):
                continue
            sign = rows.reshape(-1)[idx]
            if not np.isin(sign, (-1, 1)).all():
                raise WireError("wire: event signs expected -1 or +1 (one spike per neuron per wave)")
            i, j = np.divmod(idx, n)
            sample = cols[i]
            if (sample < 0).any() or (sample >= b).any():
                raise WireError(f"wire: event sample expected < {b}, got {int(sample.max())}")
            parts.append((tag, wave, sample, j, sign.astype(np.int8)))
            wave += 1
    total = sum(len(p[2]) for p in parts)
    if total > MAX_VALUES:
        raise WireError(f"wire: message expected at most {MAX_VALUES} events, got {total}")
    tags = np.array([p[0] for p in parts], dtype=np.int64)
    lens = np.array([len(p[2]) for p in parts], dtype=np.int64)
    pt = int_type(int(tags.min(initial=-1)), int(tags.max(initial=-1)))
    cols = {
        "phase": np.repeat(tags, lens).astype(pt),
        "wave": np.repeat(np.arange(len(parts)), lens).astype(_unsigned_for(max(len(parts) - 1, 0))),
        "sample": np.concatenate([p[2] for p in parts] or [np.zeros(0, np.int64)]).astype(_unsigned_for(max(b - 1, 0))),
        "neuron": np.concatenate([p[3] for p in parts] or [np.zeros(0, np.int64)]).astype(_unsigned_for(max(n - 1, 0))),
        "sign": np.concatenate([p[4] for p in parts] or [np.zeros(0, np.int8)]).astype(np.int8),
    }
    return _write("event", nums, shape, b, EVENTS, EVENT_COLUMNS, [pa.array(cols[k]) for k in EVENT_COLUMNS])


def decode_events(buf, *, dst: int | None = None, shape: tuple[int, ...] | None = None,
                  batch: int | None = None, micro: int | None = None) -> tuple[Header, list]:
    """Check an address-event message completely; returns its header and its phases
    [(tag, [(sample indices, spikes (k, N) int8)])], in the order sent."""
    try:
        h, rb = _read(buf, "event", dst, shape, batch, micro)
        return h, _events(h, rb)
    except WireError:
        raise
    except _CAUGHT as e:
        raise WireError(f"wire: message expected a readable Arrow IPC stream, got "
                        f"{type(e).__name__}: {str(e)[:200]}") from e


def _events(h: Header, rb: pa.RecordBatch) -> list:
    b, n = h.samples, h.neurons
    types = {k: rb.schema.field(k).type for k in EVENT_COLUMNS}
    if types["phase"] not in (pa.int8(), pa.int16(), pa.int32(), pa.int64()):
        raise WireError(f"wire: phase column expected a signed integer type, got {types['phase']}")
    for k in ("wave", "sample", "neuron"):
        if types[k] not in _INDEX_TYPES:
            raise WireError(f"wire: {k} column expected an unsigned integer type, got {types[k]}")
    if types["sign"] != pa.int8():
        raise WireError(f"wire: sign column expected int8, got {types['sign']}")
    phase, wave, s, j, sign = (rb.column(k).to_numpy(zero_copy_only=False).astype(np.int64) for k in EVENT_COLUMNS)
    if not len(sign):
        return []
    if phase.min() < -1:
        raise WireError(f"wire: event phase expected >= -1, got {int(phase.min())}")
    for name, idx, bound in (("sample", s, b), ("neuron", j, n)):
        if int(idx.max()) >= bound:
            raise WireError(f"wire: event {name} index out of bounds: expected < {bound}, got {int(idx.max())}")
    if not np.isin(sign, (-1, 1)).all():
        raise WireError("wire: event sign expected -1 or +1")
    dw = np.diff(wave)
    if wave[0] != 0 or ((dw != 0) & (dw != 1)).any():
        raise WireError("wire: event waves expected numbered 0, 1, 2, ... in order")
    starts = np.flatnonzero(np.r_[True, dw != 0])
    if (np.diff(phase)[dw == 0] != 0).any():
        raise WireError("wire: events of one wave expected in one phase")
    tags = phase[starts]
    first_of_phase = tags[np.r_[True, np.diff(tags) != 0]]
    if len(np.unique(first_of_phase)) != len(first_of_phase):
        raise WireError("wire: a phase's waves expected together, got a phase that comes back")
    key = s * n + j
    same = dw == 0
    if (np.diff(key)[same] <= 0).any():
        raise WireError("wire: events of a wave expected sorted by (sample, neuron) without duplicates")
    out: list = []
    bounds = [*starts, len(sign)]
    for w in range(len(starts)):
        lo, hi = bounds[w], bounds[w + 1]
        cols, inv = np.unique(s[lo:hi], return_inverse=True)
        rows = np.zeros((len(cols), n), np.int8)
        rows[inv, j[lo:hi]] = sign[lo:hi]
        tag = int(phase[lo])
        if not out or out[-1][0] != tag:
            out.append((tag, []))
        out[-1][1].append((cols, rows))
    return out
