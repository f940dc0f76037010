"""The results table: derived columns, baseline deltas, and what the report must warn about.

Pure functions of a DataFrame (one row per run, as `load.load_runs` returns), so the
notebook can slice the table and rebuild any of it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from rank_sweep.track import contract as C

# Every stamped protocol field must agree across runs (detector name/sha/pretrained, clip
# counts, frames, resolution, split, sampling steps, KID subset size), except these: the
# eval seed may follow train.seed, the dataset is the key itself, a file path is per machine,
# a detector's `weights` restates its sha256 (compared already; older runs lack the field).
# Matching by the field's last dotted part keeps both stamp layouts working
# (`detector_sha256` and `detector.video.sha256`, `n_real` and `eval.n_real`).
IGNORED_FIELDS = ("seed", "dataset", "file", C.WEIGHTS_FIELD)


def compared_field(field: str) -> bool:
    return field.rsplit(".", 1)[-1] not in IGNORED_FIELDS


RANDOM_INIT_BANNER = (
    "RANDOM-INIT DETECTOR: numbers only compare these runs with each other "
    "(not with published FVD/KID)"
)
# Every unpublished detector was trained by the project (the embedded world's): its
# features see content, but its numbers are no more comparable with papers.
PROJECT_TRAINED_BANNER = (
    "PROJECT-TRAINED DETECTOR (no published network): numbers only compare these runs with "
    "each other (not with published FVD/KID)"
)


BASE_NAME = "base, no fine-tune"


def is_base(r: pd.Series) -> bool:
    """The untrained base (finetune=none): a reference row, never a candidate."""
    return r["method"] == C.METHOD_NONE


def arm_name(r: pd.Series, short: bool = False) -> str:
    """The one name of a run's setting across the report: `base, no fine-tune` | `full` |
    `lora r=8` (short, for plot labels: `base` | `full` | `r=8`)."""
    if is_base(r):
        return "base" if short else BASE_NAME
    if r["method"] == C.METHOD_FULL:
        return "full"
    rank = "?" if pd.isna(r["rank"]) else str(int(r["rank"]))
    return f"r={rank}" if short else f"{r['method']} r={rank}"


def datasets(df: pd.DataFrame) -> list[str]:
    """Datasets with an FVD or KID column, sorted."""
    return C.metric_datasets(df.columns)


def _protocol_fields(df: pd.DataFrame) -> dict[str, list[str]]:
    """dataset -> stamped fields; dataset names with dots are told apart by the datasets
    the runs name (metric columns, data.name)."""
    known = set(datasets(df))
    if "data_name" in df:
        known |= {str(v) for v in df["data_name"].dropna()}
    return C.protocol_fields(df.columns, known)


def protocol_datasets(df: pd.DataFrame) -> list[str]:
    return list(_protocol_fields(df))


def compute_hours(step_time_s: float, steps_done: float, nproc: float) -> float:
    """Device-hours of a run: every process holds one device for every step."""
    return step_time_s * steps_done * nproc / 3600.0


def pareto_mask(cost: np.ndarray, loss: np.ndarray) -> np.ndarray:
    """True where no other point has cost <= and loss <= with one strictly less (NaNs never)."""
    cost, loss = np.asarray(cost, float), np.asarray(loss, float)
    ok = ~(np.isnan(cost) | np.isnan(loss))
    mask = np.zeros(len(cost), bool)
    for i in np.flatnonzero(ok):
        dominated = (
            ok & (cost <= cost[i]) & (loss <= loss[i]) & ((cost < cost[i]) | (loss < loss[i]))
        )
        mask[i] = not dominated.any()
    return mask


def derive_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add % of full, weights MB, device-hours and the vs-full deltas; order the rows."""
    df = df.copy()
    if df.empty:
        return df
    df["rank"] = df["rank"].astype("Int64")
    df["seed"] = df["seed"].astype("Int64")
    df["pruned_step"] = df["pruned_step"].astype("Int64")
    df["trainable_pct"] = 100.0 * df["trainable_params"] / df["total_params"]
    df["adapter_mb"] = df["adapter_bytes"] / 2**20
    df["compute_hours"] = [
        compute_hours(t, s, n) for t, s, n in zip(df["step_time_s"], df["steps_done"], df["nproc"])
    ]
    df["compute_unit"] = [
        "GPU" if str(d).startswith("cuda") else "CPU" for d in df["device"].fillna("")
    ]
    return add_deltas(order_rows(df))


