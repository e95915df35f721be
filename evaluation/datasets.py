"""Labelled image sets for evaluation, read from disk; nothing is ever downloaded.

Readers:
  - a labelled image folder: ROOT/train/CLASS/* + ROOT/test/CLASS/*, or ROOT/CLASS/*
    split into train/test by a seeded per-class fraction;
  - Fashion-MNIST idx(.gz) files (Debian: ``apt-get install dataset-fashion-mnist``);
  - CIFAR-10 / CIFAR-100 (20 coarse classes) in their *binary* format (the
    python-format pickles are never read).

Each gives a train and a test ``ImageSet``: images made on demand (one PIL image
at a time), integer labels and class names, and an ``identity`` string that
names exactly which images these are (for the feature cache).
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
from PIL import Image

from evaluation.errors import DatasetFormatError, DatasetUnavailable

DATASETS = ("folder", "fashion-mnist", "cifar10", "cifar100")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATA_HOME = Path(os.environ.get("FRAMEWATCH_DATA", Path.home() / ".cache" / "framewatch" / "datasets"))
FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"), DATA_HOME / "fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
CIFAR100_COARSE = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)  # fmt: skip


@dataclass(frozen=True)
class ImageSet:
    """One split. ``load(i)`` makes image ``i`` on demand; ``labels`` is (N,) int64."""

    name: str
    labels: np.ndarray
    class_names: tuple[str, ...]
    load: Callable[[int], Image.Image]
    identity: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __iter__(self) -> Iterator[Image.Image]:
        for i in range(len(self)):
            yield self.load(i)

    def subset(self, indices: np.ndarray, tag: str) -> ImageSet:
        """The images at ``indices`` (in that order); ``tag`` says how they were chosen."""
        idx = np.asarray(indices, dtype=np.int64)
        digest = hashlib.sha256(idx.tobytes()).hexdigest()[:12]
        return ImageSet(
            name=f"{self.name}[{tag}]",
            labels=self.labels[idx],
            class_names=self.class_names,
            load=lambda i: self.load(int(idx[i])),
            identity=f"{self.identity}|{tag}|{digest}",
        )

    def subsample(self, per_class: Optional[int], seed: int = 0) -> ImageSet:
        """At most ``per_class`` images of each class, drawn with a seeded RNG (order kept)."""
        if not per_class:
            return self
        return self.subset(per_class_sample(self.labels, per_class, seed), f"sub{per_class}s{seed}")

    def only_classes(self, classes: list[int]) -> ImageSet:
        keep = np.flatnonzero(np.isin(self.labels, classes))
        return self.subset(keep, "cls" + "-".join(map(str, sorted(classes))))


@dataclass(frozen=True)
class Dataset:
    name: str
    train: ImageSet
    test: ImageSet

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names


def per_class_sample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` items per label, chosen by ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) > per_class:
            idx = rng.choice(idx, per_class, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------- array-backed sets


def _array_set(
    name: str, pixels: np.ndarray, labels: np.ndarray, classes: tuple[str, ...], ident: str
) -> ImageSet:
    """``pixels``: (N, H, W) grayscale or (N, H, W, 3) RGB uint8."""
    return ImageSet(name, labels.astype(np.int64), classes, lambda i: Image.fromarray(pixels[i]), ident)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An idx file (MNIST format, optionally gzipped) -> uint8 array of its shape."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DatasetFormatError(f"cannot read idx file {path}: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DatasetFormatError(f"{path} is not an unsigned-byte idx file (bad magic number)")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    start = 4 + 4 * ndim
    if len(raw) - start != int(np.prod(dims)):
        raise DatasetFormatError(f"{path}: header says shape {dims} but holds {len(raw) - start} bytes")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(dims)


def fashion_mnist_dir(root: Optional[str | os.PathLike[str]] = None) -> Path:
    """The first folder holding the four Fashion-MNIST idx files, else DatasetUnavailable."""
    candidates = [Path(root)] if root else list(FASHION_MNIST_DIRS)
    for d in candidates:
        if all(_idx_file(d, stem) for stem in _FASHION_STEMS):
            return d
    where = " or ".join(str(d) for d in candidates)
    raise DatasetUnavailable(
        f"Fashion-MNIST files not found in {where}.\n"
        f"  Needed: {', '.join(s + '.gz' for s in _FASHION_STEMS)} (gzipped or not).\n"
        f"  On Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist  (installs them in "
        f"{FASHION_MNIST_DIRS[0]})\n"
        f"  or copy them from https://github.com/zalandoresearch/fashion-mnist into {FASHION_MNIST_DIRS[1]} "
        f"or a folder given with --data."
    )


_FASHION_STEMS = (
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
)  # fmt: skip


def _idx_file(folder: Path, stem: str) -> Optional[Path]:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _file_tag(path: Path) -> str:
    return f"{path.name}:{path.stat().st_size}"


def load_fashion_mnist(root: Optional[str | os.PathLike[str]] = None) -> Dataset:
    """60k train / 10k test 28x28 grayscale images (made RGB by the embedder), 10 classes."""
    d = fashion_mnist_dir(root)
    sets = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        img_path = _idx_file(d, f"{prefix}-images-idx3-ubyte")
        lbl_path = _idx_file(d, f"{prefix}-labels-idx1-ubyte")
        assert img_path is not None and lbl_path is not None
        pixels, labels = read_idx(img_path), read_idx(lbl_path)
        if pixels.ndim != 3 or labels.shape != (pixels.shape[0],):
            raise DatasetFormatError(f"{img_path} / {lbl_path}: shapes {pixels.shape} / {labels.shape}")
        ident = f"fashion-mnist:{split}:{_file_tag(img_path)}"
        sets[split] = _array_set(f"fashion-mnist/{split}", pixels, labels, FASHION_MNIST_CLASSES, ident)
    return Dataset("fashion-mnist", sets["train"], sets["test"])


def read_cifar_bin(paths: list[Path], label_bytes: int, label_pos: int) -> tuple[np.ndarray, np.ndarray]:
    """CIFAR binary records (label byte(s) + 3072 bytes R,G,B planes) -> ((N,32,32,3) uint8, (N,) labels)."""
    record = label_bytes + 3072
    parts, labels = [], []
    for p in paths:
        raw = np.fromfile(p, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DatasetFormatError(f"{p}: {raw.size} bytes is not a whole number of {record}-byte records")
        rows = raw.reshape(-1, record)
        labels.append(rows[:, label_pos].astype(np.int64))
        parts.append(rows[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return np.ascontiguousarray(np.concatenate(parts)), np.concatenate(labels)


def _cifar_dir(name: str, root: Optional[str | os.PathLike[str]]) -> Path:
    sub, files, url = {
        "cifar10": (
            "cifar-10-batches-bin",
            [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"],
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        ),
        "cifar100": (
            "cifar-100-binary",
            ["train.bin", "test.bin"],
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        ),
    }[name]
    base = Path(root) if root else DATA_HOME
    for d in (base, base / sub):
        if all((d / f).is_file() for f in files):
            return d
    raise DatasetUnavailable(
        f"{name} binary files not found in {base} or {base / sub}.\n"
        f"  Needed: {', '.join(files)}.\n"
        f"  Download the *binary* version {url} on a machine with network, then\n"
        f"  tar -xzf {url.rsplit('/', 1)[1]} -C {base}   (creates {base / sub})\n"
        f"  or pass --data /folder/holding/{sub}. The python (pickle) version is not read."
    )


def _cifar_class_names(meta: Path, default: tuple[str, ...]) -> tuple[str, ...]:
    if meta.is_file():
        names = tuple(n.strip() for n in meta.read_text().splitlines() if n.strip())
        if len(names) == len(default):
            return names
    return default


def load_cifar10(root: Optional[str | os.PathLike[str]] = None) -> Dataset:
    d = _cifar_dir("cifar10", root)
    classes = _cifar_class_names(d / "batches.meta.txt", CIFAR10_CLASSES)
    train = [d / f"data_batch_{i}.bin" for i in range(1, 6)]
    return _cifar_dataset("cifar10", classes, train, [d / "test_batch.bin"], label_bytes=1, label_pos=0)


def load_cifar100(root: Optional[str | os.PathLike[str]] = None) -> Dataset:
    """CIFAR-100 with its 20 coarse (superclass) labels, as in DN2."""
    d = _cifar_dir("cifar100", root)
    classes = _cifar_class_names(d / "coarse_label_names.txt", CIFAR100_COARSE)
    return _cifar_dataset(
        "cifar100", classes, [d / "train.bin"], [d / "test.bin"], label_bytes=2, label_pos=0
    )


def _cifar_dataset(name, classes, train_files, test_files, label_bytes, label_pos) -> Dataset:  # type: ignore[no-untyped-def]
    sets = {}
    for split, files in (("train", train_files), ("test", test_files)):
        pixels, labels = read_cifar_bin(files, label_bytes, label_pos)
        if labels.max() >= len(classes):
            raise DatasetFormatError(f"{name} {split}: label {labels.max()} but only {len(classes)} classes")
        ident = f"{name}:{split}:" + ",".join(_file_tag(p) for p in files)
        sets[split] = _array_set(f"{name}/{split}", pixels, labels, classes, ident)
    return Dataset(name, sets["train"], sets["test"])


# ---------------------------------------------------------------- labelled image folder


def _class_files(folder: Path) -> dict[str, list[Path]]:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return {
        c.name: sorted(f for f in c.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        for c in classes
    }


def _folder_set(
    name: str, root: Path, files: list[Path], labels: list[int], classes: tuple[str, ...]
) -> ImageSet:
    h = hashlib.sha256()
    for f, y in zip(files, labels):
        st = f.stat()
        h.update(f"{f.relative_to(root)}|{st.st_size}|{st.st_mtime_ns}|{y}\n".encode())
    ident = f"folder:{root.resolve()}:{name}:{h.hexdigest()[:16]}"

    def load(i: int) -> Image.Image:
        with Image.open(files[i]) as im:
            return im.convert("RGB")

    return ImageSet(f"{root.name}/{name}", np.asarray(labels, dtype=np.int64), classes, load, ident)


def load_folder(root: str | os.PathLike[str], test_fraction: float = 0.5, seed: int = 0) -> Dataset:
    """ROOT/train/CLASS + ROOT/test/CLASS, or ROOT/CLASS split per class by ``test_fraction``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetUnavailable(
            f"image folder {root} does not exist. Lay it out as {root}/train/CLASS/*.jpg and "
            f"{root}/test/CLASS/*.jpg, or {root}/CLASS/*.jpg (split by --split)."
        )
    if (root / "train").is_dir() and (root / "test").is_dir():
        train_files, test_files = _class_files(root / "train"), _class_files(root / "test")
        classes = tuple(sorted(set(train_files) | set(test_files)))
        splits = {
            "train": [(f, classes.index(c)) for c in train_files for f in train_files[c]],
            "test": [(f, classes.index(c)) for c in test_files for f in test_files[c]],
        }
    else:
        by_class = _class_files(root)
        classes = tuple(by_class)
        rng = np.random.default_rng(seed)
        splits = {"train": [], "test": []}
        for y, c in enumerate(classes):
            files = by_class[c]
            n_test = int(round(len(files) * test_fraction))
            order = rng.permutation(len(files))
            test_idx = set(order[:n_test].tolist())
            for i, f in enumerate(files):
                splits["test" if i in test_idx else "train"].append((f, y))
    if not classes or not splits["train"] or not splits["test"]:
        raise DatasetUnavailable(
            f"no labelled images under {root}: expected {root}/train/CLASS/*.jpg and {root}/test/CLASS/*.jpg "
            f"(or {root}/CLASS/*.jpg); image suffixes {', '.join(IMAGE_SUFFIXES)}"
        )
    sets = {
        split: _folder_set(split, root, [f for f, _ in items], [y for _, y in items], classes)
        for split, items in splits.items()
    }
    return Dataset(root.name, sets["train"], sets["test"])


def check_available(name: str, data: Optional[str | os.PathLike[str]] = None) -> None:
    """Raise DatasetUnavailable (saying where to put the files) before any work starts."""
    if name == "fashion-mnist":
        fashion_mnist_dir(data)
    elif name in ("cifar10", "cifar100"):
        _cifar_dir(name, data)
    elif name == "folder":
        if not data:
            raise DatasetUnavailable(
                "--dataset folder needs --data ROOT (ROOT/train/CLASS/*.jpg, ROOT/test/CLASS/*.jpg)"
            )
        if not Path(data).is_dir():
            load_folder(data)
    else:
        raise DatasetUnavailable(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def load(
    name: str, data: Optional[str | os.PathLike[str]] = None, test_fraction: float = 0.5, seed: int = 0
) -> Dataset:
    check_available(name, data)
    if name == "fashion-mnist":
        return load_fashion_mnist(data)
    if name == "cifar10":
        return load_cifar10(data)
    if name == "cifar100":
        return load_cifar100(data)
    assert data is not None
    return load_folder(data, test_fraction, seed)
