"""Paired run-vs-run comparisons from the per-clip features each final eval saved.

Every run generates clip i from the same first frame, prompt and noise and is scored
against the same real clips, so the difference of two runs' FVD (or KID) is measured with
far less noise than two independent intervals suggest. For each dataset this module reads
every completed run's `eval_features/gen_features.npz`, draws ONE set of resamples (real
clip counts and generated clip-index counts, `eval/stats.py`) and computes every run's
replicates under it; the interval of a difference is then the paired bootstrap of that
difference, centred on the point difference (it always contains it).

Columns added (per dataset `<ds>`, metric `<m>` in fvd/kid):
  `pdelta_<m>_base/<ds>` (+ `_lo`, `_hi`): run minus the untrained base (finetune=none);
  `pdelta_<m>_full/<ds>` (+ `_lo`, `_hi`): run minus the full fine-tune baseline;
  `pdelta_<m>_best/<ds>` (+ `_lo`, `_hi`): run minus the best fine-tune (lowest point
  value; the base is a reference, never the best);
  `tied_best_<m>/<ds>`: the interval of the difference to the best contains 0.
The recommendation: the smallest LoRA rank tied with the best on FVD, whether it is also
tied with full fine-tuning, and what it gains over the untrained base.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rank_sweep.eval.stats import BootstrapSpec, paired_delta, replicate_table
from rank_sweep.eval.tiers import FEATURES_ARTIFACT_DIR, GEN_FEATURES_FILE
from rank_sweep.report.table import arm_name, is_base
from rank_sweep.track import contract as C

log = logging.getLogger(__name__)

METRICS = {m: C.DETECTOR_OF[m] for m in (C.FVD, C.KID)}  # metric -> feature kind in the npz
# Clip i of two runs is the same comparison only if it was generated the same way.
PAIRING_FIELDS = (
    "eval.seed", "eval.n_fake", "eval.sample_steps", "eval.guidance_scale", "eval.sampler",
    "eval.negative_prompt", "eval.sample_frames", "detector.video.sha256",
    "detector.frame.sha256", "eval.cov_ddof",
)  # fmt: skip


@dataclass
class RunFeatures:
    real: dict[str, np.ndarray]
    fake: dict[str, np.ndarray]
    stamp: dict[str, str]


def read_features(path: Path) -> RunFeatures:
    with np.load(path, allow_pickle=False) as z:
        real = {k[5:]: np.asarray(z[k]) for k in z.files if k.startswith("real_")}
        fake = {k[5:]: np.asarray(z[k]) for k in z.files if k.startswith("fake_")}
        stamp = json.loads(str(z["stamp"])) if "stamp" in z.files else {}
    return RunFeatures(real, fake, stamp)


def download_features(
    tracking_uri: str | None, run_ids: list[str], owners: dict[str, str] | None = None
) -> dict[str, RunFeatures]:
    """run id -> its final-tier features (runs without the artifact are left out). A run
    reused into a sweep is a copy whose artifacts stay with the run that did the work:
    `owners` maps such a run id to that run's id."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    owners = owners or {}
    out: dict[str, RunFeatures] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rid in run_ids:
            art = f"{FEATURES_ARTIFACT_DIR}/{GEN_FEATURES_FILE}"
            try:
                local = client.download_artifacts(owners.get(rid) or rid, art, str(Path(tmp) / rid))
            except Exception as exc:  # noqa: BLE001 - absent artifact: run is not paired
                log.info("run %s has no %s (%s): not paired", rid[:8], art, type(exc).__name__)
                continue
            out[rid] = read_features(Path(local))
    return out


def artifact_owners(df: pd.DataFrame) -> dict[str, str]:
    """run id -> the run holding its artifacts (itself, or the run it was reused from)."""
    if "reused_from" not in df:
        return {}
    return {r: f for r, f in zip(df["run_id"], df["reused_from"]) if isinstance(f, str) and f}


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)


