"""Write the wide-camera evaluation set (issue 17): a 1280x720 fixed yard, anomalies in the middle,
the side bands, near the top and bottom edges, small ones, a crate where it never stands, and a clock.

    python benchmarks/make_wide_camera.py /tmp/wide_camera [--train 120 --normal 60 --per-case 30 --seed 0]

Then, per case (an MVTec-style category; ``--dataset folder`` reads one case folder too)::

    framewatch eval --dataset mvtec --data /tmp/wide_camera --kind patch            # every case
    framewatch eval --dataset folder --data /tmp/wide_camera/sides --classes good    # one case

Prints the clock, doorway (fire exit) and store-door boxes as fractions of the frame (also in ROOT/zones.json),
ready for ``--ignore x0,y0,x1,y1``. Scene and cases: evaluation/wide_camera.py.
"""

from __future__ import annotations

import argparse
import time

from evaluation.wide_camera import CASES, write_wide_camera, zones


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--train", type=int, default=120, help="normal training frames")
    p.add_argument("--normal", type=int, default=60, help="normal test frames (shared by every case)")
    p.add_argument("--per-case", type=int, default=30, help="anomalous frames per case")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    t0 = time.perf_counter()
    root = write_wide_camera(args.out, args.train, args.normal, args.per_case, args.seed)
    print(
        f"wrote {args.train} training, {args.normal} normal test and {args.per_case} x {len(CASES)} anomalous "
        f"frames ({', '.join(CASES)}) under {root} in {time.perf_counter() - t0:.0f} s"
    )
    for name, box in zones().items():
        print(f"{name:<10} --ignore {','.join(f'{v:g}' for v in box)}")


if __name__ == "__main__":
    main()
