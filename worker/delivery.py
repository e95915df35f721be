"""Delivery: outputs out, acknowledgements in, offsets committed. The last part of the data path.

Every message ends as one output, a score record or a dead letter, sent
through the outbox with its (partition, offset) as token. Every dead letter is
built here: of a message that is not a frame, of a record the client could
not parse, of a frame that could not be decoded or scored, and the smaller
one that replaces an output the broker refuses for good (only the reason and
the frame's coordinates). Acknowledged outputs close their message in the
offset ledger (worker/offsets.py, opened by intake) and are counted;
``commit`` commits what the ledger allows, at most every ``COMMIT_EVERY_S``
from ``pump``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from wire.records import DeadLetter, ScoreRecord
from worker.config import WorkerConfig
from worker.inflight import Outcome
from worker.kafka_port import BrokerError, Consumer, Partition, Record, Unparseable
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outbox import Outbox, Output

log = logging.getLogger(__name__)

Token = tuple[Partition, int]
COMMIT_EVERY_S = 1.0


class Delivery:
    def __init__(
        self, cfg: WorkerConfig, outbox: Outbox, tracker: OffsetTracker, metrics: WorkerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.cfg, self.outbox, self.tracker, self.metrics, self.clock = cfg, outbox, tracker, metrics, clock
        self.last_commit = 0.0

    def pump(self, consumer: Consumer, outcomes: list[Outcome]) -> None:
        """Send ``outcomes``; take in the acknowledgements; commit, at most every COMMIT_EVERY_S."""
        self.send(outcomes)
        self.collect()
        if self.clock() - self.last_commit >= COMMIT_EVERY_S:
            self.commit(consumer)

    # -- sending -------------------------------------------------------------------
    def send(self, outcomes: list[Outcome]) -> None:
        """Each outcome to the outbox: its score record, or its dead letter."""
        for out in outcomes:
            frame = out.frame
            if out.record is None or out.encoded is None:
                self.reject(frame.message, out.reason, out.detail)
                continue
            key, value = out.encoded
            refused = self._refused(letter_for(frame.message, "scoring-error", ""))
            self.outbox.send(Output(self.cfg.topics.scores, key, value, [], token_of(frame.message), "score",
                                    scored_label(out.record), refused))  # fmt: skip
            self._observe(out.record)

    def reject(self, message: Record, reason: str, detail: str) -> None:
        """The dead letter of ``message``: its own key, value and headers, and why."""
        self._dead_letter(letter_for(message, reason, detail), token_of(message))

    def unparseable(self, bad: Unparseable) -> None:
        """The dead letter of a record the client could not parse: where it was, and the client's error."""
        letter = DeadLetter(
            None, None, [], "unparseable-record", bad.error, bad.topic, bad.partition, bad.offset
        )
        self._dead_letter(letter, (bad.where, bad.offset))

    def _dead_letter(self, letter: DeadLetter, token: Token) -> None:
        key, value, headers = letter.encode(max_bytes=output_limit(self.cfg))
        self.outbox.send(Output(self.cfg.topics.dead_letters, key, value, headers, token, "dead-letter",
                                letter.reason, self._refused(letter)))  # fmt: skip
        log.warning("dead letter %s/%d/%d: %s (%.200s)", letter.topic, letter.partition, letter.offset,
                    letter.reason, letter.detail)  # fmt: skip

    def _refused(self, letter: DeadLetter) -> Callable[[str], Output]:
        """The fallback of an output the broker refuses for good: a dead letter with only the coordinates."""

        def fallback(why: str) -> Output:
            stub = DeadLetter(None, None, [], "output-refused", f"{letter.reason}: {why}", letter.topic,
                              letter.partition, letter.offset)  # fmt: skip
            key, value, headers = stub.encode()
            return Output(
                self.cfg.topics.dead_letters, key, value, headers, kind="dead-letter", label=stub.reason
            )

        return fallback

    def _observe(self, rec: ScoreRecord) -> None:
        self.metrics.observe_latency(rec.latency_s)
        if rec.normalized_score is not None:
            self.metrics.score.observe(rec.normalized_score)
        if rec.is_anomaly:
            self.metrics.anomalies.labels(rec.source).inc()

    # -- acknowledgements and commits ------------------------------------------------
    def collect(self) -> None:
        """Take in the acknowledgements that came since the last call."""
        self._acknowledged(self.outbox.collect())

    def drain(self, deadline: float) -> None:
        """Deliver everything pending until ``deadline``."""
        self._acknowledged(self.outbox.drain(deadline))

    def _acknowledged(self, outputs: list[Output]) -> None:
        for out in outputs:
            if out.token is not None:
                self.tracker.closed(*out.token)
            if out.kind == "score":
                self.metrics.scored.labels(out.label).inc()
            else:
                self.metrics.dead_letters.labels(out.label).inc()

    def commit(self, consumer: Optional[Consumer]) -> None:
        """Commit, per partition, the offset below which every output is acknowledged (a failure is retried next time)."""
        self.last_commit = self.clock()
        positions = self.tracker.committable()
        if not positions or consumer is None:
            return
        try:
            with self.metrics.stage_seconds.labels("commit").time():
                consumer.commit(positions)
        except BrokerError as e:
            log.warning(
                "commit failed (%s): retried with the next one; a rebalance may score these frames again", e
            )
            return
        self.tracker.committed(positions)


def token_of(message: Record) -> Token:
    return message.where, message.offset


def letter_for(message: Record, reason: str, detail: str) -> DeadLetter:
    """A dead letter of the original message: its bytes, its key and headers."""
    return DeadLetter(message.key, message.value, list(message.headers), reason, detail, message.topic,
                      message.partition, message.offset)  # fmt: skip


def output_limit(cfg: WorkerConfig) -> int:
    """The largest output message the worker sends (a dead letter over it leaves its payload out)."""
    return cfg.kafka.max_message_bytes


PER_CAMERA_LABEL = "{per-camera}"


def scored_label(rec: ScoreRecord) -> str:
    """The ``index`` label of framewatch_frames_scored: the index's name, except that frames scored by their
    camera's own index (--route 'PATTERN={source}') share one label, so thousands of cameras stay one series."""
    return PER_CAMERA_LABEL if rec.camera_index and not rec.index_fallback else rec.index_name