def pairable_rows(
    df: pd.DataFrame, feats: dict[str, RunFeatures], ds: str, metric: str
) -> tuple[list[int], list[str]]:
    """Rows whose features can be paired for (ds, metric): same dataset, same real clips,
    same generated clip count. The first such run's real set is the reference."""
    kind, rows, notes, ref = METRICS[metric], [], [], None
    for i, r in df.iterrows():
        f = feats.get(r["run_id"])
        if f is None or pd.isna(r.get(f"{metric}/{ds}", np.nan)) or r["status"] != "completed":
            continue
        if f.stamp.get("eval.dataset", ds) != ds or kind not in f.fake or kind not in f.real:
            continue
        if ref is None:
            ref = f
        elif not _same(f.real[kind], ref.real[kind]) or len(f.fake[kind]) != len(ref.fake[kind]):
            notes.append(f"{r['run_name'] or r['run_id'][:8]}: other real clips or clip count")
            continue
        elif diff := [k for k in PAIRING_FIELDS if f.stamp.get(k) != ref.stamp.get(k)]:
            notes.append(f"{r['run_name'] or r['run_id'][:8]}: {', '.join(diff)} differ")
            continue
        rows.append(i)
    return rows, notes


REPLICATES = "paired_replicates"  # df.attrs key: "<metric>/<ds>" -> (run ids, reps, n_boot, seed)


def _draw(
    metric: str, feats: dict[str, RunFeatures], ids: list[str], n_boot: int, seed: int,
    level: float,
) -> np.ndarray:  # fmt: skip
    """Replicates of `metric` for runs `ids` (columns in that order), one shared resample of
    the real and the generated clip indices per row; the first run's real set is the
    reference (pairable runs share it)."""
    kind = METRICS[metric]
    first = feats[ids[0]]
    ddof = int(first.stamp.get("eval.cov_ddof", 0))
    spec = BootstrapSpec(n_boot=n_boot, seed=seed, level=level, ddof=ddof)
    return replicate_table(metric, first.real[kind], [feats[i].fake[kind] for i in ids], spec)


def replicates(
    df: pd.DataFrame, feats: dict[str, RunFeatures], metric: str, ds: str, ids: list[str],
    *, n_boot: int = 200, seed: int = 0, level: float = 0.95,
) -> np.ndarray:  # fmt: skip
    """The paired replicates of `ids` on `ds`: `add_paired`'s own (kept in df.attrs) when it
    drew them with this n_boot and seed, else drawn with the same spec (the same draws)."""
    done = df.attrs.get(REPLICATES, {}).get(f"{metric}/{ds}")
    if done is not None and done[2:] == (n_boot, seed) and set(ids) <= set(done[0]):
        return done[1][:, [done[0].index(r) for r in ids]]
    return _draw(metric, feats, ids, n_boot, seed, level)


