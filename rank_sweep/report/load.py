"""Runs of one sweep read from MLflow into a one-row-per-run table (the tracking contract).

Reading only: the report never writes to the store, and it refuses to create one (an
MLflow client pointed at a missing SQLite file would silently create an empty DB).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from rank_sweep import paths
from rank_sweep.eval.tiers import periodic_metric
from rank_sweep.paths import ENV_TRACKING_URI
from rank_sweep.report.extra import extra_record
from rank_sweep.report.table import derive_columns
from rank_sweep.track import contract as C
from rank_sweep.track import store
from rank_sweep.track.runs import search_runs

log = logging.getLogger(__name__)

# Scalar metrics -> table column.
SCALAR_METRICS = {
    C.TRAINABLE_PARAMS: "trainable_params",
    C.TOTAL_PARAMS: "total_params",
    C.STEP_TIME_S: "step_time_s",
    C.STEP_TIME_P10_S: "step_time_p10_s",
    C.STEP_TIME_P90_S: "step_time_p90_s",
    C.PEAK_MEM_MB: "peak_mem_mb",
    C.TRAIN_STEPS_DONE: "steps_done",
    C.DATA_SKIPPED_CLIPS: "skipped_clips",
    C.VAL_LOSS: "val_loss",
}


def _client(configured_uri: str | None):
    from mlflow.tracking import MlflowClient

    uri = paths.tracking_uri(configured_uri)
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
    parents = [r for r in all_runs if r.data.tags.get(C.TAG_ROLE) == C.ROLE_SWEEP]
    if sweep_id is None and parents:
        sweep_id = parents[0].data.tags.get(C.TAG_SWEEP_ID)  # newest first
    jobs = [r for r in all_runs if r.data.tags.get(C.TAG_ROLE) != C.ROLE_SWEEP]
    if sweep_id is None:
        return None, [r for r in jobs if C.TAG_PARENT not in r.data.tags]
    parent_ids = {r.info.run_id for r in parents if r.data.tags.get(C.TAG_SWEEP_ID) == sweep_id}
    chosen = [
        r
        for r in jobs
        if r.data.tags.get(C.TAG_SWEEP_ID) == sweep_id
        or r.data.tags.get(C.TAG_PARENT) in parent_ids
    ]
    if not chosen and not parent_ids:
        known = sorted(
            {r.data.tags[C.TAG_SWEEP_ID] for r in all_runs if C.TAG_SWEEP_ID in r.data.tags}
        )
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
        elif Path(item.path).name.startswith("lora_comfyui"):
            continue  # the ComfyUI export is a second copy of the same adapter weights
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
    method = tags.get(C.TAG_METHOD) or params.get("finetune.method") or "unknown"
    is_lora = method == "lora"
    rank = _int(tags.get(C.TAG_LORA_RANK)) if is_lora else None
    if is_lora and rank is None:
        rank = _int(params.get("lora.rank"))
    # The alpha peft received (after alpha_mode) and its scale; runs logged before these
    # tags existed fall back to the configured alpha, with no scale.
    alpha = tags.get(C.TAG_LORA_ALPHA) or params.get("lora.alpha")
    rec: dict[str, Any] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name or "",
        "sweep_id": tags.get(C.TAG_SWEEP_ID) or "",
        "in_sweep": sweep_id is None or tags.get(C.TAG_SWEEP_ID) == sweep_id,
        "start_time": pd.to_datetime(run.info.start_time or 0, unit="ms", utc=True),
        "method": method,
        "rank": rank,
        "alpha": _float(alpha) if is_lora else float("nan"),
        "alpha_mode": params.get("lora.alpha_mode", "") if is_lora else "",
        "lora_scale": _float(tags.get(C.TAG_LORA_SCALE)) if is_lora else float("nan"),
        "lr": _float(params.get("finetune.lr")),
        "seed": _int(params.get("train.seed")),
        "data_name": params.get("data.name", ""),
        "status": tags.get(C.TAG_STATUS) or C.RUNNING,
        "pruned_step": _int(tags.get(C.TAG_PRUNED_STEP)),
        "error": tags.get(C.TAG_ERROR, ""),
        "fingerprint": tags.get(C.TAG_FINGERPRINT, ""),
        "reused_from": tags.get(C.TAG_REUSED_FROM, ""),
        "device": params.get(C.PARAM_DEVICE, ""),
        "nproc": _int(params.get("dist.nproc_per_node")) or 1,
        "steps_planned": _int(params.get("train.steps")),
    }
    for key, col in SCALAR_METRICS.items():
        rec[col] = metrics.get(key, float("nan"))
    for key, value in metrics.items():
        if C.parse_dataset_metric(key) is not None:
            rec[key] = value
    # The curve over steps is the periodic tier's FVD (validation slice, every eval); the
    # final tier (test split) is one point per run, drawn apart with its interval.
    history: dict[str, list[tuple[int, float]]] = {}
    for ds in C.metric_datasets(metrics):
        fvd_key = C.dataset_metric(C.FVD, ds)
        if fvd_key in metrics:
            h = _history(client, run.info.run_id, fvd_key)
            rec[C.dataset_metric("best_fvd", ds)] = float(h["value"].min())
        val_key = periodic_metric(C.FVD, ds)
        if val_key in metrics:
            h = _history(client, run.info.run_id, val_key)
            history[ds] = list(zip(h["step"].astype(int), h["value"].astype(float)))
    rec["fvd_history"] = history
    for key, value in params.items():
        if key.startswith(C.PROTOCOL_PREFIX):
            rec[key] = value
    weights = C.WEIGHTS_DIR.get(method, "")
    # A reused run's weights stay with the run that did the work.
    owner = rec["reused_from"] or run.info.run_id
    rec["adapter_bytes"] = artifact_bytes(client, owner, weights) if weights else 0
    rec.update(extra_record(run, client))  # CLIP-SIM/LPIPS, recipe, plateau step
    return rec


def _borrowed_baseline(client, exp_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest completed full fine-tune on the same data, when the sweep has none
    (`make baseline-full` runs outside any multirun). Marked `in_sweep=False`."""
    if any(r["method"] == "full" for r in rows) or not rows:
        return []
    data_names = {r["data_name"] for r in rows}
    for run in search_runs(client, exp_id, f"tags.`{C.TAG_METHOD}` = 'full'"):
        tags, params = run.data.tags, run.data.params
        if tags.get(C.TAG_STATUS) == C.COMPLETED and params.get("data.name") in data_names:
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
