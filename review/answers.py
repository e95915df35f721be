"""Reviewers' answers in Redis, under the index's name: ``{prefix}:index:{name}:review`` (hash frame id -> JSON),
and answers for whole incidents in ``{prefix}:index:{name}:review:incidents`` (hash incident id -> JSON)."""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from index_store.repository import IndexRepository

LABELS = ("normal", "confirmed")


class Answers:
    def __init__(self, repo: IndexRepository, clock: Callable[[], float] = time.time) -> None:
        self.repo, self.keys, self.clock = repo, repo.keys, clock

    def put(self, index: str, frame_id: str, label: str, by: str, **extra: Any) -> dict[str, Any]:
        return self._put(self.keys.review(index), frame_id, label, by, extra)

    def put_incident(self, index: str, incident_id: str, label: str, by: str, **extra: Any) -> dict[str, Any]:
        return self._put(self.keys.review_incidents(index), incident_id, label, by, extra)

    def _put(self, key: str, field: str, label: str, by: str, extra: dict[str, Any]) -> dict[str, Any]:
        if label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}")
        answer = {"label": label, "by": by, "at": self.clock(), **extra}
        self.repo.put_answer(key, field, json.dumps(answer, sort_keys=True))
        return answer

    def all(self, index: str) -> dict[str, dict[str, Any]]:
        """Frame id -> answer."""
        return self._all(self.keys.review(index))

    def incidents(self, index: str) -> dict[str, dict[str, Any]]:
        """Incident id -> answer."""
        return self._all(self.keys.review_incidents(index))

    def _all(self, key: str) -> dict[str, dict[str, Any]]:
        out = {}
        for fid, raw in self.repo.answers(key).items():
            try:
                out[fid.decode()] = json.loads(raw)
            except ValueError:
                continue
        return out
