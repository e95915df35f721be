"""Logging for the command line: text or JSON lines on stderr, and kafka-python kept quiet.

During a broker outage kafka-python logs an ERROR or WARNING on every reconnect
attempt, several a second for as long as the outage lasts. ``KafkaStateFilter``
turns that into one line per state change: the first problem ("Kafka connection
trouble: ..."), then silence, then "Kafka connection restored" with how many
lines were held back. ``-v`` shows kafka-python's own log unfiltered.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Callable, Optional

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# kafka-python INFO lines that mean a connection works again.
_RECOVERY_MARKERS = (": Connected", "Bootstrap complete")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC), level, logger, message, and the exception if any."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class KafkaStateFilter(logging.Filter):
    """Passes every non-kafka record; of kafka-python's, one line per connection state change.

    Connection problems (loggers ``kafka.net.*``) switch to "trouble": the first is shown,
    the rest are counted until a connection succeeds ("restored"). Other kafka-python
    warnings are shown once per message template per ``repeat_s`` seconds.
    """

    def __init__(self, repeat_s: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._trouble = False
        self._held = 0
        self._repeat_s = repeat_s
        self._clock = clock
        self._shown: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name == "kafka" or record.name.startswith("kafka.")):
            return True
        with self._lock:
            if record.name.startswith("kafka.net"):
                return self._connection(record)
            if record.levelno < logging.WARNING:
                return False
            now, template = self._clock(), str(record.msg)
            if now - self._shown.get(template, -self._repeat_s) < self._repeat_s:
                return False
            self._shown[template] = now
            record.exc_info, record.exc_text = None, None
            return True

    def _connection(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            if self._trouble:
                self._held += 1
                return False
            self._trouble, self._held = True, 0
            record.exc_info, record.exc_text, record.stack_info = None, None, None
            original = record.getMessage()
            record.msg = "Kafka connection trouble: %s (repeats hidden until it recovers; -v shows all)"
            record.args = (original,)
            return True
        if self._trouble and any(m in record.getMessage() for m in _RECOVERY_MARKERS):
            self._trouble = False
            record.msg, record.args = "Kafka connection restored (%d repeated messages hidden)", (self._held,)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            return True
        return False


def configure(verbose: bool = False, fmt: str = "text", stream: Optional[IO[str]] = None) -> None:
    """Install one stderr handler on the root logger (replacing the one an earlier call installed), in ``fmt`` "text" or "json"."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    handler.set_name("framewatch")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "framewatch"]:  # ours from an earlier call
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        handler.addFilter(KafkaStateFilter())
        logging.getLogger("kafka").setLevel(logging.INFO)  # INFO reaches the filter: it marks recovery
        logging.getLogger("faiss").setLevel(logging.WARNING)
