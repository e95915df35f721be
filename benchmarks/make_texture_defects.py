"""Write the small-local-defect set (MVTec AD layout) from scikit-image's texture photos.

    python benchmarks/make_texture_defects.py /tmp/texture_defects [--train 30 --good 15 --defect 15 --size 160]

Textures: brick, grass, gravel (scikit-image ``data``) and moon (a cratered
surface). Needs scikit-image (the ``dev`` extra). See evaluation/texture_defects.py.
"""

from __future__ import annotations

import argparse

from evaluation.texture_defects import write_defect_set

TEXTURES = ("brick", "grass", "gravel", "moon")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=30)
    p.add_argument("--good", type=int, default=15)
    p.add_argument("--defect", type=int, default=15)
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    import skimage.data

    photos = {name: getattr(skimage.data, name)() for name in TEXTURES}
    root = write_defect_set(args.out, photos, args.train, args.good, args.defect, args.size, args.seed)
    print(f"wrote {len(photos)} textures under {root}")


if __name__ == "__main__":
    main()
