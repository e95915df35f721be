"""``framewatch eval --dataset mvtec`` and ``--kind patch`` on a small synthetic MVTec-style tree."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evaluation import mvtec
from evaluation.errors import DatasetUnavailable
from evaluation.texture_defects import write_defect_set
from framewatch.cli import main

COMMON = [
    "--backbone",
    "resnet18",
    "--weights",
    "random:0",
    "--crop",
    "64",
    "--no-progress",
    "--batch-size",
    "8",
]


def photo(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(60, 190, (40, 40), dtype=np.uint8)).resize(
        (320, 320), Image.BILINEAR
    )
    return np.clip(np.asarray(coarse, dtype=np.float64) + rng.normal(0, 10, (320, 320)), 0, 255).astype(
        np.uint8
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    return write_defect_set(
        root, {"tiles": photo(0), "weave": photo(1)}, n_train=6, n_good=3, n_defect=3, size=64
    )


def test_reader_finds_categories_defects_and_masks(tree: Path) -> None:
    cats = mvtec.load(tree)
    assert [c.name for c in cats] == ["tiles", "weave"]
    c = cats[0]
    assert len(c.train) == 6 and len(c.test) == 6 and int(c.test.labels.sum()) == 3
    assert [m is not None for m in c.masks] == [lbl == 1 for lbl in c.test.labels]
    with pytest.raises(DatasetUnavailable, match="no category 'cable'"):
        mvtec.load(tree, ["cable"])


def test_mvtec_eval_reports_image_and_pixel_auc_per_category(tree: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "r.json"
    argv = ["eval", "--dataset", "mvtec", "--data", str(tree), "--kind", "patch", "--clusters", "50",
            "--coreset", "50", "--cache-dir", str(tmp_path / "c"), "--out-json", str(out), *COMMON]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    res = report["results"]
    assert res["methods"] == ["exact", "C=50", "coreset=50"]
    assert [c["name"] for c in res["per_class"]] == ["tiles", "weave"]
    for c in res["per_class"]:
        assert set(c["auc"]) == set(c["pixel_auc"]) == set(res["methods"])
    assert set(res["mean_pixel_auc"]) == set(res["methods"])
    assert all(0.0 <= v <= 1.0 for v in res["mean_auc"].values())
    assert report["spec"]["kind"] == "patch" and report["spec"]["layers"] == ["layer2", "layer3"]
    assert "| tiles |" in capsys.readouterr().out

    assert main(["eval", "--dataset", "mvtec", "--data", str(tree), "--kind", "global", "--clusters", "2",
                 "--regions", "1x1", "--cache-dir", "", "--out-json", str(out), *COMMON]) == 0  # fmt: skip
    glob = json.loads(out.read_text())["results"]
    assert glob["methods"] == ["exact", "C=2"] and "mean_pixel_auc" not in glob  # one vector per image: no map
    assert main(["eval", "--dataset", "mvtec", "--data", str(tree), "--kind", "global", "--clusters", "2",
                 "--cache-dir", "", "--out-json", str(out), *COMMON]) == 0  # fmt: skip
    regions = json.loads(out.read_text())["results"]  # the default: 4x6 regions, a coarse map per image
    assert set(regions["mean_pixel_auc"]) == set(regions["methods"]) == {"exact", "C=2"}


def test_folder_eval_with_patch_kind_keeps_the_json_shape(tree: Path, tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    shutil.copytree(tree / "tiles" / "train", folder / "train")
    shutil.copytree(tree / "tiles" / "test" / "good", folder / "test" / "good")
    for defect in ("scratch", "stain", "patch"):
        for f in (tree / "tiles" / "test" / defect).glob("*.png"):
            (folder / "test" / "defect").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, folder / "test" / "defect" / f"{defect}-{f.name}")
    out = tmp_path / "r.json"
    argv = ["eval", "--dataset", "folder", "--data", str(folder), "--classes", "good", "--kind", "patch",
            "--clusters", "40", "--coreset", "", "--cache-dir", "", "--out-json", str(out), *COMMON]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(out.read_text())
    assert set(report["results"]["mean_auc"]) == {"exact", "C=40"}
    assert [c["name"] for c in report["results"]["per_class"]] == ["good"]
    assert report["kind"] == "patch"


def test_missing_tree_is_one_clear_error(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["eval", "--dataset", "mvtec", "--data", str(tmp_path)]) == 2
    assert "CATEGORY/train/good" in capsys.readouterr().err
