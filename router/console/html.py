"""HTML building blocks of the console: the page frame with its inline style, tables, the
throughput sparkline as inline SVG, and forms. Everything is escaped here; nothing is loaded
from outside the page."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:center}
header a{color:#cfe0ff;text-decoration:none}header a:hover{text-decoration:underline}
header strong{font-size:1.1em}main{padding:1em 1.2em}
table{border-collapse:collapse;background:#fff;margin:.5em 0 1.5em;min-width:50%}
th,td{border:1px solid #d6d9df;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#eceef2}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#17702f}.problem{color:#a31515;font-weight:600}.off{color:#6b7280}
pre{margin:0;max-width:70em;max-height:20em;overflow:auto;white-space:pre-wrap;font-size:12px}
form{display:inline}button{font:inherit;padding:.2em .8em;cursor:pointer}
.note{color:#6b7280}.flash{background:#fff7d6;border:1px solid #e5c94c;padding:.5em .8em}
"""

NAV = (
    ("/console", "Mappings"),
    ("/console/queue", "Async queue"),
    ("/console/schedules", "Schedules"),
)


def page(title: str, body: str, *, flash: str = "") -> str:
    """A whole document: the navigation, an optional notice, then ``body`` (already HTML)."""
    links = "".join(f'<a href="{href}">{escape(text)}</a>' for href, text in NAV)
    notice = f'<p class="flash" role="status">{escape(flash)}</p>' if flash else ""
    return (
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} - router</title>'
        f'<meta name="viewport" content="width=device-width"><style>{STYLE}</style></head>'
        f"<body><header><strong>router</strong>{links}</header>"
        f"<main><h1>{escape(title)}</h1>{notice}{body}</main></body></html>\n"
    )


def text(value: object) -> str:
    return escape("" if value is None else str(value))


def when(value: datetime | None) -> str:
    return "" if value is None else escape(value.isoformat(timespec="seconds"))


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str) -> str:
    """A table of cells that are already HTML; ``empty`` (text) when there are no rows."""
    body = "".join("<tr>" + "".join(rows_cells(row)) + "</tr>" for row in rows)
    if not body:
        return f'<p class="note">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def rows_cells(row: Sequence[str]) -> Iterable[str]:
    for cell in row:
        yield cell if cell.startswith("<td") else f"<td>{cell}</td>"


def num(value: float | int) -> str:
    return f'<td class="num">{value}</td>'


def link(href: str, label: str) -> str:
    return f'<a href="{escape(href)}">{escape(label)}</a>'


def button(action: str, label: str, fields: dict[str, str] | None = None) -> str:
    """A POST form of one button (the console's only way to change anything)."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
        for k, v in (fields or {}).items()
    )
    return (
        f'<form method="post" action="{escape(action)}">{hidden}'
        f'<button type="submit">{escape(label)}</button></form>'
    )


def sparkline(values: Sequence[float], *, width: int = 120, height: int = 24) -> str:
    """Inline SVG of ``values`` (records per interval, oldest first); the title says the
    newest and the highest value."""
    if not values:
        return '<span class="note">no samples yet</span>'
    if len(values) == 1:
        values = [values[0], values[0]]  # one interval so far: a level line, not a dot
    top = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - 1 - (v / top) * (height - 2):.1f}" for i, v in enumerate(values)
    )
    label = f"last {values[-1]:g}, peak {max(values):g} records per interval"
    return (
        f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(label)}"><title>{escape(label)}</title>'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="1.5" points="{points}"/></svg>'
    )


__all__ = ["button", "link", "num", "page", "sparkline", "table", "text", "when"]
