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

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rank_sweep.paths import optuna_storage, tracking_uri
from rank_sweep.sweep.guard import (
    claim_sweep_dir,
    claim_sweep_id,
    release_claims,
    running_children,
    setup_or_exit,
)
from rank_sweep.track.contract import (
    ROLE_SWEEP,
    TAG_OVERRIDES,
    TAG_PRUNER,
    TAG_ROLE,
    TAG_SWEEP_ID,
    TAG_SWEEP_NAME,
    status_count_tag,
)
from rank_sweep.utils.atomic import write_text_atomic
from rank_sweep.utils.keys import content_key

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
    return f"{config.sweep_name}-{content_key({'task': task, 'sweeper': params}, 8)}"


def read_sweep_info(sweep_dir: Path) -> SweepInfo | None:
    """What the multirun callback wrote for the jobs; None outside a multirun."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.exists():
        return None
    return SweepInfo(**json.loads(path.read_text()))


def write_sweep_info(sweep_dir: Path, info: SweepInfo) -> Path:
    # Atomic: a job never reads half a file.
    return write_text_atomic(sweep_dir / SWEEP_FILE, json.dumps(asdict(info), indent=2))


def _open_parent(config: DictConfig, sweep_id: str, uri: str, experiment: str) -> str:
    from rank_sweep.track.runs import find_sweep_run
    from rank_sweep.track.store import ensure_store
    from rank_sweep.track.tracker import Tracker

    ensure_store(uri, experiment)
    existing = find_sweep_run(uri, experiment, sweep_id)
    overrides = " ".join(str(o) for o in (config.hydra.overrides.get("task") or []))
    tags = {
        TAG_ROLE: ROLE_SWEEP,
        TAG_SWEEP_ID: sweep_id,
        TAG_SWEEP_NAME: str(config.sweep_name),
        TAG_OVERRIDES: overrides,
        TAG_PRUNER: str(config.prune.pruner),
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
        # Hydra only warns when a callback raises: a failed set-up must end the command.
        setup_or_exit(self._start, config)

    def _start(self, config: DictConfig) -> None:
        from rank_sweep.plan.report import log_plan_on_run, log_sweep_plan
        from rank_sweep.prune.study import make_pruner, open_study

        plan = log_sweep_plan(config)  # cost plan; refuses a sweep that cannot fit or finish
        claim_sweep_dir(Path(config.hydra.sweep.dir))  # a second sweep here fails, one line
        sweep_id = claim_sweep_id(config, sweep_id_for(config), Path(config.hydra.sweep.dir))
        experiment = str(config.track.experiment)
        storage = optuna_storage(config.prune.storage)
        # Created even with prune=none: the trials still record every job for the dashboard.
        # First, so an unusable storage fails before a parent run exists.
        open_study(storage, sweep_id, make_pruner(config.prune), create=True)
        uri = parent = None
        if config.track.enabled:
            uri = tracking_uri(config.track.uri)
            parent = _open_parent(config, sweep_id, uri, experiment)
            if plan is not None:
                log_plan_on_run(uri, parent, plan)
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
            children = child_runs(info.tracking_uri, info.experiment, info.parent_run_id)
            counts = status_counts(children)
            _print_summary(children, config)
            tags = {status_count_tag(status): str(n) for status, n in counts.items()}
            if running_children(children):  # another process's job: the parent stays open
                log.warning("sweep %s: parent left RUNNING, children still run", info.sweep_id)
            else:
                end_run(info.tracking_uri, info.parent_run_id, tags, "FINISHED")
            log.info("sweep %s ended: %s", info.sweep_id, counts)
        release_claims(sweep_dir)
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


def _print_summary(children: list[Any], config: DictConfig) -> None:
    """The sweep's short table on the terminal (and once in the log), best first."""
    from rank_sweep.sweep.summary import format_summary, summary_rows

    metric = str(config.prune.get("metric") or f"fvd/{config.data.name}")
    table = format_summary(summary_rows(children, metric), metric)
    log.info("sweep summary:\n%s", table)
