"""Datasets for SpikeGrad: scikit-learn digits, MNIST (IDX) and CIFAR-10 (binary release or image folder).

Every loader returns a :class:`Dataset` of float32 images shaped (N, C, H, W) and int64 labels:

* ``digits``: scikit-learn's bundled 8x8 digits (no download), x = value / 16, shape (N, 1, 8, 8).
  Split: ``np.random.default_rng(0).permutation(1797)``; the first 1437 indices are the
  training set, the remaining 360 the test set (the same split on every call and machine).
* ``mnist``: x = pixel / 256, shape (N, 1, 28, 28). The divisor is a power of two, so every x
  and every sum of them is exact in binary floating point; max x = 255/256 < 1.
* ``cifar10``: x = (pixel - 128) / 128, shape (N, 3, 32, 32), range [-1, 127/128]. Read from the
  binary release, or from an image folder (``train/<class>/*.jpg|png``, ``test/<class>/*``, the
  ten CIFAR-10 class names as folder names), decoded once with Pillow into a cache (below).

Files are read only from ``data_dir``, which is never written (a download aside). The one cache on
disk is the decoded image folder: ``$SPIKEGRAD_CACHE`` or ``~/.cache/spikegrad``, one ``.npz`` per
folder state (keyed by every file's name, size and modification time), holding the SHA-256 of its
own arrays, checked on every load. Every bad input raises :class:`DataError` naming the file, what
was expected and what came. Pickle is never used.
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cluster.errors import SpikeGradError

from ..run.rundir import write_atomic

DATASETS = ("digits", "mnist", "cifar10")

# Mirrors in the order torchvision tries them; each serves "<base><name>.gz".
MNIST_MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
# name -> (MD5 of the original .gz file, SHA-256 of the uncompressed IDX payload)
MNIST_FILES = {
    "train-images-idx3-ubyte": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte": ("d53e105ee54ea40749a09fcbcd1e9432",
                                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte": ("9fb629c4189551a2d022fa330f9573f3",
                               "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte": ("ec29112dd5afa0611ce80d1b7f02629c",
                               "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR_SUBDIR = "cifar-10-batches-bin"
CIFAR_FULL = tuple(f"data_batch_{i}.bin" for i in range(1, 6)) + ("test_batch.bin",)
CIFAR_SUBSET = {"train_subset.bin": "07704ae233cc40e200a600eed4f4e13c",
                "test_subset.bin": "371f65da31ad652f5e24b3699a3e6515"}
CIFAR_META = "batches.meta.txt"
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_RECORD = 1 + 3 * 32 * 32  # CIFAR binary record: label byte + R, G, B planes of 32x32
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IMAGE_SPLITS = ("train", "test")
_IDX_MAGIC = {0x0801: 1, 0x0803: 3}  # unsigned-byte labels (1 dim) / images (3 dims)
_TIMEOUT_S = 30


class DataError(SpikeGradError):
    """A data file or data directory is missing, damaged or not what was expected."""


@dataclass(frozen=True)
class Dataset:
    """Train/test split: x_* float32 (N, C, H, W), y_* int64 (N,), class names, and the source."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.x_train.shape[1:]
        return int(c), int(h), int(w)


