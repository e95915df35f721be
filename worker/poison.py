"""Records the Kafka client cannot parse: get past them, never re-read them forever.

kafka-python (3.0.x) has two failure modes on a record it cannot parse:

- A header key that is not UTF-8 raises inside its record parser; the fetch it
  came in is left half-read, and every later ``poll()`` spins on it without
  returning (about 90% CPU, nothing consumed, SIGTERM never acted on).
  ``install_lenient_header_keys()`` makes the parser keep such a key as text
  marked with U+FFFD (the bytes written as ``\\xNN`` escapes), so the record
  arrives whole; ``wire.records`` turns it into a ``malformed-header`` dead
  letter that keeps the original value and headers.
- Any other unparseable record (a corrupt batch, an invalid record structure)
  raises from ``poll()`` once. ``skip_unparseable()`` finds the partition and
  offset the client stopped at and seeks one past it, so the next poll goes on;
  the caller dead-letters what can be recovered (topic, partition, offset).

The hook is installed once, at import of the worker, and only touches the
record parser's error path: records that parse are untouched.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from kafka import TopicPartition

log = logging.getLogger(__name__)

NOT_UTF8_MARK = "\ufffd"


class _LenientBytes(bytes):
    """A header-key slice whose ``decode`` never raises: bad bytes become ``\\xNN`` after a U+FFFD mark."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # type: ignore[override]
        try:
            return bytes.decode(self, encoding, errors)
        except UnicodeDecodeError:
            return NOT_UTF8_MARK + bytes.decode(self, encoding, "backslashreplace")


class _LenientBuffer(bytes):
    """The record buffer, re-read once with slices that decode leniently."""

    def __getitem__(self, item: Any) -> Any:
        got = bytes.__getitem__(self, item)
        return _LenientBytes(got) if isinstance(item, slice) else got


_installed = False


def install_lenient_header_keys() -> None:
    """Patch kafka-python's v2 record parser so a non-UTF-8 header key cannot wedge the fetcher (idempotent)."""
    global _installed
    if _installed:
        return
    from kafka.record.default_records import DefaultRecordBatch

    strict = DefaultRecordBatch._read_msg

    def read_msg(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return strict(self, *args, **kwargs)
        except UnicodeDecodeError:  # only a header key is decoded as text; _pos is unchanged on error
            saved = self._buffer
            self._buffer = _LenientBuffer(saved)
            try:
                return strict(self, *args, **kwargs)
            finally:
                self._buffer = saved

    DefaultRecordBatch._read_msg = read_msg
    _installed = True


@dataclass(frozen=True)
class Unparseable:
    """A record the client could not parse, and how far the consumer was moved past it."""

    topic: str
    partition: int
    offset: int
    error: str


def skip_unparseable(consumer: Any, error: BaseException) -> Optional[Unparseable]:
    """After ``poll()`` raised ``error``: seek past the record it stopped at. None if no record is to blame.

    Reads the fetcher's record cursor (kafka-python has no public API for this);
    the offset skipped is the later of the cursor and the consumer's position.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    if part is None:
        return None
    tp: TopicPartition = part.topic_partition
    try:
        offset = max(int(part.next_fetch_offset), int(consumer.position(tp)))
        consumer.seek(tp, offset + 1)
    except Exception as e:  # noqa: BLE001 - e.g. the partition was revoked meanwhile
        log.warning("could not seek past an unparseable record on %s/%d: %s", tp.topic, tp.partition, e)
        return None
    part.drain()
    fetcher._next_partition_records = None
    log.error("record %s/%d/%d cannot be parsed (%s): skipped", tp.topic, tp.partition, offset, error)
    return Unparseable(tp.topic, tp.partition, offset, f"{type(error).__name__}: {error}")
