"""confluent-kafka (librdkafka) behind the producer interface the outbox uses from kafka-python.

With ``--kafka-client confluent`` the worker sends its score records and dead
letters through librdkafka too (``framewatch produce`` keeps kafka-python).
``worker.outbox.Outbox`` calls ``send(topic, key=, value=, headers=)`` and
reads the returned future's ``is_done``, ``succeeded()`` and ``exception``,
then ``flush(timeout=)`` and ``close(timeout=)``; this adapter offers exactly
that, with kafka-python's exception types, so the outbox's rules (retry while
the broker is away, replace an output refused for good by its fallback)
apply unchanged.

What differs underneath, and how it is bridged:

- librdkafka reports deliveries through callbacks served by ``poll()``. A
  thread of the adapter's own polls, as kafka-python's sender thread
  resolves its futures: a future completes without the outbox asking.
- ``produce()`` never blocks: with the broker away a record waits in
  librdkafka's queue until ``message.timeout.ms`` and then fails, and the
  outbox retries it (kafka-python's ``send`` blocks up to ``max_block_ms``
  instead). A full local queue (``BufferError``) is a timeout: retried.
- A record over the size limit is refused at once, as kafka-python does, with
  ``MessageSizeTooLargeError``: the outbox sends its fallback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

import kafka.errors as kerr

from worker.kafka_confluent import client_config_of, kafka_error, require

log = logging.getLogger(__name__)

POLL_S = 0.05  # how long the delivery thread waits in poll(): the longest a delivery report waits to be read


class DeliveryFuture:
    """What ``send`` returns, as kafka-python's future is read: ``is_done``, ``succeeded()``, ``exception``."""

    __slots__ = ("is_done", "exception")

    def __init__(self) -> None:
        self.is_done = False
        self.exception: Optional[BaseException] = None

    def succeeded(self) -> bool:
        return self.is_done and self.exception is None

    def _report(self, error: Any, topic: str) -> None:  # librdkafka's delivery callback
        if error is not None:
            self.exception = kafka_error(error, f"delivery to {topic}")
        self.is_done = True  # after the exception: a reader that sees done sees the outcome


def config_of(cfg: Any, max_request_bytes: int) -> dict[str, Any]:
    """librdkafka properties equivalent to ``kafka_io.make_producer``'s kafka-python settings."""
    return {
        **client_config_of(cfg.kafka),
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": max_request_bytes,
        "request.timeout.ms": 10000,
        "message.timeout.ms": 30000,  # kafka-python's delivery_timeout_ms
    }


class ConfluentProducer:
    def __init__(self, cfg: Any, max_request_bytes: int, make: Optional[Callable[[dict], Any]] = None) -> None:
        """:raises FramewatchError: confluent-kafka is not installed.
        :raises KafkaError: the client refused the configuration."""
        ck = require()
        self._ck = ck
        try:
            self._p = (make or ck.Producer)(config_of(cfg, max_request_bytes))
        except ck.KafkaException as e:
            raise kafka_error(e.args[0], "creating the producer") from e
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="confluent-deliveries", daemon=True)
        self._thread.start()

    def send(self, topic: str, key: Optional[bytes] = None, value: Optional[bytes] = None,
             headers: Optional[list[tuple[str, bytes]]] = None) -> DeliveryFuture:  # fmt: skip
        """Queue one record; the future completes when the broker acknowledges it or it fails.

        :raises KafkaError: refused at once (too large: ``MessageSizeTooLargeError``; local queue full:
            ``KafkaTimeoutError``).
        """
        future = DeliveryFuture()
        try:
            self._p.produce(topic, value=value, key=key, headers=headers or None,
                            on_delivery=lambda error, _msg: future._report(error, topic))  # fmt: skip
        except BufferError as e:
            raise kerr.KafkaTimeoutError(f"send to {topic}: librdkafka's local queue is full ({e})") from e
        except self._ck.KafkaException as e:
            raise kafka_error(e.args[0], f"send to {topic}") from e
        return future

    def flush(self, timeout: Optional[float] = None) -> None:
        """Send what is queued and wait for the reports, at most ``timeout`` seconds."""
        self._p.flush(-1 if timeout is None else max(0.0, timeout))

    def close(self, timeout: Optional[float] = None) -> None:
        """Flush (bounded by ``timeout``), then stop reading delivery reports."""
        try:
            self.flush(timeout)
        finally:
            self._closed.set()
            self._thread.join(timeout=1.0)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                self._p.poll(POLL_S)
            except Exception as e:  # noqa: BLE001 - a callback error must not end the delivery thread
                log.warning("confluent producer: %s", e)
