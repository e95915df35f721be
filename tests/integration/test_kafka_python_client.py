"""kafka-python's own failure on a record it cannot parse, on the real (Tansu) broker.

A corrupt record cannot be written through a client, so the fault is put where
kafka-python meets it: its record parser raises on one record (as it does on a
corrupt batch or an invalid record structure). The adapter must get past it,
hand it over as an ``Unparseable`` at its offset, in order between its
neighbours, and never read it again.
"""

from __future__ import annotations

import time

import pytest

from tests.integration import harness as h
from wire.settings import RedisSettings
from worker.config import WorkerConfig
from worker.kafka_port import Partition, Polled, Rebalances, Record, Unparseable
from worker.kafka_python_client import KafkaPythonClient

pytestmark = pytest.mark.integration


def test_a_record_the_parser_cannot_read_comes_out_as_unparseable_in_its_place(
    kafka_settings, unique, monkeypatch
):
    from kafka.record.default_records import DefaultRecordBatch

    from framewatch.admin import ensure_named_topics

    topic = f"poison-{unique}"
    ensure_named_topics(kafka_settings, [topic], partitions=1)
    h.produce_messages(kafka_settings, topic, [(b"cam", v, []) for v in (b"a", b"b", b"POISON", b"c", b"d")])
    cfg = WorkerConfig(kafka=kafka_settings, redis=RedisSettings(), group_id=f"g-{unique}")
    consumer = KafkaPythonClient(cfg).consumer(f"g-{unique}", topic, Rebalances())
    parse = DefaultRecordBatch._read_msg  # with the adapter's lenient header hook, installed by consumer()

    def corrupt(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        msg = parse(self, *args, **kwargs)
        if msg.value == b"POISON":
            raise ValueError("invalid record structure")
        return msg

    monkeypatch.setattr(DefaultRecordBatch, "_read_msg", corrupt)
    got: list[Polled] = []
    try:
        deadline = time.monotonic() + 30
        while len(got) < 5 and time.monotonic() < deadline:
            got += consumer.poll(0.2)
        got += consumer.poll(0.5)  # the poison record is not read again
    finally:
        consumer.close()
    assert [(type(r).__name__, r.offset) for r in got] == [
        ("Record", 0), ("Record", 1), ("Unparseable", 2), ("Record", 3), ("Record", 4)
    ]  # fmt: skip
    bad = got[2]
    assert isinstance(bad, Unparseable) and bad.where == Partition(topic, 0)
    assert "invalid record structure" in bad.error
    assert [r.value for r in got if isinstance(r, Record)] == [b"a", b"b", b"c", b"d"]
