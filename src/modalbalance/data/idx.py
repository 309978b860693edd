"""Readers for the IDX format of the MNIST files, raw or gzipped.

An IDX file starts with a 4-byte magic number: two zero bytes, a type code
(``0x08`` is unsigned byte, the only type MNIST uses) and the number of
dimensions. One big-endian uint32 per dimension follows, then the data in
C order. Format described at http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import functools
import gzip
import logging
import zlib
from pathlib import Path

import numpy as np

from modalbalance.errors import DataError

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
UNSIGNED_BYTE_TYPE_CODE = 0x08
HEADER_PREFIX_BYTES = 4

MNIST_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_IMAGE_SHAPE = (28, 28)
ROOT_HINT = "pass --set data.root=DIR pointing at the four MNIST IDX files"


def read_idx(path: str | Path, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes into a uint8 array of the shape its header gives.

    The file is decompressed when it starts with the gzip magic bytes, whatever
    its suffix. Raises DataError naming the path when the file is missing or
    not valid gzip, or when its header has a wrong magic number, a type other
    than unsigned byte or a dimension count other than ``expected_ndim``.
    A data size that differs from the product of the header's dimensions
    raises DataError too.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"IDX file not found: {path}") from None
    except OSError as error:
        raise DataError(f"failed to read IDX file {path}: {error}") from None

    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise DataError(f"corrupt or truncated gzip file {path}: {error}; download it again") from None

    return _parse_idx_bytes(raw, path, expected_ndim)


def _parse_idx_bytes(raw: bytes, path: Path, expected_ndim: int | None) -> np.ndarray:
    if len(raw) < HEADER_PREFIX_BYTES:
        raise DataError(f"truncated IDX file {path}: {len(raw)} bytes, shorter than the 4-byte magic number")

    zero_bytes, type_code, ndim = raw[0:2], raw[2], raw[3]
    if zero_bytes != b"\x00\x00" or ndim == 0:
        magic = int.from_bytes(raw[:HEADER_PREFIX_BYTES], "big")
        raise DataError(f"wrong magic number 0x{magic:08x} in {path}; this is not an IDX file")
    if type_code != UNSIGNED_BYTE_TYPE_CODE:
        raise DataError(
            f"IDX file {path} has type code 0x{type_code:02x}; only unsigned byte (0x08) files such as MNIST are supported"
        )
    if expected_ndim is not None and ndim != expected_ndim:
        magic = int.from_bytes(raw[:HEADER_PREFIX_BYTES], "big")
        raise DataError(
            f"wrong magic number 0x{magic:08x} in {path}: expected an IDX file with {expected_ndim} dimensions, "
            f"found {ndim}; check that the file names are not swapped"
        )

    header_bytes = HEADER_PREFIX_BYTES + 4 * ndim
    if len(raw) < header_bytes:
        raise DataError(f"truncated IDX file {path}: {len(raw)} bytes, shorter than its {header_bytes}-byte header")
    shape = tuple(int(size) for size in np.frombuffer(raw, dtype=">u4", count=ndim, offset=HEADER_PREFIX_BYTES))

    expected_data_bytes = int(np.prod(shape, dtype=np.int64))
    data_bytes = len(raw) - header_bytes
    if data_bytes < expected_data_bytes:
        raise DataError(
            f"truncated IDX file {path}: header gives shape {shape} ({expected_data_bytes} bytes) "
            f"but only {data_bytes} bytes follow; download it again"
        )
    if data_bytes > expected_data_bytes:
        raise DataError(
            f"IDX file {path} has {data_bytes - expected_data_bytes} bytes after the {expected_data_bytes} "
            f"that its header shape {shape} accounts for; download it again"
        )

    # frombuffer returns a read-only view of ``raw``; the copy makes the array writable and owned.
    return np.frombuffer(raw, dtype=np.uint8, offset=header_bytes).reshape(shape).copy()


def find_mnist_file(root: Path, name: str) -> Path:
    """Return ``root/name`` or ``root/name.gz``, preferring the uncompressed file when both exist."""
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"MNIST file not found: {root / name}(.gz); {ROOT_HINT}")


def load_mnist(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load MNIST from the four standard IDX files in ``root``, raw or gzipped.

    Returns ``(train_images, train_labels, test_images, test_labels)`` as uint8
    arrays of shapes ``[60000, 28, 28]``, ``[60000]``, ``[10000, 28, 28]`` and
    ``[10000]`` for the standard files. The decoded arrays are cached per
    resolved ``root`` for the life of the process and returned read-only, so
    call ``.copy()`` before modifying one. Raises DataError naming the path
    for a missing directory or file, a malformed file, image and label counts
    that differ, or labels outside 0..9.
    """
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(f"MNIST path {root} is a file, not a directory; {ROOT_HINT}")
    if not root.is_dir():
        raise DataError(f"MNIST directory not found: {root}; {ROOT_HINT}")
    return _load_mnist_cached(root.resolve())


@functools.lru_cache(maxsize=4)
def _load_mnist_cached(root: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Keyed on the resolved root, so that the train and test builds of one run decode the files once.
    arrays = []
    for split in ("train", "test"):
        image_path = find_mnist_file(root, MNIST_FILE_NAMES[f"{split}_images"])
        label_path = find_mnist_file(root, MNIST_FILE_NAMES[f"{split}_labels"])
        images = read_idx(image_path, expected_ndim=3)
        labels = read_idx(label_path, expected_ndim=1)
        _check_mnist_pair(images, labels, image_path, label_path)
        images.flags.writeable = False
        labels.flags.writeable = False
        arrays += [images, labels]
        logger.info("loaded %d MNIST %s images from %s", len(labels), split, image_path)
    return tuple(arrays)  # type: ignore[return-value]


def _check_mnist_pair(images: np.ndarray, labels: np.ndarray, image_path: Path, label_path: Path) -> None:
    if images.shape[1:] != MNIST_IMAGE_SHAPE:
        raise DataError(f"MNIST images in {image_path} have size {images.shape[1:]}; expected {MNIST_IMAGE_SHAPE}")
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{image_path} has {images.shape[0]} images but {label_path} has {labels.shape[0]} labels; "
            "use files from the same MNIST split"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"MNIST labels in {label_path} go up to {labels.max()}; expected digits 0..9")
