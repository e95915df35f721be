"""Server-rendered HTML for the review page (pure: records and answers in, a string out; no JavaScript).

Every value is escaped, and nothing is styled inline: the one stylesheet is a
constant, so the Content-Security-Policy allows it by its hash and allows no
script and no other style at all (``CSP``). Bar lengths and map shades are
classes (``w37``, ``a5``), not ``style`` attributes.
"""

from __future__ import annotations

import base64
import hashlib
import html
import time
import urllib.parse
from typing import Any, Optional, Sequence

from review.incidents import ReviewIncident
from wire.anomaly_map import decode_map
from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#222}
header{background:#1d2733;color:#fff;padding:10px 20px;display:flex;gap:20px;align-items:center}
header h1{font-size:18px;margin:0;flex:1}
header form{margin:0}header input{padding:3px 6px}
.flash{margin:12px 20px;padding:8px 12px;border-radius:4px;background:#e3f4e6;border:1px solid #9cd3a6}
.flash.error{background:#fbe4e4;border-color:#e0a0a0}
main{display:flex;flex-wrap:wrap;gap:0 12px}section{margin:16px 20px}h2{font-size:16px;margin:0 0 8px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
article{background:#fff;border:1px solid #d8dce2;border-radius:6px;padding:10px;width:300px}
figure{position:relative;margin:0 0 8px;width:280px}figure img{width:280px;display:block;border-radius:3px}
.map{position:absolute;inset:0;display:grid}
.bar{height:8px;background:#e6e8eb;border-radius:4px;position:relative;margin:4px 0 8px}
.bar span{position:absolute;top:0;bottom:0;left:0;background:#d9534f;border-radius:4px}
.bar i{position:absolute;top:-3px;bottom:-3px;width:2px;background:#1d2733}
dl{display:grid;grid-template-columns:auto 1fr;gap:2px 8px;margin:0 0 8px}dt{color:#667}dd{margin:0}
.buttons{display:flex;gap:8px}button{flex:1;padding:6px;border-radius:4px;border:1px solid #999;cursor:pointer}
button.normal{background:#e3f4e6}button.confirmed{background:#fbe4e4}
.answer{font-weight:600}.answer.normal{color:#2d7a3a}.answer.confirmed{color:#b02a2a}
ul.nn{margin:0 0 8px;padding-left:18px;color:#556}
.empty{margin:20px;color:#667}
.who{font-size:13px}.login{margin:40px auto;max-width:420px;background:#fff;padding:20px;border-radius:6px}
.login input{width:100%;box-sizing:border-box;padding:6px;margin:8px 0}
.zone{position:absolute;border:1px dashed #eee;background:rgba(90,90,90,.45)}
article.incident{border-left:4px solid #d9534f}article.incident.closed{border-left-color:#99a}
.kind{display:inline-block;padding:0 6px;border-radius:3px;background:#fbe4e4;font-weight:600}
.kind.scene-change{background:#fff1d6}.state{color:#667;margin-left:6px}.advice{color:#556;margin:0 0 8px}
"""
MAP_MAX = 64  # widest/tallest anomaly map drawn (a forged record could ask for millions of cells)
ALPHAS = 12  # map shades: a0 (clear) .. a12 (0.6 red)
STYLE += "".join(
    f".w{i}{{width:{i}%}}.l{i}{{left:{i}%}}.t{i}{{top:{i}%}}.h{i}{{height:{i}%}}" for i in range(101)
)
STYLE += "".join(f".a{i}{{background:rgba(255,0,0,{0.6 * i / ALPHAS:.2f})}}" for i in range(ALPHAS + 1))
STYLE += "".join(f".c{i}{{grid-template-columns:repeat({i},1fr)}}" for i in range(1, MAP_MAX + 1))
_STYLE_HASH = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
CSP = (f"default-src 'none'; img-src 'self'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
       "frame-ancestors 'none'; base-uri 'none'")  # fmt: skip


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def frame_url(record: ScoreRecord) -> str:
    return "/frame/" + urllib.parse.quote(record.frame_id, safe="")


def _map_overlay(record: ScoreRecord) -> str:
    if not record.anomaly_map:
        return ""
    try:
        grid = decode_map(record.anomaly_map)
    except ScoreDecodeError:
        return ""
    w = len(grid[0]) if grid else 0
    if not (0 < w <= MAP_MAX and len(grid) <= MAP_MAX):
        return ""
    top = max((v for row in grid for v in row), default=0.0) or 1.0
    cells = "".join(f'<div class="a{round(ALPHAS * v / top)}"></div>' for row in grid for v in row)
    return f'<div class="map c{w}" title="anomaly map">{cells}</div>'


def _zones(record: ScoreRecord) -> str:
    """The index's ignore zones over the frame (grey boxes): never scored, never the hotspot."""
    zones = (record.anomaly_map or {}).get("ignore")
    size = record.frame_size
    if not isinstance(zones, list) or not size or len(size) != 2 or min(size) <= 0:
        return ""
    out = []
    for z in zones[:16]:
        if not (isinstance(z, list) and len(z) == 4 and all(isinstance(v, (int, float)) for v in z)):
            continue
        x0, y0, x1, y1 = (min(100, max(0, round(100 * v / size[i % 2]))) for i, v in enumerate(z))
        out.append(
            f'<div class="zone l{x0} t{y0} w{max(0, x1 - x0)} h{max(0, y1 - y0)}" title="ignored"></div>'
        )
    return "".join(out)


def _score_bar(record: ScoreRecord) -> str:
    if not record.threshold:
        return ""
    top = max(record.score, record.threshold) * 1.1
    if not top > 0:
        return ""
    width, left = (min(100, max(0, round(100 * v / top))) for v in (record.score, record.threshold))
    return f'<div class="bar"><span class="w{width}"></span><i class="l{left}"></i></div>'


def _why(record: ScoreRecord) -> str:
    if record.anomaly_map:
        return ""  # the map on the frame is the explanation
    if record.neighbors:
        items = "".join(f"<li>{_e(n)}</li>" for n in record.neighbors[:5])
        return f'<div>nearest normal frames:</div><ul class="nn">{items}</ul>'
    return ""


def _answer(answer: Optional[dict[str, Any]]) -> str:
    if not answer:
        return ""
    label = answer.get("label", "")
    where = f" (absorbed in version {answer['absorbed_in']})" if answer.get("absorbed_in") else ""
    return f'<p class="answer {_e(label)}">marked {_e(label)} by {_e(answer.get("by", "?"))}{_e(where)}</p>'


def _csrf(token: str) -> str:
    return f'<input type="hidden" name="csrf" value="{_e(token)}">'


def _buttons(action: str, field: str, value: str, csrf: str) -> str:
    if not csrf:
        return ""
    return (f'<form method="post" action="{action}" class="buttons"><input type="hidden" name="{field}" '
            f'value="{_e(value)}">{_csrf(csrf)}<button class="normal" name="label" value="normal">normal</button>'
            '<button class="confirmed" name="label" value="confirmed">confirmed</button></form>')  # fmt: skip


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) + " UTC"


def _incident_answer(answer: Optional[dict[str, Any]]) -> str:
    if not answer:
        return ""
    label = answer.get("label", "")
    where = f" (absorbed in version {answer['absorbed_in']})" if answer.get("absorbed_in") else ""
    return f'<p class="answer {_e(label)}">incident marked {_e(label)} by {_e(answer.get("by", "?"))}{_e(where)}</p>'


def incident_card(
    inc: ReviewIncident, peak: ScoreRecord, answer: Optional[dict[str, Any]], csrf: str = ""
) -> str:
    """One incident: its peak frame with the map, kind, source, span, frame count, peak score; with ``csrf``
    (the viewer may mark) "normal" / "confirmed" for the whole incident."""
    iid, state = _e(inc.id), "open" if inc.is_open else "closed"
    ratio = f" ({inc.peak_score / inc.threshold:.2f}x)" if inc.threshold else ""
    end = "still open" if inc.is_open else _when(inc.end)
    advice = ('<p class="advice">check the camera (moved, covered, out of focus, lights); if the change was '
              "intended, refit the index on frames since the start</p>" if inc.kind == "scene-change" else "")  # fmt: skip
    return (
        f'<article class="incident {state}" id="incident-{iid}" data-incident-id="{iid}">'
        f'<figure><img src="{_e(frame_url(peak))}" alt="peak frame {_e(inc.peak_frame_id)}">'
        f"{_map_overlay(peak)}{_zones(peak)}</figure>"
        f'<p><span class="kind {_e(inc.kind)}">{_e(inc.kind)}</span><span class="state">{state}</span></p>{advice}'
        f"<dl><dt>source</dt><dd>{_e(inc.source)}</dd><dt>start</dt><dd>{_when(inc.start)}</dd>"
        f"<dt>end</dt><dd>{end}</dd><dt>frames</dt><dd>{inc.count}</dd>"
        f"<dt>peak score</dt><dd>{inc.peak_score:.4g}{ratio}</dd><dt>peak frame</dt><dd>{_e(inc.peak_frame_id)}</dd>"
        f"<dt>index</dt><dd>{_e(inc.index)}</dd><dt>incident</dt><dd>{iid}</dd></dl>{_score_bar(peak)}"
        f"{_incident_answer(answer)}{_buttons('/mark-incident', 'incident_id', inc.id, csrf)}</article>"
    )


def card(record: ScoreRecord, answer: Optional[dict[str, Any]], csrf: str = "") -> str:
    """One flagged frame; with ``csrf`` (the viewer may mark) its "normal" / "confirmed" buttons."""
    thr = f"{record.threshold:.4g}" if record.threshold is not None else "-"
    ratio = f" ({record.score / record.threshold:.2f}x)" if record.threshold else ""
    fid = _e(record.frame_id)
    buttons = _buttons("/mark", "frame_id", record.frame_id, csrf)
    return (
        f'<article id="{fid}" data-frame-id="{fid}"><figure><img src="{_e(frame_url(record))}" alt="frame {fid}">'
        f"{_map_overlay(record)}{_zones(record)}</figure>"
        f"<dl><dt>frame</dt><dd>{fid}</dd><dt>score</dt><dd>{record.score:.4g}{ratio}</dd>"
        f"<dt>threshold</dt><dd>{thr}</dd><dt>index</dt><dd>{_e(record.index_name)} v{record.index_version}</dd>"
        f"<dt>origin</dt><dd>{_e(record.origin or '-')}</dd></dl>{_score_bar(record)}{_why(record)}"
        f"{_answer(answer)}{buttons}</article>"
    )


def _document(body: str) -> str:
    return ('<!doctype html><html lang="en"><head><meta charset="utf-8"><title>framewatch review</title>'
            f"<style>{STYLE}</style></head><body>{body}</body></html>")  # fmt: skip


IncidentShown = tuple[ReviewIncident, ScoreRecord, Optional[dict[str, Any]]]  # incident, peak record, answer


def page(by_source: dict[str, list[ScoreRecord]], answers: dict[str, dict[str, Any]], who: str, role: str,
         csrf: str, may_mark: bool, flash: str = "", error: bool = False,
         incidents: Sequence[IncidentShown] = ()) -> str:  # fmt: skip
    """The whole review page: the incidents in the order given (open first), then per source the flagged frames
    in no incident. ``answers`` maps frame id -> stored answer; ``csrf`` goes into every form."""
    mark_csrf = csrf if may_mark else ""
    n_open = sum(1 for inc, _, _ in incidents if inc.is_open)
    listed = (
        f'<section class="incidents"><h2>incidents &middot; {n_open} open, {len(incidents) - n_open} recently '
        f'closed</h2><div class="cards">{"".join(incident_card(i, p, a, mark_csrf) for i, p, a in incidents)}'
        "</div></section>"
        if incidents
        else ""
    )
    sections = listed + (
        "".join(
            f'<section data-source="{_e(src)}"><h2>{_e(src)} &middot; {len(recs)} recent anomal{"y" if len(recs) == 1 else "ies"}</h2>'
            f'<div class="cards">{"".join(card(r, answers.get(r.frame_id), mark_csrf) for r in recs)}</div></section>'
            for src, recs in by_source.items()
        )
        or ("" if incidents else '<p class="empty">No anomalies yet.</p>')
    )
    note = f'<p class="flash{" error" if error else ""}">{_e(flash)}</p>' if flash else ""
    signed = (f'<span class="who">signed in as <b>{_e(who)}</b> ({_e(role)})</span>'
              f'<form method="post" action="/logout">{_csrf(csrf)}<button>log out</button></form>')  # fmt: skip
    return _document(f"<header><h1>framewatch review</h1>{signed}</header>{note}<main>{sections}</main>")


def login_page(message: str, token_form: bool) -> str:
    """Shown to a request that is not signed in: a token form, or (behind a proxy) what to do."""
    form = (
        '<form method="post" action="/login"><label>access token <input name="token" type="password" '
        'autocomplete="off"></label><button>log in</button></form>'
        if token_form
        else ""
    )
    return _document(
        f'<header><h1>framewatch review</h1></header><div class="login"><p>{_e(message)}</p>{form}</div>'
    )
