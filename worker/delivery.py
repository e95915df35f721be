"""Outputs out, acknowledgements in, offsets committed: what the loop hands over once a frame has an outcome.

Every frame ends as one output, a score record or a dead letter, sent through
the outbox with its (partition, offset) as token. Acknowledged outputs close
their frame in the offset tracker and are counted; ``commit`` commits what the
tracker allows. An output the broker refuses for good is replaced by a dead
letter that keeps only the reason and the frame's coordinates.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

from kafka import TopicPartition
from kafka.errors import CommitFailedError, KafkaError

from wire.records import DeadLetter, ScoreRecord
from worker import kafka_io
from worker.config import WorkerConfig
from worker.metrics import WorkerMetrics
from worker.offsets import OffsetTracker
from worker.outbox import Outbox, Output
from worker.scoring import PendingFrame
from worker.stages import Outcome

log = logging.getLogger(__name__)

Token = tuple[TopicPartition, int]


class Delivery:
    def __init__(
        self, cfg: WorkerConfig, outbox: Outbox, tracker: OffsetTracker, metrics: WorkerMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.cfg, self.outbox, self.tracker, self.metrics, self.clock = cfg, outbox, tracker, metrics, clock
        self.last_commit = 0.0

    # -- sending -------------------------------------------------------------------
    def send_outcomes(self, outcomes: list[Outcome]) -> None:
        """Each outcome to the outbox: its score record, or its dead letter."""
        for out in outcomes:
            frame = out.frame
            if out.record is None or out.encoded is None:
                self.dead_letter(letter_for(frame, out.reason, out.detail), token_of(frame))
                continue
            key, value = out.encoded
            refused = self._refused(letter_for(frame, "scoring-error", ""))
            self.outbox.send(Output(self.cfg.topics.scores, key, value, [], token_of(frame), "score",
                                    scored_label(out.record), refused))  # fmt: skip
            self._observe(out.record)

    def dead_letter(self, letter: DeadLetter, token: Token) -> None:
        key, value, headers = letter.encode(max_bytes=kafka_io.output_limit(self.cfg))
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
            return Output(self.cfg.topics.dead_letters, key, value, headers, kind="dead-letter", label=stub.reason)

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

    def commit(self, consumer: Any) -> None:
        """Commit, per partition, the offset below which every output is acknowledged (a failure is retried next time)."""
        self.last_commit = self.clock()
        positions = self.tracker.committable()
        if not positions or consumer is None:
            return
        try:
            with self.metrics.stage_seconds.labels("commit").time():
                kafka_io.commit(consumer, positions)
        except (CommitFailedError, KafkaError) as e:
            log.warning("commit failed (%s): retried with the next one; a rebalance may score these frames again", e)
            return
        self.tracker.committed(positions)


def token_of(frame: PendingFrame) -> Token:
    return TopicPartition(frame.topic, frame.partition), frame.offset


def letter_for(frame: PendingFrame, reason: str, detail: str) -> DeadLetter:
    """A dead letter of the original message: its bytes, its key and headers."""
    key, value, headers = frame.record.encode()
    key, headers = (frame.key, frame.headers) if frame.headers else (key, headers)
    return DeadLetter(key, value, headers, reason, detail, frame.topic, frame.partition, frame.offset)


PER_CAMERA_LABEL = "{per-camera}"


def scored_label(rec: ScoreRecord) -> str:
    """The ``index`` label of framewatch_frames_scored: the index's name, except that frames scored by their
    camera's own index (--route 'PATTERN={source}') share one label, so thousands of cameras stay one series."""
    return PER_CAMERA_LABEL if rec.camera_index and not rec.index_fallback else rec.index_name
