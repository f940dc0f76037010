"""One MLflow run per job, addressed by explicit run id.

Hydra's basic launcher runs several jobs one after another in one process, and a
process-wide "active run" (mlflow.start_run) would leak from one job into the next; so
every call here goes through `MlflowClient` with the run id. System metrics use MLflow's
`SystemMetricsMonitor`, which is bound to a run id and tracking URI, not to global state.
"""

from __future__ import annotations

import json
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rank_sweep.track.retry import with_lock_retry
from rank_sweep.track.runs import (
    TAG_PARENT,
    TAG_ROLE,
    TAG_STATUS,
    RunInfo,
    find_run_by_fingerprint,
)
from rank_sweep.track.store import ensure_store

__all__ = ["Tracker", "flatten_config", "find_run_by_fingerprint", "RunInfo"]

log = logging.getLogger(__name__)

# MLflow's limits (mlflow.utils.validation); kept here so flattening needs no mlflow import.
MAX_PARAM_VAL_LENGTH = 6000
MAX_TAG_VAL_LENGTH = 8000
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000

_MLFLOW_STATUS = {
    "completed": "FINISHED",
    "pruned": "KILLED",
    "failed": "FAILED",
    "stopped_plateau": "FINISHED",  # early stop on a plateau: the run's own end (issue 17)
}


