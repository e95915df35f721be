"""The review page's pure parts: tokens, proxy headers, sessions, and the page's markup rules."""

from __future__ import annotations

import re

import pytest

from review import pages
from review.access import (
    MARK,
    VIEW,
    AccessConfig,
    AccessConfigError,
    Identity,
    by_proxy,
    by_token,
    read_tokens,
)
from review.sessions import Sessions
from wire.records import ScoreRecord

TOKEN = "t0ken-0123456789abcdef"


def test_a_tokens_file_names_people_and_roles(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tokens"
    path.write_text(f"# who role token\nalice mark {TOKEN}\n\nvic view {TOKEN[::-1]}\n")
    config = AccessConfig(credentials=read_tokens(str(path)))
    assert by_token(config, TOKEN) == Identity("alice", MARK)
    assert by_token(config, TOKEN[::-1]) == Identity("vic", VIEW)
    assert by_token(config, TOKEN + "x") is None and by_token(config, "") is None
    assert TOKEN not in repr(config) and TOKEN not in config.describe()


@pytest.mark.parametrize("line", ["alice admin " + TOKEN, "alice mark short", "alice mark", ""])
def test_a_bad_tokens_file_is_one_clear_error(tmp_path, line) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "tokens"
    path.write_text(line + "\n")
    with pytest.raises(AccessConfigError):
        read_tokens(str(path))


def test_the_proxy_header_counts_only_from_trusted_addresses_and_listed_users() -> None:
    config = AccessConfig(mode="proxy", markers=frozenset({"a@x"}), viewers=frozenset({"v@x"}),
                          trusted_proxies=("10.1.0.0/16",))  # fmt: skip
    header = "X-Forwarded-Email"
    assert by_proxy(config, {header: "a@x"}, "10.1.2.3") == Identity("a@x", MARK)
    assert by_proxy(config, {header: "v@x"}, "10.1.2.3") == Identity("v@x", VIEW)
    assert by_proxy(config, {header: "a@x"}, "127.0.0.1") is None  # not the proxy
    assert by_proxy(config, {header: "b@x"}, "10.1.2.3") is None  # not listed
    assert by_proxy(config, {header: "a@x\r\nX: y"}, "10.1.2.3") is None
    assert by_proxy(config, {}, "10.1.2.3") is None
    with pytest.raises(AccessConfigError):
        AccessConfig(mode="proxy")  # an allow-list is required


def test_sessions_expire_when_idle_and_are_capped() -> None:
    now = [0.0]
    sessions = Sessions(idle_s=60, max_sessions=2, clock=lambda: now[0])
    first, session = sessions.create(Identity("a", MARK))
    assert sessions.get(first) is session and len(session.csrf) >= 32
    now[0] = 59
    assert sessions.get(first) is session  # seen: the idle clock restarts
    now[0] = 130
    assert sessions.get(first) is None
    ids = [sessions.create(Identity(str(i), VIEW))[0] for i in range(3)]
    assert sessions.get(ids[0]) is None and sessions.get(ids[2]) is not None


def record(**kw: object) -> ScoreRecord:
    base = dict(frame_id='f"><script>x</script>', source="<b>cam</b>", sequence=0, capture_time=0.0,
                score_time=0.0, score=2.0, threshold=1.0, is_anomaly=True, index_name="idx", index_version=1,
                backbone="r18", latency_s=0.0, frame_topic="frames", frame_partition=0, frame_offset=0)  # fmt: skip
    return ScoreRecord(**{**base, **kw})  # type: ignore[arg-type]


def test_the_page_escapes_everything_styles_nothing_inline_and_matches_its_csp() -> None:
    html = pages.page({"<b>cam</b>": [record()]}, {}, "<i>alice</i>", MARK, "tok", True)
    assert "<script" not in html and "<b>cam" not in html and "<i>alice" not in html
    assert "style=" not in html
    assert html.count('name="csrf" value="tok"') == 2  # the card's form and the logout form
    viewer = pages.page({"cam": [record()]}, {}, "vic", VIEW, "tok", False)
    assert 'action="/mark"' not in viewer
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)  # type: ignore[union-attr]
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in pages.CSP


def test_a_forged_anomaly_map_cannot_blow_up_the_page() -> None:
    from wire.anomaly_map import encode_map

    assert 'class="map c4"' in pages.card(record(anomaly_map=encode_map([[0, 1, 2, 3]] * 3)), None)
    wide = encode_map([[1.0] * 100_000])  # 100,000 cells: not drawn
    assert 'class="map' not in pages.card(record(anomaly_map=wide), None)


def test_an_indexs_ignore_zones_are_drawn_over_the_frame() -> None:
    from wire.anomaly_map import encode_map

    amap = {**encode_map([[0, 1], [2, 3]]), "box": [0, 0, 1280, 720], "ignore": [[0, 0, 320, 72]]}
    card = pages.card(record(anomaly_map=amap, frame_size=[1280, 720]), None)
    assert 'class="zone l0 t0 w25 h10"' in card and "style=" not in card
    forged = {**amap, "ignore": [["<b>", 0, 1, 1], [0, 0, 10**9, 10**9]] * 50}
    card = pages.card(record(anomaly_map=forged, frame_size=[1280, 720]), None)
    assert card.count('class="zone') == 8 and "<b>" not in card  # bad boxes skipped, at most 16 read, clamped
