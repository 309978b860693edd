"""Tests for the MNIST IDX reader, on tiny files written here and on the real MNIST files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from modalbalance.data import idx
from modalbalance.data.idx import MNIST_FILE_NAMES, load_mnist, read_idx
from modalbalance.errors import DataError


def idx_bytes(array: np.ndarray, magic: bytes | None = None) -> bytes:
    """Encode a uint8 array as IDX: magic ``00 00 08 ndim``, big-endian uint32 dims, then the data."""
    header = magic if magic is not None else bytes([0, 0, 0x08, array.ndim])
    dims = np.asarray(array.shape, dtype=">u4").tobytes()
    return header + dims + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_idx(path: Path, array: np.ndarray, compress: bool = False) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_fake_mnist(root: Path, num_train: int = 6, num_test: int = 4, compress: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, size=(num_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(num_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, size=(num_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(num_test)[::-1] % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        name = MNIST_FILE_NAMES[key] + (".gz" if compress else "")
        write_idx(root / name, array, compress=compress)
    return arrays


IMAGES = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
LABELS = np.array([3, 1, 4, 1, 5], dtype=np.uint8)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    images = read_idx(write_idx(tmp_path / "images", IMAGES, compress), expected_ndim=3)
    labels = read_idx(write_idx(tmp_path / "labels", LABELS, compress), expected_ndim=1)

    assert images.dtype == np.uint8
    np.testing.assert_array_equal(images, IMAGES)
    np.testing.assert_array_equal(labels, LABELS)


def test_read_idx_gzip_detected_by_magic_bytes(tmp_path):
    # No .gz suffix: the gzip magic bytes alone decide.
    path = tmp_path / "labels-without-suffix"
    path.write_bytes(gzip.compress(idx_bytes(LABELS)))

    np.testing.assert_array_equal(read_idx(path), LABELS)


def test_read_idx_raw_file_with_gz_suffix(tmp_path):
    path = write_idx(tmp_path / "labels.gz", LABELS, compress=False)

    np.testing.assert_array_equal(read_idx(path), LABELS)


def test_read_idx_result_is_writable(tmp_path):
    array = read_idx(write_idx(tmp_path / "labels", LABELS))
    array[0] = 9

    assert array[0] == 9


def test_read_idx_missing_file(tmp_path):
    path = tmp_path / "absent-idx1-ubyte"

    with pytest.raises(DataError, match="not found") as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_truncated_data(tmp_path, compress):
    # The header promises 2x3x4 = 24 bytes; only 20 follow.
    data = idx_bytes(IMAGES)[:-4]
    path = tmp_path / "images"
    path.write_bytes(gzip.compress(data) if compress else data)

    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)
    assert "24 bytes" in str(error.value)


def test_read_idx_truncated_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(IMAGES))
    path = tmp_path / "images.gz"
    path.write_bytes(compressed[: len(compressed) // 2])

    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_truncated_header(tmp_path):
    # The magic number gives 3 dimensions (12 header bytes) but the file ends after one.
    path = tmp_path / "images"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (2).to_bytes(4, "big"))

    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_shorter_than_magic(tmp_path):
    path = tmp_path / "empty"
    path.write_bytes(b"\x00\x00")

    with pytest.raises(DataError, match="truncated") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "not-idx"
    path.write_bytes(idx_bytes(LABELS, magic=b"\x89PNG"))

    with pytest.raises(DataError, match="wrong magic number 0x89504e47") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_wrong_dimension_count(tmp_path):
    # A label file (magic 0x00000801) where an image file (0x00000803) is expected.
    path = write_idx(tmp_path / "labels", LABELS)

    with pytest.raises(DataError, match="wrong magic number 0x00000801") as error:
        read_idx(path, expected_ndim=3)
    assert str(path) in str(error.value)


def test_read_idx_rejects_other_type_codes(tmp_path):
    # Type code 0x0D is float32, which MNIST never uses.
    path = tmp_path / "floats"
    path.write_bytes(idx_bytes(LABELS, magic=bytes([0, 0, 0x0D, 1])))

    with pytest.raises(DataError, match="type code 0x0d") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(LABELS) + b"\x00\x00")

    with pytest.raises(DataError, match="2 bytes after") as error:
        read_idx(path)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_tiny(tmp_path, compress):
    expected = write_fake_mnist(tmp_path, compress=compress)

    train_images, train_labels, test_images, test_labels = load_mnist(tmp_path)

    np.testing.assert_array_equal(train_images, expected["train_images"])
    np.testing.assert_array_equal(train_labels, expected["train_labels"])
    np.testing.assert_array_equal(test_images, expected["test_images"])
    np.testing.assert_array_equal(test_labels, expected["test_labels"])


def test_load_mnist_mixed_raw_and_gzip(tmp_path):
    expected = write_fake_mnist(tmp_path, compress=True)
    raw_labels = tmp_path / MNIST_FILE_NAMES["test_labels"]
    (tmp_path / (MNIST_FILE_NAMES["test_labels"] + ".gz")).unlink()
    write_idx(raw_labels, expected["test_labels"])

    test_labels = load_mnist(tmp_path)[3]

    np.testing.assert_array_equal(test_labels, expected["test_labels"])


def test_load_mnist_arrays_are_read_only(tmp_path):
    write_fake_mnist(tmp_path)

    train_images = load_mnist(tmp_path)[0]

    assert not train_images.flags.writeable


def test_load_mnist_decodes_once_per_root(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    (tmp_path / "sub").mkdir()
    calls = []
    original = idx.read_idx
    monkeypatch.setattr(idx, "read_idx", lambda path, **kwargs: calls.append(path) or original(path, **kwargs))

    load_mnist(tmp_path)
    load_mnist(tmp_path / "sub" / "..")

    assert len(calls) == 4


def test_load_mnist_missing_directory(tmp_path):
    root = tmp_path / "no-such-dir"

    with pytest.raises(DataError, match="MNIST directory not found") as error:
        load_mnist(root)
    assert str(root) in str(error.value)
    assert "data.root" in str(error.value)


def test_load_mnist_missing_file(tmp_path):
    write_fake_mnist(tmp_path)
    (tmp_path / (MNIST_FILE_NAMES["train_images"] + ".gz")).unlink()

    with pytest.raises(DataError) as error:
        load_mnist(tmp_path)
    expected = f"MNIST file not found: {tmp_path / 'train-images-idx3-ubyte'}(.gz); pass --set data.root=DIR"
    assert str(error.value).startswith(expected)


def test_load_mnist_count_mismatch(tmp_path):
    write_fake_mnist(tmp_path, num_train=6)
    write_idx(tmp_path / (MNIST_FILE_NAMES["train_labels"] + ".gz"), np.zeros(5, dtype=np.uint8), compress=True)

    with pytest.raises(DataError, match="has 6 images but .* has 5 labels"):
        load_mnist(tmp_path)


def test_load_mnist_label_out_of_range(tmp_path):
    write_fake_mnist(tmp_path, num_test=3)
    write_idx(tmp_path / (MNIST_FILE_NAMES["test_labels"] + ".gz"), np.array([0, 10, 2], dtype=np.uint8), compress=True)

    with pytest.raises(DataError, match="labels .* go up to 10"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_image_size(tmp_path):
    write_fake_mnist(tmp_path)
    write_idx(tmp_path / (MNIST_FILE_NAMES["test_images"] + ".gz"), np.zeros((4, 8, 8), dtype=np.uint8), compress=True)

    with pytest.raises(DataError, match=r"size \(8, 8\)"):
        load_mnist(tmp_path)


@pytest.mark.realdata
def test_load_mnist_real(data_root):
    train_images, train_labels, test_images, test_labels = load_mnist(data_root / "mnist")

    assert train_images.shape == (60000, 28, 28)
    assert train_labels.shape == (60000,)
    assert test_images.shape == (10000, 28, 28)
    assert test_labels.shape == (10000,)
    assert train_images.dtype == np.uint8
    assert set(np.unique(train_labels)) == set(range(10))
    assert set(np.unique(test_labels)) == set(range(10))
    assert train_images.max() == 255
