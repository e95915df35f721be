"""What a worker serves, at one moment: ``Worker.status()`` returns it.

/healthz and /readyz answer from it, the heartbeat writes it to Redis (``framewatch status`` reads that),
and the bench and the tests wait on it; none of them reads the worker's own fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


@dataclass(frozen=True)
class WorkerStatus:
    """``ready`` with ``detail`` (what /readyz answers: indexes, broker, and every reason it is not ready),
    ``alive`` with ``alive_detail`` (/healthz), the group's assignment, the total lag (None before it is
    known), ``hold`` (why consumption waits, or None), the index versions served (and shadow candidates held),
    and the depth of each queue between the stages."""

    worker_id: str
    alive: bool
    alive_detail: str
    ready: bool
    detail: str
    broker: str  # connected | connecting | unreachable
    group: str
    topic: str
    partitions: tuple[int, ...]
    lag: Optional[int]
    hold: Optional[str]
    scorer_ready: bool
    kafka_client: str = ""  # the Kafka client (kafka-python, confluent, memory), "" before the consumer is made
    indexes: dict[str, int] = field(default_factory=dict)
    candidates: dict[str, Any] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)
    drift: tuple[dict[str, Any], ...] = ()

    @property
    def assigned(self) -> bool:
        """The worker has joined its group and holds partitions."""
        return bool(self.partitions)

    @property
    def serving(self) -> bool:
        """Assigned, with its embedder built, and consuming (not held)."""
        return self.assigned and self.scorer_ready and self.hold is None

    def heartbeat(self) -> dict[str, Any]:
        """The JSON body of the heartbeat (worker/heartbeat.py), as ``framewatch status`` reads it."""
        return {
            "group": self.group, "topic": self.topic, "partitions": list(self.partitions),
            "indexes": dict(self.indexes), "candidates": self.candidates,
            "lag": self.lag, "ready": self.ready, "detail": self.detail, "drift": list(self.drift),
        }  # fmt: skip
