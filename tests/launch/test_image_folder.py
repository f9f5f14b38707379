"""CIFAR-10 from an image folder (JPEG or PNG files, one folder per class): order, pixels, the
decoded cache (checksummed, outside the data folder, never trusted when damaged), hostile files,
and the real JPEG stand-in against the lossless subset."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from launch.data import DataError, cifar10, load_dataset
from launch.data.cifar10 import CIFAR_CLASSES

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def write_folder(root: Path, train: int = 3, test: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Class k's images hold pixel values around 20 k; PNG except every third (JPEG). Returns the
    exact pixels of the PNG files, keyed by relative path."""
    rng = np.random.default_rng(seed)
    exact = {}
    for split, n in (("train", train), ("test", test)):
        for k, name in enumerate(CIFAR_CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                px = np.clip(rng.integers(0, 30, (32, 32, 3)) + 20 * k, 0, 255).astype(np.uint8)
                rel = f"{split}/{name}/{i:04d}." + ("jpg" if i == 2 else "png")
                Image.fromarray(px).save(root / rel)
                if rel.endswith(".png"):
                    exact[rel] = px
    return exact


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(d))
    return d


def test_image_folder_loads_in_round_robin_order_with_exact_png_pixels(tmp_path, cache):
    root = tmp_path / "data"
    exact = write_folder(root)
    before = snapshot(root)
    d = load_dataset("cifar10", root, progress=False)
    assert d.x_train.shape == (30, 3, 32, 32) and d.x_test.shape == (20, 3, 32, 32)
    assert d.y_train.tolist() == list(range(10)) * 3 and d.y_test.tolist() == list(range(10)) * 2
    assert d.classes == CIFAR_CLASSES and "JPEG stand-in" in d.source
    # train image 10 + k is image 0001 of class k: a PNG, decoded exactly, scaled (pixel - 128) / 128
    for k, name in enumerate(CIFAR_CLASSES):
        want = (exact[f"train/{name}/0001.png"].transpose(2, 0, 1).astype(np.float32) - 128) / 128
        np.testing.assert_array_equal(d.x_train[10 + k], want)
    assert snapshot(root) == before  # the data folder is never written
    assert len(list(cache.glob("cifar10-folder-*.npz"))) == 1


def test_the_cache_is_used_and_a_damaged_cache_is_decoded_again(tmp_path, cache, monkeypatch):
    root = tmp_path / "data"
    write_folder(root)
    first = load_dataset("cifar10", root, progress=False)
    decode = cifar10._decode_image
    monkeypatch.setattr(cifar10, "_decode_image", lambda p: pytest.fail(f"decoded {p} despite the cache"))
    cached = load_dataset("cifar10", root, progress=False)
    np.testing.assert_array_equal(cached.x_train, first.x_train)
    (path,) = cache.glob("cifar10-folder-*.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in the pixels: the SHA-256 no longer matches
    path.write_bytes(bytes(raw))
    calls = []
    monkeypatch.setattr(cifar10, "_decode_image", lambda p: calls.append(p) or decode(p))
    again = load_dataset("cifar10", root, progress=False)
    assert len(calls) == 50
    np.testing.assert_array_equal(again.x_train, first.x_train)
    path.write_bytes(b"not a zip file")
    np.testing.assert_array_equal(load_dataset("cifar10", root, progress=False).x_test, first.x_test)


def test_a_changed_file_is_seen(tmp_path, cache):
    root = tmp_path / "data"
    write_folder(root)
    load_dataset("cifar10", root, progress=False)
    Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(root / "test" / "cat" / "0000.png")
    d = load_dataset("cifar10", root, progress=False)
    assert np.all(d.x_test[3] == (7 - 128) / 128)
    assert len(list(cache.glob("cifar10-folder-*.npz"))) == 2


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    write_folder(root, train=1, test=1)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("SPIKEGRAD_CACHE", str(blocker / "cache"))
    d = load_dataset("cifar10", root, progress=False)
    assert len(d.y_train) == 10
    assert "not cached" in capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [
    (lambda r: Image.fromarray(np.zeros((33, 32, 3), np.uint8)).save(r / "train/dog/0000.png"),
     r"train/dog/0000.png: expected a 32x32 image, got 32x33"),
    (lambda r: (r / "train/dog/0000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really"),
     r"train/dog/0000.png: expected a readable JPEG or PNG image"),
    (lambda r: (r / "train/ship/0002.jpg").write_bytes((r / "train/ship/0002.jpg").read_bytes()[:200]),
     r"train/ship/0002.jpg: expected a readable JPEG or PNG image"),
    (lambda r: os.rename(r / "test/frog", r / "test/frogs"),
     r"test: expected the ten CIFAR-10 class folders .*missing frog; unexpected frogs"),
    (lambda r: [p.unlink() for p in (r / "train/truck").iterdir()],
     r"train/truck: expected image files"),
])
def test_hostile_folders_are_refused_naming_the_file(tmp_path, cache, damage, message):
    root = tmp_path / "data"
    write_folder(root)
    damage(root)
    with pytest.raises(DataError, match=message):
        load_dataset("cifar10", root, progress=False)


def test_other_files_and_grey_images(tmp_path, cache):
    root = tmp_path / "data"
    write_folder(root, train=1, test=1)
    (root / "README.md").write_text("notes beside the data")
    (root / "train" / "cat" / ".DS_Store").write_bytes(b"\0\1")
    Image.fromarray(np.full((32, 32), 200, np.uint8), mode="L").save(root / "train" / "cat" / "0001.png")
    d = load_dataset("cifar10", root, progress=False)
    assert d.y_train.tolist() == list(range(10)) + [3]
    assert np.all(d.x_train[10] == (200 - 128) / 128)  # grey -> the same value in R, G and B


@pytest.mark.slow
@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "cifar10-jpeg" / "test").is_dir() or not (SHARED / "cifar10-subset").is_dir(),
                    reason=f"the CIFAR-10 JPEG stand-in and lossless subset are not in {SHARED}")
def test_real_jpeg_stand_in_matches_the_lossless_subset(cache):
    """The k-th test JPEG of a class is the k-th test image of that class in the lossless subset
    (its README): a mean absolute error of a few grey levels; a wrong pairing gives ~60."""
    jpeg = load_dataset("cifar10", SHARED / "cifar10-jpeg", progress=False)
    assert (len(jpeg.y_train), len(jpeg.y_test)) == (50000, 10000)
    assert np.bincount(jpeg.y_train).tolist() == [5000] * 10
    lossless = load_dataset("cifar10", SHARED / "cifar10-subset", progress=False)
    for c in range(10):
        got = jpeg.x_test[jpeg.y_test == c][:5]
        want = lossless.x_test[lossless.y_test == c][:5]
        err = np.abs(got - want).mean(axis=(1, 2, 3)) * 128
        assert np.all(err < 12), (c, err)
        assert np.abs(got[0] - want[1]).mean() * 128 > 20  # a wrong pairing is far off
