"""Hydra callback that prepares a multirun before any job starts.

Creating the MLflow store, the parent run and the Optuna study here, once, means
parallel jobs never race on schema migration or study creation; the jobs find all of
it in `<sweep dir>/sweep.json`. The sweep id is a hash of the command's overrides, so
re-running the same multirun command attaches to the same parent run and study (and
the jobs' fingerprints then let finished jobs be reused).

Registered in conf/config.yaml:
    hydra.callbacks.sweep._target_: rank_sweep.sweep.callbacks.SweepCallback
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

SWEEP_FILE = "sweep.json"


@dataclass
class SweepInfo:
    sweep_id: str
    parent_run_id: str | None  # None when tracking is off
    tracking_uri: str | None
    experiment: str
    study_name: str
    storage: str


def sweep_id_for(config: DictConfig) -> str:
    """`<sweep_name>-<hash>` of the multirun's task overrides and sweeper params: the same
    command gives the same id, whatever the launcher or the timestamped sweep dir."""
    task = sorted(str(o) for o in (config.hydra.overrides.get("task") or []))
    params = config.hydra.get("sweeper", {}).get("params")
    params = OmegaConf.to_container(params, resolve=True) if params is not None else None
    blob = json.dumps({"task": task, "sweeper": params}, sort_keys=True, default=str)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:8]
    return f"{config.sweep_name}-{digest}"


def read_sweep_info(sweep_dir: Path) -> SweepInfo | None:
    """What the multirun callback wrote for the jobs; None outside a multirun."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return None
    return SweepInfo(**json.loads(path.read_text()))


def write_sweep_info(sweep_dir: Path, info: SweepInfo) -> Path:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / SWEEP_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(info), indent=2))
    tmp.replace(path)  # atomic: a job never reads half a file
    return path


def _open_parent(config: DictConfig, sweep_id: str, uri: str, experiment: str) -> str:
    from rank_sweep.track.runs import find_sweep_run
    from rank_sweep.track.store import ensure_store
    from rank_sweep.track.tracker import Tracker

    ensure_store(uri, experiment)
    existing = find_sweep_run(uri, experiment, sweep_id)
    overrides = " ".join(str(o) for o in (config.hydra.overrides.get("task") or []))
    tags = {
        "rank_sweep.role": "sweep",
        "rank_sweep.sweep_id": sweep_id,
        "rank_sweep.sweep_name": str(config.sweep_name),
        "rank_sweep.overrides": overrides,
        "rank_sweep.pruner": str(config.prune.pruner),
    }
    params = {f"prune.{k}": str(v) for k, v in OmegaConf.to_container(config.prune).items()}
    tracker = Tracker(uri, experiment)
    return tracker.start(
        run_name=f"sweep-{sweep_id}",
        tags=tags,
        params=params,
        resume_run_id=existing.run_id if existing else None,
        system_metrics=False,  # the parent does no work; jobs sample their own
    )


class SweepCallback(Callback):
    """MLflow parent run + Optuna study per multirun; `sweep.json` for the jobs."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from rank_sweep.plan.report import log_plan_on_run, log_sweep_plan
        from rank_sweep.prune.study import default_storage, make_pruner, open_study
        from rank_sweep.track.store import default_tracking_uri

        plan = log_sweep_plan(config)  # cost plan; refuses a sweep that cannot fit or finish
        sweep_id = sweep_id_for(config)
        experiment = str(config.track.experiment)
        uri = parent = None
        if config.track.enabled:
            uri = config.track.uri or default_tracking_uri()
            parent = _open_parent(config, sweep_id, uri, experiment)
            if plan is not None:
                log_plan_on_run(uri, parent, plan)
        storage = config.prune.storage or default_storage()
        # Created even with prune=none: the trials still record every job for the dashboard.
        open_study(storage, sweep_id, make_pruner(config.prune), create=True)
        info = SweepInfo(sweep_id, parent, uri, experiment, sweep_id, storage)
        failures_path(Path(config.hydra.sweep.dir)).unlink(missing_ok=True)
        path = write_sweep_info(Path(config.hydra.sweep.dir), info)
        log.info(
            "sweep %s: parent run %s in %s, study in %s (%s)", sweep_id, parent, uri, storage, path
        )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rank_sweep.track.runs import child_runs, end_run, status_counts

        sweep_dir = Path(config.hydra.sweep.dir)
        info = read_sweep_info(sweep_dir)
        if info is not None and info.parent_run_id is not None and info.tracking_uri is not None:
            counts = status_counts(
                child_runs(info.tracking_uri, info.experiment, info.parent_run_id)
            )
            tags = {f"rank_sweep.n_{status}": str(n) for status, n in counts.items()}
            end_run(info.tracking_uri, info.parent_run_id, tags, "FINISHED")
            log.info("sweep %s ended: %s", info.sweep_id, counts)
        failed = read_failures(sweep_dir)
        FAILED_JOBS[:] = failed
        if failed:
            # Jobs that raised were recorded and the sweep went on; `python -m rank_sweep`
            # exits non-zero on them (Hydra swallows exceptions raised in callbacks).
            names = "; ".join(f"{f['job']}: {f['error']}" for f in failed)
            log.error("%d job(s) of the sweep failed: %s", len(failed), names)


FAILED_JOBS: list[dict[str, str]] = []  # set by on_multirun_end for the CLI's exit code


def failures_path(sweep_dir: Path) -> Path:
    return sweep_dir / "failed_jobs.jsonl"


def record_failure(sweep_dir: Path, job: str, error: str) -> None:
    """Append one failed job (called by the job itself; lines are short, appends atomic)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with failures_path(sweep_dir).open("a") as fh:
        fh.write(json.dumps({"job": job, "error": error[:300]}) + "\n")


def read_failures(sweep_dir: Path) -> list[dict[str, str]]:
    path = failures_path(sweep_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