def truncate(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def flatten_config(cfg: DictConfig | dict, prefix: str = "") -> dict[str, str]:
    """`{"a": {"b": 1}, "l": [1, 2]}` -> `{"a.b": "1", "l": "[1,2]"}`, values cut to MLflow's limit."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple, dict)):
            text = json.dumps(value, separators=(",", ":"), default=str)
        else:
            text = str(value)
        out[name] = truncate(text, MAX_PARAM_VAL_LENGTH)
    return out


def _system_metrics_allowed() -> bool:
    # MLflow's documented switch; CI and tests turn the sampling thread off with it.
    env = os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").strip().lower()
    return env not in ("false", "0", "no")


class Tracker:
    """The MLflow run of one job (or of a sweep's parent)."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        self.client = MlflowClient(tracking_uri=uri)
        self._run_id: str | None = None
        self._last_step: dict[str, int] = {}
        self._monitor: Any = None
        self._finished = False

    @property
    def run_id(self) -> str:
        if self._run_id is None:
            raise RuntimeError("Tracker.run_id read before start()")
        return self._run_id

    def _call(self, what: str, fn):
        return with_lock_retry(fn, what)

    def _log_batch(self, what: str, **entities: Any) -> None:
        with_lock_retry(partial(self.client.log_batch, self.run_id, **entities), what)

    # -- opening ---------------------------------------------------------------------------
    def start(
        self,
        *,
        run_name: str,
        tags: dict[str, str],
        params: dict[str, str],
        parent_run_id: str | None = None,
        resume_run_id: str | None = None,
        system_metrics: bool = True,
    ) -> str:
        """Open a new run, or re-open `resume_run_id` as RUNNING; returns the run id."""
        if self._run_id is not None:
            raise RuntimeError(f"Tracker already started run {self._run_id}")
        exp_id = ensure_store(self.uri, self.experiment)
        run = self._resumable(resume_run_id, exp_id) if resume_run_id else None
        all_tags = {k: truncate(str(v), MAX_TAG_VAL_LENGTH) for k, v in tags.items()}
        if parent_run_id:
            all_tags[TAG_PARENT] = parent_run_id
        # Only job runs carry a status, so `rank_sweep.status` queries never count parents.
        is_sweep = all_tags.get(TAG_ROLE) == "sweep"
        if run is not None:
            self._run_id = run.info.run_id
            # Latest point per key, with its step (what MLflow's own monitor reads on resume).
            self._last_step = {m.key: int(m.step) for m in run.data._metric_objs}
            self._call("reopen run", lambda: self.client.update_run(self._run_id, "RUNNING"))
            resumes = int(run.data.tags.get("rank_sweep.resumes", "0")) + 1
            all_tags["rank_sweep.resumes"] = str(resumes)
            if not is_sweep:
                all_tags[TAG_STATUS] = "running"  # a failed run rerun is live again
            self.set_tags(all_tags)
            params = self._new_params(params, dict(run.data.params))
            log.info("resumed MLflow run %s (resume #%d)", self._run_id, resumes)
        else:
            if not is_sweep:
                all_tags[TAG_STATUS] = "running"
            created = self._call(
                "create run",
                lambda: self.client.create_run(exp_id, run_name=run_name, tags=all_tags),
            )
            self._run_id = created.info.run_id
            log.info("opened MLflow run %s (%s) in %s", self._run_id, run_name, self.uri)
        self.log_params(params)
        if system_metrics and _system_metrics_allowed():
            self._start_monitor(resumed=run is not None)
        return self._run_id

    def _resumable(self, run_id: str, exp_id: str):
        from mlflow.exceptions import MlflowException

        try:
            run = self._call("get run", lambda: self.client.get_run(run_id))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            log.warning("run %s to resume is not in %s; opening a new run", run_id, self.uri)
            return None
        if run.info.experiment_id != exp_id or run.info.lifecycle_stage == "deleted":
            log.warning("run %s is deleted or in another experiment; opening a new run", run_id)
            return None
        return run

    @staticmethod
    def _new_params(params: dict[str, str], logged: dict[str, str]) -> dict[str, str]:
        # MLflow refuses to change a logged param; a rerun may differ in keys that do not
        # matter (paths, device), so those keep their first value.
        changed = sorted(k for k, v in params.items() if k in logged and logged[k] != v)
        if changed:
            log.warning("resume: params keep their first values for %s", ", ".join(changed))
        return {k: v for k, v in params.items() if k not in logged}

    def _start_monitor(self, resumed: bool) -> None:
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self._monitor = SystemMetricsMonitor(
                self.run_id, resume_logging=resumed, tracking_uri=self.uri
            )
        except ImportError as exc:  # psutil missing: the run is still useful without it
            log.warning("system metrics off: %s", exc)
            return
        self._monitor.start()

    # -- during the run --------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log at `step`; a key's step at or below its last logged step is dropped, so a
        resumed job replaying steps since its checkpoint never duplicates points."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        fresh = [
            Metric(key, float(value), now, int(step))
            for key, value in metrics.items()
            if step > self._last_step.get(key, -(2**62))
        ]
        if len(fresh) < len(metrics):
            log.debug(
                "dropped %d metrics already logged at step <= %d", len(metrics) - len(fresh), step
            )
        for i in range(0, len(fresh), _METRICS_PER_BATCH):
            chunk = fresh[i : i + _METRICS_PER_BATCH]
            self._log_batch("log metrics", metrics=chunk)
        for m in fresh:
            self._last_step[m.key] = int(step)

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, truncate(str(v), MAX_PARAM_VAL_LENGTH)) for k, v in params.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            chunk = items[i : i + _PARAMS_PER_BATCH]
            self._log_batch("log params", params=chunk)

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, truncate(str(v), MAX_TAG_VAL_LENGTH)) for k, v in tags.items()]
        for i in range(0, len(items), _PARAMS_PER_BATCH):
            chunk = items[i : i + _PARAMS_PER_BATCH]
            self._log_batch("set tags", tags=chunk)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_dict(self, d: dict[str, Any], file: str) -> None:
        self.client.log_dict(self.run_id, d, file)

    # -- closing ---------------------------------------------------------------------------
    def finish(
        self, status: str, *, error: str | None = None, pruned_step: int | None = None
    ) -> None:
        """Write the final status tags and end the run (FINISHED / KILLED / FAILED)."""
        if status not in _MLFLOW_STATUS:
            raise ValueError(
                f"status={status!r} not allowed; use one of {', '.join(_MLFLOW_STATUS)}"
            )
        if self._finished:
            log.warning("run %s already finished; ignoring finish(%s)", self.run_id, status)
            return
        if self._monitor is not None:
            self._monitor.finish()  # flush system metrics before the run ends
            self._monitor = None
        tags = {TAG_STATUS: status}
        if pruned_step is not None:
            tags["rank_sweep.pruned_step"] = str(int(pruned_step))
        if error:
            tags["rank_sweep.error"] = truncate(error, 1000)
        self.set_tags(tags)
        self._call(
            "end run", lambda: self.client.set_terminated(self.run_id, _MLFLOW_STATUS[status])
        )
        self._finished = True
        log.info("MLflow run %s ended: %s", self.run_id, status)
