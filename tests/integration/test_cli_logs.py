"""A broker outage in the log: one line when it starts, one when it ends (not one per retry)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from framewatch.admin import ensure_topics
from framewatch.services import LocalBroker
from tests.integration.harness import wait_until
from wire.settings import KafkaSettings
from wire.topics import Topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_broker_outage_is_two_log_lines(unique):
    topics = Topics(frames=f"frames-{unique}", scores=f"scores-{unique}", dead_letters=f"dlq-{unique}")
    with LocalBroker() as broker:
        ensure_topics(KafkaSettings(bootstrap=broker.bootstrap), topics, partitions=1)
        proc = subprocess.Popen(
            [sys.executable, "-m", "framewatch.cli", "watch", "--kafka", broker.bootstrap],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "FRAMEWATCH_TOPIC_SCORES": topics.scores},
        )  # fmt: skip
        err: list[str] = []
        threading.Thread(target=lambda: err.extend(iter(proc.stderr.readline, "")), daemon=True).start()  # type: ignore[union-attr]
        try:
            assert wait_until(lambda: proc.stdout.readline().startswith("CAPTURED"), timeout=60)  # type: ignore[union-attr]
            time.sleep(2)  # connected and polling
            broker.stop()
            assert wait_until(lambda: any("Kafka connection trouble" in line for line in err), timeout=60), (
                err
            )
            time.sleep(5)  # kafka-python retries several times a second meanwhile
            broker.start()
            assert wait_until(lambda: any("Kafka connection restored" in line for line in err), timeout=90), (
                err
            )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    trouble = [line for line in err if "Kafka connection trouble" in line]
    restored = [line for line in err if "Kafka connection restored" in line]
    assert len(trouble) == 1 and len(restored) == 1, err
    assert "repeated messages hidden" in restored[0]
    assert not any("Traceback" in line for line in err), err
