"""The review page lists incidents: a real broker, Redis and alerter; the page over HTTP.

20 flagged frames of one camera (raw frames on the frames topic, their score records
on the score topic) -> the alerter (in this process) makes one incident on the
incidents topic -> the page lists it with its peak frame -> a marker marks it
"normal": one new index version that absorbed at most 8 of its frames; a second
mark makes none; a viewer, a forged request and a stale token cannot mark it.
"""

from __future__ import annotations

import html as htmllib
import io
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.config import AlertConfig, IncidentConfig, NoiseConfig
from alerting.consumer import AlertConsumer
from alerting.incidents import IncidentTracker
from alerting.metrics import AlertMetrics
from alerting.noise import ALERT
from alerting.sinks import StdoutSink
from review.access import MARK, VIEW, AccessConfig, Credential
from review.incidents import MAX_SAMPLE
from tests.conftest import png_bytes
from tests.integration import harness as h
from tests.integration.review_site import Client, Site, start_site
from wire.topics import AlertTopics

pytestmark = pytest.mark.integration

ALICE, VICTOR = "alice-token-0123456789abcdef", "victor-token-0123456789abcdef"
TOKENS = AccessConfig(
    credentials=(Credential.of("alice", MARK, ALICE), Credential.of("victor", VIEW, VICTOR))
)
N_FRAMES, PEAK = 20, 13


@pytest.fixture
def site(kafka_settings, redis_url, redis_client, unique):  # type: ignore[no-untyped-def]
    site = start_site(kafka_settings, redis_url, redis_client, unique)
    yield site
    site.close()


def run_alerter(
    site: Site, unique: str, stop: threading.Event, close_after_s: float = 2.0
) -> threading.Thread:
    """``framewatch alert``'s consumer over the site's score topic, publishing incidents to the site's topic."""
    cfg = AlertConfig(kafka=site.kafka, topics=site.topics, group_id=f"alerts-{unique}", from_beginning=True,
                      alert_topics=AlertTopics(dead_letters=f"alerts-dlq-{unique}", incidents=site.incidents_topic),
                      noise=NoiseConfig(cooldown_s=0), incidents=IncidentConfig(close_after_s=close_after_s))  # fmt: skip
    consumer = AlertConsumer(cfg, [StdoutSink(io.StringIO())], AlertMetrics(CollectorRegistry(), ["stdout"]))
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    return thread


def incident_id(page: str) -> str:
    found = re.search(r'data-incident-id="([^"]+)"', page)
    return htmllib.unescape(found.group(1)) if found else ""


def mark_incident(client: Client, iid: str, label: str = "normal", **kw: str) -> int:
    return client.post("/mark-incident", {"incident_id": iid, "label": label, "csrf": client.csrf}, **kw)[
        0
    ].status


