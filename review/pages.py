"""Server-rendered HTML for the review page (pure: records and answers in, a string out; no JavaScript)."""

from __future__ import annotations

import html
import urllib.parse
from typing import Any, Optional

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
"""


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
    top = max((v for row in grid for v in row), default=0.0) or 1.0
    cells = "".join(
        f'<div style="background:rgba(255,0,0,{0.6 * v / top:.2f})"></div>' for row in grid for v in row
    )
    w = len(grid[0]) if grid else 0
    return f'<div class="map" title="anomaly map" style="grid-template-columns:repeat({w},1fr)">{cells}</div>'


def _score_bar(record: ScoreRecord) -> str:
    if not record.threshold:
        return ""
    top = max(record.score, record.threshold) * 1.1
    return (f'<div class="bar"><span style="width:{100 * record.score / top:.0f}%"></span>'
            f'<i style="left:{100 * record.threshold / top:.0f}%"></i></div>')  # fmt: skip


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


def card(record: ScoreRecord, answer: Optional[dict[str, Any]]) -> str:
    thr = f"{record.threshold:.4g}" if record.threshold is not None else "-"
    ratio = f" ({record.score / record.threshold:.2f}x)" if record.threshold else ""
    fid = _e(record.frame_id)
    buttons = (
        f'<form method="post" action="/mark" class="buttons"><input type="hidden" name="frame_id" value="{fid}">'
        '<button class="normal" name="label" value="normal">normal</button>'
        '<button class="confirmed" name="label" value="confirmed">confirmed</button></form>'
    )
    return (
        f'<article id="{fid}" data-frame-id="{fid}"><figure><img src="{_e(frame_url(record))}" alt="frame {fid}">'
        f"{_map_overlay(record)}</figure>"
        f"<dl><dt>frame</dt><dd>{fid}</dd><dt>score</dt><dd>{record.score:.4g}{ratio}</dd>"
        f"<dt>threshold</dt><dd>{thr}</dd><dt>index</dt><dd>{_e(record.index_name)} v{record.index_version}</dd>"
        f"<dt>origin</dt><dd>{_e(record.origin or '-')}</dd></dl>{_score_bar(record)}{_why(record)}"
        f"{_answer(answer)}{buttons}</article>"
    )


def page(by_source: dict[str, list[ScoreRecord]], answers: dict[str, dict[str, Any]], reviewer: str,
         flash: str = "", error: bool = False) -> str:  # fmt: skip
    """The whole review page. ``answers`` maps frame id -> stored answer."""
    sections = (
        "".join(
            f'<section data-source="{_e(src)}"><h2>{_e(src)} &middot; {len(recs)} recent anomal{"y" if len(recs) == 1 else "ies"}</h2>'
            f'<div class="cards">{"".join(card(r, answers.get(r.frame_id)) for r in recs)}</div></section>'
            for src, recs in by_source.items()
        )
        or '<p class="empty">No anomalies yet.</p>'
    )
    note = f'<p class="flash{" error" if error else ""}">{_e(flash)}</p>' if flash else ""
    who = (f'<form method="post" action="/reviewer">reviewer <input name="name" value="{_e(reviewer)}" size="12">'
           '<button>save</button></form>')  # fmt: skip
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>framewatch review</title>'
        f"<style>{STYLE}</style></head><body><header><h1>framewatch review</h1>{who}</header>"
        f"{note}<main>{sections}</main></body></html>"
    )