def shift_images(x: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Each image of x (B, C, H, W) moved by its whole-pixel shift (dy, dx) of shifts (B, 2):
    out[..., i, j] = x[..., i - dy, j - dx], zero where that falls outside the image.

    The training augmentation of ``--shift`` (a new copy; x is not changed). Zero is the
    background of MNIST (pixel / 256) and the mean grey of CIFAR-10 ((pixel - 128) / 128).
    """
    shifts = np.asarray(shifts)
    if shifts.shape != (len(x), 2):
        raise SpikeGradError(f"shift_images: expected shifts shaped ({len(x)}, 2), got {shifts.shape}")
    H, W = x.shape[2:]
    out = np.zeros_like(x)
    pairs, which = np.unique(shifts, axis=0, return_inverse=True)
    for k, (dy, dx) in enumerate(pairs.tolist()):
        if abs(dy) >= H or abs(dx) >= W:
            continue  # moved out entirely: all zero
        rows = np.flatnonzero(which.reshape(-1) == k)
        out[rows, :, max(0, dy):H + min(0, dy), max(0, dx):W + min(0, dx)] = \
            x[rows, :, max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)]
    return out


def augment(x: np.ndarray, shifts: np.ndarray | None, flips: np.ndarray | None) -> np.ndarray:
    """The training augmentation of one batch: each image moved by its shift (``--shift``; with
    zero fill this is the usual pad-and-random-crop), then mirrored left-right where its flip is
    set (``--flip``). x is not changed; with neither, x itself is returned."""
    out = x if shifts is None else shift_images(x, shifts)
    if flips is not None and flips.any():
        out = out.copy() if out is x else out
        out[flips] = out[flips][..., ::-1]
    return out


# The largest file each reader accepts (the size is checked before a byte is read or inflated):
# 128 MiB for IDX (MNIST's largest file holds 47 MB), all 60,000 CIFAR-10 records for CIFAR.
MAX_IDX_BYTES = 128 << 20
MAX_CIFAR_BYTES = 60000 * _RECORD


def _read_bytes(path: Path, limit: int | None = None) -> bytes:
    try:
        if limit is not None and (size := path.stat().st_size) > limit:
            raise DataError(f"{path}: expected at most {limit} bytes, got a {size}-byte file")
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: expected a readable file, got {exc.strerror or exc}") from None


def _gunzip_if_gzip(raw: bytes, path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """Decompress when the gzip magic 1f 8b leads, whatever the file is called; at most ``limit``
    bytes come out (a gzip bomb is refused after ``limit``, not after filling the memory)."""
    if raw[:2] != b"\x1f\x8b":
        return raw
    out, total, rest = [], 0, raw
    try:
        while rest:
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one gzip member at a time
            chunk = d.decompress(rest, 1 << 20)
            while True:
                out.append(chunk)
                total += len(chunk)
                if total > limit:
                    raise DataError(f"{path}: expected at most {limit} bytes once decompressed, got more")
                if d.eof or (not chunk and not d.unconsumed_tail):
                    break
                chunk = d.decompress(d.unconsumed_tail, 1 << 20)
            if not d.eof:
                raise EOFError("the stream ends before its end marker")
            rest = d.unused_data
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: expected a complete gzip stream, got a damaged one ({exc})") from None
    return b"".join(out)


def _parse_idx(data: bytes, path: Path) -> np.ndarray:
    if len(data) < 4:
        raise DataError(f"{path}: expected an IDX header of at least 4 bytes, got {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(f"{path}: expected IDX magic 0x00000801 (uint8 labels) or 0x00000803 "
                        f"(uint8 images), got 0x{magic:08x}")
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: expected a {header}-byte IDX header, got {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # Python integers: a header's product cannot wrap
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: dims {dims} need {expected} payload bytes, got {got} bytes")
    # copy(): frombuffer over bytes is read-only; callers get an ordinary writable array.
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path) -> np.ndarray:
    """Read an IDX file (gzip or plain): uint8 array shaped (N,) for labels or (N, H, W) for images."""
    path = Path(path)
    return _parse_idx(_gunzip_if_gzip(_read_bytes(path, MAX_IDX_BYTES), path), path)


def _parse_cifar(raw: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    if len(raw) == 0 or len(raw) % _RECORD:
        raise DataError(f"{path}: expected a positive multiple of {_RECORD} bytes (CIFAR-10 records), "
                        f"got {len(raw)} bytes")
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)
    labels = records[:, 0].astype(np.int64)
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise DataError(f"{path}: expected labels 0..9, got {labels[bad[0]]} in record {bad[0]}")
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32))
    return images, labels


def read_cifar_bin(path) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR-10 binary records: (uint8 images (N, 3, 32, 32) as R, G, B planes, int64 labels (N,))."""
    path = Path(path)
    return _parse_cifar(_read_bytes(path, MAX_CIFAR_BYTES), path)


def _check_digest(path: Path, algo: str, data: bytes, expected: str) -> None:
    actual = hashlib.new(algo, data).hexdigest()
    if actual != expected:
        raise DataError(f"{path}: checksum mismatch: expected {algo.upper()} {expected}, got {actual}")


# ----------------------------------------------------------------------------- loaders

def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits  # lazy: importing scikit-learn takes about a second

    bunch = load_digits()
    values, labels = np.asarray(bunch.data), np.asarray(bunch.target, dtype=np.int64)
    if values.shape != (1797, 64) or values.min() < 0 or values.max() > 16:
        raise DataError(f"scikit-learn load_digits: expected (1797, 64) values in 0..16, "
                        f"got shape {values.shape} range {values.min()}..{values.max()}")
    x = (values / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    order = np.random.default_rng(0).permutation(len(x))  # fixed seed: same split everywhere
    tr, te = order[:1437], order[1437:]
    return Dataset("digits", x[tr], labels[tr], x[te], labels[te], tuple(str(i) for i in range(10)),
                   "scikit-learn load_digits (bundled; split rng seed 0: 1437 train / 360 test)")


def _mnist_path(root: Path, name: str) -> Path | None:
    for candidate in (root / f"{name}.gz", root / name):  # .gz first: it is the original file
        if candidate.is_file():
            return candidate
    return None


def _read_mnist_file(path: Path, name: str) -> np.ndarray:
    raw = _read_bytes(path, MAX_IDX_BYTES)
    data = _gunzip_if_gzip(raw, path)
    array = _parse_idx(data, path)  # structure first: "truncated" says more than a digest
    md5, sha256 = MNIST_FILES[name]
    if raw is data:
        _check_digest(path, "sha256", data, sha256)
    elif hashlib.md5(raw).hexdigest() != md5:
        # A re-compressed copy has another gzip header but may hold the very same payload.
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256:
            raise DataError(f"{path}: checksum mismatch: expected MD5 {md5} (or uncompressed SHA-256 "
                            f"{sha256}), got MD5 {hashlib.md5(raw).hexdigest()} (SHA-256 {actual})")
    return array


def _load_mnist(root: Path, download: bool, progress: bool) -> Dataset:
    missing = [n for n in MNIST_FILES if _mnist_path(root, n) is None]
    if missing and download:
        download_dataset("mnist", root, progress=progress)
    elif missing:
        raise DataError(f"mnist: expected {', '.join(n + '[.gz]' for n in missing)} in {root}, "
                        f"got no such file; pass --download or copy them there")
    paths = {n: _mnist_path(root, n) for n in MNIST_FILES}
    arrays = {n: _read_mnist_file(p, n) for n, p in paths.items()}
    parts = []
    for split in ("train", "t10k"):
        images, labels = arrays[f"{split}-images-idx3-ubyte"], arrays[f"{split}-labels-idx1-ubyte"]
        img_path, lab_path = paths[f"{split}-images-idx3-ubyte"], paths[f"{split}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise DataError(f"{img_path}: expected images shaped (N, 28, 28), got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise DataError(f"{lab_path}: expected {len(images)} labels (as many as images in "
                            f"{img_path.name}), got shape {labels.shape}")
        # pixel / 256 in float32 is exact (dyadic); it keeps x strictly below 1.
        parts += [images[:, None].astype(np.float32) * np.float32(1 / 256), labels.astype(np.int64)]
    kinds = sorted({"gzip" if p.suffix == ".gz" else "plain" for p in paths.values()})
    return Dataset("mnist", *parts, tuple(str(i) for i in range(10)), f"{root} (IDX, {'+'.join(kinds)})")


def _cifar_dir(root: Path, names) -> Path | None:
    for d in (root, root / CIFAR_SUBDIR):
        if all((d / n).is_file() for n in names):
            return d
    return None


def _cifar_classes(folder: Path) -> tuple[str, ...]:
    meta = folder / CIFAR_META
    if not meta.is_file():
        return CIFAR_CLASSES
    names = tuple(line.strip() for line in _read_bytes(meta).decode("utf-8", "replace").splitlines())
    names = tuple(n for n in names if n)
    if len(names) != 10:
        raise DataError(f"{meta}: expected 10 class names, one a line, got {len(names)}")
    return names


def _is_image_folder(root: Path) -> bool:
    return all((root / split).is_dir() for split in IMAGE_SPLITS)


def _scale_cifar(images: np.ndarray) -> np.ndarray:
    """(pixel - 128) / 128, exact in float32."""
    return (images.astype(np.float32) - np.float32(128)) * np.float32(1 / 128)


def _load_cifar(root: Path, download: bool, progress: bool) -> Dataset:
    folder = _cifar_dir(root, CIFAR_FULL)
    partial = any((d / n).is_file() for d in (root, root / CIFAR_SUBDIR) for n in CIFAR_FULL)
    subset = _cifar_dir(root, CIFAR_SUBSET) if folder is None and not partial else None
    if folder is None and subset is None and not partial and _is_image_folder(root):
        return load_image_folder(root, progress=progress)
    if folder is None and subset is None:
        if not download:
            got = "an incomplete binary release" if partial else "neither layout"
            raise DataError(f"cifar10: expected {', '.join(CIFAR_FULL)} in {root} (or {root / CIFAR_SUBDIR}), "
                            f"or the subset {' + '.join(CIFAR_SUBSET)}, or an image folder (train/<class>/*.jpg "
                            f"and test/<class>/*.jpg); got {got}; pass --download or copy the files there")
        download_dataset("cifar10", root, progress=progress)
        folder = _cifar_dir(root, CIFAR_FULL)
        if folder is None:
            raise DataError(f"{root / CIFAR_SUBDIR}: expected {', '.join(CIFAR_FULL)} after the download, "
                            f"got an archive without them")
    if folder is not None:  # the full release is preferred whenever it is complete
        batches = [read_cifar_bin(folder / n) for n in CIFAR_FULL]
        train = (np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]]))
        test, source = batches[5], f"{folder} (CIFAR-10 binary release)"
    else:
        folder = subset
        raws = {n: _read_bytes(folder / n, MAX_CIFAR_BYTES) for n in CIFAR_SUBSET}
        for n, md5 in CIFAR_SUBSET.items():
            _check_digest(folder / n, "md5", raws[n], md5)
        train, test = (_parse_cifar(raws[n], folder / n) for n in CIFAR_SUBSET)
        source = f"{folder} (CIFAR-10 development subset: {len(train[1])} train / {len(test[1])} test)"

    return Dataset("cifar10", _scale_cifar(train[0]), train[1], _scale_cifar(test[0]), test[1],
                   _cifar_classes(folder), source)


