"""Looking runs up by the tags of the tracking contract (reuse, resume, sweep parents)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import partial

from rank_sweep.track.retry import with_lock_retry

TAG_ROLE = "rank_sweep.role"
TAG_SWEEP_ID = "rank_sweep.sweep_id"
TAG_STATUS = "rank_sweep.status"
TAG_FINGERPRINT = "rank_sweep.fingerprint"
TAG_PARENT = "mlflow.parentRunId"  # MLflow's own tag: the UI nests children under it

FINAL_STATUSES = ("completed", "pruned", "failed", "stopped_plateau")
ALL_STATUSES = (*FINAL_STATUSES, "running")


@dataclass
class RunInfo:
    run_id: str
    status: str  # rank_sweep status: completed | pruned | failed | running
    mlflow_status: str  # RUNNING | FINISHED | KILLED | FAILED
    run_name: str
    parent_run_id: str | None
    start_time: int  # ms since epoch
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)  # last value of each key


def run_status(tags: dict[str, str]) -> str:
    """rank_sweep status of a run; a run with no final status is still `running`."""
    status = tags.get(TAG_STATUS, "running")
    return status if status in FINAL_STATUSES else "running"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, experiment: str) -> str | None:
    exp = with_lock_retry(lambda: client.get_experiment_by_name(experiment), "get experiment")
    return None if exp is None else exp.experiment_id


def search_runs(client, exp_id: str, filter_string: str = "") -> list:
    """Every active run of an experiment matching the filter, newest first (all pages)."""
    from mlflow.entities import ViewType

    runs: list = []
    token = None
    while True:
        search = partial(
            client.search_runs,
            [exp_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            order_by=["attributes.start_time DESC"],
            page_token=token,
        )
        page = with_lock_retry(search, "search runs")
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _info(run) -> RunInfo:
    tags = dict(run.data.tags)
    return RunInfo(
        run_id=run.info.run_id,
        status=run_status(tags),
        mlflow_status=run.info.status,
        run_name=run.info.run_name or "",
        parent_run_id=tags.get(TAG_PARENT),
        start_time=int(run.info.start_time or 0),
        tags=tags,
        metrics=dict(run.data.metrics),
    )


def find_run_by_fingerprint(
    uri: str, experiment: str, fingerprint: str, statuses: tuple[str, ...]
) -> RunInfo | None:
    """Latest job run tagged with `fingerprint` whose status is in `statuses`.

    `("completed", "pruned")` finds a finished job to reuse; `("running",)` a killed one
    to resume (a killed job never wrote its final status).
    """
    bad = [s for s in statuses if s not in ALL_STATUSES]
    if bad:
        raise ValueError(f"statuses {bad} not allowed; use any of {', '.join(ALL_STATUSES)}")
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    for run in search_runs(client, exp_id, f"tags.`{TAG_FINGERPRINT}` = '{fingerprint}'"):
        info = _info(run)
        if info.status in statuses:
            return info
    return None


def find_sweep_run(uri: str, experiment: str, sweep_id: str) -> RunInfo | None:
    """The parent run of sweep `sweep_id` (latest one if several), or None."""
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    runs = search_runs(
        client, exp_id, f"tags.`{TAG_ROLE}` = 'sweep' and tags.`{TAG_SWEEP_ID}` = '{sweep_id}'"
    )
    return _info(runs[0]) if runs else None


def child_runs(uri: str, experiment: str, parent_run_id: str) -> list[RunInfo]:
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return []
    return [
        _info(r) for r in search_runs(client, exp_id, f"tags.`{TAG_PARENT}` = '{parent_run_id}'")
    ]


def status_counts(runs: list[RunInfo]) -> dict[str, int]:
    """Number of runs per rank_sweep status, every status present (zeros included)."""
    counts = Counter(r.status for r in runs)
    return {s: counts.get(s, 0) for s in ALL_STATUSES}


def end_run(uri: str, run_id: str, tags: dict[str, str], mlflow_status: str = "FINISHED") -> None:
    """Tag a run and end it (used for a sweep's parent, which no Tracker holds at the end)."""
    from mlflow.entities import RunTag

    client = _client(uri)
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    with_lock_retry(lambda: client.log_batch(run_id, tags=items), "tag run")
    with_lock_retry(lambda: client.set_terminated(run_id, mlflow_status), "end run")


def copy_run(uri: str, source_run_id: str, parent_run_id: str, tags: dict[str, str]) -> str:
    """Copy a finished run (params, tags, full metric histories) under another sweep's parent.

    A reused job thereby appears in every sweep that asked for it, so each sweep's report
    is complete; `rank_sweep.reused_from` points at the run that did the work (artifacts
    stay there).
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    src = with_lock_retry(partial(client.get_run, source_run_id), "get run")
    keep = {k: v for k, v in src.data.tags.items() if not k.startswith("mlflow.")}
    new_tags = {
        **keep,
        **tags,
        TAG_PARENT: parent_run_id,
        "mlflow.runName": src.info.run_name or "",
        "rank_sweep.reused_from": source_run_id,
    }
    run = with_lock_retry(
        partial(client.create_run, src.info.experiment_id, run_name=src.info.run_name),
        "create run",
    )
    rid = run.info.run_id
    metrics = []
    for key in src.data.metrics:
        hist = with_lock_retry(partial(client.get_metric_history, source_run_id, key), "history")
        metrics += [Metric(key, m.value, m.timestamp, m.step) for m in hist]
    params = [Param(k, v) for k, v in src.data.params.items()]
    run_tags = [RunTag(k, str(v)) for k, v in new_tags.items()]
    for i in range(0, max(len(metrics), len(params), len(run_tags), 1), 500):
        with_lock_retry(
            partial(
                client.log_batch,
                rid,
                metrics=metrics[i : i + 500],
                params=params[i : i + 100] if i == 0 else [],
                tags=run_tags if i == 0 else [],
            ),
            "copy batch",
        )
    for i in range(100, len(params), 100):
        with_lock_retry(partial(client.log_batch, rid, params=params[i : i + 100]), "copy params")
    status = "FINISHED" if run_status(src.data.tags) == "completed" else "KILLED"
    with_lock_retry(partial(client.set_terminated, rid, status), "end run")
    return rid
