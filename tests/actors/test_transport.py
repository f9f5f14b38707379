"""The chips' transports (actors/transport.py): shared-memory parcels arrive byte for byte, are taken
once, are refused when they are not this pipeline's own, and leave no file behind."""

from __future__ import annotations

import os
import uuid

import pyarrow as pa
import pytest

from actors.transport import (
    SHM_DIR,
    Parcel,
    SharedMemory,
    Transport,
    TransportError,
    pipeline_prefix,
    remove_parcels,
    remove_stale_parcels,
    shm_usable,
)

pytestmark = pytest.mark.skipif(not shm_usable(), reason="this machine has no writable /dev/shm")


@pytest.fixture
def tag():
    """A fresh pipeline tag; every file of it is removed however the test ends."""
    t = uuid.uuid4().hex[:8]
    yield t
    remove_parcels(pipeline_prefix(t))
    assert not [n for n in os.listdir(SHM_DIR) if n.startswith(pipeline_prefix(t))]


def test_a_parcel_arrives_byte_for_byte_and_is_taken_once(tag):
    sender = SharedMemory(tag, "node-a", {1, 2}, replica=0, chip=0)
    taker = SharedMemory(tag, "node-a", {0}, replica=0, chip=1)
    for size in (0, 1, 4095, 685_128, 3 << 20):
        buf = pa.py_buffer(os.urandom(size))
        parcel = sender.send(buf, 1)
        assert isinstance(parcel, Parcel) and parcel.size == size and parcel.node == "node-a"
        assert oct(os.stat(os.path.join(SHM_DIR, parcel.name)).st_mode & 0o777) == "0o600"
        got = taker.take(parcel)
        assert got.to_pybytes() == buf.to_pybytes()
        assert not os.path.exists(os.path.join(SHM_DIR, parcel.name))  # taken: gone
        with pytest.raises(TransportError, match="could not be opened"):
            taker.take(parcel)
    # a chip not on this node (not in local): the buffer itself, through Ray
    buf = pa.py_buffer(b"spikes")
    assert sender.send(buf, 5) is buf and taker.take(buf) is buf


def test_untaken_parcels_are_removed_by_their_writer_and_by_the_pipeline(tag):
    a = SharedMemory(tag, "n", {1}, replica=0, chip=0)
    b = SharedMemory(tag, "n", {0}, replica=1, chip=1)
    for _ in range(3):
        a.send(pa.py_buffer(b"x" * 10), 1)
        b.send(pa.py_buffer(b"y" * 10), 0)
    other = SharedMemory(uuid.uuid4().hex[:8], "n", {1}, replica=0, chip=0)
    kept = other.send(pa.py_buffer(b"z"), 1)
    try:
        assert a.close() == 3  # its own three, not b's
        assert remove_parcels(pipeline_prefix(tag)) == 3  # b's; another pipeline's file stays
        assert os.path.exists(os.path.join(SHM_DIR, kept.name))
    finally:
        other.close()


@pytest.mark.parametrize("prefix", ["", "spikegrad-", "spikegrad-xyz-", "../spikegrad-0123abcd-", "other-0123abcd-",
                                    "spikegrad-0123abcd/"])
def test_remove_parcels_refuses_other_prefixes(prefix):
    with pytest.raises(TransportError, match="refusing to remove"):
        remove_parcels(prefix)


def test_stale_parcels_of_gone_writers_are_removed_and_live_ones_kept(tag):
    """A file whose writer process is gone (a chip that outlived its driver) is removed by the next
    pipeline; a live writer's file, and files of other names, stay."""
    import subprocess
    import sys

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(gone.stdout)
    stem = pipeline_prefix(tag)
    live = SharedMemory(tag, "n", {1}, replica=0, chip=0).send(pa.py_buffer(b"live"), 1)
    stale = os.path.join(SHM_DIR, f"{stem}r0c1-p{dead_pid}-7")
    odd = os.path.join(SHM_DIR, f"{stem}unrelated")
    for path in (stale, odd):
        with open(path, "wb") as f:
            f.write(b"x")
    try:
        assert remove_stale_parcels() >= 1
        assert not os.path.exists(stale)
        assert os.path.exists(os.path.join(SHM_DIR, live.name)) and os.path.exists(odd)
    finally:
        os.unlink(odd)