def add_paired(
    df: pd.DataFrame,
    feats: dict[str, RunFeatures],
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[pd.DataFrame, list[str]]:
    """The paired columns (see module doc) and warnings about runs that could not be paired."""
    df = df.copy()
    warnings: list[str] = []
    datasets = sorted({c.split("/", 1)[1] for c in df.columns if c.startswith(("fvd/", "kid/"))})
    for ds in datasets:
        for metric in METRICS:
            rows, notes = pairable_rows(df, feats, ds, metric)
            warnings += [f"not paired on {ds} {metric}: {n}" for n in notes]
            if len(rows) < 2:
                continue
            ids = [str(df.at[i, "run_id"]) for i in rows]
            reps = _draw(metric, feats, ids, n_boot, seed, level)
            # kept for the other paired readings (agreement, bench_world): one bootstrap each
            df.attrs.setdefault(REPLICATES, {})[f"{metric}/{ds}"] = (ids, reps, n_boot, seed)
            points = np.array([float(df.at[i, f"{metric}/{ds}"]) for i in rows])
            tuned = [k for k, i in enumerate(rows) if not is_base(df.loc[i])]
            best = min(tuned, key=lambda k: points[k]) if tuned else None
            full = [k for k, i in enumerate(rows) if df.at[i, "method"] == C.METHOD_FULL]
            base = [k for k, i in enumerate(rows) if is_base(df.loc[i])]
            refs = (("best", best), ("full", full[0] if full else None),
                    ("base", base[0] if base else None))  # fmt: skip
            for ref_name, ref in refs:
                if ref is None:
                    continue
                for k, i in enumerate(rows):
                    ci = paired_delta(points[k], points[ref], reps[:, k], reps[:, ref], level)
                    col = f"pdelta_{metric}_{ref_name}"
                    df.loc[i, f"{col}/{ds}"] = ci.point
                    df.loc[i, f"{col}_lo/{ds}"] = ci.lo
                    df.loc[i, f"{col}_hi/{ds}"] = ci.hi
                    if ref_name == "best":
                        df.loc[i, f"tied_best_{metric}/{ds}"] = not ci.excludes_zero
    return df, warnings


def _label(r: pd.Series) -> str:
    return arm_name(r)


def recommendation(df: pd.DataFrame, ds: str, metric: str = "fvd") -> str | None:
    """One line: the smallest rank tied with the best, and whether it is tied with full."""
    col = f"tied_best_{metric}/{ds}"
    if col not in df:
        return None
    paired = df[df[col].notna()]
    tuned = paired[paired["method"] != C.METHOD_NONE]
    if tuned.empty:
        return None
    tied = tuned[tuned[col].astype(bool)]
    best = tuned.loc[tuned[f"{metric}/{ds}"].astype(float).idxmin()]
    names = ", ".join(_label(r) for _, r in tied.iterrows())
    head = f"{ds}: best {metric.upper()} {_label(best)}; tied with the best: {names}."
    base = paired[paired["method"] == C.METHOD_NONE]
    if not base.empty and bool(base.iloc[0][col]):
        head += " The untrained base is tied with the best: fine-tuning shows no gain here."
    lora = tied[(tied["method"] == C.METHOD_LORA) & tied["rank"].notna()]
    if lora.empty:
        return f"{head} No LoRA rank is tied with the best: keep {_label(best)}."
    pick = lora.loc[lora["rank"].astype(float).idxmin()]
    versus = _versus(pick, metric, ds, "full", "full fine-tuning", "no full fine-tune baseline")
    gain = _versus(pick, metric, ds, "base", "the untrained base", "")
    return (
        f"{head} Recommendation: rank {int(pick['rank'])} (smallest tied with the best), "
        f"{versus}" + (f"; {gain}" if gain else "") + "."
    )


def _versus(r: pd.Series, metric: str, ds: str, ref: str, name: str, missing: str) -> str:
    """`tied with <name>` or `better/worse than <name> (ΔM d [lo, hi])` from the paired CI."""
    c = f"pdelta_{metric}_{ref}"
    d, lo, hi = r.get(f"{c}/{ds}"), r.get(f"{c}_lo/{ds}"), r.get(f"{c}_hi/{ds}")
    if d is None or lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return f"{missing} to compare with" if missing else ""
    if lo <= 0 <= hi:
        return f"tied with {name}"
    word = "NOT tied with" if ref == "full" else "better than" if hi < 0 else "worse than"
    return f"{word} {name} (Δ{metric.upper()} {d:+.3g} [{lo:+.3g}, {hi:+.3g}])"


def paired_display(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, rows and recommendation lines of the report's paired section."""
    datasets = sorted({c.split("/", 1)[1] for c in df.columns if c.startswith("tied_best_")})
    headers = ["run"]
    with_base = any(
        f"pdelta_fvd_base/{ds}" in df and df[f"pdelta_fvd_base/{ds}"].notna().any()
        for ds in datasets
    )
    for ds in datasets:
        if with_base:
            headers.append(f"ΔFVD vs base {ds} [95% CI]")
        headers += [f"ΔFVD vs full {ds} [95% CI]", f"ΔFVD vs best {ds} [95% CI]"]
        headers += [f"tied with best (FVD) {ds}", f"ΔKID vs full {ds} [95% CI]"]
    rows = []
    for _, r in df.iterrows():
        if not any(pd.notna(r.get(f"tied_best_fvd/{ds}")) for ds in datasets):
            continue
        cells = [f"{_label(r)} [{r['run_name'] or r['run_id'][:8]}]"]
        for ds in datasets:
            if with_base:
                cells.append(_delta(r, "fvd", "base", ds))
            cells += [_delta(r, "fvd", "full", ds), _delta(r, "fvd", "best", ds)]
            tied = r.get(f"tied_best_fvd/{ds}")
            cells.append("–" if pd.isna(tied) else ("yes" if tied else "no"))
            cells.append(_delta(r, "kid", "full", ds))
        rows.append(cells)
    lines = [line for ds in datasets if (line := recommendation(df, ds))]
    return headers, rows, lines


def _delta(r: pd.Series, metric: str, ref: str, ds: str) -> str:
    c = f"pdelta_{metric}_{ref}"
    v, lo, hi = r.get(f"{c}/{ds}"), r.get(f"{c}_lo/{ds}"), r.get(f"{c}_hi/{ds}")
    if v is None or pd.isna(v):
        return "–"
    return f"{v:+.3g} [{lo:+.3g}, {hi:+.3g}]"


def drop_bad_intervals(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Blank any interval that does not contain its point (runs logged before intervals
    were centred on the point): such an interval is wrong, and results.csv never shows it."""
    df = df.copy()
    warnings = []
    for col in [c for c in df.columns if "_ci_lo/" in c]:
        name, ds = col.split("_ci_lo/")
        point, hi = f"{name}/{ds}", f"{name}_ci_hi/{ds}"
        if point not in df or hi not in df:
            continue
        bad = df[col].notna() & ~((df[col] <= df[point]) & (df[point] <= df[hi]))
        for i in df.index[bad]:
            warnings.append(
                f"{df.at[i, 'run_name'] or df.at[i, 'run_id'][:8]}: {name} interval "
                f"[{df.at[i, col]:.4g}, {df.at[i, hi]:.4g}] does not contain {df.at[i, point]:.4g}"
                " (old percentile bootstrap): dropped"
            )
        df.loc[bad, [col, hi]] = np.nan
    return df, warnings


def fig_paired(df: pd.DataFrame) -> Any:
    """ΔFVD of every run vs full and vs best with paired intervals (no clipping: negative
    differences are shown as they are)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({c.split("/", 1)[1] for c in df.columns if c.startswith("tied_best_fvd/")})
    fig, axes = plt.subplots(1, max(1, len(datasets)), figsize=(6 * max(1, len(datasets)), 4))
    axes = np.atleast_1d(axes)
    if not datasets:
        axes[0].text(0.5, 0.5, "no paired features (no completed final evals)", ha="center")
        axes[0].set_axis_off()
    for ax, ds in zip(axes, datasets):
        sub = df[df[f"tied_best_fvd/{ds}"].notna()]
        labels = [_label(r) for _, r in sub.iterrows()]
        x = np.arange(len(sub))
        refs = ((-0.2, "base", "tab:green"), (0.0, "full", "tab:blue"), (0.2, "best", "tab:orange"))
        for off, ref, color in refs:
            c = f"pdelta_fvd_{ref}"
            if f"{c}/{ds}" not in sub or sub[f"{c}/{ds}"].isna().all():
                continue
            v, lo, hi = sub[f"{c}/{ds}"], sub[f"{c}_lo/{ds}"], sub[f"{c}_hi/{ds}"]
            yerr = np.vstack([v - lo, hi - v]).astype(float)
            ax.errorbar(x + off, v, yerr=yerr, fmt="o", capsize=4, color=color, label=f"vs {ref}")
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xticks(x, labels, rotation=30)
        ax.set_ylabel("ΔFVD (run − reference), paired 95% CI")
        ax.set_title(f"paired ΔFVD on {ds}")
        ax.legend()
    fig.tight_layout()
    return fig
