"""The one-class protocol with MSC fine-tuning per normal class (``framewatch eval --finetune msc``).

For each normal class in turn: fine-tune the backbone on that class's training
images (index_store/finetune.py), embed its training images and the whole test
set with the adapted backbone, and score as the plain protocol does. Features
are cached per class under a key made of the base spec, the fine-tuning recipe
and the class's training images, so a rerun with other --clusters/--k loads
them without training again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

from evaluation import evaluate
from evaluation.datasets import ImageSet
from evaluation.features import CachedFeatures, FeatureCache, embed_dataset
from index_store.finetune import FinetuneConfig, finetune
from index_store.spec import EmbedderSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunedFeatureSpec:
    """The cache's name for 'features of ``base`` after fine-tuning with ``recipe`` on ``trained_on``'."""

    base: EmbedderSpec
    recipe: dict[str, Any]
    trained_on: str  # identity of the normal class's training images

    @property
    def dim(self) -> int:
        return self.base.dim

    def fingerprint(self) -> str:
        blob = json.dumps([self.base.fingerprint(), self.recipe, self.trained_on], sort_keys=True).encode()
        return "msc-" + hashlib.sha256(blob).hexdigest()[:16]

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base.to_dict(), "finetune": self.recipe, "trained_on": self.trained_on}


@dataclass
class TuningLog:
    """Per class: training seconds, loss per epoch, and the adapted weights' sha256 (empty when cached)."""

    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)

    def total_seconds(self) -> float:
        return float(sum(c.get("seconds", 0.0) for c in self.per_class.values()))


def one_class_finetuned(
    spec: EmbedderSpec,
    cfg: FinetuneConfig,
    train: ImageSet,
    test: ImageSet,
    methods: Sequence[evaluate.Method],
    classes: Optional[Sequence[int]],
    cache: FeatureCache,
    embed_batch: int,
    seed: int = 0,
    progress: bool = True,
) -> tuple[evaluate.FeatureResult, TuningLog]:
    """The one-class protocol, fine-tuning once per normal class."""
    chosen = list(classes) if classes is not None else sorted(set(train.labels.tolist()))
    results: list[evaluate.ClassResult] = []
    tuning = TuningLog()
    for c in chosen:
        normal = train.only_classes([c])
        (tr, te), info = tuned_features(spec, cfg, normal, [normal, test], cache, embed_batch, progress)
        res = evaluate.one_class(tr.features, normal.labels, te.features, test.labels, train.class_names,
                                 methods, [c], spec.label() + "/msc", seed)  # fmt: skip
        results.extend(res.classes)
        tuning.per_class[train.class_names[c]] = info
    return evaluate.FeatureResult(spec.label() + "/msc", [m.name for m in methods], results), tuning


def tuned_features(
    spec: EmbedderSpec,
    cfg: FinetuneConfig,
    normal: ImageSet,
    image_sets: Sequence[ImageSet],
    cache: FeatureCache,
    embed_batch: int,
    progress: bool = True,
) -> tuple[list[CachedFeatures], dict[str, Any]]:
    """Features of ``image_sets`` after fine-tuning on ``normal`` (cached; trains only on a cache miss)."""
    recipe = {k: v for k, v in cfg.to_dict().items() if k != "device"}
    key = TunedFeatureSpec(spec, recipe, normal.identity)
    tuned = _LazyTuned(spec, cfg, normal, embed_batch, progress)
    out = [
        cache.get_or_compute(key, images, _embed(tuned.embedder, images, progress)) for images in image_sets
    ]
    return out, {**tuned.info, "from_cache": all(f.from_cache for f in out)}


class _LazyTuned:
    """Fine-tunes on first use only: not at all when the class's features are cached."""

    def __init__(self, spec: EmbedderSpec, cfg: FinetuneConfig, normal: ImageSet, batch: int, progress: bool):
        self.spec, self.cfg, self.normal, self.batch, self.progress = spec, cfg, normal, batch, progress
        self.info: dict[str, Any] = {"seconds": 0.0}
        self._embedder: Optional[Any] = None

    def embedder(self) -> Any:
        if self._embedder is None:
            log.info("fine-tuning on %s (%d images)", self.normal.name, len(self.normal))
            result = finetune(self.spec, self.normal.load, len(self.normal), self.cfg, self.progress)
            self.info.update(seconds=round(result.seconds, 1), losses=[round(x, 5) for x in result.losses],
                             adapted_sha256=result.spec.adapted_sha256)  # fmt: skip
            self._embedder = result.embedder(self.cfg.device, self.batch)
        return self._embedder


def _embed(make_embedder: Callable[[], Any], images: ImageSet, progress: bool) -> Callable[[], Any]:
    return lambda: embed_dataset(make_embedder(), iter(images), len(images), None, images.name, progress)
