"""Tests for launch.data: real MNIST / CIFAR-10 subset files, synthetic layouts, downloads."""
from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import os
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from cluster.errors import SpikeGradError
from launch.data import DataError, cifar10, download_dataset, load_dataset
from launch.data import base as data_base
from launch.data import mnist as mnist_mod
from launch.data.cifar10 import read_cifar_bin
from launch.data.mnist import read_idx

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
CIFAR_DIR = SHARED / "cifar10-subset"
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file(),
                                 reason=f"real MNIST files not found in {MNIST_DIR}")
needs_cifar = pytest.mark.skipif(not (CIFAR_DIR / "test_subset.bin").is_file(),
                                 reason=f"CIFAR-10 subset not found in {CIFAR_DIR}")


def idx_bytes(array: np.ndarray) -> bytes:
    magic = {1: 0x0801, 3: 0x0803}[array.ndim]
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def cifar_bytes(labels, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
    return np.column_stack([np.asarray(labels, np.uint8), images]).tobytes()


@pytest.fixture(scope="module")
def mnist():
    if not (MNIST_DIR / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found in {MNIST_DIR}")
    return load_dataset("mnist", MNIST_DIR)


@pytest.fixture
def mnist_copy(tmp_path):
    """A writable copy of the four real .gz files."""
    for p in MNIST_DIR.glob("*.gz"):
        shutil.copyfile(p, tmp_path / p.name)
    return tmp_path


# ----------------------------------------------------------------------------- MNIST

def test_dataerror_is_spikegraderror():
    assert issubclass(DataError, SpikeGradError)


@needs_mnist
def test_mnist_loads(mnist):
    assert mnist.name == "mnist" and mnist.input_shape == (1, 28, 28)
    assert mnist.x_train.shape == (60000, 1, 28, 28) and mnist.x_test.shape == (10000, 1, 28, 28)
    assert mnist.x_train.dtype == np.float32 and mnist.y_train.dtype == np.int64
    assert mnist.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert mnist.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert mnist.x_train.min() == 0 and mnist.x_train.max() == np.float32(255 / 256) < 1
    # pixel / 256 exactly: multiplying back gives integers
    assert np.array_equal(mnist.x_test * 256, np.round(mnist.x_test * 256))
    assert mnist.classes == tuple("0123456789") and "gzip" in mnist.source and str(MNIST_DIR) in mnist.source


@needs_mnist
def test_read_idx_real_labels():
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and labels.flags.writeable


@needs_mnist
def test_mnist_plain_files_checked_by_sha256(mnist_copy, mnist):
    # gunzip the two test files; plain and gzip may be mixed
    for n in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        gz = mnist_copy / f"{n}.gz"
        (mnist_copy / n).write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    data = load_dataset("mnist", mnist_copy)
    assert np.array_equal(data.y_test, mnist.y_test) and "plain" in data.source
    # one flipped pixel byte in a plain file: structure intact, SHA-256 differs
    path = mnist_copy / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[5000] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=mnist_mod.MNIST_FILES["t10k-images-idx3-ubyte"][1]) as err:
        load_dataset("mnist", mnist_copy)
    assert "t10k-images-idx3-ubyte" in str(err.value) and "SHA256" in str(err.value)


def test_read_idx_detects_gzip_by_magic_not_name(tmp_path):
    labels = np.arange(10, dtype=np.uint8)
    (tmp_path / "a.bin").write_bytes(gzip.compress(idx_bytes(labels)))
    (tmp_path / "b.gz").write_bytes(idx_bytes(labels))
    assert np.array_equal(read_idx(tmp_path / "a.bin"), labels)
    assert np.array_equal(read_idx(tmp_path / "b.gz"), labels)
    images = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    (tmp_path / "c").write_bytes(idx_bytes(images))
    assert np.array_equal(read_idx(tmp_path / "c"), images)


def test_read_idx_truncated_names_file_and_sizes(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28)))[:-100]))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*truncated.*3920.*3820"):
        read_idx(path)


def test_read_idx_truncated_gzip_stream(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((5, 28, 28))))[:-20])
    with pytest.raises(DataError, match="x.gz"):
        read_idx(path)


@pytest.mark.parametrize("magic", [0x0802, 0x0903, 0x08030000, 0x0000])
def test_read_idx_wrong_magic(tmp_path, magic):
    path = tmp_path / "bad-idx"
    path.write_bytes(magic.to_bytes(4, "big") + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=rf"bad-idx.*0x{magic:08x}"):
        read_idx(path)


