"""The review page under attack, over HTTP: forged requests, forged records, hostile headers, bad requests.

Each test is a finding of issue 18 that once changed the index or ran a script.
"""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from review.access import MARK, VIEW, AccessConfig, Credential
from tests.conftest import png_bytes
from tests.integration import harness as h
from tests.integration.review_site import Client, Site, shown, start_site

pytestmark = pytest.mark.integration

ALICE, VICTOR = "alice-token-0123456789abcdef", "victor-token-0123456789abcdef"
TOKENS = AccessConfig(
    credentials=(Credential.of("alice", MARK, ALICE), Credential.of("victor", VIEW, VICTOR))
)
HOSTILE_TYPE = b"image/jpeg;\r\nContent-Type: text/html\r\n\r\n<script>document.title='pwned'</script>"


@pytest.fixture
def site(kafka_settings, redis_url, redis_client, unique):  # type: ignore[no-untyped-def]
    site = start_site(kafka_settings, redis_url, redis_client, unique)
    yield site
    site.close()


def signed_in(site: Site, token: str, base: str = "") -> Client:
    client = Client(base or site.servers[0].url)
    assert client.login(token) == 303
    return client


def test_forged_posts_are_refused_and_publish_nothing(site: Site) -> None:
    url = site.serve(TOKENS).url
    site.flag("camA-1", png_bytes(1))
    alice = signed_in(site, ALICE)
    assert shown(alice, "camA-1")
    form = {"frame_id": "camA-1", "label": "normal", "csrf": alice.csrf}
    other_port = url.rsplit(":", 1)[0] + ":1"

    assert Client(url).post("/mark", form)[0].status == 401  # no session
    assert Client(url, cookie="fw_session=guessed").post("/mark", form)[0].status == 401
    assert alice.post("/mark", form, origin="http://evil.example")[0].status == 403
    assert alice.post("/mark", form, origin=other_port)[0].status == 403  # another loopback port
    assert alice.post("/mark", form, origin="null")[0].status == 403
    assert alice.post("/mark", form, origin=None)[0].status == 403  # neither Origin nor Referer
    assert alice.post("/mark", form, origin=None, Referer="http://evil.example/x")[0].status == 403
    assert alice.post("/mark", {**form, "csrf": ""})[0].status == 403
    assert alice.post("/mark", {**form, "csrf": "x" * 43})[0].status == 403
    second = signed_in(site, ALICE)  # a token from another session of the same person
    second.page()
    assert alice.post("/mark", {**form, "csrf": second.csrf})[0].status == 403
    # DNS rebinding: the attacker's name resolving to loopback; Origin and Host agree, the Host is not ours
    evil = "evil.example:" + url.rsplit(":", 1)[1]
    assert alice.post("/mark", form, origin=f"http://{evil}", Host=evil)[0].status == 400
    assert Client(url).login("not-a-token-0123456789") == 401

    assert site.versions() == [1] and site.answers.all("idx") == {}


