"""The transport under the wire (actors.transport): a message through the shared-memory directory
arrives as the same bytes and leaves no file; handles that point elsewhere are refused."""

import os

import numpy as np
import pytest

from actors import wire
from actors.transport import Link, ShmMessage, make_directory, remove_directory
from cluster.errors import SpikeGradError


@pytest.fixture
def directory():
    d = make_directory()
    if d is None:
        pytest.skip("no /dev/shm on this machine")
    yield d
    remove_directory(d)
    assert not os.path.exists(d)


def message():
    counts = np.random.default_rng(0).integers(-3, 4, (8, 300))
    return wire.encode(counts, kind="error", src=1, dst=0, batch=2, micro=1, shape=(300,)), counts


def test_a_message_through_shared_memory_is_the_same_bytes_and_leaves_no_file(directory):
    buf, counts = message()
    sender, receiver = Link(1, directory), Link(0, directory)
    handle = sender.send(buf)
    assert isinstance(handle, ShmMessage) and handle.size == buf.size
    assert oct(os.stat(directory).st_mode & 0o777) == "0o700"  # the cluster's user only
    assert os.listdir(directory) == [handle.name]
    got = receiver.receive(handle)
    assert got.equals(buf) and os.listdir(directory) == []
    _, values = wire.decode(got, kind="error", dst=0, shape=(300,), batch=2, micro=1)
    np.testing.assert_array_equal(values, counts)
    with pytest.raises(SpikeGradError, match="expected in"):  # a message is read once
        receiver.receive(handle)


def test_ray_transport_passes_messages_and_refuses_handles(directory):
    buf, _ = message()
    ray_link = Link(0)
    assert ray_link.kind == "ray" and ray_link.send(buf) is buf and ray_link.receive(buf) is buf
    with pytest.raises(SpikeGradError, match="uses Ray's transport"):
        ray_link.receive(Link(1, directory).send(buf))


@pytest.mark.parametrize("name", ["../passwd", "/etc/passwd", "", ".."])
def test_a_handle_that_names_a_file_outside_the_directory_is_refused(directory, name):
    with pytest.raises(SpikeGradError, match="expected a file name"):
        Link(0, directory).receive(ShmMessage(name, 10))


def test_a_truncated_file_is_refused(directory):
    buf, _ = message()
    handle = Link(1, directory).send(buf)
    with open(os.path.join(directory, handle.name), "r+b") as f:
        f.truncate(buf.size - 5)
    with pytest.raises(SpikeGradError, match=f"{buf.size} bytes expected, got {buf.size - 5}"):
        Link(0, directory).receive(handle)
