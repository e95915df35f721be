"""What ``index fit`` checks before minutes of embedding: a Redis that may evict index keys is refused
(index_store/redis_policy.py says why); and a fit under an existing name with another backbone is
refused unless asked for, and said plainly.

A running worker refuses a version whose embedder differs from the one it holds
(and keeps serving its old version), while a restarted worker loads the new one:
activating it silently would leave one consumer group serving two versions.
"""

from __future__ import annotations

import logging
from typing import Optional

from index_store.errors import UnknownIndex
from index_store.repository import IndexRepository
from index_store.spec import EmbedderSpec
from wire.errors import FramewatchError

log = logging.getLogger("framewatch")


class BackboneChange(FramewatchError):
    """A fit would switch an index's backbone without --new-backbone."""


def check_eviction(repo: IndexRepository) -> None:
    """:raises EvictionUnsafe: Redis's maxmemory-policy could evict index keys (``allkeys-*``)."""
    repo.require_safe_policy()


def fit_precision(repo: IndexRepository, name: str, asked: Optional[str], runtime: Optional[str],
                  device: str) -> str:  # fmt: skip
    """The precision of a fit: ``asked``, else the active version's (a refit keeps the model workers hold), else
    the default for a new index (openvino_runtime.default_precision: bf16 on CPUs with it, else fp32)."""
    if asked:
        return asked
    try:
        return repo.meta(name).embedder_spec.precision
    except UnknownIndex:
        pass
    from index_store import openvino_runtime
    from index_store.embedder import pick_device

    return openvino_runtime.default_precision(runtime or openvino_runtime.DEFAULT_RUNTIME, pick_device(device).type)


def check_backbone(repo: IndexRepository, name: str, spec: EmbedderSpec, allow: bool) -> Optional[str]:
    """None when the index is new or keeps its embedder; the warning given when ``allow``; else raises."""
    try:
        current = repo.meta(name)
    except UnknownIndex:
        return None
    if current.embedder_spec.fingerprint() == spec.fingerprint():
        return None
    old = current.embedder_spec
    what = (f"index {name!r} is active at version {current.version} with {old.label()}, {old.geometry_label()} "
            f"(dim {current.dim}); this fit uses {spec.label()}, {spec.geometry_label()} (dim {spec.dim})")  # fmt: skip
    workers = (f"running workers serving {name!r} will refuse the new version (logged, counted in "
               f"framewatch_index_reloads_total) and keep scoring with version {current.version}; a worker "
               "started or restarted later loads the new one")  # fmt: skip
    if not allow:
        raise BackboneChange(f"{what}. {workers}, so one group would serve two versions. Fit under a new name, or "
                             "pass --new-backbone and restart every worker of that index together.")  # fmt: skip
    warning = f"{what}: {workers}. Restart every worker serving {name!r} together now."
    log.warning("%s", warning)
    return warning
