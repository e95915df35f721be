"""The embedder: PIL images -> (N, D) float32 features, as named by an EmbedderSpec.

Preprocessing follows the spec's geometry (index_store/geometry.py: the
whole frame at the index's input shape, its tiles, or DN2's center crop),
then the backbone's normalisation; the feature is the global-pool output
(global kind) or a grid of patch features (patch kind). With tiles, a frame
is several model inputs: global features come back as a (rows, cols) grid of
tile vectors, patch grids are laid side by side, tile row by tile row. Fitting,
evaluation and the worker all embed through this class, so a frame gets the
same features wherever it is embedded.
On CUDA it runs in half precision (fp16, or bf16 where supported) and
channels-last, with torch. On CPU at the spec's precision (fp32 unless the
index was fit at bf16 or int8), with OpenVINO when it is installed (``runtime="auto"``;
index_store/openvino_runtime.py), else with torch, eagerly. int8 runs on OpenVINO
only: an int8 embedder is calibrated on normal frames first (``calibrate``, at
fit time) or given the index's quantized model (``quantized``, a worker).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from index_store import adapted as adapted_weights
from index_store import openvino_runtime
from index_store.backbones import build_backbone
from index_store.errors import SpecMismatch
from index_store.preprocess import full_size, to_tensors
from index_store.spec import EmbedderSpec

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; otherwise any torch device string."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Embedder:
    """Embeds images in batches of at most ``batch_size``.

    >>> emb = Embedder(EmbedderSpec("resnet18", "random:0"))  # doctest: +SKIP
    >>> emb.embed([Image.new("RGB", (320, 240))]).shape       # doctest: +SKIP
    (1, 512)
    """

    def __init__(
        self,
        spec: EmbedderSpec,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        adapted: Optional[bytes] = None,
        runtime: str = openvino_runtime.DEFAULT_RUNTIME,
        cache_dir: Optional[Path] = None,
        quantized: Optional[bytes] = None,
        streams: int = 1,
    ) -> None:
        """``adapted``: the safetensors blob of a fine-tuned spec, checked against ``spec.adapted_sha256``.
        ``precision``: ``auto`` = the spec's on CPU, half on CUDA; a CPU precision other than the spec's
        is refused (SpecMismatch: scores move, docs/benchmarks.md). ``runtime``: auto, torch or openvino
        (openvino_runtime.choose); ``cache_dir``: where OpenVINO keeps converted models. ``quantized``: an int8
        spec's quantized model (the blob its index version holds), checked against ``spec.quantized_sha256``.
        ``streams``: OpenVINO inference streams a batch is split over (openvino_runtime.OpenVinoModel)."""
        self.spec = spec
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.precision = self._pick_precision(precision)
        self.runtime = openvino_runtime.choose(runtime, self.device.type)
        ir = self._quantized_ir(quantized)
        self.dtype = torch.float32 if self.runtime == "openvino" else self._pick_dtype(self.precision)
        state = adapted_weights.decode(adapted, spec.adapted_sha256) if adapted is not None else None
        model = build_backbone(spec, state)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device, dtype=self.dtype)
        self.forward: Callable[[torch.Tensor], Any] = self.model
        if self.runtime == "openvino":
            # converted models are cached under the f32 spec's fingerprint: every precision converts the same module
            f32 = replace(spec, precision="fp32", quantized_sha256="").fingerprint()
            self.forward = openvino_runtime.OpenVinoModel(
                self.model, f32, self.precision, torch.get_num_threads(), cache_dir, ir, streams, batch_size
            )

    def _quantized_ir(self, quantized: Optional[bytes]) -> Optional[tuple[bytes, bytes]]:
        """The int8 model's IR from its blob (None: not int8 on CPU, or not calibrated yet).

        :raises RuntimeUnavailable: int8 asked of torch. :raises SpecMismatch: a blob for a spec that is not
        int8, or none for one that names it. :raises CorruptIndex: the blob fails its sha256."""
        if self.precision != "int8":  # CUDA serves an int8 index in half precision, as it does any other
            if quantized is not None and not self.spec.quantized_sha256:
                raise SpecMismatch(f"{self.spec.label()} is not int8, yet a quantized model was given")
            return None
        if self.runtime != "openvino":
            raise openvino_runtime.RuntimeUnavailable(
                "the int8 precision runs on the openvino runtime only: pip install 'framewatch[openvino]'"
            )
        if quantized is None:
            if self.spec.quantized_sha256:
                raise SpecMismatch(f"{self.spec.label()} is int8: its quantized model (stored with the index "
                                   "version) is needed to embed as it was fit")  # fmt: skip
            return None  # calibrate() first
        return openvino_runtime.decode_quantized(quantized, self.spec.quantized_sha256)

    def calibrate(self, images: Sequence[Image.Image]) -> bytes:
        """int8: quantize the model on these normal frames (evenly spaced, at most
        ``openvino_runtime.CALIBRATION_FRAMES``) and return the quantized model's blob, which the index
        version keeps; ``self.spec`` then names it (``quantized_sha256``). The frames are the fit's."""
        if self.precision != "int8" or self.runtime != "openvino":
            raise SpecMismatch(f"only an int8 embedder on openvino is calibrated, not {self.runtime}/{self.precision}")
        if not images:
            raise SpecMismatch("int8 calibration needs at least one normal frame")
        n = min(len(images), openvino_runtime.CALIBRATION_FRAMES)
        picked = [images[int(i)] for i in np.linspace(0, len(images) - 1, n).round().astype(int)]
        batch = torch.cat([self.preprocess(im) for im in picked])
        blob = self.forward.quantize(batch)
        self.spec = replace(self.spec, quantized_sha256=hashlib.sha256(blob).hexdigest())
        return blob

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def input_shape(self) -> tuple[int, int]:
        """(H, W) of the preprocessed images this embedder is fed (one geometry: index_store/geometry.py)."""
        return self.spec.model_shape

    def _pick_precision(self, precision: str) -> str:
        if precision not in ("auto", "fp32", "fp16", "bf16", "int8"):
            raise SpecMismatch(f"precision {precision!r} is not offered (auto, fp32, fp16, bf16, int8)")
        if precision == "auto":
            return self.spec.precision if self.device.type == "cpu" else "auto"
        if self.device.type == "cpu" and precision != self.spec.precision:
            # an fp32 index scored at bf16: scores moved by a median 10 % (max 58 %), 4 of 80 demo-scene frames
            # changed side of the threshold (benchmarks/precision_scores.py); refit at the precision instead
            raise SpecMismatch(f"{self.spec.label()} was fit at {self.spec.precision}: it is not served at "
                               f"{precision} (scores move by ~10 %); refit it with --precision {precision}")  # fmt: skip
        return precision

    def _pick_dtype(self, precision: str) -> torch.dtype:
        if precision == "auto":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def warm(self) -> None:
        """Run one batch of the input shape, so the first frames do not wait for compilation."""
        self.embed_tensor(torch.zeros(2 * self.spec.n_tiles, 3, *self.input_shape))

    def _empty(self) -> np.ndarray:
        return np.zeros((0, 0, 0, self.dim) if self.spec.is_grid else (0, self.dim), dtype=np.float32)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> (T, 3, h, w) normalised float32 model inputs (index_store.preprocess, shared).

        A full-view spec whose input shape is not fixed yet takes it from this first image."""
        if self.spec.is_full and not self.spec.input_shape:
            self.spec = self.spec.resolved(*full_size(image))
        return to_tensors(image, self.spec)

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """(N*T, 3, h, w) model inputs of N frames -> per frame: (N, D) global, (N, rows, cols, D) global
        tiles, (N, gh, gw, D) patch grids (tiles laid side by side: (N, rows*gh, cols*gw, D))."""
        feats = self._embed_images(batch)
        rows, cols = self.spec.tiles
        if rows * cols == 1:
            return feats
        n = feats.shape[0] // (rows * cols)
        if feats.ndim == 2:
            return feats.reshape(n, rows, cols, feats.shape[-1])
        gh, gw, d = feats.shape[1:]
        grid = feats.reshape(n, rows, cols, gh, gw, d).transpose(0, 1, 3, 2, 4, 5)
        return np.ascontiguousarray(grid.reshape(n, rows * gh, cols * gw, d))

    @torch.inference_mode()
    def _embed_images(self, batch: torch.Tensor) -> np.ndarray:
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            x = batch[start : start + self.batch_size]
            if self.device.type == "cuda":  # pinned host memory, copied while the last batch still runs
                x = x if x.is_cuda else x.pin_memory()
                x = x.to(self.device, dtype=self.dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
            else:
                x = x.to(self.device, dtype=self.dtype)
            feats = self.forward(x).float().cpu()
            out.append(feats.permute(0, 2, 3, 1) if self.spec.is_grid else feats)
        if not out:
            return self._empty()
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images of any size -> (N, D) float32 array; patch kind (N, h, w, D)."""
        if not images:
            return self._empty()
        return self.embed_tensor(torch.cat([self.preprocess(im) for im in images]))


def set_cpu_threads(n: Optional[int]) -> None:
    """Limit torch's intra-op threads (None leaves torch's default)."""
    if n:
        torch.set_num_threads(n)
