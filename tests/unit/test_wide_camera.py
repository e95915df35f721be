"""The wide-camera evaluation set: readable by both eval layouts, each case's anomaly where the case says,
a clock in every frame that changes and tells no label, deterministic for a seed (no torch)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation import datasets, mvtec
from evaluation.wide_camera import (
    CASES,
    CRATE_BOTTOM,
    CRATE_GAP,
    CRATE_SIZE,
    CRATE_SPOTS,
    DOORWAY,
    H,
    W,
    clock_box,
)

PER_CASE = 4


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wide") / "set"
    cmd = [sys.executable, "benchmarks/make_wide_camera.py", str(out), "--train", "3", "--normal", "2"]
    done = subprocess.run([*cmd, "--per-case", str(PER_CASE)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "clock      --ignore 0.0078,0.0083," in done.stdout  # the zone, printed ready for --ignore
    return out


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.float32)


def masks(root: Path, case: str) -> list[np.ndarray]:
    files = sorted((root / case / "ground_truth" / case).glob("*_mask.png"))
    assert len(files) == PER_CASE
    return [np.asarray(Image.open(f)) > 127 for f in files]


def test_every_case_reads_as_an_mvtec_category_and_as_a_labelled_folder(root: Path) -> None:
    categories = mvtec.load(root)
    assert sorted(c.name for c in categories) == sorted(CASES)
    for cat in categories:
        assert (
            len(cat.train) == 3 and int(cat.test.labels.sum()) == PER_CASE and len(cat.test) == PER_CASE + 2
        )
        assert all(m is not None for m, y in zip(cat.masks, cat.test.labels) if y)
        assert cat.train.load(0).size == (W, H)
    ds = datasets.load_folder(root / "sides")
    assert ds.class_names == ("good", "sides") and len(ds.train) == 3 and len(ds.test) == PER_CASE + 2
    zones = json.loads((root / "zones.json").read_text())
    assert zones["doorway"] == [
        round(DOORWAY[0] / W, 4),
        round(DOORWAY[1] / H, 4),
        round(DOORWAY[2] / W, 4),
        0.5597,
    ]


def test_intruders_stay_in_their_case_region(root: Path) -> None:
    for case, inside in (
        ("middle", lambda ys, xs: xs.min() >= W / 3 and xs.max() < 2 * W / 3 and ys.min() >= H / 3 and ys.max() < 2 * H / 3),
        ("sides", lambda ys, xs: xs.max() < 0.25 * W or xs.min() >= 0.75 * W),
        ("edges", lambda ys, xs: ys.max() < 0.2 * H or ys.min() >= 0.8 * H),
    ):  # fmt: skip
        for m in masks(root, case):
            ys, xs = np.nonzero(m)
            assert ys.size and inside(ys, xs), case
            assert H / 8 - 6 <= ys.max() - ys.min() + 1 <= H / 5 + 1, case  # 1/8 to 1/5 of the height
    for m in masks(root, "small"):
        ys, _ = np.nonzero(m)
        assert 0 < ys.max() - ys.min() + 1 <= H / 12 + 1


def test_the_position_case_is_the_crate_in_the_fire_exit_far_from_where_it_stands(root: Path) -> None:
    normal = pixels(root / "position" / "test" / "good" / "000.jpg")
    for i, m in enumerate(masks(root, "position")):
        ys, xs = np.nonzero(m)
        assert DOORWAY[0] <= xs.min() and xs.max() <= DOORWAY[2] and abs(ys.max() - CRATE_BOTTOM) <= 6
        assert (xs.max() - xs.min() + 1, ys.max() - ys.min() + 1) == (CRATE_SIZE[0] + 1, CRATE_SIZE[1] + 1)
        for lo, hi in CRATE_SPOTS:  # never within CRATE_GAP of a normal crate (shake included)
            assert xs.min() - (hi + CRATE_SIZE[0]) >= CRATE_GAP - 9 or lo - xs.max() >= CRATE_GAP - 9
        frame = pixels(root / "position" / "test" / "position" / f"{i:03d}.jpg")
        assert frame[m][:, 2].mean() / frame[m][:, 0].mean() < 0.55  # crate brown
        assert normal[m][:, 2].mean() / normal[m][:, 0].mean() > 0.8  # where the doorway is dark grey


def test_every_frame_has_a_clock_whose_digits_change_and_the_clock_case_marks_it(root: Path) -> None:
    x0, y0, x1, y1 = clock_box()
    frames = [pixels(p) for p in sorted(root.glob("middle/*/*/*.jpg"))]
    for f in frames:
        box = f[y0:y1, x0:x1].mean(axis=2)
        assert (box > 200).mean() > 0.1 and np.median(box) < 130  # white dots on a darkened box
    lines = [f[y0 + 6 : y0 + 6 + 21, x0:x1].mean(axis=2) > 160 for f in frames]  # the date and time line
    assert all(np.any(a != b) for a, b in zip(lines, lines[1:]))
    for m in masks(root, "clock"):
        ys, xs = np.nonzero(m)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1) and m.sum() == (
            x1 - x0
        ) * (y1 - y0)


def test_a_seed_gives_the_same_set_and_another_seed_another(root: Path, tmp_path: Path) -> None:
    from evaluation.wide_camera import write_wide_camera

    again = write_wide_camera(tmp_path / "a", n_train=1, n_normal=1, n_case=1, seed=0)
    other = write_wide_camera(tmp_path / "b", n_train=1, n_normal=1, n_case=1, seed=1)
    for rel in ("middle/train/good/000.jpg", "edges/test/edges/000.jpg"):
        assert (again / rel).read_bytes() == (root / rel).read_bytes()
        assert (other / rel).read_bytes() != (root / rel).read_bytes()
