"""The review page's incidents: which events it lists and in what order, the sample a "normal" absorbs, the markup."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from review import pages
from review.access import MARK, VIEW
from review.incidents import MAX_SAMPLE, Incidents, sample
from wire.anomaly_map import encode_map
from wire.records import ScoreRecord


def event(iid: str = "inc-1", state: str = "open", **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict(type="framewatch.incident", schema=1, state=state, id=iid, source="camA",
                                kind="intrusion", start=1000.0, end=1010.0, count=5, frames=6, peak_score=4.0,
                                peak_frame={"frame_id": f"{iid}-peak", "score": 4.0, "topic": "frames",
                                            "partition": 0, "offset": 7, "hotspot": [1, 2, 3, 4]},
                                threshold=1.0, index="idx", opened_at=1000.0,
                                closed_at=1070.0 if state == "close" else None)  # fmt: skip
    return {**base, **kw}


def record(fid: str, t: float, score: float = 2.0, **kw: Any) -> ScoreRecord:
    base: dict[str, Any] = dict(frame_id=fid, source="camA", sequence=0, capture_time=t, score_time=t,
                                score=score, threshold=1.0, is_anomaly=True, index_name="idx", index_version=1,
                                backbone="r18", latency_s=0.0, frame_topic="frames", frame_partition=0,
                                frame_offset=int(t))  # fmt: skip
    return ScoreRecord(**{**base, **kw})


def test_open_incidents_come_first_then_the_recently_closed_and_a_close_moves_one() -> None:
    incidents = Incidents("frames", max_closed=2)
    incidents.add(event("old-open", start=100.0))
    incidents.add(event("new-open", start=500.0))
    incidents.add(event("gone", start=50.0))
    incidents.add(event("gone", state="close", start=50.0, closed_at=900.0))
    incidents.add(event("closed-early", state="close", closed_at=200.0))
    assert [i.id for i in incidents.listed()] == ["new-open", "old-open", "gone", "closed-early"]
    incidents.add(event("closed-late", state="close", closed_at=950.0))  # keeps the 2 latest closed
    assert [i.id for i in incidents.listed()] == ["new-open", "old-open", "closed-late", "gone"]
    assert not incidents.get("gone").is_open  # type: ignore[union-attr]


def test_forged_events_are_not_listed() -> None:
    incidents = Incidents("frames")
    forged = [
        event("a", peak_frame={**event()["peak_frame"], "topic": "secrets"}),  # another topic's message
        event("b", kind="<script>"),
        event("c", state="reopen"),
        event("d", start=float("nan")),
        event("e", id=["x"]),
        event("f", count=-1),
        event("g", peak_frame={"frame_id": "x", "topic": "frames", "partition": 0, "offset": "7"}),
        event("h", type="something.else"),
        "not an object",
    ]
    for e in forged:
        incidents.add(e)
    assert incidents.listed() == []
    incidents.add(event("ok"))
    assert [i.id for i in incidents.listed()] == ["ok"]


def test_an_incident_holds_its_sources_anomalies_in_its_span() -> None:
    incidents = Incidents("frames")
    incidents.add(event("closed", state="close", start=1000.0, end=1010.0))
    closed = incidents.get("closed")
    assert closed is not None
    assert closed.holds(record("in", 1005.0))
    assert not closed.holds(record("after", 1011.0)) and not closed.holds(record("before", 999.0))
    assert not closed.holds(record("other", 1005.0, source="camB"))
    assert not closed.holds(record("normal", 1005.0, is_anomaly=False))
    assert not closed.holds(record("other-index", 1005.0, index_name="yard"))
    incidents.add(event("open", start=2000.0, end=2001.0))
    assert incidents.holding(record("later", 5000.0)).id == "open"  # type: ignore[union-attr]


def test_the_sample_is_bounded_keeps_the_peak_and_spans_the_incident() -> None:
    records = [record(f"f{i:03d}", 1000.0 + i, score=2.0 + (i == 37)) for i in range(120)]
    chosen = sample(records + records[:10], "f037")  # re-scored frames (at-least-once) count once
    ids = [r.frame_id for r in chosen]
    assert len(ids) == MAX_SAMPLE == len(set(ids))
    assert "f037" in ids and ids[0] == "f000" and ids[-1] == "f119"
    assert ids == sorted(ids)  # in capture order
    gaps = [int(b[1:]) - int(a[1:]) for a, b in zip(ids, ids[1:]) if "f037" not in (a, b)]
    assert max(gaps) <= 20  # spread over the incident, not bunched at one end
    assert [r.frame_id for r in sample(records[:5], "f002")] == ["f000", "f001", "f002", "f003", "f004"]
    assert "f119" in [
        r.frame_id for r in sample(records, "not-seen")
    ]  # no peak among them: the highest score
    assert "f037" in [r.frame_id for r in sample(records, "not-seen")]


def _style_hash(html: str) -> str:
    style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)  # type: ignore[union-attr]
    return base64.b64encode(hashlib.sha256(style.encode()).digest()).decode()


def test_an_incident_card_escapes_everything_styles_nothing_inline_and_matches_the_csp() -> None:
    incidents = Incidents("frames")
    hostile = '"><script>alert(1)</script>'
    incidents.add(event(hostile, source="<b>cam</b>", index="<i>idx</i>", kind="scene-change",
                        peak_frame={**event()["peak_frame"], "frame_id": hostile + "peak"}))  # fmt: skip
    incidents.add(event("closed-1", state="close"))
    [scene, closed] = incidents.listed()
    mapped = record(scene.peak_frame_id, 1005.0, source="<b>cam</b>", index_name="<i>idx</i>",
                    anomaly_map=encode_map([[0, 1], [2, 3]]))  # fmt: skip
    incidents.see(mapped)
    shown = [(i, incidents.peak(i), None) for i in incidents.listed()]
    answer = {"label": "normal", "by": "<u>al</u>", "absorbed_in": 3}
    html = pages.page({}, {}, "alice", MARK, "tok", True, incidents=[shown[0], (*shown[1][:2], answer)])
    assert "<script" not in html and "<b>cam" not in html and "<i>idx" not in html and "<u>al" not in html
    assert "style=" not in html
    assert f"'sha256-{_style_hash(html)}'" in pages.CSP
    assert html.count('action="/mark-incident"') == 2 and html.count('name="csrf" value="tok"') == 3
    assert html.index('data-incident-id="closed-1"') > html.index("scene-change")  # open first
    assert 'class="map c2"' in html  # the peak's anomaly map, from its score record
    assert "check the camera" in html and "still open" in html
    assert "incident marked normal by &lt;u&gt;al&lt;/u&gt; (absorbed in version 3)" in html
    assert "0 open" not in html and "1 open, 1 recently closed" in html
    assert "No anomalies yet" not in html
    viewer = pages.page({}, {}, "vic", VIEW, "tok", False, incidents=shown)
    assert 'action="/mark-incident"' not in viewer and 'action="/mark"' not in viewer
    assert "style=" not in viewer


def test_frames_in_no_incident_keep_their_cards_beside_the_incidents() -> None:
    incidents = Incidents("frames")
    incidents.add(event("inc"))
    shown = [(i, incidents.peak(i), None) for i in incidents.listed()]
    html = pages.page(
        {"camB": [record("loose", 5.0, source="camB")]}, {}, "a", MARK, "tok", True, incidents=shown
    )
    assert 'data-incident-id="inc"' in html and 'data-frame-id="loose"' in html
    assert html.index('data-incident-id="inc"') < html.index('data-frame-id="loose"')
    assert 'src="/frame/inc-peak"' in html  # the peak frame, served by the page from the frames topic
