"""A running review page over a real broker and Redis, and a cookie-keeping HTTP client for it.

Frames are produced raw and their score records forged on the score topic, as
an attacker who can write those topics would: the page must be safe on its own,
whatever the worker and the wire decoding let through.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Optional

from framewatch.admin import ensure_named_topics
from framewatch.review_cmd import build
from index_store.repository import IndexRepository
from review.access import AccessConfig
from review.answers import Answers
from review.feed import follow, follow_incidents
from review.server import HttpLimits, ReviewServer
from review.web import WebConfig
from tests.integration import harness as h
from wire.records import ScoreRecord
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics

LIMITS = HttpLimits(idle_timeout_s=2, sweep_s=1)


@dataclass
class Client:
    """One HTTP client with its own cookie (a browser that does not follow redirects)."""

    base: str
    cookie: str = ""
    csrf: str = ""
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def origin(self) -> str:
        return self.base

    def request(self, method: str, path: str, body: str = "", headers: Optional[dict[str, str]] = None):  # type: ignore[no-untyped-def]
        url = urllib.parse.urlsplit(self.base)
        conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
        sent = {**self.headers, **({"Cookie": self.cookie} if self.cookie else {}), **(headers or {})}
        if body:
            sent.setdefault("Content-Type", "application/x-www-form-urlencoded")
        conn.request(method, path, body=body.encode() if body else None, headers=sent)
        response = conn.getresponse()
        data = response.read()
        conn.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookie = value.split(";")[0]
        return response, data

    def login(self, token: str) -> int:
        response, _ = self.request("GET", "/login?" + urllib.parse.urlencode({"token": token}))
        return response.status

    def page(self) -> str:
        response, data = self.request("GET", "/")
        html = data.decode()
        found = re.search(r'name="csrf" value="([^"]+)"', html)
        self.csrf = found.group(1) if found else ""
        return html if response.status == 200 else ""

    def post(self, path: str, form: dict[str, str], origin: Optional[str] = "same", **headers: str):  # type: ignore[no-untyped-def]
        if origin == "same":
            origin = self.origin
        if origin is not None:
            headers["Origin"] = origin
        return self.request("POST", path, urllib.parse.urlencode(form), headers)

    def mark(self, frame_id: str, label: str = "normal", **kw: str) -> int:
        return self.post("/mark", {"frame_id": frame_id, "label": label, "csrf": self.csrf}, **kw)[0].status


@dataclass
class Site:
    kafka: KafkaSettings
    topics: Topics
    repo: IndexRepository
    answers: Answers
    app: object
    servers: list[ReviewServer]
    stop: threading.Event
    follower: threading.Thread
    fetcher: object
    incidents_topic: str = ""  # the page lists the incidents published here (by an alerter the test runs)
    incident_follower: Optional[threading.Thread] = None

    def serve(self, access: AccessConfig, **web: object) -> ReviewServer:
        server = ReviewServer(self.app, WebConfig(access, **web), port=0, limits=LIMITS).start()  # type: ignore[arg-type]
        self.servers.append(server)
        return server

    def flag(self, frame_id: str, image: bytes, headers: Optional[list[tuple[str, bytes]]] = None,
             topic: str = "", source: str = "camA", score: float = 5.0) -> ScoreRecord:  # fmt: skip
        """Produce a frame raw (any headers) and forge its score record: flagged, from index "idx" v1."""
        topic = topic or self.topics.frames
        hdrs = headers if headers is not None else [("content-type", b"image/png")]
        [(partition, offset)] = h.produce_messages(self.kafka, topic, [(source.encode(), image, hdrs)])
        now = time.time()
        record = ScoreRecord(frame_id=frame_id, source=source, sequence=0, capture_time=now, score_time=now,
                             score=score, threshold=1.0, is_anomaly=True, index_name="idx", index_version=1,
                             backbone="resnet18", latency_s=0.1, frame_topic=topic, frame_partition=partition,
                             frame_offset=offset)  # fmt: skip
        key, value = record.encode()
        h.produce_messages(self.kafka, self.topics.scores, [(key, value, [])])
        return record

    def versions(self) -> list[int]:
        return self.repo.versions("idx")

    def close(self) -> None:
        self.stop.set()
        for server in self.servers:
            server.close()
        self.follower.join(30)
        if self.incident_follower is not None:
            self.incident_follower.join(30)
        self.fetcher.close()  # type: ignore[attr-defined]


def start_site(kafka: KafkaSettings, redis_url: str, redis_client: object, unique: str) -> Site:
    topics = h.topics_for(unique, kafka, partitions=1)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "idx", threshold=1.0)
    app, feed, fetcher = build(
        kafka, RedisSettings(url=redis_url, key_prefix=prefix), "cpu", 20, topics.frames, topics.scores
    )
    incidents = f"incidents-{unique}"
    ensure_named_topics(kafka, [incidents], partitions=1)
    stop = threading.Event()
    follower = threading.Thread(target=follow, args=(kafka, topics.scores, feed, stop, 1000, app.incidents),
                                daemon=True)  # fmt: skip
    incident_follower = threading.Thread(target=follow_incidents, args=(kafka, incidents, app.incidents, stop),
                                         daemon=True)  # fmt: skip
    follower.start()
    incident_follower.start()
    repo = IndexRepository(redis_client, prefix)  # type: ignore[arg-type]
    return Site(kafka, topics, repo, Answers(repo), app, [], stop, follower, fetcher, incidents,
                incident_follower)  # fmt: skip


def shown(client: Client, frame_id: str, timeout: float = 60) -> bool:
    """Wait until the page (as ``client`` sees it) shows ``frame_id``."""
    return h.wait_until(lambda: f'data-frame-id="{frame_id}"' in client.page(), timeout=timeout)
