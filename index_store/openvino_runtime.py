"""The embedder's model run by OpenVINO on CPU: the same torch module, converted, compiled per input shape.

Why: on CPU the extractor is the worker's ceiling, and OpenVINO's CPU plugin
runs EfficientNet-Lite0 about 2.4x faster than torch at fp32 and 4-5x at bf16
on 2 cores (docs/benchmarks.md). The weights and the index spec stay the single
source of truth: the module ``backbones.build_backbone`` made is exported with
``torch.export`` (batch dimension dynamic, the image's H and W fixed) and
converted by ``openvino.convert_model``; nothing is traced with the deprecated
``torch.jit.trace``.

One compiled model per input (H, W), made on the first batch of that shape: a
worker serves one spec, so it compiles once; fitting or evaluating at several
shapes (tiles, whole frames) compiles each once. Beside it, one compiled for
exactly the full batch (the embedder's batch size: what a busy worker and a fit
send): OpenVINO's CPU plugin plans a static shape's memory and kernels once,
about 10 % faster at fp32 than the dynamic-batch model, which runs the partial
batches (docs/benchmarks.md). So two compiled models per input shape, at most,
whatever batch sizes come. Converted models are kept on disk (``cache_dir``,
keyed by the spec fingerprint, the shape and the OpenVINO version) and
OpenVINO's own compiled-blob cache sits beside them (its key holds the
precision and the batch), so a restarted worker neither exports nor converts again.

Precision: OpenVINO picks bf16 on its own on CPUs that have it, which moves
scores by about 2 %; it is always asked for explicitly here
(``INFERENCE_PRECISION_HINT``): ``fp32`` -> f32, ``bf16`` -> bf16. ``int8``:
the model after NNCF post-training quantization (``quantize``), calibrated on
the index's own normal frames; what is not quantized runs at f32. The
quantized model is the calibration's product and cannot be remade without
those frames, so it travels as bytes (``QuantizedModel``: its OpenVINO IR in a
safetensors blob, pinned by the spec's ``quantized_sha256``) with the index
version, as fine-tuned weights do (index_store/adapted.py).

Only the standard library is imported here at module level, so the command
line can offer the choices without importing torch or OpenVINO.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from index_store.errors import IndexStoreError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
DEFAULT_RUNTIME = "auto"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}  # int8: the quantized ops; the rest at f32
# Frames an int8 model is calibrated on (evenly spaced over the fit frames): NNCF's statistics (activation
# ranges, fast bias correction) settle well below its default of 300, and calibration costs one f32 pass each.
CALIBRATION_FRAMES = 128
# A worker's OpenVINO streams (``framewatch work --ov-streams``): each batch split over that many concurrent
# inference requests, outputs identical. Measured on 2 loaded cores, whole worker, 2 streams over 1 at fp32:
# 0.60-1.57x in five rounds (median 1.14; docs/benchmarks.md): not a clear gain, so one stream stays the default.
WORKER_OV_STREAMS = 1
CACHE_VAR = "FRAMEWATCH_CACHE"
PRECISION_VAR = "FRAMEWATCH_PRECISION"  # the precision new indexes are fit at when none is asked for
MAX_BATCH = (
    4096  # the exported batch dimension's upper bound (torch.export needs one; the worker's is far lower)
)


class RuntimeUnavailable(IndexStoreError):
    """The runtime asked for cannot run here (not installed, or not on this device)."""


class NotCalibrated(IndexStoreError):
    """An int8 model was asked to embed before it was calibrated (``quantize``) or given its quantized model."""


def encode_quantized(xml: bytes, weights: bytes, metadata: Mapping[str, str]) -> bytes:
    """A quantized OpenVINO IR (model.xml, model.bin) -> one safetensors blob (two uint8 tensors)."""
    import numpy as np
    from safetensors.numpy import save

    tensors = {"xml": np.frombuffer(xml, np.uint8), "bin": np.frombuffer(weights, np.uint8)}
    return save(tensors, metadata={"format": "openvino-ir", **metadata})


def decode_quantized(blob: bytes, expected_sha256: str) -> tuple[bytes, bytes]:
    """The blob's (xml, bin), after checking it against ``expected_sha256`` (CorruptIndex if it fails)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    from index_store.errors import CorruptIndex

    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected_sha256:
        raise CorruptIndex(f"the int8 model fails its sha256: stored {actual[:12]}..., the index was fit with "
                           f"{expected_sha256[:12]}...; refusing to embed with another model")  # fmt: skip
    try:
        tensors = load(blob)
        return tensors["xml"].tobytes(), tensors["bin"].tobytes()
    except (SafetensorError, ValueError, KeyError, RuntimeError) as e:
        raise CorruptIndex(f"the int8 model is not a readable blob: {e}") from e


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$FRAMEWATCH_CACHE/openvino``, else ``~/.cache/framewatch/openvino``."""
    root = environ.get(CACHE_VAR) or str(Path.home() / ".cache" / "framewatch")
    return Path(root) / "openvino"


def default_precision(runtime: str = DEFAULT_RUNTIME, device_type: str = "cpu",
                      environ: Mapping[str, str] = os.environ) -> str:  # fmt: skip
    """The precision a new index is fit (and evaluated) at when ``--precision`` is not given.

    The fastest mode whose accuracy cost stayed under 0.5 ROC-AUC points on every evaluation set
    (docs/accuracy.md, "CPU precision"): bf16 (int8 cost 1.4-6.4 points), where OpenVINO runs it
    natively (a CPU with bf16 instructions); fp32 elsewhere (CUDA, torch, a CPU without bf16, where bf16
    would not be faster). ``FRAMEWATCH_PRECISION`` overrides it. Existing indexes keep theirs: the spec
    records it, and a refit keeps the active version's (framewatch/index_safety.py).
    """
    from index_store.spec import PRECISIONS

    forced = environ.get(PRECISION_VAR)
    if forced:
        if forced not in PRECISIONS:
            raise RuntimeUnavailable(f"{PRECISION_VAR}={forced!r} is not one of {', '.join(PRECISIONS)}")
        return forced
    try:
        if choose(runtime, device_type) != "openvino":
            return "fp32"
    except RuntimeUnavailable:
        return "fp32"
    import openvino as ov

    return "bf16" if "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "fp32"


def choose(runtime: str, device_type: str) -> str:
    """``auto``: OpenVINO on CPU when it is installed, torch otherwise (CUDA: always torch).

    :raises RuntimeUnavailable: ``openvino`` asked for on CUDA, or not installed.
    """
    if runtime not in RUNTIMES:
        raise RuntimeUnavailable(f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})")
    if runtime == "auto":
        return "openvino" if device_type == "cpu" and installed() else "torch"
    if runtime == "openvino":
        if device_type != "cpu":
            raise RuntimeUnavailable(f"the openvino runtime runs on CPU only, not {device_type}")
        if not installed():
            raise RuntimeUnavailable(
                "the openvino runtime is not installed: pip install 'framewatch[openvino]'"
            )
    return runtime


class OpenVinoModel:
    """Called like the torch module it wraps: (N, 3, H, W) float32 CPU tensor -> float32 tensor.

    ``converted`` and ``loaded`` count the shapes converted from torch and those
    found in ``cache_dir`` (the second worker on a host converts nothing).
    """

    def __init__(self, module: Any, fingerprint: str, precision: str = "fp32", threads: int = 0,
                 cache_dir: Optional[Path] = None, quantized: Optional[tuple[bytes, bytes]] = None,
                 streams: int = 1, batch: int = 0) -> None:  # fmt: skip
        """``module``: the eval-mode torch module; ``fingerprint``: its spec's (names the weights);
        ``threads``: OpenVINO's inference threads (0: its default, all cores); ``quantized``: an int8 model's
        IR (xml, bin) as ``decode_quantized`` gives it (else ``quantize`` must be called first). ``streams`` > 1:
        OpenVINO's throughput mode, a batch split over that many concurrent inference requests (each on its
        share of the threads; same outputs, bit for bit). ``batch``: the full batch's size, run on a model
        compiled for exactly it (0: none; every batch runs on the dynamic-batch model)."""
        import openvino as ov

        if precision not in OV_PRECISION:
            raise RuntimeUnavailable(f"precision {precision!r} is not offered by the openvino runtime "
                                     f"(offered: {', '.join(OV_PRECISION)})")  # fmt: skip
        self.module, self.fingerprint, self.precision = module, fingerprint, precision
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.core = ov.Core()
        try:  # a read-only cache (a container without its volume) costs start-up time, nothing else
            (self.cache_dir / "compiled").mkdir(parents=True, exist_ok=True)
            self.core.set_property({"CACHE_DIR": str(self.cache_dir / "compiled")})
        except OSError as e:
            log.warning(
                "openvino cache %s not usable (%s): models are converted at every start", self.cache_dir, e
            )
        if precision == "bf16" and "BF16" not in self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            log.warning("this CPU has no bf16 support: OpenVINO runs the bf16 precision in f32 (scores differ "
                        "from a bf16 fit by about 2 %%)")  # fmt: skip
        self.streams = max(1, min(int(streams), threads or int(streams)))  # no more streams than threads
        self.config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if self.streams > 1:
            self.config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams})
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.version = ov.get_version()
        self.batch = batch
        self._compiled: dict[tuple[int, int], Any] = {}  # dynamic batch: any batch of that (H, W)
        self._full: dict[tuple[int, int], Any] = {}  # compiled for (batch, 3, H, W)
        self._queues: dict[tuple[int, int], Any] = {}
        self._split_lock = threading.Lock()  # one split batch at a time per model (the queue's callback is shared)
        self.converted = self.loaded = 0
        self.quantized = quantized

    def quantize(self, calibration: Any) -> bytes:
        """Calibrate the int8 model on ``calibration`` ((N, 3, H, W) float32 model inputs of normal frames,
        one shape) with NNCF's post-training quantization; returns the blob (``encode_quantized``) to keep
        with the index. Deterministic for the same inputs, NNCF and OpenVINO."""
        import nncf

        if self.precision != "int8":
            raise RuntimeUnavailable(f"only the int8 precision is calibrated, not {self.precision}")
        t0 = time.perf_counter()
        x = calibration.float().contiguous().numpy()
        shape = (int(x.shape[-2]), int(x.shape[-1]))
        model = self._fp32_model(shape)
        data = nncf.Dataset([x[i : i + 1] for i in range(len(x))])
        quantized = nncf.quantize(model, data, subset_size=len(x), preset=nncf.QuantizationPreset.PERFORMANCE)
        with tempfile.TemporaryDirectory() as tmp:
            ov_save(quantized, Path(tmp) / "model.xml")
            ir = (Path(tmp) / "model.xml").read_bytes(), (Path(tmp) / "model.bin").read_bytes()
        meta = {"openvino": self.version, "nncf": nncf.__version__, "shape": f"{shape[0]}x{shape[1]}",
                "calibration_frames": str(len(x))}  # fmt: skip
        blob = encode_quantized(*ir, meta)
        self.quantized, self._compiled, self._full, self._queues = ir, {}, {}, {}
        log.info("int8 model calibrated on %d frames at %dx%d in %.1fs (%d KiB)", len(x), *shape,
                 time.perf_counter() - t0, len(blob) // 1024)  # fmt: skip
        return blob

    def __call__(self, x: Any) -> Any:
        import torch

        shape = (int(x.shape[-2]), int(x.shape[-1]))
        compiled = self._compiled.get(shape) or self._compile(shape)
        if compiled is self.module:  # conversion failed for this shape: torch runs it
            with torch.inference_mode():
                return self.module(x.float())
        if x.dtype != torch.float32:
            x = x.float()
        x = x.contiguous().numpy()
        if self.streams > 1 and len(x) >= 2 * self.streams:
            return torch.from_numpy(self._split(shape, compiled, x))
        if len(x) == self.batch:
            compiled = self._full.get(shape, compiled)
        out = compiled(x, share_inputs=True)[0]
        return torch.from_numpy(out)

    def _split(self, shape: tuple[int, int], compiled: Any, x: Any) -> Any:
        """The batch in ``streams`` parts, inferred concurrently, outputs in order."""
        import numpy as np
        import openvino as ov

        queue = self._queues.get(shape)
        if queue is None:
            queue = self._queues[shape] = ov.AsyncInferQueue(compiled, self.streams)
        parts = np.array_split(x, self.streams)
        out: list[Any] = [None] * len(parts)

        def done(request: Any, i: int) -> None:
            out[i] = request.get_output_tensor(0).data.copy()

        with self._split_lock:
            queue.set_callback(done)
            for i, part in enumerate(parts):
                queue.start_async({0: part}, i, share_inputs=True)
            queue.wait_all()
        return np.concatenate(out)

    def warm(self, height: int, width: int) -> None:
        """Compile for one input shape now (a worker does it before it says it is ready)."""
        if (height, width) not in self._compiled:
            self._compile((height, width))

    def _compile(self, shape: tuple[int, int]) -> Any:
        """The compiled model for this shape; the torch module itself if conversion fails (OpenVINO is an
        optimisation, never a reason not to serve)."""
        if self.precision == "int8":  # torch would not give the int8 model's features: no fallback
            return self._compile_or_raise(shape)
        try:
            return self._compile_or_raise(shape)
        except Exception as e:  # noqa: BLE001 - export and conversion fail in many types
            log.warning("openvino could not convert %s for %dx%d (%s: %s): torch runs it", self.fingerprint,
                        *shape, type(e).__name__, e)  # fmt: skip
            self._compiled[shape] = self.module
            return self.module

    def _compile_or_raise(self, shape: tuple[int, int]) -> Any:
        t0 = time.perf_counter()
        if self.precision == "int8":
            if self.quantized is None:
                raise NotCalibrated("the int8 model is not calibrated: fit the index with --precision int8 "
                                    "(it calibrates on the fit frames), or load the index's quantized model")  # fmt: skip
            import numpy as np
            import openvino as ov

            xml_bytes, weights = self.quantized
            model = self.core.read_model(model=xml_bytes, weights=ov.Tensor(np.frombuffer(weights, np.uint8).copy()))
            how = "int8, from the index's quantized model"
        else:
            model, how = self._fp32_model_how(shape)
        full = model.clone() if self.batch else None
        compiled = self._compiled[shape] = self._compile_at(model, -1, shape)
        if full is not None:
            try:
                self._full[shape] = self._compile_at(full, self.batch, shape)
            except Exception as e:  # noqa: BLE001 - as in _compile; the dynamic-batch model runs the same model
                log.warning("openvino could not compile %s for batches of %d at %dx%d (%s: %s): the dynamic-batch "
                            "model runs them", self.fingerprint, self.batch, *shape, type(e).__name__, e)  # fmt: skip
        log.info("openvino model for %dx%d at %s %s, compiled in %.1fs", *shape, self.precision, how,
                 time.perf_counter() - t0)  # fmt: skip
        return compiled

    def _compile_at(self, model: Any, batch: int, shape: tuple[int, int]) -> Any:
        """``model`` compiled for (batch, 3, H, W) inputs; batch -1: any batch."""
        model.reshape({model.inputs[0].get_any_name(): [batch, 3, *shape]})
        return self.core.compile_model(model, "CPU", self.config)

    def _fp32_model(self, shape: tuple[int, int]) -> Any:
        return self._fp32_model_how(shape)[0]

    def _fp32_model_how(self, shape: tuple[int, int]) -> tuple[Any, str]:
        """The converted (not compiled) f32 model for this shape: from the disk cache, else from torch."""
        xml = self._ir_path(shape)
        if xml.exists():
            self.loaded += 1
            return self.core.read_model(str(xml)), "loaded from " + str(xml.parent)
        model = self._convert(shape)
        self._save(model, xml)
        self.converted += 1
        return model, "converted from torch"

    def _ir_path(self, shape: tuple[int, int]) -> Path:
        key = hashlib.sha256(f"{self.fingerprint}|{shape[0]}x{shape[1]}|{self.version}".encode()).hexdigest()[
            :20
        ]
        return self.cache_dir / "ir" / f"{self.fingerprint}-{shape[0]}x{shape[1]}-{key}" / "model.xml"

    def _convert(self, shape: tuple[int, int]) -> Any:
        """torch.export with a dynamic batch (the last batch is partial), then openvino.convert_model."""
        import openvino as ov
        import torch

        example = torch.zeros(2, 3, *shape)
        batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
        stop_early = getattr(self.module, "stop_early", None)
        if stop_early is not None:  # PatchFeatures: no exception to stop the trunk while exporting
            self.module.stop_early = False
        try:
            with torch.no_grad():
                program = torch.export.export(self.module, (example,), dynamic_shapes=({0: batch},))
            return ov.convert_model(program)
        finally:
            if stop_early is not None:
                self.module.stop_early = stop_early

    @staticmethod
    def _save(model: Any, xml: Path) -> None:
        """Written in a temporary folder, then renamed: workers starting together never read half a model."""
        tmp = None
        try:
            xml.parent.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=xml.parent.parent))
            ov_save(model, tmp / xml.name)
            os.rename(tmp, xml.parent)
        except (OSError, RuntimeError) as e:
            if not xml.exists():  # another process got there first: theirs is as good; else say why
                log.warning("openvino model not cached at %s: %s", xml.parent, e)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)


def ov_save(model: Any, xml: Path) -> None:
    """``model.xml`` and ``model.bin``, weights kept at their precision (no f16 compression)."""
    import openvino as ov

    ov.save_model(model, str(xml), compress_to_fp16=False)
