#!/bin/bash
# fp32 vs bf16 for the global kind at its new default (whole frame, regions 4x6), on the three sets of run.sh.
set -e
[ -d /tmp/texdef ] || python benchmarks/make_texture_defects.py /tmp/texdef
[ -d /tmp/demo_scene ] || python benchmarks/make_demo_scene_folder.py /tmp/demo_scene
[ -d /tmp/wide ] || python benchmarks/make_wide_camera.py /tmp/wide --train 60 --normal 30 --per-case 15
R=docs/results/precision
for p in fp32 bf16; do
  framewatch eval --dataset mvtec --data /tmp/texdef --kind global --backbone efficientnet_lite0 --clusters 10 --runtime openvino --precision $p --no-progress --out-json $R/regions_tex_global_$p.json
  framewatch eval --dataset folder --data /tmp/demo_scene --classes normal --kind global --backbone efficientnet_lite0 --clusters 10 --runtime openvino --precision $p --no-progress --out-json $R/regions_demo_global_$p.json
  python benchmarks/eval_wide_camera.py /tmp/wide --configs "global full" --runtime openvino --precision $p --out-json $R/regions_wide_$p.json
done