def order_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The untrained base first, the full baseline next, then LoRA by rank, then by seed."""
    order = {C.METHOD_NONE: 0, C.METHOD_FULL: 1}
    key = pd.DataFrame(
        {
            "m": df["method"].map(lambda m: order.get(m, 2)),
            "r": df["rank"].astype("float").fillna(-1),
            "s": df["seed"].astype("float").fillna(-1),
        }
    )
    return df.loc[key.sort_values(["m", "r", "s"], kind="stable").index].reset_index(drop=True)


def baseline_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Completed full fine-tunes (those in the sweep first)."""
    full = df[(df["method"] == C.METHOD_FULL) & (df["status"] == C.COMPLETED)]
    if "in_sweep" not in full:  # a hand-made slice: every row is the sweep's own
        return full
    return full.sort_values("in_sweep", ascending=False, kind="stable")


def _baseline_for(full: pd.DataFrame, seed) -> pd.Series | None:
    # Same seed when there is one, so seed noise does not masquerade as a rank effect.
    if full.empty:
        return None
    same = full[full["seed"] == seed] if not pd.isna(seed) else full.iloc[0:0]
    return (same if not same.empty else full).iloc[0]


def add_deltas(df: pd.DataFrame) -> pd.DataFrame:
    """`delta_fvd/<ds>`, `delta_kid/<ds>`: run minus its full baseline (NaN without one)."""
    df = df.copy()
    full = baseline_rows(df)
    for ds in datasets(df):
        for m in (C.FVD, C.KID):
            col = C.dataset_metric(m, ds)
            if col not in df:
                continue
            out = []
            have = full[full[col].notna()]  # a baseline on another dataset does not count
            for _, row in df.iterrows():
                base = _baseline_for(have, row["seed"])
                out.append(np.nan if base is None else row[col] - base[col])
            df[C.dataset_metric(f"delta_{m}", ds)] = out
    return df


def check_protocols(df: pd.DataFrame) -> list[str]:
    """One warning per protocol field that differs across runs, and per run whose FVD/KID
    has no protocol stamp. Empty list: every number was measured the same way."""
    warnings: list[str] = []
    fields = _protocol_fields(df)
    for ds in sorted(set(datasets(df)) | set(fields)):
        metric_cols = [c for c in (C.dataset_metric(m, ds) for m in (C.FVD, C.KID)) if c in df]
        none = pd.Series(False, index=df.index)
        has_metric = df[metric_cols].notna().any(axis=1) if metric_cols else none
        stamp_cols = [C.protocol_param(ds, f) for f in fields.get(ds, [])]
        stamped = df[stamp_cols].notna().any(axis=1) if stamp_cols else none
        for _, row in df[has_metric & ~stamped].iterrows():
            warnings.append(f"{run_label(row)}: {ds} metrics have no protocol stamp")
        for field, col in zip(fields.get(ds, []), stamp_cols):
            if not compared_field(field):
                continue
            # Only runs that report this dataset's FVD/KID: a run pruned before the final
            # tier has no final stamp, and its missing fields are not a mixed protocol.
            values = df.loc[stamped & has_metric, col].fillna("<missing>").astype(str)
            if values.nunique() > 1:
                groups = "; ".join(
                    f"{v} ({', '.join(run_label(df.loc[i]) for i in idx)})"
                    for v, idx in values.groupby(values).groups.items()
                )
                warnings.append(f"mixed protocol on {ds}: {field} differs: {groups}")
    return warnings


