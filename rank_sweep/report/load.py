"""Runs of one sweep read from MLflow into a one-row-per-run table (the tracking contract).

Reading only: the report never writes to the store, and it refuses to create one (an
MLflow client pointed at a missing SQLite file would silently create an empty DB).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd
from tqdm import tqdm

from rank_sweep.report.extra import extra_record
from rank_sweep.report.table import derive_columns
from rank_sweep.track import store
from rank_sweep.track.runs import TAG_PARENT, TAG_ROLE, TAG_SWEEP_ID, search_runs

log = logging.getLogger(__name__)

ENV_TRACKING_URI = "RANK_SWEEP_TRACKING_URI"

# Per-dataset metrics kept in the table (last logged value = final value).
DATASET_METRICS = ("fvd", "kid", "fvd_ci_lo", "fvd_ci_hi", "kid_ci_lo", "kid_ci_hi", "kid_std")
# Scalar metrics -> table column.
SCALAR_METRICS = {
    "model/trainable_params": "trainable_params",
    "model/total_params": "total_params",
    "perf/step_time_s": "step_time_s",
    "perf/peak_mem_mb": "peak_mem_mb",
    "train/steps_done": "steps_done",
    "data/skipped_clips": "skipped_clips",
    "val/loss": "val_loss",
}
# Where each method keeps its trained weights among the run's artifacts.
# (the whole folder: `adapter/*.safetensors`, `model/transformer/*` plus any index file).
WEIGHTS_DIR = {"lora": "adapter", "full": "model"}


def default_tracking_uri() -> str:
    """`$RANK_SWEEP_TRACKING_URI`, else the SQLite store beside the repo."""
    return os.environ.get(ENV_TRACKING_URI) or store.default_tracking_uri()


def _client(tracking_uri: str | None):
    from mlflow.tracking import MlflowClient

    uri = tracking_uri or default_tracking_uri()
    db = store.sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(
            f"no MLflow store at {db}: run `make demo` (or a sweep) first, or pass "
            f"--tracking-uri / set {ENV_TRACKING_URI}"
        )
    return MlflowClient(tracking_uri=uri), uri


def _experiment_id(client, experiment: str, uri: str) -> str:
    exp = client.get_experiment_by_name(experiment)
    if exp is None or exp.lifecycle_stage == "deleted":
        names = sorted(e.name for e in client.search_experiments())
        raise ValueError(
            f"experiment {experiment!r} not found in {uri}; available: {', '.join(names) or 'none'}"
        )
    return exp.experiment_id


def select_runs(client, exp_id: str, sweep_id: str | None) -> tuple[str | None, list]:
    """(sweep id, job runs): the given sweep, else the most recent parent run's sweep, else
    (no parent runs at all) every run without a parent."""
    all_runs = search_runs(client, exp_id)
    parents = [r for r in all_runs if r.data.tags.get(TAG_ROLE) == "sweep"]
    if sweep_id is None and parents:
        sweep_id = parents[0].data.tags.get(TAG_SWEEP_ID)  # newest first
    jobs = [r for r in all_runs if r.data.tags.get(TAG_ROLE) != "sweep"]
    if sweep_id is None:
        return None, [r for r in jobs if TAG_PARENT not in r.data.tags]
    parent_ids = {r.info.run_id for r in parents if r.data.tags.get(TAG_SWEEP_ID) == sweep_id}
    chosen = [
        r
        for r in jobs
        if r.data.tags.get(TAG_SWEEP_ID) == sweep_id or r.data.tags.get(TAG_PARENT) in parent_ids
    ]
    if not chosen and not parent_ids:
        known = sorted({r.data.tags[TAG_SWEEP_ID] for r in all_runs if TAG_SWEEP_ID in r.data.tags})
        raise ValueError(
            f"sweep {sweep_id!r} not found; known sweeps: {', '.join(known) or 'none'}"
        )
    return sweep_id, chosen


def artifact_bytes(client, run_id: str, path: str) -> int:
    """Total size of the files under artifact dir `path` (0 when it is absent)."""
    total = 0
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            total += artifact_bytes(client, run_id, item.path)
        else:
            total += int(item.file_size or 0)
    return total


def metric_history(tracking_uri: str | None, run_id: str, key: str) -> pd.DataFrame:
    """Every logged value of metric `key` in run `run_id`: columns step, value, timestamp."""
    client, _ = _client(tracking_uri)
    return _history(client, run_id, key)


def _history(client, run_id: str, key: str) -> pd.DataFrame:
    rows = [(m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key)]
    df = pd.DataFrame(rows, columns=["step", "value", "timestamp"])
    return df.sort_values(["step", "timestamp"], kind="stable").reset_index(drop=True)


def _int(text: str | None) -> int | None:
    if text is None or str(text).strip() in ("", "None", "null"):
        return None
    return int(float(text))


def _float(text: str | None) -> float:
    if text is None or str(text).strip() in ("", "None", "null"):
        return float("nan")
    return float(text)


def run_record(client, run, sweep_id: str | None) -> dict[str, Any]:
    """One table row from one job run: tags, params, final metrics, weights size, FVD curve."""
    tags, params, metrics = run.data.tags, run.data.params, run.data.metrics
    method = tags.get("rank_sweep.method") or params.get("finetune.method") or "unknown"
    rank = _int(tags.get("rank_sweep.lora_rank")) if method == "lora" else None
    if method == "lora" and rank is None:
        rank = _int(params.get("lora.rank"))
    rec: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        "sweep_id": tags.get(TAG_SWEEP_ID) or "",
        "in_sweep": sweep_id is None or tags.get(TAG_SWEEP_ID) == sweep_id,
        "start_time": pd.to_datetime(run.info.start_time or 0, unit="ms", utc=True),
        "method": method,
        "rank": rank,
        "alpha": _float(params.get("lora.alpha")) if method == "lora" else float("nan"),
        "alpha_mode": params.get("lora.alpha_mode", "") if method == "lora" else "",
        "lr": _float(params.get("finetune.lr")),
        "seed": _int(params.get("train.seed")),
        "data_name": params.get("data.name", ""),
        "status": tags.get("rank_sweep.status") or "running",
        "pruned_step": _int(tags.get("rank_sweep.pruned_step")),
        "error": tags.get("rank_sweep.error", ""),
        "fingerprint": tags.get("rank_sweep.fingerprint", ""),
        "device": params.get("device", ""),
        "nproc": _int(params.get("dist.nproc_per_node")) or 1,
        "steps_planned": _int(params.get("train.steps")),
    }
    for key, col in SCALAR_METRICS.items():
        rec[col] = metrics.get(key, float("nan"))
    datasets = sorted({k.split("/", 1)[1] for k in metrics if k.startswith(("fvd/", "kid/"))})
    for key, value in metrics.items():
        if key.split("/", 1)[0] in DATASET_METRICS and "/" in key:
            rec[key] = value
    history: dict[str, list[tuple[int, float]]] = {}
    for ds in datasets:
        if f"fvd/{ds}" in metrics:
            h = _history(client, run.info.run_id, f"fvd/{ds}")
            history[ds] = list(zip(h["step"].astype(int), h["value"].astype(float)))
            rec[f"best_fvd/{ds}"] = float(h["value"].min())
    rec["fvd_history"] = history
    for key, value in params.items():
        if key.startswith("protocol."):
            rec[key] = value
    rec.update(extra_record(run, client))  # CLIP-SIM/LPIPS, recipe, plateau step (issue 17)
    rec["adapter_bytes"] = artifact_bytes(client, run.info.run_id, WEIGHTS_DIR.get(method, ""))
    return rec


def _borrowed_baseline(client, exp_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest completed full fine-tune on the same data, when the sweep has none
    (`make baseline-full` runs outside any multirun). Marked `in_sweep=False`."""
    if any(r["method"] == "full" for r in rows) or not rows:
        return []
    data_names = {r["data_name"] for r in rows}
    for run in search_runs(client, exp_id, "tags.`rank_sweep.method` = 'full'"):
        tags, params = run.data.tags, run.data.params
        if tags.get("rank_sweep.status") == "completed" and params.get("data.name") in data_names:
            rec = run_record(client, run, sweep_id=None)
            rec["in_sweep"] = False
            return [rec]
    return []