def test_an_incident_is_listed_with_its_peak_and_marked_normal_once_into_one_version(
    site: Site, unique
) -> None:  # type: ignore[no-untyped-def]
    site.serve(TOKENS)
    stop = threading.Event()
    alerter = run_alerter(site, unique, stop)
    try:
        flagged = [site.flag(f"camA-{i:02d}", png_bytes(i), score=5.0 + (i == PEAK)) for i in range(N_FRAMES)]
        alice, victor = Client(site.servers[0].url), Client(site.servers[0].url)
        assert alice.login(ALICE) == 303 and victor.login(VICTOR) == 303

        # listed once the alerter closes it (2 s without an anomaly), with all its frames and its peak frame
        closed = lambda: 'class="incident closed"' in alice.page()  # noqa: E731
        assert h.wait_until(closed, timeout=90)
        page = alice.page()
        iid = incident_id(page)
        assert iid and page.count("data-incident-id=") == 1
        assert f"<dt>frames</dt><dd>{N_FRAMES}</dd>" in page and "<dt>source</dt><dd>camA</dd>" in page
        assert '<span class="kind intrusion">intrusion</span>' in page and "6 (6.00x)" in page
        assert f'src="/frame/camA-{PEAK:02d}"' in page
        assert "data-frame-id=" not in page  # its frames are not listed one by one
        assert "style=" not in page
        response, body = victor.request("GET", f"/frame/camA-{PEAK:02d}")
        assert response.status == 200 and body == png_bytes(PEAK)

        # a viewer, a forged origin, a missing or another session's token: refused, nothing published
        viewer_page = victor.page()
        assert f'data-incident-id="{iid}"' in viewer_page and 'action="/mark-incident"' not in viewer_page
        assert mark_incident(victor, iid) == 403 and mark_incident(victor, iid, "confirmed") == 403
        assert mark_incident(alice, iid, origin="http://evil.example") == 403
        assert mark_incident(alice, iid, origin=None) == 403
        assert (
            alice.post("/mark-incident", {"incident_id": iid, "label": "normal", "csrf": victor.csrf})[
                0
            ].status
            == 403
        )
        assert (
            Client(site.servers[0].url)
            .post("/mark-incident", {"incident_id": iid, "label": "normal"})[0]
            .status
            == 401
        )
        assert (
            site.versions() == [1] and site.answers.all("idx") == {} and site.answers.incidents("idx") == {}
        )

        # "normal": one new version that absorbed a sample of its frames, the peak among them
        assert mark_incident(alice, iid) == 303
        assert site.versions() == [1, 2]
        feedback = site.repo.meta("idx").feedback
        absorbed = feedback["frames"]
        assert len(absorbed) == MAX_SAMPLE < N_FRAMES and len(set(absorbed)) == len(absorbed)
        assert set(absorbed) <= {r.frame_id for r in flagged} and f"camA-{PEAK:02d}" in absorbed
        assert {"camA-00", f"camA-{N_FRAMES - 1:02d}"} <= set(absorbed)  # spread over the whole incident
        assert feedback["by"] == {"alice": MAX_SAMPLE}
        page = alice.page()
        assert f"{MAX_SAMPLE} of its {N_FRAMES} frame(s) absorbed; index idx version 2 is active" in page
        assert "incident marked normal by alice (absorbed in version 2)" in page
        answers = site.answers.all("idx")
        assert set(answers) == set(absorbed) and {a["absorbed_in"] for a in answers.values()} == {2}

        # marked again (a double click, a second reviewer): no new version
        assert mark_incident(alice, iid) == 303
        assert site.versions() == [1, 2]
        assert "was already marked normal by alice (absorbed in version 2)" in alice.page()
        assert mark_incident(alice, "no-such-incident") == 303
        assert "is not among the incidents listed" in alice.page() and site.versions() == [1, 2]
    finally:
        stop.set()
        alerter.join(30)


def test_an_open_incident_that_grows_after_its_normal_is_not_absorbed_again(site: Site, unique) -> None:  # type: ignore[no-untyped-def]
    site.serve(TOKENS)
    stop = threading.Event()
    alerter = run_alerter(site, unique, stop, close_after_s=600.0)
    try:
        first = [site.flag(f"camD-{i:02d}", png_bytes(i), source="camD") for i in range(10)]
        alice = Client(site.servers[0].url)
        assert alice.login(ALICE) == 303
        assert h.wait_until(lambda: 'class="incident open"' in alice.page(), timeout=90)
        iid = incident_id(alice.page())
        assert mark_incident(alice, iid) == 303
        assert site.versions() == [1, 2]
        assert set(site.repo.meta("idx").feedback["frames"]) <= {r.frame_id for r in first}
        later = [site.flag(f"camD-{i:02d}", png_bytes(i), source="camD") for i in range(10, 30)]
        assert h.wait_until(lambda: alice.page().count("data-incident-id=") == 1, 30)
        assert (
            incident_id(alice.page()) == iid
        )  # the same incident, still open, now with other frames to sample
        assert mark_incident(alice, iid) == 303
        assert site.versions() == [1, 2]
        assert "was already marked normal by alice (absorbed in version 2)" in alice.page()
        assert not set(site.answers.all("idx")) & {r.frame_id for r in later}
    finally:
        stop.set()
        alerter.join(30)


def test_confirming_an_incident_records_the_answer_for_its_frames(site: Site, unique) -> None:  # type: ignore[no-untyped-def]
    site.serve(TOKENS)
    stop = threading.Event()
    alerter = run_alerter(site, unique, stop)
    try:
        flagged = [site.flag(f"camB-{i}", png_bytes(i), source="camB") for i in range(12)]
        alice = Client(site.servers[0].url)
        assert alice.login(ALICE) == 303
        assert h.wait_until(lambda: 'class="incident closed"' in alice.page(), timeout=90)
        iid = incident_id(alice.page())
        assert mark_incident(alice, iid, "confirmed") == 303
        answers = site.answers.all("idx")
        assert set(answers) == {r.frame_id for r in flagged}  # every frame, not a sample: nothing is embedded
        assert {(a["label"], a["by"]) for a in answers.values()} == {("confirmed", "alice")}
        assert site.answers.incidents("idx")[iid]["label"] == "confirmed"
        assert site.versions() == [1]
        assert "incident marked confirmed by alice" in alice.page()
    finally:
        stop.set()
        alerter.join(30)