def random_init(df: pd.DataFrame) -> bool:
    """True when any run's metrics came from a random-init detector."""
    cols = [
        C.protocol_param(ds, f)
        for ds, fs in _protocol_fields(df).items()
        for f in fs
        if f.endswith("pretrained")  # `detector.pretrained` and the older `detector_pretrained`
    ]
    return any(str(v).strip().lower() == "false" for c in cols for v in df[c].dropna())


def random_weight_metrics(df: pd.DataFrame) -> list[str]:
    """`KID ucf101`, ...: final-tier metrics whose detector had seeded random weights in any
    run (stamp `detector.<kind>.weights: random`). Random features follow pixel statistics,
    so such a metric need not rank videos by quality (in the embedded world a random-init
    Inception's KID scored the untrained base best); a project-trained detector is
    pretrained=false but not random."""
    out = []
    for ds, fields in _protocol_fields(df).items():
        for metric in (C.FVD, C.KID):
            field = f"detector.{C.DETECTOR_OF[metric]}.{C.WEIGHTS_FIELD}"
            if field in fields and (df[C.protocol_param(ds, field)] == C.WEIGHTS_RANDOM).any():
                out.append(f"{metric.upper()} {ds}")
    return out


def _only_project_trained(df: pd.DataFrame) -> bool:
    """Every detector stamped pretrained=false (`[periodic.]detector.<kind>.pretrained`) says
    `weights: project-trained` beside it, in every run. A random detector, or a run logged
    before the `weights` field (only a summary `detector.pretrained`), makes it False."""
    col = C.protocol_param
    kind_fields, summary_fields = [], []
    for ds, fs in _protocol_fields(df).items():
        for f in fs:
            parts = f.split(".")
            if parts[-1] != "pretrained" and not f.endswith("detector_pretrained"):
                continue
            if len(parts) >= 3 and parts[-3] == "detector":  # [periodic.]detector.<kind>.pretrained
                weights = ".".join([*parts[:-1], C.WEIGHTS_FIELD])
                kind_fields.append((col(ds, f), col(ds, weights)))
            else:  # detector.pretrained, periodic.detector.pretrained, detector_pretrained
                summary_fields.append(col(ds, f))
    seen = False
    for _, r in df.iterrows():
        kinds = [(p, w) for p, w in kind_fields if str(r[p]).lower() == "false"]
        if any(w not in r or r[w] != C.WEIGHTS_PROJECT for _, w in kinds):
            return False
        if not kinds and any(str(r[c]).lower() == "false" for c in summary_fields):
            return False  # unpublished, but which detector and what weights is not stamped
        seen = seen or bool(kinds)
    return seen


def report_banner(df: pd.DataFrame) -> str | None:
    """The red line above the table: no published detector (random-init or project-trained),
    and which metrics rest on random weights."""
    if not random_init(df):
        return None
    if _only_project_trained(df):
        return PROJECT_TRAINED_BANNER
    rnd = random_weight_metrics(df)
    if not rnd:
        return RANDOM_INIT_BANNER
    return (
        f"{RANDOM_INIT_BANNER}; {', '.join(rnd)} from random weights: pixel statistics, not quality"
    )


def run_label(row: pd.Series) -> str:
    return f"{arm_name(row)} [{row['run_name'] or row['run_id'][:8]}]"


def _missing_final(row: pd.Series, names: list[str]) -> list[str]:
    # A run owes final metrics on its own data (data.name) and on whatever it evaluated;
    # a sweep over data=ucf101,kinetics400 has runs that never see the other dataset.
    own = {
        ds
        for ds in names
        if any(pd.notna(row.get(C.dataset_metric(m, ds))) for m in (C.FVD, C.KID))
    }
    if row.get("data_name") in names:
        own.add(row["data_name"])
    final = (C.FVD, C.KID, C.ci_name(C.FVD, "lo"), C.ci_name(C.FVD, "hi"))
    need = [C.dataset_metric(m, ds) for ds in sorted(own or names) for m in final]
    return [c for c in need if c not in row.index or pd.isna(row[c])]


