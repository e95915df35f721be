"""Which anomalous score records become alerts: de-dup by frame id, N of the last M, per-source cooldown.

Pure: records and a clock in, decisions out. Every record of the topic should be
offered (normal ones too), so the N-of-M window sees the whole stream of a source.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Callable

from alerting.config import NoiseConfig
from wire.records import ScoreRecord

# Decision outcomes (also the metric label values).
ALERT, DUPLICATE, NORMAL, DEBOUNCED, COOLDOWN = "alert", "duplicate", "normal", "debounced", "cooldown"
OUTCOMES = (ALERT, DUPLICATE, NORMAL, DEBOUNCED, COOLDOWN)


@dataclass(frozen=True)
class Decision:
    outcome: str
    suppressed: int = 0  # anomalies of this source held back by the cooldown since its last alert


class NoiseFilter:
    def __init__(self, cfg: NoiseConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._recent: dict[str, deque[bool]] = {}
        self._last_alert: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def decide(self, record: ScoreRecord) -> Decision:
        if self._duplicate(record.frame_id):
            return Decision(DUPLICATE)
        recent = self._recent.setdefault(record.source, deque(maxlen=self.cfg.window))
        recent.append(record.is_anomaly)
        if not record.is_anomaly:
            return Decision(NORMAL)
        if sum(recent) < self.cfg.need:
            return Decision(DEBOUNCED)
        now = self.clock()
        last = self._last_alert.get(record.source)
        if last is not None and now - last < self.cfg.cooldown_s:
            self._suppressed[record.source] = self._suppressed.get(record.source, 0) + 1
            return Decision(COOLDOWN)
        self._last_alert[record.source] = now
        return Decision(ALERT, self._suppressed.pop(record.source, 0))

    def _duplicate(self, frame_id: str) -> bool:
        if frame_id in self._seen:
            self._seen.move_to_end(frame_id)
            return True
        self._seen[frame_id] = None
        if len(self._seen) > self.cfg.dedup_size:
            self._seen.popitem(last=False)
        return False
