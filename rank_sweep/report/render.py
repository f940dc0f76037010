"""report.md and a self-contained report.html (plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ReportContent:
    """Everything both renderings show, already as text."""

    title: str
    subtitle: str
    banner: str | None
    warnings: list[str]
    headers: list[str]
    rows: list[list[str]]
    stamp: dict[str, dict[str, str]]
    plots: dict[str, Path] = field(default_factory=dict)  # caption -> PNG
    sections: list = field(default_factory=list)  # report.extra.Section (title, table, note)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(c: ReportContent) -> str:
    out = [f"# {c.title}", "", c.subtitle, ""]
    if c.banner:
        out += [f"> **⚠ {c.banner}**", ""]
    if c.warnings:
        out += ["## Warnings", ""] + [f"- {_md_cell(w)}" for w in c.warnings] + [""]
    out += ["## Results", ""]
    out.append("| " + " | ".join(_md_cell(h) for h in c.headers) + " |")
    out.append("|" + "---|" * len(c.headers))
    out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in c.rows]
    out += ["", "Δ = run minus the full fine-tune baseline (same seed when available).", ""]
    for sec in c.sections:
        out += [f"## {sec.title}", "", "| " + " | ".join(_md_cell(h) for h in sec.headers) + " |"]
        out += ["|" + "---|" * len(sec.headers)]
        out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in sec.rows]
        out += ["", sec.note, ""] if sec.note else [""]
    out += ["## Protocol stamp", ""]
    if not c.stamp:
        out += ["No protocol stamp in any run.", ""]
    for ds, fields in c.stamp.items():
        out += [f"### {ds}", "", "| field | value |", "|---|---|"]
        out += [f"| {f} | {_md_cell(v)} |" for f, v in fields.items()] + [""]
    out += ["## Plots", ""]
    out += [f"![{cap}]({p.name})" for cap, p in c.plots.items()]
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
tr.full td{font-weight:bold;background:#f7f7ff}
.banner{background:#b00020;color:#fff;font-size:1.3em;font-weight:bold;padding:1em;margin:1em 0}
.warn{background:#fff4e5;border-left:6px solid #e67e00;padding:.5em 1em}
img{max-width:100%;display:block;margin:1em 0}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cls = ' class="full"' if row and row[0].startswith("full") else ""
        cells = "".join(f"<td>{html.escape(x)}</td>" for x in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _img(path: Path, caption: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    alt = html.escape(caption)
    return f'<h3>{alt}</h3><img alt="{alt}" src="data:image/png;base64,{data}">'


def html_page(c: ReportContent) -> str:
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{e(c.title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{e(c.title)}</h1><p>{e(c.subtitle)}</p>",
    ]
    if c.banner:
        parts.append(f'<div class="banner">⚠ {e(c.banner)}</div>')
    if c.warnings:
        items = "".join(f"<li>{e(w)}</li>" for w in c.warnings)
        parts.append(f'<div class="warn"><h2>Warnings</h2><ul>{items}</ul></div>')
    parts += ["<h2>Results</h2>", _table(c.headers, c.rows)]
    parts.append("<p>Δ = run minus the full fine-tune baseline (same seed when available).</p>")
    for sec in c.sections:
        parts += [f"<h2>{e(sec.title)}</h2>", _table(sec.headers, sec.rows)]
        if sec.note:
            parts.append(f"<p>{e(sec.note)}</p>")
    parts.append("<h2>Protocol stamp</h2>")
    if not c.stamp:
        parts.append("<p>No protocol stamp in any run.</p>")
    for ds, fields in c.stamp.items():
        parts += [
            f"<h3>{e(ds)}</h3>",
            _table(["field", "value"], [[f, v] for f, v in fields.items()]),
        ]
    parts.append("<h2>Plots</h2>")
    parts += [_img(p, cap) for cap, p in c.plots.items()]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