def report_warnings(df: pd.DataFrame) -> list[str]:
    """Everything the reader must know before trusting a comparison, one line each."""
    if df.empty:
        return ["no runs found: nothing to compare"]
    out: list[str] = []
    names = datasets(df)
    full = baseline_rows(df)
    if full.empty:
        out.append(
            "no baseline: no completed full fine-tune run, so deltas vs full are not available "
            "(run `make baseline-full` with the same data and eval settings)"
        )
    for _, row in full[~full["in_sweep"]].iterrows():
        out.append(
            f"baseline borrowed from outside the sweep: {run_label(row)} "
            f"(sweep {row['sweep_id'] or 'none'}); check the protocol stamp below"
        )
    for _, row in df.iterrows():
        status = row["status"]
        if status == "failed":
            err = f": {row['error']}" if row["error"] else ""
            out.append(f"missing run: {run_label(row)} failed{err}")
        elif status not in ("completed", "pruned", "stopped_plateau"):
            out.append(
                f"missing run: {run_label(row)} has no final status (still running or killed)"
            )
        elif status in ("completed", "stopped_plateau") and (miss := _missing_final(row, names)):
            out.append(f"missing final metrics: {run_label(row)} lacks {', '.join(miss)}")
    dup = df[df["status"] != "failed"].groupby(
        [
            df["method"],
            df["rank"].astype("float").fillna(-1),
            df["seed"].astype("float").fillna(-1),
            df["data_name"].fillna(""),
            df.get("recipe", pd.Series("", index=df.index)).fillna(""),  # 1- vs 2-stage (i17)
        ]
    )
    for _, group in dup:
        if len(group) > 1:
            out.append(
                f"several runs for the same setting, all shown: "
                f"{', '.join(run_label(r) for _, r in group.iterrows())}"
            )
    return out + check_protocols(df)


def protocol_stamp(df: pd.DataFrame) -> dict[str, dict[str, str]]:
    """dataset -> field -> value (distinct values joined by ' | ' when runs disagree)."""
    stamp: dict[str, dict[str, str]] = {}
    for ds, fields in _protocol_fields(df).items():
        stamp[ds] = {
            f: " | ".join(sorted(df[C.protocol_param(ds, f)].dropna().astype(str).unique()))
            for f in fields
        }
    return stamp


