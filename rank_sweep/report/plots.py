"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Figures are built without pyplot so that a library call never touches the global
backend (the notebook keeps its inline one); `save_png` renders through Agg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from rank_sweep.report.table import (
    BASE_NAME,
    arm_name,
    baseline_rows,
    datasets,
    is_base,
    pareto_mask,
)
from rank_sweep.track import contract as C

METRIC_LABEL = {"fvd": "FVD (lower is better)", "kid": "KID (lower is better)"}


def _axes(n: int, title: str) -> tuple[Figure, list]:
    # One dataset per row, wide enough for a legend beside the data (never on top of it).
    n = max(n, 1)
    fig = Figure(figsize=(9.0, 4.6 * n), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    fig.suptitle(title)
    return fig, list(axes)


def _legend(ax, **kw) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, **kw)


def _clean_log_x(ax) -> None:
    """Log axes get minor tick labels that overlap the major ones: keep majors only."""
    ax.xaxis.set_minor_formatter(NullFormatter())


def _empty_if_no_datasets(axes: list, names: list[str]) -> None:
    if not names:
        _no_data(axes[0], "FVD/KID metrics in any run")


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what}", ha="center", va="center", transform=ax.transAxes)


def _yerr(v: pd.Series, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    # CIs absent (pruned runs, no bootstrap) give NaN bars, which matplotlib leaves out.
    # Intervals contain their points (eval/stats.py): nothing to clip, nothing hidden.
    return np.vstack([v - lo, hi - v]).astype(float)


def _col(df: pd.DataFrame, name: str) -> pd.Series:
    return df[name] if name in df else pd.Series(np.nan, index=df.index)


def _base_line(ax, df: pd.DataFrame, col: str) -> None:
    """The untrained base as a dotted line across the axes: where every gain starts."""
    base = df[df.apply(is_base, axis=1) & _col(df, col).notna()] if len(df) else df
    if not base.empty:
        ax.axhline(float(base.iloc[0][col]), color="grey", ls=":", lw=1.5, label=BASE_NAME)


def _rank_colors(df: pd.DataFrame) -> dict[int, tuple]:
    ranks = sorted(int(r) for r in df["rank"].dropna().unique())
    cmap = colormaps["viridis"]
    return {r: cmap(i / max(len(ranks) - 1, 1) * 0.9) for i, r in enumerate(ranks)}


def fig_metric_vs_rank(df: pd.DataFrame, metric: str = "fvd") -> Figure:
    """`metric` per dataset against LoRA rank (log2), 95% CI bars, full baseline as a band."""
    names = datasets(df)
    fig, axes = _axes(len(names), f"{metric.upper()} vs LoRA rank")
    _empty_if_no_datasets(axes, names)
    full = baseline_rows(df)
    for ax, ds in zip(axes, names):
        col = C.dataset_metric(metric, ds)
        lora = df[(df["method"] == "lora") & df["rank"].notna() & _col(df, col).notna()]
        for seed, grp in lora.groupby(lora["seed"].astype("float").fillna(-1), sort=True):
            grp = grp.sort_values("rank")
            label = "LoRA" if seed < 0 or lora["seed"].nunique() < 2 else f"LoRA seed {int(seed)}"
            x = grp["rank"].astype(float)
            v = grp[col]
            lo, hi = C.ci_metric(metric, "lo", ds), C.ci_metric(metric, "hi", ds)
            yerr = _yerr(v, _col(grp, lo), _col(grp, hi))
            ax.errorbar(x, v, yerr=yerr, fmt="o-", capsize=4, label=label)
            pruned = grp["status"] == "pruned"
            if pruned.any():
                ax.plot(x[pruned], v[pruned], "x", color="crimson", ms=11, mew=2, label="pruned")
        have = full[_col(full, col).notna()]
        if not have.empty:
            b = have.iloc[0]
            ax.axhline(b[col], color="k", ls="--", label="full fine-tune")
            lo = b.get(C.ci_metric(metric, "lo", ds), np.nan)
            hi = b.get(C.ci_metric(metric, "hi", ds), np.nan)
            if not (pd.isna(lo) or pd.isna(hi)):
                ax.axhspan(lo, hi, color="k", alpha=0.12, label="full 95% CI")
        _base_line(ax, df, col)
        if lora.empty:
            _no_data(ax, "LoRA runs with " + col)
        else:
            ranks = sorted(lora["rank"].astype(int).unique())
            ax.set_xscale("log", base=2)
            ax.set_xticks(ranks, [str(r) for r in ranks])
            _clean_log_x(ax)
        ax.set(title=ds, xlabel="LoRA rank (log2)", ylabel=METRIC_LABEL.get(metric, metric))
        ax.grid(alpha=0.3)
        _legend(ax)
    return fig


def fig_fvd_vs_params(df: pd.DataFrame) -> Figure:
    """FVD against trainable parameters (log), Pareto front (fewer params, lower FVD) marked."""
    names = datasets(df)
    fig, axes = _axes(len(names), "FVD vs trainable parameters")
    _empty_if_no_datasets(axes, names)
    colors = _rank_colors(df)
    for ax, ds in zip(axes, names):
        col = C.dataset_metric(C.FVD, ds)
        # the base trains nothing (0 params, off a log axis): a line, not a point
        pts = df[_col(df, col).notna() & (df["trainable_params"] > 0)]
        if pts.empty:
            _no_data(ax, col)
        _base_line(ax, df, col)
        for _, r in pts.iterrows():
            is_full = r["method"] == C.METHOD_FULL
            color = "k" if is_full or pd.isna(r["rank"]) else colors[int(r["rank"])]
            label = arm_name(r, short=True)
            marker = "x" if r["status"] == "pruned" else "s" if is_full else "o"
            ax.plot(r["trainable_params"], r[col], marker, color=color, ms=8, mew=2)
            ax.annotate(label, (r["trainable_params"], r[col]), textcoords="offset points",
                        xytext=(5, 5), fontsize=8)  # fmt: skip
        # Only finished runs compete: a pruned run's FVD is from an earlier step.
        done = pts[pts["status"] == "completed"]
        mask = pareto_mask(done["trainable_params"].to_numpy(), done[col].to_numpy())
        front = done[mask].sort_values("trainable_params")
        if not front.empty:
            ax.plot(
                front["trainable_params"], front[col], "-", color="crimson", drawstyle="steps-post"
            )
            ax.plot(front["trainable_params"], front[col], "o", ms=14, mfc="none", mec="crimson")
        handles = [
            Line2D([], [], color="crimson", marker="o", mfc="none", ms=10, label="Pareto front (completed)"),
            Line2D([], [], color="k", marker="s", ls="none", label="full fine-tune"),
            Line2D([], [], color="grey", marker="o", ls="none", label="LoRA rank"),
            Line2D([], [], color="grey", marker="x", ls="none", mew=2, label="pruned"),
        ]  # fmt: skip
        if ax.get_legend_handles_labels()[0]:  # the base line
            handles.append(Line2D([], [], color="grey", ls=":", lw=1.5, label=BASE_NAME))
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_xscale("log")
        _clean_log_x(ax)
        ax.margins(x=0.12, y=0.12)  # room for the labels beside the outermost points
        ax.set(title=ds, xlabel="trainable parameters (log)", ylabel=METRIC_LABEL["fvd"])
        ax.grid(alpha=0.3, which="major")
    return fig


def fig_fvd_over_steps(df: pd.DataFrame) -> Figure:
    """The periodic tier's FVD (validation slice, light protocol) at each eval, one line per
    run, and each completed run's final-tier FVD (test split) as a diamond with its 95% CI at
    its last step: two tiers, told apart in the legend, never joined. Pruned runs end in a
    red cross; the untrained base is the dotted line (final tier)."""
    names = datasets(df)
    fig, axes = _axes(len(names), "FVD over training steps")
    _empty_if_no_datasets(axes, names)
    colors = _rank_colors(df)
    for ax, ds in zip(axes, names):
        drawn = 0
        widths: list[float] = []
        final_col = C.dataset_metric(C.FVD, ds)
        for _, r in df.iterrows():
            if is_base(r):  # scored once at step 0 by the final tier: the line below
                continue
            hist = r.get("fvd_history")
            hist = hist.get(ds) if isinstance(hist, dict) else None
            is_full = r["method"] == C.METHOD_FULL
            color = "k" if is_full or pd.isna(r["rank"]) else colors[int(r["rank"])]
            label = arm_name(r, short=True)
            if not pd.isna(r["seed"]) and df["seed"].nunique() > 1:
                label += f" s{int(r['seed'])}"
            if hist:
                steps, vals = zip(*hist)
                ax.plot(steps, vals, "--" if is_full else "-o", color=color, ms=3, label=label)
                drawn += 1
                if r["status"] == "pruned":
                    at = int(r["pruned_step"]) if not pd.isna(r["pruned_step"]) else steps[-1]
                    y = vals[steps.index(at)] if at in steps else vals[-1]
                    ax.plot([at], [y], "x", color="crimson", ms=12, mew=2)
                    ax.annotate(f"pruned @ {at}", (at, y), textcoords="offset points",
                                xytext=(4, -12), fontsize=8, color="crimson")  # fmt: skip
            v = r.get(final_col, np.nan)
            if pd.isna(v) or pd.isna(r.get("steps_done", np.nan)):
                continue
            lo, hi = r.get(f"fvd_ci_lo/{ds}", np.nan), r.get(f"fvd_ci_hi/{ds}", np.nan)
            yerr = None if pd.isna(lo) or pd.isna(hi) else [[v - lo], [hi - v]]
            ax.errorbar([r["steps_done"]], [v], yerr=yerr, fmt="D", color=color, ms=6, capsize=4,
                        lw=1.5, label=None if hist else label)  # fmt: skip
            drawn += 1
            if yerr is not None:
                widths.append(float(hi - lo))
        _base_line(ax, df, final_col)
        if drawn == 0:
            _no_data(ax, f"fvd/{ds} history")
        else:
            ax.plot([], [], "D", color="grey", label="final tier (test), 95% CI")
            ax.plot([], [], "-o", color="grey", ms=3, label="periodic tier (val slice)")
            _legend(ax)
            _at_least_interval_scale(ax, widths)
        ax.set(title=ds, xlabel="training step", ylabel=METRIC_LABEL["fvd"])
        ax.grid(alpha=0.3)
    return fig


def _at_least_interval_scale(ax, widths: list[float]) -> None:
    """Differences smaller than one interval are noise: never zoom the y axis in further
    than twice the typical interval width, so noise does not look like signal."""
    if not widths:
        return
    span = 2.0 * float(np.median(widths))
    lo, hi = ax.get_ylim()
    if hi - lo < span:
        mid = (lo + hi) / 2
        ax.set_ylim(mid - span / 2, mid + span / 2)


def save_png(fig: Figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=110)
    return path
