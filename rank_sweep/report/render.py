"""report.md and a self-contained report.html (plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from rank_sweep.report.table import COST_NOTE


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
    # (run label, strip PNG, note) per run: first | middle | last frame of a generated clip
    samples: list[tuple[str, Path, str]] = field(default_factory=list)
    # Paired comparisons (report/paired.py): headers, rows, recommendation lines.
    paired: tuple[list[str], list[list[str]], list[str]] = ([], [], [])
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
    out += [COST_NOTE, ""]
    ph, prows, recs = c.paired
    if recs or prows:
        out += ["## Paired comparisons", ""] + [f"**{_md_cell(r)}**" for r in recs] + [""]
        out.append("| " + " | ".join(_md_cell(h) for h in ph) + " |")
        out.append("|" + "---|" * len(ph))
        out += ["| " + " | ".join(_md_cell(x) for x in row) + " |" for row in prows]
        out += ["", PAIRED_NOTE, ""]
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
    if c.samples:
        out += ["", "## Samples (first | middle | last frame)", ""]
        for label, png, note in c.samples:
            out += [
                f"**{_md_cell(label)}** {_md_cell(note)}",
                "",
                f"![{label}]({png.parent.name}/{png.name})",
                "",
            ]
    return "\n".join(out) + "\n"


PAIRED_NOTE = (
    "Paired Δ: both runs scored on the same real clips and the same generated clip indices "
    "(same first frame, prompt and noise), resampled together; a run is tied with the best "
    "when the 95% interval of its Δ to the best contains 0. Per-run intervals in the table "
    "above cover each run's own estimate; do not compare runs by overlapping them."
)

# Wide tables scroll inside their own box (the page never scrolls sideways); headers wrap,
# numbers do not; plots take the full column width. No external resources: works offline.
_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;padding:0 1em;color:#222}
.tablewrap{overflow-x:auto;max-width:100%;border:1px solid #ddd;margin:1em 0}
table{border-collapse:collapse;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}
td{white-space:nowrap}
th{background:#f0f0f0;white-space:normal;min-width:4em;position:sticky;top:0}
td:first-child,th:first-child{text-align:left;position:sticky;left:0;background:#fff}
th:first-child{background:#f0f0f0}
tr.full td{font-weight:bold;background:#f7f7ff}
.banner{background:#b00020;color:#fff;font-size:1.3em;font-weight:bold;padding:1em;margin:1em 0}
.warn{background:#fff4e5;border-left:6px solid #e67e00;padding:.5em 1em}
img{width:100%;height:auto;display:block;margin:1em 0}
img.strip{width:auto;max-width:100%;image-rendering:pixelated}
"""


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cls = ' class="full"' if row and row[0].startswith("full") else ""
        cells = "".join(f"<td>{html.escape(x)}</td>" for x in row)
        body.append(f"<tr{cls}>{cells}</tr>")
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="tablewrap">{table}</div>'


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
    parts.append(f"<p>{html.escape(COST_NOTE)}</p>")
    ph, prows, recs = c.paired
    if recs or prows:
        parts.append("<h2>Paired comparisons</h2>")
        parts += [f"<p><b>{e(r)}</b></p>" for r in recs]
        parts += [_table(ph, prows), f"<p>{e(PAIRED_NOTE)}</p>"]
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
    if c.samples:
        parts.append("<h2>Samples (first | middle | last frame)</h2>")
        for label, png, note in c.samples:
            data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
            parts.append(
                f"<h3>{e(label)}</h3><p>{e(note)}</p>"
                f'<img class="strip" alt="{e(label)}" src="data:image/png;base64,{data}">'
            )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