def _fmt(x, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return "–"
    return format(x, spec)


def _with_ci(v, lo, hi) -> str:
    if pd.isna(v):
        return "–"
    if pd.isna(lo) or pd.isna(hi):
        return _fmt(v)
    return f"{_fmt(v)} [{_fmt(lo)}, {_fmt(hi)}]"


def _signed(x, is_base: bool = False) -> str:
    if is_base:
        return "(baseline)"
    return "–" if pd.isna(x) else f"{x:+.3g}"


def _dataset_cells(r: pd.Series, ds: str, is_full: bool) -> list[str]:
    def g(k: str):
        return r.get(C.dataset_metric(k, ds), np.nan)

    def ci(m: str):
        return _with_ci(g(m), g(C.ci_name(m, "lo")), g(C.ci_name(m, "hi")))

    return [
        ci(C.FVD),
        _signed(g("delta_fvd"), is_full),
        ci(C.KID),
        _signed(g("delta_kid"), is_full),
        _fmt(g("best_fvd")),
    ]


def _alpha_cell(r: pd.Series) -> str:
    """`16 (ratio, scale 2)`: the alpha peft received, how it was chosen, the update scale."""
    if pd.isna(r["alpha"]):
        return "–"
    scale = r.get("lora_scale", np.nan)
    extra = "" if pd.isna(scale) else f", scale {scale:.3g}"
    return f"{r['alpha']:g} ({r['alpha_mode']}{extra})"


def display_table(df: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """Headers and string cells of the human table (markdown and HTML share it)."""
    names = datasets(df)
    multi_seed = df["seed"].dropna().nunique() > 1
    headers = ["method", "rank"] + (["seed"] if multi_seed else [])
    headers += ["alpha (mode, scale)", "trainable (% full)", "weights MB", "steps", "status"]
    for ds in names:
        headers += [f"FVD {ds} [95% CI]", f"ΔFVD {ds}", f"KID {ds} [95% CI]", f"ΔKID {ds}"]
        headers += [f"best FVD {ds}"]
    headers += ["step s median (p10–p90)", "peak MB", "device-h"]
    full = baseline_rows(df)
    full_ids = set(full["run_id"])
    rows = []
    for _, r in df.iterrows():
        is_full = r["run_id"] in full_ids
        method = BASE_NAME if is_base(r) else str(r["method"])
        cells = [method + ("" if r["in_sweep"] else " (borrowed)")]
        cells.append("–" if pd.isna(r["rank"]) else str(int(r["rank"])))
        if multi_seed:
            cells.append("–" if pd.isna(r["seed"]) else str(int(r["seed"])))
        cells += [
            _alpha_cell(r),
            f"{_fmt(r['trainable_params'], ',.0f')} ({_fmt(r['trainable_pct'])}%)",
        ]
        cells += [_fmt(r["adapter_mb"]), _fmt(r["steps_done"], ".0f")]
        status = str(r["status"])
        if status == "pruned" and not pd.isna(r["pruned_step"]):
            status += f" @ {int(r['pruned_step'])}"
        elif status == "stopped_plateau" and not pd.isna(r.get("plateau_step", np.nan)):
            status += f" @ {int(r['plateau_step'])}"  # a run's own stop, not a prune (issue 17)
        cells.append(status)
        for ds in names:
            cells += _dataset_cells(r, ds, is_full)
        hours = f"{_fmt(r['compute_hours'])} {r['compute_unit']}"
        cells += [_step_time_cell(r), _fmt(r["peak_mem_mb"], ".0f"), hours]
        rows.append(cells)
    return headers, rows


def long_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """Tidy view for slicing: one row per (run, dataset, metric) with value and 95% CI."""
    keys = ["run_id", "run_name", "method", "rank", "seed", "status", "trainable_params"]
    rows = []
    for _, r in df.iterrows():
        for ds in datasets(df):
            for m in (C.FVD, C.KID):
                v = r.get(C.dataset_metric(m, ds), np.nan)
                if pd.isna(v):
                    continue
                lo = r.get(C.ci_metric(m, "lo", ds), np.nan)
                hi = r.get(C.ci_metric(m, "hi", ds), np.nan)
                label = arm_name(r, short=True)
                rows.append({**{k: r[k] for k in keys}, "setting": label, "dataset": ds, "metric": m,
                             "value": v, "ci_lo": lo, "ci_hi": hi})  # fmt: skip
    out = pd.DataFrame(
        rows, columns=[*keys, "setting", "dataset", "metric", "value", "ci_lo", "ci_hi"]
    )
    return out.astype({"rank": "Int64", "seed": "Int64"})


CSV_DROP = ("fvd_history", "extra_per_clip")


def csv_table(df: pd.DataFrame) -> pd.DataFrame:
    """The machine table written to results.csv (everything but the per-step curves)."""
    return df.drop(columns=[c for c in CSV_DROP if c in df.columns])


# How the cost columns were measured (printed under the table).
COST_NOTE = (
    "step s: median wall time per optimizer step over the timed steps (warm-up excluded, "
    "evaluations never inside a step), with its p10–p90 spread; device-h = median x steps x "
    "processes / 3600; peak MB: the job's own peak (CUDA peak allocated, reset per job; on CPU "
    "the process's resident high-water mark reset at job start)."
)


def _step_time_cell(r: pd.Series) -> str:
    med = _fmt(r["step_time_s"])
    lo, hi = r.get("step_time_p10_s"), r.get("step_time_p90_s")
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return med
    return f"{med} ({_fmt(lo)}–{_fmt(hi)})"
