"""The output box: every score record and dead letter stays here until the broker acknowledges it.

Sending never waits for an acknowledgement: ``collect()`` returns the outputs
acknowledged since the last call (the loop then closes their offsets), sends
failed ones again after a backoff, and replaces an output the broker refuses
for good (too large, invalid) by its smaller fallback, a dead letter that
keeps only the reason and the frame's coordinates. So nothing input alone can
cause blocks delivery, and nothing is dropped: an output leaves the box only
acknowledged. While the broker is unreachable nothing new is handed to the
producer (whose ``send`` would block); ``failing()`` says so, and the loop
holds consumption. A producer that stays broken (an idempotent producer whose
broker lost its state) is replaced.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Hashable, Optional

from worker.kafka_port import BrokerError, Producer, SendRefused, Sent

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]


@dataclass
class Output:
    """One message to deliver, and what it stands for."""

    topic: str
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Headers = field(default_factory=list)
    token: Optional[tuple[Hashable, int]] = None  # (partition, offset) of the frame it is the output of
    kind: str = "score"  # score | dead-letter, for the caller's metrics
    label: str = ""  # the score's index name, or the dead letter's reason
    fallback: Optional[Callable[[str], "Output"]] = None  # a smaller output, given why this one was refused
    future: Optional[Sent] = None  # the producer's acknowledgement while in flight
    failed_at: float = 0.0  # when it last failed (0 = not failed)


class Outbox:
    def __init__(
        self,
        make_producer: Callable[[], Producer],
        clock: Callable[[], float] = time.monotonic,
        retry_s: float = 1.0,
        renew_after_s: float = 15.0,
    ) -> None:
        self._make_producer = make_producer
        self.producer: Optional[Producer] = None
        self.clock = clock
        self.retry_s = retry_s
        self.renew_after_s = renew_after_s
        self._box: list[Output] = []
        self._failing_since: Optional[float] = None
        self._last_error = ""
        self.replaced = 0  # outputs swapped for their fallback

    def pending(self) -> int:
        return len(self._box)

    def failing(self) -> Optional[str]:
        """Why outputs are not being acknowledged, while that is so."""
        if self._failing_since is None:
            return None
        return f"outputs not acknowledged for {self.clock() - self._failing_since:.0f}s: {self._last_error}"

    def send(self, out: Output) -> None:
        self._box.append(out)
        if self._failing_since is None:
            self._hand_over(out)

    def _hand_over(self, out: Output) -> None:
        try:
            if self.producer is None:
                self.producer = self._make_producer()
            out.future = self.producer.send(out.topic, out.key, out.value, out.headers)
            out.failed_at = 0.0
        except Exception as e:  # noqa: BLE001 - e.g. no metadata while the broker is down, or a refusal
            self._failed(out, e)

    def collect(self) -> list[Output]:
        """Outputs acknowledged since the last call. Failed ones are sent again, or replaced by their fallback.

        While outputs fail, one of them at a time is sent again every ``retry_s``
        (a probe); once one is acknowledged, everything waiting is sent.
        """
        done: list[Output] = []
        left: list[Output] = []
        for out in self._box:
            future = out.future
            if future is not None and future.done():
                error = future.error()
                if error is None:
                    done.append(out)
                    continue
                self._failed(out, error)
            left.append(out)
        self._box = left
        if done and self._failing_since is not None:
            log.info("outputs acknowledged again")
            self._failing_since = None
        waiting = [o for o in self._box if o.future is None]
        if self._failing_since is None:
            for out in waiting:
                self._hand_over(out)
        elif waiting and not any(o.future is not None for o in self._box):
            self._maybe_renew()
            probe = waiting[0]
            if self.clock() - probe.failed_at >= self.retry_s:
                self._hand_over(probe)
        return done

    def _failed(self, out: Output, error: BaseException) -> None:
        out.future = None
        if _refused_for_good(error) and out.fallback is not None:
            smaller = out.fallback(f"{type(error).__name__}: {error}")
            log.error("output to %s refused (%s): sending its fallback instead", out.topic, error)
            self.replaced += 1
            out.topic, out.key, out.value, out.headers = (
                smaller.topic,
                smaller.key,
                smaller.value,
                smaller.headers,
            )
            out.kind, out.label, out.fallback = smaller.kind, smaller.label, None
            return  # handed over by collect() (or the next probe)
        out.failed_at = self.clock()
        self._last_error = f"{type(error).__name__}: {error}"
        if self._failing_since is None:
            self._failing_since = out.failed_at
            log.warning("output to %s failed (%s); holding and retrying", out.topic, self._last_error)

    def _maybe_renew(self) -> None:
        """A producer failing for ``renew_after_s`` is replaced (idempotence state lost on a broker restart)."""
        assert self._failing_since is not None
        if self.producer is None or self.clock() - self._failing_since < self.renew_after_s:
            return
        old, self.producer = self.producer, None
        try:
            old.close(0.0)
        except Exception as e:  # noqa: BLE001 - the old one is broken anyway
            log.debug("closing the old producer: %s", e)
        self._failing_since = self.clock()
        log.warning("outputs still failing (%s): renewing the producer", self._last_error)

    def flush(self, timeout_s: float) -> None:
        """Push what the producer holds now (bounded); ``collect()`` then sees the acknowledgements."""
        if self.producer is None:
            return
        try:
            self.producer.flush(max(0.0, timeout_s))
        except BrokerError as e:
            log.debug("flush: %s", e)

    def drain(self, deadline: float, stop_early: Callable[[], bool] = lambda: False) -> list[Output]:
        """Deliver everything in the box until ``deadline``; returns what was acknowledged."""
        done: list[Output] = []
        while self._box and self.clock() < deadline and not stop_early():
            self.flush(min(1.0, deadline - self.clock()))
            done += self.collect()
            if self._box and self._failing_since is not None:
                time.sleep(min(0.2, max(0.0, deadline - self.clock())))
        return done

    def close(self) -> None:
        if self.producer is not None:
            try:
                self.producer.close(5.0)
            except Exception as e:  # noqa: BLE001 - a broker gone at shutdown must not change the exit code
                log.warning("closing the kafka producer: %s", e)


def _refused_for_good(error: BaseException) -> bool:
    """Errors input can cause and no retry can cure: the record is too large or invalid."""
    return isinstance(error, (SendRefused, ValueError, TypeError))
