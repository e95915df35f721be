"""The review page attacked in a real browser (Chromium): a cross-site form, and a frame whose header holds a script."""

from __future__ import annotations

import http.server
import threading
from typing import Iterator

import pytest

from review.access import MARK, AccessConfig, Credential
from tests.conftest import png_bytes
from tests.integration import harness as h
from tests.integration.review_site import Client, Site, shown, start_site
from tests.integration.test_operator_loop import browser, image_width
from tests.integration.test_review_security import HOSTILE_TYPE

pytestmark = pytest.mark.integration

ALICE = "alice-token-0123456789abcdef"
TOKENS = AccessConfig(credentials=(Credential.of("alice", MARK, ALICE),))


class Attacker:
    """Another site on another loopback port: serves one page, and counts every request it gets."""

    def __init__(self, page: str) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                hits.append(self.path)
                body = page.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def site(kafka_settings, redis_url, redis_client, unique) -> Iterator[Site]:  # type: ignore[no-untyped-def]
    site = start_site(kafka_settings, redis_url, redis_client, unique)
    yield site
    site.close()


@pytest.fixture
def driver():  # type: ignore[no-untyped-def]
    d = browser()
    yield d
    d.quit()


def forged_form(target: str) -> str:
    return (
        f'<html><body><form id="f" method="post" action="{target}/mark">'
        '<input name="frame_id" value="camA-1"><input name="label" value="normal">'
        '<input name="csrf" value="guessed"></form><script>document.getElementById("f").submit()</script>'
        "</body></html>"
    )


def test_an_auto_submitting_form_on_another_site_cannot_mark(site: Site, driver) -> None:  # type: ignore[no-untyped-def]
    url = site.serve(TOKENS).url
    site.flag("camA-1", png_bytes(1))
    assert shown(_signed_in(url), "camA-1")
    driver.get(f"{url}/login?token={ALICE}")  # alice is signed in, in this browser
    assert "signed in as alice" in driver.find_element("tag name", "header").text
    port = url.rsplit(":", 1)[1]
    # another port of the same loopback address (same site: SameSite cookies are sent), and another name
    for target in (url, f"http://localhost:{port}"):
        attacker = Attacker(forged_form(target))
        try:
            for host in ("127.0.0.1", "localhost"):
                driver.get(f"http://{host}:{attacker.port}/")
                assert h.wait_until(lambda: driver.current_url.endswith("/mark"), timeout=30)
                text = driver.find_element("tag name", "body").text
                assert "refused" in text or "not signed in" in text, text
        finally:
            attacker.close()
    assert site.versions() == [1] and site.answers.all("idx") == {}
    driver.get(url + "/")  # and the page still works for alice herself
    driver.find_element("css selector", "article[data-frame-id='camA-1'] button.normal").click()
    assert h.wait_until(lambda: site.versions() == [1, 2], timeout=120)


def test_a_script_in_a_frames_content_type_header_never_runs(site: Site, driver) -> None:  # type: ignore[no-untyped-def]
    url = site.serve(TOKENS).url
    site.flag("camA-split", png_bytes(3), headers=[("content-type", HOSTILE_TYPE)])
    assert shown(_signed_in(url), "camA-split")
    driver.get(f"{url}/login?token={ALICE}")
    assert h.wait_until(lambda: image_width(driver, "article[data-frame-id='camA-split'] img") == 64, 30)
    driver.get(f"{url}/frame/camA-split")
    assert h.wait_until(lambda: driver.execute_script("return document.readyState") == "complete", 30)
    assert driver.execute_script("return document.contentType") == "image/png"
    assert driver.title != "pwned"
    assert "signed in as alice" not in driver.page_source  # not an HTML page of ours either


def _signed_in(url: str) -> Client:
    client = Client(url)
    assert client.login(ALICE) == 303
    return client
