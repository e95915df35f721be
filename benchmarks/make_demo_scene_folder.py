"""Lay the demo scene out as a labelled folder for ``framewatch eval --dataset folder --classes normal``.

    python benchmarks/make_demo_scene_folder.py /tmp/demo_scene [--train 120 --normal 64 --anomalies 16 --seed 0]

ROOT/train/normal: normal training frames; ROOT/test/normal and ROOT/test/anomaly:
the demo stream (framewatch/demo_scene.py), split by label.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from framewatch.demo_scene import build_demo_set


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=120)
    p.add_argument("--normal", type=int, default=64)
    p.add_argument("--anomalies", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        scene = build_demo_set(Path(tmp), args.train, 0, args.normal, args.anomalies, args.seed)
        for f in scene.train:
            (out / "train" / "normal").mkdir(parents=True, exist_ok=True)
            shutil.copy(f, out / "train" / "normal" / f.name)
        for f in scene.stream:
            label = "anomaly" if f.name in scene.anomalies else "normal"
            (out / "test" / label).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, out / "test" / label / f.name)
    print(f"wrote {args.train} training and {args.normal + args.anomalies} test frames under {out}")


if __name__ == "__main__":
    main()