def load_runs(
    tracking_uri: str | None = None,
    experiment: str = "rank_sweep",
    sweep_id: str | None = None,
    *,
    borrow_baseline: bool = True,
) -> pd.DataFrame:
    """One row per job run of a sweep, with derived columns (see `table.derive_columns`).

    `sweep_id=None` picks the most recent sweep (parent run); with no parent runs at all,
    every run without a parent. If the sweep has no full fine-tune, the newest completed
    one on the same data is added with `in_sweep=False` (unless `borrow_baseline=False`);
    the report says so. `df.attrs` holds tracking_uri, experiment and sweep_id.
    """
    client, uri = _client(tracking_uri)
    exp_id = _experiment_id(client, experiment, uri)
    chosen_sweep, runs = select_runs(client, exp_id, sweep_id)
    rows = [
        run_record(client, r, chosen_sweep)
        for r in tqdm(runs, desc="reading runs", unit="run", disable=len(runs) < 4)
    ]
    if borrow_baseline:
        rows += _borrowed_baseline(client, exp_id, rows)
    log.info("read %d runs of sweep %s from %s", len(rows), chosen_sweep, uri)
    df = derive_columns(pd.DataFrame(rows))
    df.attrs.update(tracking_uri=uri, experiment=experiment, sweep_id=chosen_sweep)
    return df