# ----------------------------------------------------------------------------- image folders

def cache_dir() -> Path:
    """Where decoded image folders are kept: ``$SPIKEGRAD_CACHE``, else ``~/.cache/spikegrad``."""
    env = os.environ.get("SPIKEGRAD_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spikegrad"


def _list_images(root: Path, split: str) -> list[tuple[int, Path]]:
    """(label, path) of one split in the order the dataset uses: round robin over the classes
    (image 0 of every class, then image 1, ...), each class's files sorted by name, so that the
    last N images (``--validation N``) hold every class about equally."""
    base = root / split
    try:
        found = {p.name for p in base.iterdir() if p.is_dir()}
    except OSError as exc:
        raise DataError(f"{base}: expected a readable folder, got {exc.strerror or exc}") from None
    missing, extra = [c for c in CIFAR_CLASSES if c not in found], sorted(found - set(CIFAR_CLASSES))
    if missing or extra:
        raise DataError(f"{base}: expected the ten CIFAR-10 class folders {', '.join(CIFAR_CLASSES)}, got "
                        + "; ".join(w for w in (f"missing {', '.join(missing)}" if missing else "",
                                                f"unexpected {', '.join(extra)}" if extra else "") if w))
    per_class = []
    for label, name in enumerate(CIFAR_CLASSES):
        files = sorted(p for p in (base / name).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not files:
            raise DataError(f"{base / name}: expected image files ({', '.join(IMAGE_SUFFIXES)}), got none")
        per_class.append([(label, p) for p in files])
    longest = max(len(files) for files in per_class)
    return [files[k] for k in range(longest) for files in per_class if k < len(files)]


def _folder_key(root: Path, listing: dict[str, list[tuple[int, Path]]]) -> str:
    """SHA-256 over every file's split, class, name, size and modification time."""
    h = hashlib.sha256(b"spikegrad image folder v1\n")
    for split, items in listing.items():
        for label, p in items:
            st = p.stat()
            h.update(f"{split}/{label}/{p.name}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in sorted(arrays):
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(a.data)
    return h.hexdigest()


def _decode_image(path: Path) -> np.ndarray:
    """One 32x32 image as uint8 (3, 32, 32); the size is checked before any pixel is decoded."""
    from PIL import Image, UnidentifiedImageError  # noqa: PLC0415  (only image folders need Pillow)

    try:
        with Image.open(path) as im:
            if im.size != (32, 32):
                raise DataError(f"{path}: expected a 32x32 image, got {im.size[0]}x{im.size[1]}")
            if im.mode not in ("RGB", "L", "P", "RGBA", "LA"):
                raise DataError(f"{path}: expected an RGB, grey or palette image, got mode {im.mode}")
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: expected a readable JPEG or PNG image, got {type(exc).__name__}: {exc}") from None
    return rgb.transpose(2, 0, 1)


def _read_cache(path: Path, key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is absent, unreadable or fails its checksum."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        stored = bytes(arrays.pop("digest")).decode("ascii")
        stored_key = bytes(arrays.pop("key")).decode("ascii")
    except Exception:  # noqa: BLE001  (any damage means: decode again)
        return None
    if stored_key != key or _arrays_digest(arrays) != stored or set(arrays) != {
            "x_train", "y_train", "x_test", "y_test"}:
        return None
    return arrays


def _write_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> str | None:
    """Write atomically (:func:`launch.run.rundir.write_atomic`); returns why not, or None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = np.frombuffer(_arrays_digest(arrays).encode(), np.uint8)
        write_atomic(path, lambda f: np.savez(f, digest=digest, key=np.frombuffer(key.encode(), np.uint8), **arrays))
    except OSError as exc:
        return f"{exc.strerror or exc}"
    return None


def load_image_folder(root, *, progress: bool = True, cache: Path | None = None) -> Dataset:
    """CIFAR-10 from an image folder: ``root/{train,test}/<class>/*.{jpg,jpeg,png}``.

    Labels follow CIFAR-10's class order (:data:`CIFAR_CLASSES`); each split is ordered round
    robin over the classes (see :func:`_list_images`). Every image must be 32x32; grey, palette
    and RGBA images are converted to RGB. The decoded pixels are cached under ``cache``
    (default :func:`cache_dir`), keyed by the folder's file names, sizes and times and checked
    by their SHA-256 on every load; a damaged cache is decoded again. The folder is never written.
    """
    root = Path(root)
    listing = {split: _list_images(root, split) for split in IMAGE_SPLITS}
    key = _folder_key(root, listing)
    path = (cache or cache_dir()) / f"cifar10-folder-{key[:24]}.npz"
    arrays = _read_cache(path, key)
    lossy = any(p.suffix.lower() != ".png" for items in listing.values() for _, p in items)
    kind = "JPEG stand-in: lossy" if lossy else "PNG"
    if arrays is None:
        arrays = {}
        for split, items in listing.items():
            x = np.empty((len(items), 3, 32, 32), np.uint8)
            for i, (_, p) in enumerate(tqdm(items, desc=f"decoding {split} images", unit="img",
                                            disable=not progress, file=sys.stderr, mininterval=1.0)):
                x[i] = _decode_image(p)
            arrays[f"x_{split}"], arrays[f"y_{split}"] = x, np.array([lab for lab, _ in items], np.int64)
        why = _write_cache(path, key, arrays)
        if why is not None:
            print(f"spikegrad: warning: decoded images not cached at {path} ({why}); they are decoded "
                  f"again next time", file=sys.stderr)
    source = (f"{root} (image folder, {kind}: {len(arrays['y_train'])} train / {len(arrays['y_test'])} test; "
              f"decoded cache {path})")
    return Dataset("cifar10", _scale_cifar(arrays["x_train"]), arrays["y_train"],
                   _scale_cifar(arrays["x_test"]), arrays["y_test"], CIFAR_CLASSES, source)


def load_dataset(name: str, data_dir: str | os.PathLike | None = None, *,
                 download: bool = False, progress: bool = True) -> Dataset:
    """Load ``name`` (one of :data:`DATASETS`) from ``data_dir``; see the module docstring for scaling.

    ``download=True`` fetches only the files that are missing (``progress`` shows a tqdm bar).
    ``digits`` ignores ``data_dir``; ``mnist`` and ``cifar10`` require it.
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise DataError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    if key == "digits":
        return _load_digits()
    root = _require_dir(key, data_dir, create=download)
    return (_load_mnist if key == "mnist" else _load_cifar)(root, download, progress)


def _require_dir(name: str, data_dir, *, create: bool) -> Path:
    if data_dir is None:
        raise DataError(f"{name}: expected --data-dir (the folder holding the {name} files), got none")
    root = Path(data_dir).expanduser()
    if create:
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{root}: expected a data directory that can be created, got {exc}") from None
    if not root.is_dir():
        raise DataError(f"{name}: expected an existing data directory, got {root} "
                        f"({'a file' if root.exists() else 'no such directory'}); pass --download to create it")
    return root


# ----------------------------------------------------------------------------- downloads

def _fetch(url: str, target: Path, md5: str, progress: bool) -> None:
    """Download ``url`` to ``target``: temp file in the same folder, MD5 check, then atomic rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        digest = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            total = int(resp.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=target.name, disable=not progress) as bar:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(f"{url}: checksum mismatch: expected MD5 {md5}, got {digest.hexdigest()}")
        os.replace(tmp, target)  # same filesystem, so readers see the whole file or none of it
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fetch_any(urls, target: Path, md5: str, progress: bool, expected: str) -> None:
    errors, offline = [], True
    for url in urls:
        try:
            return _fetch(url, target, md5, progress)
        except DataError as exc:  # wrong bytes from one mirror: another may serve the right ones
            errors.append(str(exc))
            offline = False
        except (urllib.error.URLError, OSError, ValueError) as exc:  # includes HTTPError, timeouts
            errors.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
    hint = "the machine seems offline" if offline else "no mirror served the expected file"
    raise DataError(f"download of {target.name} failed ({'; '.join(errors)}): {hint}; "
                    f"expected files in {target.parent}: put {expected} there by hand")


def _extract_cifar(archive: Path, root: Path) -> None:
    """Extract only the .bin and meta files into root/cifar-10-batches-bin, refusing unsafe names."""
    wanted = set(CIFAR_FULL) | {CIFAR_META}
    out_dir = root / CIFAR_SUBDIR
    out_dir.mkdir(exist_ok=True)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                parts = Path(member.name).parts
                if member.name.startswith(("/", "\\")) or Path(member.name).is_absolute() or ".." in parts:
                    raise DataError(f"{archive}: expected relative member names, got {member.name!r}")
                if not member.isfile() or not parts or parts[-1] not in wanted:
                    continue  # links, folders, readme.html: never written
                data = tar.extractfile(member).read()
                fd, tmp = tempfile.mkstemp(prefix=f".{parts[-1]}.", suffix=".part", dir=out_dir)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, out_dir / parts[-1])
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: expected a readable tar.gz archive, got {exc}") from None


def download_dataset(name: str, data_dir, *, progress: bool = True) -> None:
    """Download the files of ``name`` that ``data_dir`` lacks (digits needs none: it ships with scikit-learn)."""
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise DataError(f"dataset: expected one of {', '.join(DATASETS)}, got {name!r}")
    if key == "digits":
        return
    root = _require_dir(key, data_dir, create=True)
    if key == "mnist":
        expected = ", ".join(f"{n}.gz" for n in MNIST_FILES)
        for n, (md5, _) in MNIST_FILES.items():
            if _mnist_path(root, n) is None:
                _fetch_any([base + n + ".gz" for base in MNIST_MIRRORS], root / f"{n}.gz", md5, progress, expected)
        return
    if _cifar_dir(root, CIFAR_FULL) is not None:
        return
    archive = root / Path(CIFAR_URL).name
    if not (archive.is_file() and hashlib.md5(_read_bytes(archive)).hexdigest() == CIFAR_MD5):
        expected = f"{archive.name} (or {', '.join(CIFAR_FULL)} in {CIFAR_SUBDIR}/)"
        _fetch_any([CIFAR_URL], archive, CIFAR_MD5, progress, expected)
    _extract_cifar(archive, root)
    archive.unlink()  # the extracted batches are all that is read; keep no second copy