def test_read_idx_short_and_trailing(tmp_path):
    (tmp_path / "short").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="short.*4 bytes"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(idx_bytes(np.zeros(4)) + b"\x00")
    with pytest.raises(DataError, match="long.*trailing"):
        read_idx(tmp_path / "long")
    with pytest.raises(DataError, match="nowhere"):
        read_idx(tmp_path / "nowhere")


@needs_mnist
def test_mnist_truncated_copy(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:5000]))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz.*10000.*4992"):
        load_dataset("mnist", mnist_copy)


@needs_mnist
def test_mnist_gz_checksum(mnist_copy):
    path = mnist_copy / "t10k-labels-idx1-ubyte.gz"
    payload = bytearray(gzip.decompress(path.read_bytes()))
    # a re-compressed copy of the same payload has another MD5 but is accepted
    path.write_bytes(gzip.compress(bytes(payload), mtime=0))
    assert load_dataset("mnist", mnist_copy).y_test[0] == 7
    payload[-1] = (payload[-1] + 1) % 10  # a changed label: structure intact, digests differ
    path.write_bytes(gzip.compress(bytes(payload)))
    with pytest.raises(DataError, match=mnist_mod.MNIST_FILES["t10k-labels-idx1-ubyte"][0]) as err:
        load_dataset("mnist", mnist_copy)
    assert "t10k-labels-idx1-ubyte.gz" in str(err.value) and "checksum" in str(err.value)


