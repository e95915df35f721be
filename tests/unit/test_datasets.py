"""Dataset readers on tiny files written by the tests: idx, CIFAR binary, labelled folders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation import datasets
from evaluation.errors import DatasetFormatError, DatasetUnavailable


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "i" * array.ndim, *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx(tmp_path: Path, suffix: str) -> None:
    images = np.arange(5 * 4 * 3, dtype=np.uint8).reshape(5, 4, 3)
    write_idx(tmp_path / f"x-idx3-ubyte{suffix}", images)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / f"x-idx3-ubyte{suffix}"), images)


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")  # float idx: not ours
    with pytest.raises(DatasetFormatError):
        datasets.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((3, 2), np.uint8))
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-1])
    with pytest.raises(DatasetFormatError, match="holds 5 bytes"):
        datasets.read_idx(tmp_path / "short")


def test_fashion_mnist_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 30), ("t10k", 20)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    ds = datasets.load("fashion-mnist", tmp_path)
    assert (len(ds.train), len(ds.test)) == (30, 20)
    assert ds.class_names[9] == "Ankle boot"
    im = ds.train.load(3)
    assert im.size == (28, 28) and im.mode == "L"
    assert ds.train.labels[3] == 3
    sub = ds.train.subsample(2, seed=0)
    assert len(sub) == 20 and np.bincount(sub.labels).tolist() == [2] * 10
    assert sub.identity != ds.train.identity
    assert sub.identity == ds.train.subsample(2, seed=0).identity  # seeded: same images again


def test_missing_fashion_mnist_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="dataset-fashion-mnist") as e:
        datasets.check_available("fashion-mnist", tmp_path)
    assert str(tmp_path) in str(e.value)


def cifar_records(labels: list[tuple[int, ...]], rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    planes = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    raw = b"".join(bytes(lab) + planes[i].tobytes() for i, lab in enumerate(labels))
    return raw, planes.transpose(0, 2, 3, 1)


def test_cifar10_binary(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-10-batches-bin"
    root.mkdir()
    expected = []
    for i in range(1, 6):
        raw, pix = cifar_records([(i,), (9,)], rng)
        (root / f"data_batch_{i}.bin").write_bytes(raw)
        expected.append(pix)
    raw, _ = cifar_records([(0,), (1,), (2,)], rng)
    (root / "test_batch.bin").write_bytes(raw)
    ds = datasets.load("cifar10", tmp_path)  # the parent folder is fine too
    assert (len(ds.train), len(ds.test)) == (10, 3)
    assert ds.train.labels.tolist() == [1, 9, 2, 9, 3, 9, 4, 9, 5, 9]
    assert ds.class_names[0] == "airplane"
    img = np.asarray(ds.train.load(2))
    np.testing.assert_array_equal(img, expected[1][0])  # R, G, B planes -> HWC
    assert ds.test.load(0).size == (32, 32)


def test_cifar100_binary_uses_coarse_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    (root / "train.bin").write_bytes(cifar_records([(4, 77), (19, 3)], rng)[0])
    (root / "test.bin").write_bytes(cifar_records([(0, 99)], rng)[0])
    ds = datasets.load("cifar100", root)
    assert ds.train.labels.tolist() == [4, 19]
    assert len(ds.class_names) == 20


def test_cifar_truncated_file_is_a_format_error(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-binary"
    root.mkdir()
    (root / "train.bin").write_bytes(b"\x00" * 3000)
    (root / "test.bin").write_bytes(b"\x00" * 3074)
    with pytest.raises(DatasetFormatError, match="3074-byte records"):
        datasets.load("cifar100", root)


def test_missing_cifar_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="cifar-10-binary.tar.gz") as e:
        datasets.check_available("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-bin") in str(e.value)


def make_images(folder: Path, n: int, colour: tuple[int, int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20 + i, 16), colour).save(folder / f"{i:03d}.png")


def test_folder_with_train_and_test(tmp_path: Path) -> None:
    for split, n in (("train", 4), ("test", 2)):
        make_images(tmp_path / split / "cats", n, (255, 0, 0))
        make_images(tmp_path / split / "dogs", n, (0, 0, 255))
    ds = datasets.load("folder", tmp_path)
    assert ds.class_names == ("cats", "dogs")
    assert ds.train.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert ds.test.labels.tolist() == [0, 0, 1, 1]
    assert ds.test.load(3).getpixel((0, 0)) == (0, 0, 255)


def test_single_level_folder_is_split_by_fraction(tmp_path: Path) -> None:
    make_images(tmp_path / "a", 10, (1, 2, 3))
    make_images(tmp_path / "b", 6, (4, 5, 6))
    ds = datasets.load_folder(tmp_path, test_fraction=0.5, seed=0)
    assert np.bincount(ds.test.labels).tolist() == [5, 3]
    assert np.bincount(ds.train.labels).tolist() == [5, 3]
    again = datasets.load_folder(tmp_path, test_fraction=0.5, seed=0)
    assert again.test.identity == ds.test.identity
    other = datasets.load_folder(tmp_path, test_fraction=0.5, seed=1)
    assert other.test.identity != ds.test.identity


def test_empty_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DatasetUnavailable, match="CLASS"):
        datasets.load("folder", tmp_path)
    with pytest.raises(DatasetUnavailable, match="does not exist"):
        datasets.load("folder", tmp_path / "nope")
