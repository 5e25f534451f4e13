"""How a `splitrt hil` report is written out: tables (lists of rows of strings, a header row
first) as markdown or aligned text, and a report's blocks as markdown or HTML.

A report is a list of ``(kind, body)`` blocks: ``("h1" | "h2", title)``, ``("p", text)``,
``("table", rows)`` and ``("img", file name)``; `render_markdown` writes report.md's text from them
and `render_html` report.html's (every string escaped).
"""

from __future__ import annotations

import html
from typing import Any


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def text_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def render_markdown(blocks: list[tuple[str, Any]]) -> str:
    out = []
    for kind, body in blocks:
        if kind == "h1":
            out.append(f"# {body}\n")
        elif kind == "h2":
            out.append(f"## {body}\n")
        elif kind == "p":
            out.append(f"{body}\n")
        elif kind == "table":
            out.append(markdown_table(body) + "\n")
        elif kind == "img":
            out.append(f"![{body}]({body})\n")
    return "\n".join(out)


def render_html(blocks: list[tuple[str, Any]]) -> str:
    out = [
        "<!doctype html><html><head><meta charset='utf-8'><title>splitrt hil report</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child{text-align:left}"
        "img{max-width:100%}</style></head><body>",
    ]
    for kind, body in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{html.escape(body)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(body)}</p>")
        elif kind == "table":
            rows = "".join(
                "<tr>"
                + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c)}</{'th' if i == 0 else 'td'}>" for c in r)
                + "</tr>"
                for i, r in enumerate(body)
            )
            out.append(f"<table>{rows}</table>")
        elif kind == "img":
            out.append(f"<p><img src='{html.escape(body)}' alt='{html.escape(body)}'></p>")
    out.append("</body></html>")
    return "\n".join(out)