@needs_mnist
def test_mnist_missing_file(mnist_copy):
    (mnist_copy / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*--download") as err:
        load_dataset("mnist", mnist_copy)
    assert str(mnist_copy) in str(err.value) and "t10k" not in str(err.value)


def test_mnist_count_mismatch(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    files = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
             "train-labels-idx1-ubyte": rng.integers(0, 10, 6),
             "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
             "t10k-labels-idx1-ubyte": rng.integers(0, 10, 4)}
    table = {}
    for n, a in files.items():
        raw = idx_bytes(a)
        (tmp_path / n).write_bytes(raw)
        table[n] = ("0" * 32, hashlib.sha256(raw).hexdigest())
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", table)
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.*expected 3 labels.*\(4,\)"):
        load_dataset("mnist", tmp_path)


def test_data_dir_errors(tmp_path):
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("mnist")
    with pytest.raises(DataError, match="--data-dir"):
        load_dataset("cifar10", None)
    with pytest.raises(DataError, match="no such directory") as err:
        load_dataset("mnist", tmp_path / "absent")
    assert str(tmp_path / "absent") in str(err.value)
    with pytest.raises(DataError, match="digits, mnist, cifar10.*'svhn'"):
        load_dataset("svhn")


# ----------------------------------------------------------------------------- CIFAR-10

@needs_cifar
def test_cifar_subset_loads():
    data = load_dataset("cifar10", CIFAR_DIR)
    assert data.x_train.shape == (4000, 3, 32, 32) and data.x_test.shape == (1000, 3, 32, 32)
    assert data.input_shape == (3, 32, 32) and data.x_train.dtype == np.float32
    assert data.y_train.dtype == np.int64
    assert data.y_train[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert data.y_test[:5].tolist() == [3, 8, 8, 0, 6]
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert "subset" in data.source and str(CIFAR_DIR) in data.source
    assert data.x_train.min() >= -1 and data.x_train.max() <= 127 / 128
    assert data.x_train[0, 0, 0, 0] == (59 - 128) / 128


@needs_cifar
def test_read_cifar_bin_real_pixels():
    images, labels = read_cifar_bin(CIFAR_DIR / "train_subset.bin")
    assert images.shape == (4000, 3, 32, 32) and images.dtype == np.uint8 and labels.dtype == np.int64
    assert images[0, 0, 0, :9].tolist() == [59, 43, 50, 68, 98, 119, 139, 145, 149]
    assert images[0, 2, 31, -3:].tolist() == [140, 84, 72]  # last bytes of record 0 (B plane)
    test_images, _ = read_cifar_bin(CIFAR_DIR / "test_subset.bin")
    assert test_images[1, 0, 0, :3].tolist() == [235, 231, 232]


@needs_cifar
def test_cifar_subset_checksum(tmp_path):
    for p in CIFAR_DIR.iterdir():
        shutil.copyfile(p, tmp_path / p.name)
    raw = bytearray((tmp_path / "test_subset.bin").read_bytes())
    raw[100] ^= 1
    (tmp_path / "test_subset.bin").write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"test_subset\.bin.*371f65da31ad652f5e24b3699a3e6515"):
        load_dataset("cifar10", tmp_path)


def test_read_cifar_bin_errors(tmp_path):
    (tmp_path / "short.bin").write_bytes(cifar_bytes([1, 2])[:-1])
    with pytest.raises(DataError, match=r"short\.bin.*3073.*6145"):
        read_cifar_bin(tmp_path / "short.bin")
    (tmp_path / "label.bin").write_bytes(cifar_bytes([1, 10, 3]))
    with pytest.raises(DataError, match=r"label\.bin.*0\.\.9.*10.*record 1"):
        read_cifar_bin(tmp_path / "label.bin")


@pytest.mark.parametrize("subdir", ["", cifar10.CIFAR_SUBDIR])
def test_cifar_full_release_layout(tmp_path, subdir):
    folder = tmp_path / subdir
    folder.mkdir(exist_ok=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(cifar_bytes([i, i, i], seed=i))
    (folder / "test_batch.bin").write_bytes(cifar_bytes([7, 8]))
    (folder / "batches.meta.txt").write_text("".join(f"c{i}\n" for i in range(10)) + "\n")
    (tmp_path / "train_subset.bin").write_bytes(b"ignored: the full release wins")
    data = load_dataset("cifar10", tmp_path)
    assert data.y_train.tolist() == [1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert data.y_test.tolist() == [7, 8] and data.classes == tuple(f"c{i}" for i in range(10))
    images, _ = read_cifar_bin(folder / "test_batch.bin")
    assert np.array_equal(data.x_test, (images.astype(np.float32) - 128) / 128)
    assert "binary release" in data.source


def test_cifar_missing_and_partial(tmp_path):
    with pytest.raises(DataError, match=r"data_batch_1\.bin.*train_subset\.bin.*--download") as err:
        load_dataset("cifar10", tmp_path)
    assert str(tmp_path) in str(err.value)
    (tmp_path / "data_batch_1.bin").write_bytes(cifar_bytes([1]))
    with pytest.raises(DataError, match="incomplete"):
        load_dataset("cifar10", tmp_path)


# ----------------------------------------------------------------------------- digits

def test_digits_split_deterministic():
    a, b = load_dataset("digits"), load_dataset("digits", "/ignored")
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_test, b.y_test)
    assert max(a.x_train.max(), a.x_test.max()) == 1.0 and a.input_shape == (1, 8, 8)
    from sklearn.datasets import load_digits
    order = np.random.default_rng(0).permutation(1797)
    assert np.array_equal(a.y_test, load_digits().target[order[1437:]])


# ----------------------------------------------------------------------------- downloads

@pytest.fixture
def http_root(tmp_path):
    """A local HTTP server over tmp_path/'www'; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _fake_mnist(www: Path) -> dict:
    rng = np.random.default_rng(2)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, 4),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (2, 28, 28)),
              "t10k-labels-idx1-ubyte": np.array([3, 9])}
    table = {}
    for n, a in arrays.items():
        raw = idx_bytes(a)
        gz = gzip.compress(raw)
        (www / f"{n}.gz").write_bytes(gz)
        table[n] = (hashlib.md5(gz).hexdigest(), hashlib.sha256(raw).hexdigest())
    return table


def test_download_offline(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", ("http://127.0.0.1:9/",))
    target = tmp_path / "data"
    with pytest.raises(DataError, match="offline") as err:
        load_dataset("mnist", target, download=True, progress=False)
    assert str(target) in str(err.value) and "train-images-idx3-ubyte.gz" in str(err.value)
    assert list(target.iterdir()) == []  # no partial files left behind
    monkeypatch.setattr(cifar10, "CIFAR_URL", "http://127.0.0.1:9/cifar-10-binary.tar.gz")
    with pytest.raises(DataError, match=r"offline.*cifar-10-binary\.tar\.gz"):
        download_dataset("cifar10", target, progress=False)


def test_download_from_local_server(http_root, tmp_path, monkeypatch):
    www, base = http_root
    table = _fake_mnist(www)
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", table)
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", ("http://127.0.0.1:9/", base))  # first mirror dead
    target = tmp_path / "data"
    target.mkdir()
    (target / "t10k-labels-idx1-ubyte").write_bytes(gzip.decompress((www / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(data_base.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b)))
    data = load_dataset("mnist", target, download=True, progress=False)
    assert data.y_test.tolist() == [3, 9] and data.x_train.shape == (4, 1, 28, 28)
    # only the three missing files came, each renamed from a temp file in the same folder
    assert sorted(b.name for _, b in replaced) == sorted(f"{n}.gz" for n in table if n != "t10k-labels-idx1-ubyte")
    assert all(a.parent == b.parent == target and a.name.endswith(".part") for a, b in replaced)
    assert sorted(p.name for p in target.iterdir()) == sorted(
        [b.name for _, b in replaced] + ["t10k-labels-idx1-ubyte"])


def test_download_md5_mismatch_leaves_nothing(http_root, tmp_path, monkeypatch):
    www, base = http_root
    table = _fake_mnist(www)
    table["train-images-idx3-ubyte"] = ("0" * 32, table["train-images-idx3-ubyte"][1])
    monkeypatch.setattr(mnist_mod, "MNIST_FILES", table)
    monkeypatch.setattr(mnist_mod, "MNIST_MIRRORS", (base,))
    target = tmp_path / "data"
    with pytest.raises(DataError, match=r"checksum mismatch: expected MD5 0{32}") as err:
        download_dataset("mnist", target, progress=False)
    assert "offline" not in str(err.value) and str(target) in str(err.value)
    assert list(target.iterdir()) == []


def test_download_cifar_archive(http_root, tmp_path, monkeypatch):
    www, base = http_root
    src = tmp_path / "src" / cifar10.CIFAR_SUBDIR
    src.mkdir(parents=True)
    for i in range(1, 6):
        (src / f"data_batch_{i}.bin").write_bytes(cifar_bytes([i]))
    (src / "test_batch.bin").write_bytes(cifar_bytes([0, 9]))
    (src / "readme.html").write_text("not extracted")
    archive = www / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src, arcname=cifar10.CIFAR_SUBDIR)
    monkeypatch.setattr(cifar10, "CIFAR_URL", base + archive.name)
    monkeypatch.setattr(cifar10, "CIFAR_MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    target = tmp_path / "data"
    data = load_dataset("cifar10", target, download=True, progress=False)
    assert data.y_train.tolist() == [1, 2, 3, 4, 5] and data.y_test.tolist() == [0, 9]
    assert data.classes == cifar10.CIFAR_CLASSES
    assert sorted(p.name for p in (target / cifar10.CIFAR_SUBDIR).iterdir()) == sorted(cifar10.CIFAR_FULL)
    assert sorted(p.name for p in target.iterdir()) == [cifar10.CIFAR_SUBDIR]


def test_extract_rejects_unsafe_members(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    payload = tmp_path / "test_batch.bin"
    payload.write_bytes(cifar_bytes([1]))
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(payload, arcname="../test_batch.bin")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DataError, match=r"evil\.tar\.gz.*\.\./test_batch\.bin"):
        cifar10._extract_cifar(archive, out)
    assert not (tmp_path / "test_batch.bin.part").exists()


def test_shift_images_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    x = rng.random((40, 2, 7, 6)).astype(np.float32)
    shifts = rng.integers(-8, 9, (40, 2))  # some move the whole image out
    got = data_base.shift_images(x, shifts)
    want = np.zeros_like(x)
    for n, (dy, dx) in enumerate(shifts):
        for i in range(7):
            for j in range(6):
                if 0 <= i - dy < 7 and 0 <= j - dx < 6:
                    want[n, :, i, j] = x[n, :, i - dy, j - dx]
    assert np.array_equal(got, want)
    assert np.array_equal(data_base.shift_images(x, np.zeros((40, 2), int)), x)
    before = x.copy()
    data_base.shift_images(x, shifts)
    assert np.array_equal(x, before)


def test_shift_images_rejects_a_bad_shift_array():
    with pytest.raises(SpikeGradError, match=r"expected shifts shaped \(3, 2\), got \(3,\)"):
        data_base.shift_images(np.zeros((3, 1, 4, 4), np.float32), np.zeros(3, int))


def test_augment_shifts_then_mirrors_and_leaves_the_batch_alone():
    rng = np.random.default_rng(2)
    x = rng.random((6, 3, 5, 5)).astype(np.float32)
    keep = x.copy()
    shifts, flips = rng.integers(-2, 3, (6, 2)), np.array([True, False, True, True, False, False])
    got = data_base.augment(x, shifts, flips)
    want = data_base.shift_images(x, shifts)
    want[flips] = want[flips][..., ::-1]
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(data_base.augment(x, None, flips)[0], x[0, :, :, ::-1])
    np.testing.assert_array_equal(x, keep)
    assert data_base.augment(x, None, None) is x and data_base.augment(x, None, np.zeros(6, bool)) is x
