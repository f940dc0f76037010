"""Table + warnings + plots -> results.csv, report.md, report.html and PNGs in one folder."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rank_sweep.report import agreement, extra, paired, plots, render
from rank_sweep.report.table import (
    add_deltas,
    csv_table,
    display_table,
    order_rows,
    protocol_stamp,
    report_banner,
    report_warnings,
)
from rank_sweep.study.store import load_votes

log = logging.getLogger(__name__)


@dataclass
class ReportPaths:
    out_dir: Path
    csv: Path
    markdown: Path
    html: Path
    plots: dict[str, Path] = field(default_factory=dict)  # name -> PNG
    warnings: list[str] = field(default_factory=list)


def build_report(
    df: pd.DataFrame,
    out_dir: Path,
    *,
    title: str | None = None,
    features: dict[str, paired.RunFeatures] | None = None,
    votes: list | None = None,
) -> ReportPaths:
    """Write the report of the runs in `df` (as `load_runs` returns, possibly sliced).

    Rows are re-ordered and deltas recomputed, so a slice (one seed, some ranks) gets a
    report of its own. Warnings are logged and written into both documents.
    """
    if df.empty:
        raise ValueError("no runs to report: the table is empty (check --experiment / --sweep)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = add_deltas(order_rows(df))
    # Paired comparisons from the runs' saved per-clip features (eval_features artifact).
    df, bad_ci = paired.drop_bad_intervals(df)
    if features is None:
        uri = df.attrs.get("tracking_uri")
        owners = paired.artifact_owners(df)  # reused runs: artifacts at the source run
        features = paired.download_features(uri, list(df["run_id"]), owners) if uri else {}
    df, unpaired = paired.add_paired(df, features)
    agree_sections, agree_warnings = agreement.sections(df, features)
    warnings = report_warnings(df) + bad_ci + unpaired + agree_warnings
    for w in warnings:
        log.warning("%s", w)

    figures = {
        "fvd_vs_rank": ("FVD vs LoRA rank", lambda: plots.fig_metric_vs_rank(df, "fvd")),
        "kid_vs_rank": ("KID vs LoRA rank", lambda: plots.fig_metric_vs_rank(df, "kid")),
        "fvd_vs_params": ("FVD vs trainable parameters", lambda: plots.fig_fvd_vs_params(df)),
        "fvd_over_steps": ("FVD over training steps", lambda: plots.fig_fvd_over_steps(df)),
        "paired_fvd": ("Paired ΔFVD vs full and vs best", lambda: paired.fig_paired(df)),
    }
    for m in ("lpips", "clipsim_img", "clipsim_temporal", "clipsim_text"):
        if any(c.startswith(f"{m}/") for c in df.columns):
            figures[f"{m}_vs_rank"] = (f"{extra.LABELS[m]} vs LoRA rank",
                                       lambda m=m: plots.fig_metric_vs_rank(df, m))  # fmt: skip
    if votes is None:
        votes = load_votes(df.attrs.get("sweep_id") or "unparented")
    pngs: dict[str, Path] = {}
    captions: dict[str, Path] = {}
    for name, (caption, make) in figures.items():
        pngs[name] = plots.save_png(make(), out_dir / f"{name}.png")
        captions[caption] = pngs[name]

    csv = out_dir / "results.csv"
    csv_table(df).to_csv(csv, index=False)

    sweep = df.attrs.get("sweep_id")
    headers, rows = display_table(df)
    subtitle = (
        f"sweep {sweep or '(runs without a parent)'} · {len(df)} runs · "
        f"experiment {df.attrs.get('experiment', '?')} · store {df.attrs.get('tracking_uri', '?')}"
    )
    from rank_sweep.report.samples import collect_strips

    strips = [
        (s.label, s.png, f"side-by-side video (real | generated): artifact {s.video_artifact} of run {s.run_id}"
         if s.video_artifact else f"run {s.run_id}")
        for s in collect_strips(df, out_dir)
    ]  # fmt: skip
    content = render.ReportContent(
        title=title or f"LoRA rank sweep {sweep or ''}".strip(),
        subtitle=subtitle,
        banner=report_banner(df),
        warnings=warnings,
        headers=headers,
        rows=rows,
        stamp=protocol_stamp(df),
        plots=captions,
        samples=strips,
        paired=paired.paired_display(df),
        sections=agree_sections + extra.sections(df, votes),
    )
    md = out_dir / "report.md"
    md.write_text(render.markdown(content), encoding="utf-8")
    page = out_dir / "report.html"
    page.write_text(render.html_page(content), encoding="utf-8")
    log.info("report written to %s", out_dir)
    return ReportPaths(out_dir, csv, md, page, pngs, warnings)