def test_a_chip_whose_driver_is_gone_leaves_no_file(tag):
    """A chip on its driver's node (``owner``) checks after each write that the driver still runs:
    once it is gone, the message is removed again and goes back as the buffer (nobody takes it)."""
    import subprocess
    import sys

    alive = SharedMemory(tag, "n", {1}, replica=0, chip=0, owner=os.getpid())
    parcel = alive.send(pa.py_buffer(b"spikes"), 1)
    assert isinstance(parcel, Parcel) and os.path.exists(os.path.join(SHM_DIR, parcel.name))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    orphan = SharedMemory(tag, "n", {1}, replica=0, chip=1, owner=int(gone.stdout))
    buf = pa.py_buffer(b"late spikes")
    assert orphan.send(buf, 1) is buf
    assert not [n for n in os.listdir(SHM_DIR) if n.startswith(orphan.mine)]


def test_hostile_parcels_are_refused_with_one_error_each(tag, tmp_path):
    sender = SharedMemory(tag, "node-a", {1}, replica=0, chip=0)
    taker = SharedMemory(tag, "node-a", {0}, replica=0, chip=1)
    good = sender.send(pa.py_buffer(b"0123456789"), 1)
    stem = pipeline_prefix(tag)
    outside = tmp_path / "secret"
    outside.write_bytes(b"not a message")
    link = os.path.join(SHM_DIR, f"{stem}r0c9-p1-1")
    os.symlink(outside, link)
    try:
        cases = [
            (Parcel("../../etc/passwd", 10, "node-a"), "parcel name expected"),
            (Parcel(f"{pipeline_prefix(uuid.uuid4().hex[:8])}r0c0-p1-0", 10, "node-a"), "parcel name expected"),
            (Parcel(f"{stem}r0c0-p1-0/../x", 10, "node-a"), "parcel name expected"),
            (Parcel(f"{stem}r0c0-0", 10, "node-a"), "parcel name expected"),  # no writer
            (Parcel(123, 10, "node-a"), "parcel name expected"),  # type: ignore[arg-type]
            (Parcel(good.name, 10, "node-b"), "expected from this node"),
            (Parcel(good.name, -1, "node-a"), "size expected"),
            (Parcel(good.name, True, "node-a"), "size expected"),
            (Parcel(good.name, "10", "node-a"), "size expected"),  # type: ignore[arg-type]
            (Parcel(f"{stem}r0c0-p{os.getpid()}-999", 10, "node-a"), "could not be opened"),  # never written
            (Parcel(f"{stem}r0c9-p1-1", 13, "node-a"), "could not be opened"),  # a link: never followed
        ]
        for parcel, pattern in cases:
            with pytest.raises(TransportError, match=pattern) as info:
                taker.take(parcel)
            assert str(info.value).startswith("transport: ")
        assert outside.read_bytes() == b"not a message"
        # a size that is not the file's: refused, and the file is taken all the same (never read twice)
        with pytest.raises(TransportError, match="expected 11 bytes, holds 10"):
            taker.take(Parcel(good.name, 11, "node-a"))
        assert not os.path.exists(os.path.join(SHM_DIR, good.name))
    finally:
        os.unlink(link)


def test_the_ray_transport_passes_buffers_and_refuses_parcels():
    t = Transport()
    buf = pa.py_buffer(b"abc")
    assert t.send(buf, 3) is buf and t.take(buf) is buf and t.close() == 0
    with pytest.raises(TransportError, match="reached a chip that takes messages through Ray"):
        t.take(Parcel("spikegrad-0123abcd-r0c0-0", 3, "n"))


def test_a_bad_tag_is_refused():
    with pytest.raises(TransportError, match="tag expected"):
        SharedMemory("../x", "n", set(), 0, 0)
