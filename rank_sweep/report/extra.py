"""Report parts for issue 17: CLIP-SIM/LPIPS columns, the plateau status, one-stage vs
two-stage per rank, and the blind A/B win rates. Pure functions of the run table (plus
the vote rows), so the notebook can call them on a slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from rank_sweep.eval.extra_metrics import EXTRA_METRICS, HIGHER_IS_BETTER

# Per-dataset columns read from MLflow: <m>/<ds> and <m>_ci_lo|hi/<ds>.
EXTRA_COLUMNS = tuple(f"{m}{suffix}" for m in EXTRA_METRICS for suffix in ("", "_ci_lo", "_ci_hi"))
TAG_RECIPE = "rank_sweep.recipe"  # one_stage | two_stage
TAG_STAGES = "rank_sweep.stages"  # name:view:start-end|...
TAG_PLATEAU_STEP = "rank_sweep.plateau_step"
LABELS = {"clipsim_img": "CLIP-SIM img", "clipsim_temporal": "CLIP-SIM temporal",
          "clipsim_text": "CLIP-SIM text", "lpips": "LPIPS"}  # fmt: skip


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def extra_record(run) -> dict:
    """Fields of one MLflow run for the table (called from `load.run_record`)."""
    tags, metrics = run.data.tags, run.data.metrics
    rec: dict = {
        "recipe": tags.get(TAG_RECIPE, "one_stage"),
        "stages": tags.get(TAG_STAGES, ""),
        "plateau_step": _int(tags.get(TAG_PLATEAU_STEP)),
    }
    for key, value in metrics.items():
        if "/" in key and key.split("/", 1)[0] in EXTRA_COLUMNS:
            rec[key] = value
    return rec


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
    name = (
        "full"
        if r["method"] == "full"
        else f"lora r={'?' if pd.isna(r['rank']) else int(r['rank'])}"
    )
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
    headers = ["run", "status"]
    for ds in names:
        headers += [f"{LABELS[m]} {ds} [95% CI]" for m in EXTRA_METRICS]
    rows = []
    for _, r in df.iterrows():
        row = [label(r), status_text(r)]
        for ds in names:
            row += [_cell(r, m, ds) for m in EXTRA_METRICS]
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
    if not rows:
        return None
    return Section("One-stage vs two-stage recipe", headers, rows,
                   "Same rank, same data and eval; two-stage = train.stages (stage 2 continues "
                   "stage 1's adapter).")  # fmt: skip


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
