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
shapes (tiles, whole frames) compiles each once. Converted models are kept on
disk (``cache_dir``, keyed by the spec fingerprint, the shape and the OpenVINO
version) and OpenVINO's own compiled-blob cache sits beside them (its key holds
the precision), so a restarted worker neither exports nor converts again.

Precision: OpenVINO picks bf16 on its own on CPUs that have it, which moves
scores by about 2 %; it is always asked for explicitly here
(``INFERENCE_PRECISION_HINT``): ``fp32`` -> f32, ``bf16`` -> bf16.

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
import time
from pathlib import Path
from typing import Any, Mapping, Optional

from index_store.errors import IndexStoreError

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "openvino")
DEFAULT_RUNTIME = "auto"
OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}
CACHE_VAR = "FRAMEWATCH_CACHE"
MAX_BATCH = (
    4096  # the exported batch dimension's upper bound (torch.export needs one; the worker's is far lower)
)


class RuntimeUnavailable(IndexStoreError):
    """The runtime asked for cannot run here (not installed, or not on this device)."""


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def default_cache_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$FRAMEWATCH_CACHE/openvino``, else ``~/.cache/framewatch/openvino``."""
    root = environ.get(CACHE_VAR) or str(Path.home() / ".cache" / "framewatch")
    return Path(root) / "openvino"


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
                 cache_dir: Optional[Path] = None) -> None:  # fmt: skip
        """``module``: the eval-mode torch module; ``fingerprint``: its spec's (names the weights);
        ``threads``: OpenVINO's inference threads (0: its default, all cores)."""
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
        self.config = {"INFERENCE_PRECISION_HINT": OV_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = threads
        self.version = ov.get_version()
        self._compiled: dict[tuple[int, int], Any] = {}
        self.converted = self.loaded = 0

    def __call__(self, x: Any) -> Any:
        import torch

        shape = (int(x.shape[-2]), int(x.shape[-1]))
        compiled = self._compiled.get(shape) or self._compile(shape)
        if compiled is self.module:  # conversion failed for this shape: torch runs it
            with torch.inference_mode():
                return self.module(x.float())
        if x.dtype != torch.float32:
            x = x.float()
        out = compiled(x.contiguous().numpy(), share_inputs=True)[0]
        return torch.from_numpy(out)

    def warm(self, height: int, width: int) -> None:
        """Compile for one input shape now (a worker does it before it says it is ready)."""
        if (height, width) not in self._compiled:
            self._compile((height, width))

    def _compile(self, shape: tuple[int, int]) -> Any:
        """The compiled model for this shape; the torch module itself if conversion fails (OpenVINO is an
        optimisation, never a reason not to serve)."""
        try:
            return self._compile_or_raise(shape)
        except Exception as e:  # noqa: BLE001 - export and conversion fail in many types
            log.warning("openvino could not convert %s for %dx%d (%s: %s): torch runs it", self.fingerprint,
                        *shape, type(e).__name__, e)  # fmt: skip
            self._compiled[shape] = self.module
            return self.module

    def _compile_or_raise(self, shape: tuple[int, int]) -> Any:
        t0 = time.perf_counter()
        xml = self._ir_path(shape)
        if xml.exists():
            model = self.core.read_model(str(xml))
            self.loaded += 1
            how = "loaded from " + str(xml.parent)
        else:
            model = self._convert(shape)
            self._save(model, xml)
            self.converted += 1
            how = "converted from torch"
        model.reshape({model.inputs[0].get_any_name(): [-1, 3, *shape]})
        compiled = self.core.compile_model(model, "CPU", self.config)
        self._compiled[shape] = compiled
        log.info("openvino model for %dx%d at %s %s, compiled in %.1fs", *shape, self.precision, how,
                 time.perf_counter() - t0)  # fmt: skip
        return compiled

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
        import openvino as ov

        tmp = None
        try:
            xml.parent.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=xml.parent.parent))
            ov.save_model(model, str(tmp / xml.name), compress_to_fp16=False)
            os.rename(tmp, xml.parent)
        except (OSError, RuntimeError) as e:
            if not xml.exists():  # another process got there first: theirs is as good; else say why
                log.warning("openvino model not cached at %s: %s", xml.parent, e)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