def test_framewatch_review_reads_the_incidents_topic_its_config_file_names(
    site: Site, unique, redis_url, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """The command, not the test's wiring: topic names from --config, the alerter's own event encoding."""
    peak = site.flag("camC-peak", png_bytes(3), source="camC")
    tracker = IncidentTracker(IncidentConfig())
    [opened] = tracker.observe(peak, ALERT)
    key, value = (
        opened.source.encode(),
        json.dumps(opened.to_dict()).encode(),
    )  # as IncidentTopicSink sends it
    h.produce_messages(site.kafka, site.incidents_topic, [(key, value, [])])
    config = tmp_path / "framewatch.toml"
    config.write_text(f'topic_frames = "{site.topics.frames}"\ntopic_scores = "{site.topics.scores}"\n'
                      f'topic_incidents = "{site.incidents_topic}"\nredis_prefix = "t-{unique}"\n')  # fmt: skip
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice mark {ALICE}\n")
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEWATCH_")}
    cmd = [sys.executable, "-m", "framewatch.cli", "--config", str(config), "review", "--port", "0", "--tokens",
           str(tokens), "--kafka", site.kafka.bootstrap, "--redis", redis_url]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**env, "PYTHONPATH": str(root)})  # fmt: skip
    try:
        lines: list[str] = []
        assert h.wait_until(
            lambda: lines.append(proc.stdout.readline()) or "review page on" in lines[-1], 120
        )  # type: ignore[union-attr]
        alice = Client(lines[-1].split()[3].rstrip("/"))
        assert alice.login(ALICE) == 303
        assert h.wait_until(lambda: f'data-incident-id="{opened.key}"' in alice.page(), 60)
        page = alice.page()
        assert 'src="/frame/camC-peak"' in page and "<dt>end</dt><dd>still open</dd>" in page
        assert alice.request("GET", "/frame/camC-peak")[1] == png_bytes(3)
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def test_in_a_browser_the_incident_is_styled_a_cross_site_form_cannot_mark_it_and_alice_can(
    site: Site, unique
) -> None:  # type: ignore[no-untyped-def]
    from tests.integration.test_operator_loop import browser, image_width
    from tests.integration.test_review_browser import Attacker

    driver = browser()
    url = site.serve(TOKENS).url
    stop = threading.Event()
    alerter = run_alerter(site, unique, stop)
    try:
        for i in range(12):
            site.flag(f"camE-{i:02d}", png_bytes(i), source="camE", score=5.0 + (i == 4))
        driver.get(f"{url}/login?token={ALICE}")
        card = "article.incident.closed"
        assert h.wait_until(
            lambda: driver.get(url + "/") or bool(driver.find_elements("css selector", card)), 90
        )
        assert h.wait_until(lambda: image_width(driver, f"{card} img") == 64, 30)  # the peak frame
        element = driver.find_element("css selector", card)
        assert element.value_of_css_property("border-left-width") == "4px"  # the hashed stylesheet applies
        assert "intrusion" in element.text and "camE" in element.text
        iid = element.get_attribute("data-incident-id")
        attacker = Attacker(
            f'<html><body><form id="f" method="post" action="{url}/mark-incident">'
            f'<input name="incident_id" value="{iid}"><input name="label" value="normal">'
            '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
            "</body></html>"
        )
        try:
            # another port of the same address: the same site, so the browser sends alice's cookie along
            driver.get(f"http://127.0.0.1:{attacker.port}/")
            assert h.wait_until(lambda: driver.current_url.endswith("/mark-incident"), timeout=30)
            assert (
                "refused: the request did not come from this page"
                in driver.find_element("tag name", "body").text
            )
        finally:
            attacker.close()
        assert site.versions() == [1]
        driver.get(url + "/")
        driver.find_element("css selector", f"{card} button.normal").click()
        assert h.wait_until(lambda: site.versions() == [1, 2], timeout=120)
        assert h.wait_until(
            lambda: "index idx version 2 is active" in driver.find_element("css selector", ".flash").text, 30
        )
        assert len(site.repo.meta("idx").feedback["frames"]) == MAX_SAMPLE
    finally:
        driver.quit()
        stop.set()
        alerter.join(30)
