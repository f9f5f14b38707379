"""CIFAR-10: x = (pixel - 128) / 128, shape (N, 3, 32, 32), range [-1, 127/128].

Read from the binary release, its development subset, or an image folder (``train/<class>/*.jpg|png``,
``test/<class>/*``, the ten CIFAR-10 class names as folder names), decoded once with Pillow into
a cache: ``$SPIKEGRAD_CACHE`` or ``~/.cache/spikegrad``, one ``.npz`` per folder state (keyed by
every file's name, size and modification time), holding the SHA-256 of its own arrays, checked on
every load. The data folder itself is never written (a download aside).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tarfile
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ..files import write_atomic
from .base import DataError, Dataset, _check_digest, _fetch_any, _read_bytes, require_dir

NAME = "cifar10"
# Training defaults (keys are TrainConfig fields), found on the channel-narrowed network on a
# validation split (docs/measurements/cifar10-recipe-*).
DEFAULTS: dict[str, Any] = dict(topology="cifar10", epochs=30, batch_size=64, lr=1e-5, momentum=0.9,
                                alpha=500.0, theta_ff=0.25, shift=4, flip=True)

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
# The largest file the reader accepts: all 60,000 CIFAR-10 records.
MAX_CIFAR_BYTES = 60000 * _RECORD


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


def load(data_dir: Any, download: bool = False, progress: bool = True) -> Dataset:
    """CIFAR-10 from ``data_dir`` (required), whichever layout it holds (module docstring);
    ``download`` fetches the binary release when none is there."""
    root = require_dir(NAME, data_dir, create=download)
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
        fetch_missing(root, progress=progress)
        folder = _cifar_dir(root, CIFAR_FULL)
        if folder is None:
            raise DataError(f"{root / CIFAR_SUBDIR}: expected {', '.join(CIFAR_FULL)} after the download, "
                            f"got an archive without them")
    if folder is not None:  # the full release is preferred whenever it is complete
        batches = [read_cifar_bin(folder / n) for n in CIFAR_FULL]
        train = (np.concatenate([b[0] for b in batches[:5]]), np.concatenate([b[1] for b in batches[:5]]))
        test, source = batches[5], f"{folder} (CIFAR-10 binary release)"
    else:
        assert subset is not None  # both None: downloaded above, or refused
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
    except Exception:
        return None
    if stored_key != key or _arrays_digest(arrays) != stored or set(arrays) != {
            "x_train", "y_train", "x_test", "y_test"}:
        return None
    return arrays


def _write_cache(path: Path, key: str, arrays: dict[str, np.ndarray]) -> str | None:
    """Write atomically (:func:`launch.files.write_atomic`); returns why not, or None."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = np.frombuffer(_arrays_digest(arrays).encode(), np.uint8)
        kwds: dict[str, Any] = arrays  # numpy's stub types **kwds of savez as allow_pickle: bool too
        write_atomic(path, lambda f: np.savez(f, digest=digest, key=np.frombuffer(key.encode(), np.uint8), **kwds))
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
                member_file = tar.extractfile(member)
                assert member_file is not None  # a regular file (member.isfile() above)
                data = member_file.read()
                fd, tmp = tempfile.mkstemp(prefix=f".{parts[-1]}.", suffix=".part", dir=out_dir)
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(tmp, out_dir / parts[-1])
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: expected a readable tar.gz archive, got {exc}") from None


def download(data_dir: Any, progress: bool = True) -> None:
    """Download and extract the binary release unless ``data_dir`` holds it."""
    fetch_missing(require_dir(NAME, data_dir, create=True), progress)


def fetch_missing(root: Path, progress: bool = True) -> None:
    if _cifar_dir(root, CIFAR_FULL) is not None:
        return
    archive = root / Path(CIFAR_URL).name
    if not (archive.is_file() and hashlib.md5(_read_bytes(archive)).hexdigest() == CIFAR_MD5):
        expected = f"{archive.name} (or {', '.join(CIFAR_FULL)} in {CIFAR_SUBDIR}/)"
        _fetch_any([CIFAR_URL], archive, CIFAR_MD5, progress, expected)
    _extract_cifar(archive, root)
    archive.unlink()  # the extracted batches are all that is read; keep no second copy
