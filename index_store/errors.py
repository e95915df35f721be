"""Errors of the index store (all subclasses of wire's FramewatchError)."""

from __future__ import annotations

from wire.errors import FramewatchError


class IndexStoreError(FramewatchError):
    """Base of index_store errors."""


class WeightsUnavailable(IndexStoreError):
    """Pretrained weights are not on disk and cannot be fetched. The message says how to get them."""


class SpecMismatch(IndexStoreError):
    """An index was built with an embedder this process cannot reproduce (backbone, weights, dimension)."""


class UnknownIndex(IndexStoreError):
    """No index (or no such version) under that name in Redis."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"{name!r} version {version}" if version is not None else repr(name)
        super().__init__(f"no index {what} in Redis (see `framewatch index list`)")
        self.name = name
        self.version = version


class CorruptIndex(IndexStoreError):
    """Stored vectors or metadata fail their integrity checks."""


class PublishFailed(IndexStoreError):
    """Redis refused or lost a publish (out of memory, unreachable): nothing of it became active."""
