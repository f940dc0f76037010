"""Report parts for issue 17: CLIP-SIM/LPIPS columns, the plateau status, one-stage vs
two-stage per rank, and the blind A/B win rates. Pure functions of the run table (plus
the vote rows), so the notebook can call them on a slice.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rank_sweep.eval.extra_metrics import EXTRA_METRICS, HIGHER_IS_BETTER, paired_interval
from rank_sweep.report.table import arm_name, baseline_rows
from rank_sweep.track import contract as C
from rank_sweep.train.early_stop import TAG_PLATEAU_STEP
from rank_sweep.train.stages import TAG_RECIPE, TAG_STAGES

# Per-dataset columns read from MLflow: <m>/<ds> and <m>_ci_lo|hi/<ds>.
EXTRA_COLUMNS = tuple(f"{m}{suffix}" for m in EXTRA_METRICS for suffix in ("", "_ci_lo", "_ci_hi"))
LABELS = {"clipsim_img": "CLIP-SIM img", "clipsim_temporal": "CLIP-SIM temporal",
          "clipsim_text": "CLIP-SIM text", "lpips": "LPIPS"}  # fmt: skip


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def extra_record(run, client=None) -> dict:
    """Fields of one MLflow run for the table (called from `load.run_record`); with a
    client, also the per-clip values of the final eval (`extra_per_clip`: ds -> metric ->
    list), which pair clip by clip with other runs."""
    tags, metrics = run.data.tags, run.data.metrics
    rec: dict = {
        "recipe": tags.get(TAG_RECIPE, "one_stage"),
        "stages": tags.get(TAG_STAGES, ""),
        "plateau_step": _int(tags.get(TAG_PLATEAU_STEP)),
        # a reused copy's artifacts stay with the run it was reused from
        "extra_per_clip": _per_clip(client, tags.get(C.TAG_REUSED_FROM) or run.info.run_id)
        if client is not None
        else {},
    }
    for key, value in metrics.items():
        if "/" in key and key.split("/", 1)[0] in EXTRA_COLUMNS:
            rec[key] = value
    return rec


def _per_clip(client, run_id: str) -> dict[str, dict[str, list[float]]]:
    out: dict[str, dict[str, list[float]]] = {}
    items = [a for a in client.list_artifacts(run_id, "extra_per_clip") if a.path.endswith(".json")]
    if not items:
        return out
    with tempfile.TemporaryDirectory() as tmp:
        for a in items:
            data = json.loads(Path(client.download_artifacts(run_id, a.path, tmp)).read_text())
            out[Path(a.path).stem] = {k: v for k, v in data.items() if k in EXTRA_METRICS}
    return out


def paired_delta(a: pd.Series, b: pd.Series, metric: str, ds: str, n_boot: int = 1000) -> str:
    """'Δ [lo, hi]' of run a minus run b over the same clips, or '–' without per-clip values."""
    va = (a.get("extra_per_clip") or {}).get(ds, {}).get(metric)
    vb = (b.get("extra_per_clip") or {}).get(ds, {}).get(metric)
    if not va or not vb or len(va) != len(vb):
        return "–"
    d, lo, hi = paired_interval(np.asarray(va), np.asarray(vb), n_boot, seed=0)
    return f"{d:+.3g} [{lo:+.3g}, {hi:+.3g}]" if np.isfinite(lo) else f"{d:+.3g}"


def _int(text: str | None) -> int | None:
    return None if text in (None, "", "None") else int(float(text))


def extra_datasets(df: pd.DataFrame) -> list[str]:
    return sorted({c.split("/", 1)[1] for c in df.columns if c.split("/", 1)[0] in EXTRA_METRICS})


def _fmt(v) -> str:
    return (
        "–" if v is None or (isinstance(v, float) and math.isnan(v)) or pd.isna(v) else f"{v:.3g}"
    )


def _cell(r: pd.Series, m: str, ds: str) -> str:
    v = r.get(f"{m}/{ds}")
    lo, hi = r.get(f"{m}_ci_lo/{ds}"), r.get(f"{m}_ci_hi/{ds}")
    if v is None or pd.isna(v):
        return "–"
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return _fmt(v)
    return f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]"


def label(r: pd.Series) -> str:
    name = arm_name(r)
    recipe = r.get("recipe") or "one_stage"
    if recipe != "one_stage":
        name += f" ({recipe.replace('_', '-')})"
    return f"{name} [{r.get('run_name') or str(r['run_id'])[:8]}]"


def status_text(r: pd.Series) -> str:
    """Plateau stops are their own status (the run's own decision), never a prune."""
    s = str(r["status"])
    step = r.get("plateau_step") if s == "stopped_plateau" else r.get("pruned_step")
    if s in ("stopped_plateau", "pruned") and step is not None and not pd.isna(step):
        s += f" @ {int(step)}"
    return s


def quality_section(df: pd.DataFrame) -> Section | None:
    names = extra_datasets(df)
    if not names:
        return None
    full = baseline_rows(df)
    base = full.iloc[0] if len(full) else None
    headers = ["run", "status"]
    for ds in names:
        headers += [f"{LABELS[m]} {ds} [95% CI]" for m in EXTRA_METRICS]
        if base is not None:
            headers += [f"Δ{LABELS[m]} {ds} vs full [paired 95% CI]" for m in EXTRA_METRICS]
    rows = []
    for _, r in df.iterrows():
        row = [label(r), status_text(r)]
        for ds in names:
            row += [_cell(r, m, ds) for m in EXTRA_METRICS]
            if base is not None:
                same = r["run_id"] == base["run_id"]
                row += [
                    "(baseline)" if same else paired_delta(r, base, m, ds) for m in EXTRA_METRICS
                ]
        rows.append(row)
    arrows = ", ".join(f"{LABELS[m]} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in EXTRA_METRICS)
    note = (f"Per-clip means over the eval clips (clip i shares first frame, prompt and noise "
            f"across runs; intervals resample the same clips). Better: {arrows}.")  # fmt: skip
    return Section("CLIP-SIM and LPIPS", headers, rows, note)


def recipe_section(df: pd.DataFrame) -> Section | None:
    """One-stage vs two-stage at each rank where both exist (last value of each metric)."""
    if "recipe" not in df or df["recipe"].nunique() < 2:
        return None
    names = extra_datasets(df)
    metric_cols = [c for c in df.columns if c.split("/", 1)[0] in ("fvd", "kid") and "/" in c]
    metric_cols += [f"{m}/{ds}" for ds in names for m in EXTRA_METRICS]
    metric_cols = [c for c in dict.fromkeys(metric_cols) if c in df]
    headers = ["method", "rank", "recipe", "stages", "status", "steps", *metric_cols]
    rows = []
    key = df["method"].astype(str) + ":" + df["rank"].astype("string").fillna("-")
    for _, grp in df.groupby(key, sort=False):
        if grp["recipe"].nunique() < 2:
            continue
        for _, r in grp.sort_values("recipe").iterrows():
            rows.append([str(r["method"]), "–" if pd.isna(r["rank"]) else str(int(r["rank"])),
                         str(r["recipe"]), str(r.get("stages") or "–"), status_text(r),
                         _fmt(r.get("steps_done"))] + [_fmt(r.get(c)) for c in metric_cols])  # fmt: skip
        one = grp[grp["recipe"] == "one_stage"]
        multi = grp[grp["recipe"] != "one_stage"]
        if len(one) == 1 and len(multi) == 1:  # paired over the same eval clips
            a, b = multi.iloc[0], one.iloc[0]
            cells = []
            for c in metric_cols:
                m, ds = c.split("/", 1)
                cells.append(paired_delta(a, b, m, ds) if m in EXTRA_METRICS
                             else f"{a.get(c) - b.get(c):+.3g}" if pd.notna(a.get(c)) and pd.notna(b.get(c))
                             else "–")  # fmt: skip
            rows.append(["", "", f"{str(a['recipe']).replace('_', '-')} − one-stage", "", "", ""]
                        + cells)  # fmt: skip
    if not rows:
        return None
    return Section("One-stage vs two-stage recipe", headers, rows,
                   "Same rank, same data and eval; two-stage = train.stages (stage 2 continues "
                   "stage 1's adapter). The difference row pairs CLIP-SIM/LPIPS clip by clip "
                   "(95% bootstrap over the same clips); FVD/KID differences are plain.")  # fmt: skip


def votes_section(df: pd.DataFrame, votes: list) -> Section | None:
    from rank_sweep.report.votes import display_rows, win_table

    if not votes:
        return None
    labels = {r["run_id"]: label(r) for _, r in df.iterrows()}
    table = win_table(votes, labels)
    headers, rows = display_rows(table)
    raters = len({v.rater for v in votes})
    note = (
        f"{len(votes)} blind A/B votes by {raters} rater(s). Win rate = (wins + ties/2) / "
        "comparisons, Wilson 95% interval; Bradley-Terry strengths (geometric mean 1)."
    )
    return Section("Blind A/B study: win rates", headers, rows, note)


def sections(df: pd.DataFrame, votes: list) -> list[Section]:
    return [s for s in (quality_section(df), recipe_section(df), votes_section(df, votes)) if s]
