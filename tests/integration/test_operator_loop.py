"""The operator's loop end to end: real broker, Redis, worker, HTTP sink and browser.

frame flagged -> alert delivered once -> marked normal on the review page -> new index
version active -> the same image now scores below the threshold.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry, generate_latest

from alerting.config import AlertConfig, NoiseConfig
from alerting.consumer import AlertConsumer
from alerting.metrics import AlertMetrics
from alerting.sinks import WebhookSink
from framewatch.review_cmd import build
from index_store.embedder import Embedder
from index_store.fitting import FitConfig, fit
from index_store.knn import build_exact
from index_store.repository import IndexMeta, IndexRepository
from review.access import MARK, AccessConfig, Credential
from review.answers import Answers
from review.feed import follow
from review.server import ReviewServer
from review.web import WebConfig
from tests.conftest import png_bytes
from tests.integration import harness as h
from tests.integration.test_alerting import Hook
from wire.records import FrameRecord
from wire.settings import RedisSettings

pytestmark = pytest.mark.integration


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def solid(rgb: tuple[int, int, int]) -> bytes:
    return _png(np.broadcast_to(np.array(rgb, np.uint8), (48, 64, 3)))


def stripes() -> bytes:
    a = np.zeros((48, 64, 3), np.uint8)
    a[:, ::8] = 255
    return _png(a)


def frame(fid: str, source: str, image: bytes) -> FrameRecord:
    return FrameRecord(frame_id=fid, source=source, sequence=0, capture_time=time.time(), image=image,
                       content_type="image/png", origin=f"{fid}.png")  # fmt: skip


def browser():  # type: ignore[no-untyped-def]
    webdriver = pytest.importorskip("selenium.webdriver")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,720"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(driver), options=opts)


def submit(driver, css: str) -> None:  # type: ignore[no-untyped-def]
    """Click a form's button and wait until the page it posts to has replaced this one.

    Without the wait, the next lookup can find an element of the old page, which goes
    stale under it once the new page arrives.
    """
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    button = driver.find_element("css selector", css)
    button.click()
    WebDriverWait(driver, 30).until(ec.staleness_of(button))
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")


def image_width(driver, css: str) -> int:  # type: ignore[no-untyped-def]
    """The natural width of the image under `css`, once it has loaded (0 while it has not)."""
    return int(driver.execute_script(
        "const i = document.querySelector(arguments[0]); return i && i.complete ? i.naturalWidth : 0;", css))  # fmt: skip


def publish_fitted(redis_url: str, prefix: str, name: str, images: list[bytes]) -> IndexMeta:
    pil = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
    emb = Embedder(h.SMALL_SPEC).embed(pil)
    index, cal, _ = fit(emb, FitConfig())
    index = build_exact(index.vectors, 2)
    meta = IndexMeta(name=name, kind="exact", k=2, dim=index.dim, n_vectors=index.size, spec=h.SMALL_SPEC.to_dict(),
                     n_train=index.size, threshold=cal.threshold, calibration=cal.to_dict())  # fmt: skip
    import redis

    return IndexRepository(redis.Redis.from_url(redis_url), prefix).publish(meta, index)


def test_flagged_alerted_once_marked_normal_then_scored_below_threshold(
    kafka_settings, redis_url, redis_client, unique, tmp_path
):
    driver = browser()
    topics = h.topics_for(unique, kafka_settings)
    prefix = f"t-{unique}"
    base = publish_fitted(redis_url, prefix, "idx", [png_bytes(i) for i in range(24)])
    hook, stop = Hook(), threading.Event()
    registry = CollectorRegistry()
    alerts = AlertConsumer(AlertConfig(kafka=kafka_settings, topics=topics, group_id=f"alerts-{unique}",
                                       from_beginning=True, noise=NoiseConfig(cooldown_s=0)),
                           [WebhookSink(hook.url)], AlertMetrics(registry, ["webhook"]))  # fmt: skip
    app, feed, fetcher = build(
        kafka_settings, RedisSettings(url=redis_url, key_prefix=prefix), "cpu", 20, topics.frames
    )
    threads = [threading.Thread(target=alerts.run, args=(stop,), daemon=True),
               threading.Thread(target=follow, args=(kafka_settings, topics.scores, feed, stop), daemon=True)]  # fmt: skip
    for t in threads:
        t.start()
    token = "alice-" + unique * 2
    access = AccessConfig(credentials=(Credential.of("alice", MARK, token),))
    server = ReviewServer(app, WebConfig(access), port=0).start()
    worker = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    red = solid((220, 30, 30))
    try:
        odd = frame("camA-odd", "camA", red)
        h.produce_frames(kafka_settings, topics.frames, [odd, odd, frame("camB-stripes", "camB", stripes())])
        flagged = lambda: [r for r in h.scores(kafka_settings, topics.scores) if r.frame_id == "camA-odd"]  # noqa: E731
        assert h.wait_until(lambda: len(flagged()) == 2, timeout=120)
        assert all(r.is_anomaly and r.score > base.threshold for r in flagged())

        # alerted once, though scored twice
        dup = 'framewatch_alert_records_total{outcome="duplicate"} 1.0'
        assert h.wait_until(lambda: dup in generate_latest(registry).decode(), timeout=60)
        assert [a["frame_id"] for a in hook.accepted].count("camA-odd") == 1

        # the review page, in a real browser
        assert h.wait_until(
            lambda: feed.get("camA-odd") is not None and feed.get("camB-stripes") is not None, 60
        )
        driver.get(server.url + "/")  # not signed in: the login form, no frames
        assert driver.find_elements("css selector", "article") == []
        driver.find_element("name", "token").send_keys(token)
        submit(driver, "form[action='/login'] button")
        # the frame itself, fetched from Kafka by its coordinates
        assert h.wait_until(lambda: image_width(driver, "article[data-frame-id='camA-odd'] img") == 64, 30)
        card = driver.find_element("css selector", "article[data-frame-id='camA-odd']")
        assert "threshold" in card.text and f"{base.threshold:.4g}" in card.text
        submit(driver, "article[data-frame-id='camB-stripes'] button.confirmed")
        driver.get(server.url + "/")
        assert "marked confirmed by alice" in driver.find_element("id", "camB-stripes").text
        shot = os.environ.get("FRAMEWATCH_REVIEW_SCREENSHOT") or str(tmp_path / "review.png")
        driver.save_screenshot(shot)
        submit(driver, "article[data-frame-id='camA-odd'] button.normal")
        flash = driver.find_element("css selector", ".flash").text
        assert "index idx version 2 is active" in flash, flash
        assert "marked normal by alice" in driver.find_element("id", "camA-odd").text

        repo = IndexRepository(redis_client, prefix)
        assert repo.active_version("idx") == 2
        meta = repo.meta("idx")
        assert meta.feedback["by"] == {"alice": 1} and meta.feedback["frames"] == ["camA-odd"]
        answers = Answers(repo).all("idx")
        assert answers["camA-odd"]["label"] == "normal" and answers["camB-stripes"]["label"] == "confirmed"

        # once the worker serves version 2, the same image sent again is normal
        metrics = f"http://127.0.0.1:{worker.worker.health.port}/metrics"

        def served() -> float:
            body = urllib.request.urlopen(metrics).read().decode()
            return h.metric_value(body, 'framewatch_index_version{index="idx"}')

        assert h.wait_until(lambda: served() == 2, timeout=60)
        h.produce_frames(kafka_settings, topics.frames, [frame("camA-again", "camA", red)])
        again = lambda: [r for r in h.scores(kafka_settings, topics.scores) if r.frame_id == "camA-again"]  # noqa: E731
        assert h.wait_until(lambda: bool(again()), timeout=90)
        record = again()[0]
        assert record.index_version == 2
        assert record.score < meta.threshold and not record.is_anomaly
    finally:
        driver.quit()
        worker.close()
        stop.set()
        server.close()
        for t in threads:
            t.join(30)
        fetcher.close()
        hook.close()