def test_marking_a_frame_twice_makes_one_version(site: Site) -> None:
    site.serve(TOKENS)
    site.flag("camA-1", png_bytes(1))
    site.flag("camA-2", png_bytes(2))
    alice = signed_in(site, ALICE)
    assert shown(alice, "camA-2")
    assert alice.mark("camA-1") == 303 and alice.mark("camA-1") == 303  # a double click
    assert site.versions() == [1, 2]
    assert "already marked normal by alice" in alice.page()

    statuses: list[int] = []  # three reviewers' tabs at once
    tabs = [signed_in(site, ALICE) for _ in range(3)]
    for tab in tabs:
        tab.page()
    threads = [threading.Thread(target=lambda t=tab: statuses.append(t.mark("camA-2"))) for tab in tabs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert statuses == [303, 303, 303]
    assert site.versions() == [1, 2, 3]
    assert site.repo.meta("idx").feedback["frames"] == ["camA-2"]
    answers = site.answers.all("idx")
    assert answers["camA-1"]["absorbed_in"] == 2 and answers["camA-2"]["absorbed_in"] == 3
    assert {a["by"] for a in answers.values()} == {"alice"}  # the token's name, not one the client chose


def test_a_viewer_sees_the_frames_but_cannot_mark(site: Site) -> None:
    site.serve(TOKENS)
    site.flag("camA-1", png_bytes(1))
    victor = signed_in(site, VICTOR)
    assert shown(victor, "camA-1")
    html = victor.page()
    assert "signed in as <b>victor</b> (view)" in html and 'action="/mark"' not in html
    response, body = victor.request("GET", "/frame/camA-1")
    assert response.status == 200 and body == png_bytes(1)
    assert victor.csrf  # the logout form's: a valid token of his own session
    assert victor.mark("camA-1") == 403 and victor.mark("camA-1", "confirmed") == 403
    assert site.versions() == [1] and site.answers.all("idx") == {}


def test_a_proxy_user_header_counts_only_from_the_proxy_and_for_listed_users(site: Site) -> None:
    proxy = AccessConfig(mode="proxy", markers=frozenset({"alice@example.com"}),
                         viewers=frozenset({"vic@example.com"}))  # fmt: skip
    url = site.serve(proxy).url
    site.flag("camA-1", png_bytes(1))
    as_alice = Client(url, headers={"X-Forwarded-Email": "alice@example.com"})
    assert shown(as_alice, "camA-1")
    assert "signed in as <b>alice@example.com</b> (mark)" in as_alice.page()
    assert Client(url).request("GET", "/")[0].status == 401
    assert Client(url, headers={"X-Forwarded-Email": "bob@example.com"}).request("GET", "/")[0].status == 403
    # waitress drops header names with "_": a client cannot smuggle the user past a proxy that sets "-" only
    assert (
        Client(url, headers={"X_Forwarded_Email": "alice@example.com"}).request("GET", "/")[0].status == 401
    )

    assert as_alice.mark("camA-1", "confirmed") == 303
    assert site.answers.all("idx")["camA-1"]["by"] == "alice@example.com"
    # the same browser (cookie) with another user in the header is that other user, with their role
    as_alice.headers["X-Forwarded-Email"] = "vic@example.com"
    as_alice.page()
    assert as_alice.mark("camA-1", "normal") == 403
    # a page that trusts another proxy address ignores the header from here
    elsewhere = site.serve(AccessConfig(mode="proxy", markers=frozenset({"alice@example.com"}),
                                        trusted_proxies=("10.0.0.0/8",))).url  # fmt: skip
    assert (
        Client(elsewhere, headers={"X-Forwarded-Email": "alice@example.com"}).request("GET", "/")[0].status
        == 401
    )
    # behind the proxy's public https name: its Host and origin are the page's, the cookie is Secure
    public = site.serve(proxy, public_url="https://review.example.com").url
    behind = Client(public, headers={"X-Forwarded-Email": "alice@example.com", "Host": "review.example.com"})
    assert shown(behind, "camA-1")
    assert behind.mark("camA-1", "confirmed", origin="https://review.example.com") == 303
    assert behind.mark("camA-1", "confirmed", origin=public) == 403
    response, _ = Client(public, headers={"X-Forwarded-Email": "a@b", "Host": "review.example.com"}).request(
        "GET", "/"
    )
    assert response.status == 403
    cookie = Client(public, headers={"X-Forwarded-Email": "alice@example.com", "Host": "review.example.com"})
    set_cookie = cookie.request("GET", "/")[0].headers["Set-Cookie"]
    assert set_cookie.startswith("__Host-fw_session=") and "Secure" in set_cookie
    assert site.versions() == [1]


def test_records_pointing_outside_the_frames_topic_are_not_shown_served_or_marked(site: Site) -> None:
    site.serve(TOKENS)
    secrets_topic = site.topics.frames + "-private"
    site.flag("camA-secret", png_bytes(7), topic=secrets_topic)
    site.flag("camA-1", png_bytes(1))  # same source, same partition: read after the forged one
    alice = signed_in(site, ALICE)
    assert shown(alice, "camA-1")
    assert "camA-secret" not in alice.page()
    assert alice.request("GET", "/frame/camA-secret")[0].status == 404
    assert alice.mark("camA-secret") == 303  # refused with a message on the page, nothing published
    assert "not among the recent anomalies" in alice.page()
    assert site.versions() == [1]


def test_a_frame_is_typed_by_its_bytes_never_its_header(site: Site) -> None:
    site.serve(TOKENS)
    site.flag("camA-split", png_bytes(3), headers=[("content-type", HOSTILE_TYPE)])
    site.flag("camA-html", b"<html><script>document.title='pwned'</script></html>")
    alice = signed_in(site, ALICE)
    assert shown(alice, "camA-html")
    response, body = alice.request("GET", "/frame/camA-split")
    assert response.status == 200 and body == png_bytes(3)
    assert response.headers.get_all("Content-Type") == ["image/png"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert "text/html" not in str(response.headers) and "script" not in str(response.headers)
    response, body = alice.request("GET", "/frame/camA-html")
    assert response.status == 410 and response.headers.get_content_type() == "text/plain"
    assert b"<script" not in body


def test_every_response_forbids_scripts_sniffing_and_framing(site: Site) -> None:
    url = site.serve(TOKENS).url
    site.flag("camA-1", png_bytes(1))
    alice = signed_in(site, ALICE)
    assert shown(alice, "camA-1")
    for client, path in (
        (Client(url), "/"),
        (Client(url), "/nowhere"),
        (alice, "/"),
        (alice, "/frame/camA-1"),
    ):
        response, _ = client.request("GET", path)
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp and "unsafe" not in csp, (path, csp)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in alice.request("GET", "/")[0].headers["Content-Security-Policy"]
    cookie = Client(url).request("GET", "/login?token=" + ALICE)[0].headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def raw(url: str, request: bytes, timeout: float = 10.0) -> tuple[bytes, float]:
    """Send bytes, return the first bytes of the answer ("" when the server closed) and how long it took."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        started = time.monotonic()
        s.sendall(request)
        return s.recv(64), time.monotonic() - started


@pytest.mark.parametrize("length,status", [("-1", b"400"), ("10", b"413"), ("99999999999999", b"413"),
                                           ("12abc", b"400")])  # fmt: skip
def test_a_bad_or_huge_content_length_is_refused_without_reading_the_body(site: Site, length, status) -> None:  # type: ignore[no-untyped-def]
    url = site.serve(TOKENS).url
    length = str(10**9) if length == "10" else length
    head = f"POST /mark HTTP/1.1\r\nHost: {url.split('//')[1]}\r\nContent-Length: {length}\r\n\r\n".encode()
    answer, took = raw(url, head)  # and no body at all
    assert answer.startswith(b"HTTP/1.1 " + status), answer
    assert took < 2.0
    assert raw(url, f"GET /healthz HTTP/1.0\r\nHost: {url.split('//')[1]}\r\n\r\n".encode())[0].startswith(
        b"HTTP/1.0 200"
    )


def test_a_silent_or_slow_client_is_disconnected(site: Site) -> None:
    url = site.serve(TOKENS).url
    answer, took = raw(url, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n", timeout=30)  # headers never finish
    assert answer == b"" and took < 10  # idle timeout 2 s, swept every second


def test_framewatch_review_prints_a_login_url_that_signs_in(kafka_settings, redis_url, unique) -> None:  # type: ignore[no-untyped-def]
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "FRAMEWATCH_TOPIC_SCORES": f"scores-{unique}"}
    cmd = [sys.executable, "-m", "framewatch.cli", "review", "--port", "0", "--kafka", kafka_settings.bootstrap,
           "--redis", redis_url]  # fmt: skip
    refused = subprocess.run(
        [*cmd, "--host", "0.0.0.0"], capture_output=True, text=True, env=env, timeout=120
    )
    assert refused.returncode == 2 and "--public-url" in refused.stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        lines: list[str] = []
        assert h.wait_until(lambda: lines.append(proc.stdout.readline()) or "login?token=" in lines[-1], 120)  # type: ignore[union-attr]
        login = lines[-1].split()[-1]
        assert lines[-1].startswith(f"log in as {getpass.getuser()} (may mark): http://127.0.0.1:")
        base, query = login.split("/login?")
        client = Client(base)
        assert client.page() == ""  # not signed in
        assert client.request("GET", "/login?" + query)[0].status == 303
        assert f"signed in as <b>{getpass.getuser()}</b> (mark)" in client.page()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
