#!/bin/bash
# Accuracy of fp32 / bf16 / int8 on OpenVINO, three sets (docs/accuracy.md, "CPU precision"). 2 CPU cores: ~27 min.
set -e
python benchmarks/make_texture_defects.py /tmp/texdef
python benchmarks/make_demo_scene_folder.py /tmp/demo_scene
python benchmarks/make_wide_camera.py /tmp/wide --train 60 --normal 30 --per-case 15
R=docs/results/precision
for p in fp32 bf16 int8; do
  framewatch eval --dataset mvtec --data /tmp/texdef --kind global --backbone efficientnet_lite0 --clusters 10 --runtime openvino --precision $p --no-progress --out-json $R/tex_global_$p.json
  framewatch eval --dataset folder --data /tmp/demo_scene --classes normal --kind global --backbone efficientnet_lite0 --clusters 10 --runtime openvino --precision $p --no-progress --out-json $R/demo_global_$p.json
  python benchmarks/eval_wide_camera.py /tmp/wide --configs "global full,patch full" --runtime openvino --precision $p --out-json $R/wide_$p.json
  framewatch eval --dataset mvtec --data /tmp/texdef --kind patch --backbone efficientnet_lite0 --clusters 1000 --coreset '' --runtime openvino --precision $p --no-progress --out-json $R/tex_patch_$p.json
  framewatch eval --dataset folder --data /tmp/demo_scene --classes normal --kind patch --backbone efficientnet_lite0 --clusters 1000 --coreset '' --runtime openvino --precision $p --no-progress --out-json $R/demo_patch_$p.json
done
