"""Looking runs up by the tags of the tracking contract (reuse, resume, sweep parents)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rank_sweep.track.contract import (
    MLFLOW_RUN_STATUS,
    MLFLOW_TAG_PREFIX,
    PRUNED,
    REUSABLE_STATUSES,
    ROLE_SWEEP,
    STATUSES,
    TAG_FINGERPRINT,
    TAG_PARENT,
    TAG_REUSED_FROM,
    TAG_ROLE,
    TAG_RUN_NAME,
    TAG_SWEEP_ID,
    run_status,
)
from rank_sweep.track.retry import with_lock_retry


@dataclass
class RunInfo:
    run_id: str
    status: str  # rank_sweep status: one of contract.STATUSES
    mlflow_status: str  # RUNNING | FINISHED | KILLED | FAILED
    run_name: str
    parent_run_id: str | None
    start_time: int  # ms since epoch
    tags: dict[str, str] = field(default_factory=dict)
    end_time: int | None = None  # ms since epoch; None while running
    metrics: dict[str, float] = field(default_factory=dict)  # last value of each key


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
        end_time=int(run.info.end_time) if run.info.end_time else None,
        tags=tags,
        metrics=dict(run.data.metrics),
    )


def find_run_by_fingerprint(
    uri: str, experiment: str, fingerprint: str, statuses: tuple[str, ...]
) -> RunInfo | None:
    """Latest job run tagged with `fingerprint` whose status is in `statuses`.

    `contract.REUSABLE_STATUSES` finds a finished job to reuse; `("running",)` a killed
    one to resume (a killed job never wrote its final status).
    """
    bad = [s for s in statuses if s not in STATUSES]
    if bad:
        raise ValueError(f"statuses {bad} not allowed; use any of {', '.join(STATUSES)}")
    return next(
        (i for i in _fingerprint_runs(uri, experiment, fingerprint) if i.status in statuses), None
    )


def find_reusable_run(
    uri: str, experiment: str, fingerprint: str, sweep_id: str | None
) -> RunInfo | None:
    """Latest run with `fingerprint` that another job may stand in for.

    A run that ended for reasons of its own config (`REUSABLE_STATUSES`) serves anyone; a
    pruned run only a rerun of the sweep whose decision pruned it.
    """

    def reusable(info: RunInfo) -> bool:
        if info.status in REUSABLE_STATUSES:
            return True
        return info.status == PRUNED and bool(sweep_id) and info.tags.get(TAG_SWEEP_ID) == sweep_id

    return next((i for i in _fingerprint_runs(uri, experiment, fingerprint) if reusable(i)), None)


def _fingerprint_runs(uri: str, experiment: str, fingerprint: str) -> Iterator[RunInfo]:
    """Active runs tagged with `fingerprint`, newest first."""
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return
    for run in search_runs(client, exp_id, f"tags.`{TAG_FINGERPRINT}` = '{fingerprint}'"):
        yield _info(run)


def find_sweep_run(uri: str, experiment: str, sweep_id: str) -> RunInfo | None:
    """The parent run of sweep `sweep_id` (latest one if several), or None."""
    client = _client(uri)
    exp_id = _experiment_id(client, experiment)
    if exp_id is None:
        return None
    runs = search_runs(
        client,
        exp_id,
        f"tags.`{TAG_ROLE}` = '{ROLE_SWEEP}' and tags.`{TAG_SWEEP_ID}` = '{sweep_id}'",
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
    return {s: counts.get(s, 0) for s in STATUSES}


def end_run(uri: str, run_id: str, tags: dict[str, str], mlflow_status: str = "FINISHED") -> None:
    """Tag a run and end it (used for a sweep's parent, which no Tracker holds at the end)."""
    from mlflow.entities import RunTag

    client = _client(uri)
    items = [RunTag(k, str(v)) for k, v in tags.items()]
    with_lock_retry(lambda: client.log_batch(run_id, tags=items), "tag run")
    with_lock_retry(lambda: client.set_terminated(run_id, mlflow_status), "end run")


def run_tags(uri: str, run_id: str) -> dict[str, str] | None:
    """Tags of run `run_id`; None when the store has no such run."""
    from mlflow.exceptions import MlflowException

    try:
        return dict(_client(uri).get_run(run_id).data.tags)
    except MlflowException:
        return None


def artifact_uri(uri: str, run_id: str) -> str:
    """Where run `run_id` keeps its artifacts (a file:// dir or a server's mlflow-artifacts:)."""
    client = _client(uri)
    return with_lock_retry(partial(client.get_run, run_id), "get run").info.artifact_uri


def read_artifact_text(uri: str, run_id: str, path: str) -> str | None:
    """Text of artifact file `path` of run `run_id`; None when the run logged no such file."""
    import tempfile

    from mlflow.exceptions import MlflowException

    client = _client(uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except (MlflowException, OSError):
            return None
        return Path(local).read_text()


def copy_run(uri: str, source_run_id: str, parent_run_id: str, tags: dict[str, str]) -> str:
    """Copy a finished run (params, tags, full metric histories) under another sweep's parent.

    A reused job thereby appears in every sweep that asked for it, so each sweep's report
    is complete; its `TAG_REUSED_FROM` tag points at the run that did the work (artifacts
    stay there).
    """
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    src = with_lock_retry(partial(client.get_run, source_run_id), "get run")
    keep = {k: v for k, v in src.data.tags.items() if not k.startswith(MLFLOW_TAG_PREFIX)}
    new_tags = {
        **keep,
        **tags,
        TAG_PARENT: parent_run_id,
        TAG_RUN_NAME: src.info.run_name or "",
        # A copy of a copy still points at the run that did the work.
        TAG_REUSED_FROM: src.data.tags.get(TAG_REUSED_FROM) or source_run_id,
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
    status = MLFLOW_RUN_STATUS.get(run_status(src.data.tags), MLFLOW_RUN_STATUS[PRUNED])
    with_lock_retry(partial(client.set_terminated, rid, status), "end run")
    return rid
