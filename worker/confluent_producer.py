"""The outputs' producer over confluent-kafka (librdkafka), as ``kafka_port.Producer``.

With ``--kafka-client confluent`` the worker sends its score records and dead
letters through librdkafka too (``framewatch produce`` keeps kafka-python).

What differs from kafka-python, and how it is bridged:

- librdkafka reports deliveries through callbacks served by ``poll()``. A
  thread of the adapter's own polls, as kafka-python's sender thread
  resolves its futures: a ``Sent`` completes without the outbox asking.
- ``produce()`` never blocks: with the broker away a record waits in
  librdkafka's queue until ``message.timeout.ms`` and then fails, and the
  outbox retries it (kafka-python's ``send`` blocks up to ``max_block_ms``
  instead). A full local queue (``BufferError``) is a ``BrokerError``: retried.
- A record over the size limit is refused at once, as kafka-python does, with
  ``SendRefused``: the outbox sends its fallback.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Optional

from worker.config import WorkerConfig
from worker.confluent_client import broker_error, client_settings, require
from worker.kafka_port import BrokerError, Headers

log = logging.getLogger(__name__)

POLL_S = 0.05  # how long the delivery thread waits in poll(): the longest a delivery report waits to be read


class ConfluentSent:
    """``kafka_port.Sent``: completed by librdkafka's delivery callback, on the delivery thread."""

    __slots__ = ("_done", "_error")

    def __init__(self) -> None:
        self._done = False
        self._error: Optional[BaseException] = None

    def done(self) -> bool:
        return self._done

    def error(self) -> Optional[BaseException]:
        return self._error if self._done else None

    def _report(self, error: Any, topic: str) -> None:
        if error is not None:
            self._error = broker_error(error, f"delivery to {topic}")
        self._done = True  # after the error: a reader that sees done sees the outcome


def producer_settings(cfg: WorkerConfig, max_request_bytes: int) -> dict[str, Any]:
    return {
        **client_settings(cfg),
        "acks": "all",
        "linger.ms": 5,
        "message.max.bytes": max_request_bytes,
        "request.timeout.ms": 10000,
        "message.timeout.ms": 30000,  # kafka-python's delivery_timeout_ms
    }


class ConfluentProducer:
    """``kafka_port.Producer`` over ``confluent_kafka.Producer``, with a thread that reads delivery reports."""

    def __init__(
        self, cfg: WorkerConfig, max_request_bytes: int, make: Optional[Callable[[dict], Any]] = None
    ) -> None:
        """:raises FramewatchError: confluent-kafka is not installed.
        :raises BrokerError: the client refused the configuration."""
        ck = require()
        self._ck = ck
        try:
            self._p = (make or ck.Producer)(producer_settings(cfg, max_request_bytes))
        except ck.KafkaException as e:
            raise broker_error(e.args[0], "creating the producer") from e
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="confluent-deliveries", daemon=True)
        self._thread.start()

    def send(
        self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers
    ) -> ConfluentSent:
        """:raises SendRefused: too large. :raises BrokerError: librdkafka's local queue is full."""
        sent = ConfluentSent()
        try:
            self._p.produce(topic, value=value, key=key, headers=list(headers) or None,
                            on_delivery=lambda error, _msg: sent._report(error, topic))  # fmt: skip
        except BufferError as e:
            raise BrokerError(f"send to {topic}: librdkafka's local queue is full ({e})") from e
        except self._ck.KafkaException as e:
            raise broker_error(e.args[0], f"send to {topic}") from e
        return sent

    def flush(self, timeout_s: float) -> None:
        self._p.flush(max(0.0, timeout_s))

    def close(self, timeout_s: float) -> None:
        """Flush (bounded by ``timeout_s``), then stop reading delivery reports."""
        try:
            self.flush(timeout_s)
        finally:
            self._closed.set()
            self._thread.join(timeout=1.0)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                self._p.poll(POLL_S)
            except Exception as e:  # noqa: BLE001 - a callback error must not end the delivery thread
                log.warning("confluent producer: %s", e)
