"""Reading weight files safely: checksums, state dicts (``weights_only=True``), seeded random init."""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Iterator

import torch

from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.spec import EmbedderSpec


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict safely (no arbitrary unpickling)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SpecMismatch(f"{path} does not hold a state dict")
    return obj


def spec_file(spec: EmbedderSpec) -> Path:
    """The local file of a ``file:PATH`` spec, checked against the sha256 the index was built with."""
    path = Path(spec.weights[len("file:") :])
    if not path.is_file():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    if spec.weights_sha256 and file_sha256(path) != spec.weights_sha256:
        raise SpecMismatch(
            f"weights file {path} differs from the one the index was built with "
            f"(sha256 {spec.weights_sha256[:12]}...)"
        )
    return path


@contextlib.contextmanager
def seeded(spec: EmbedderSpec) -> Iterator[None]:
    """Build a model under a fixed seed for ``random:SEED`` (leaves the global RNG as it was)."""
    if not spec.is_random:
        yield
        return
    _, _, seed = spec.weights.partition(":")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed or 0))
        yield
