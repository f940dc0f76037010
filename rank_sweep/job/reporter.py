"""What a job tells the outside world: its MLflow child run and its Optuna trial.

Only the main rank reports. The run id is kept in the job's state dir, so a job killed
and rerun continues the same MLflow run and the same Optuna trial.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rank_sweep import paths
from rank_sweep.job.identity import JobIdentity
from rank_sweep.track import contract as C
from rank_sweep.utils.atomic import write_text_atomic

log = logging.getLogger(__name__)


def objective_key(cfg: DictConfig) -> str:
    from rank_sweep.eval.tiers import rung_metric

    return rung_metric(cfg)  # a periodic (validation) metric: selection never sees test


@dataclass
class Reporter:
    cfg: DictConfig
    identity: JobIdentity
    state_dir: Path
    sweep: Any = None  # rank_sweep.sweep.callbacks.SweepInfo for multiruns
    enabled: bool = True  # False on non-main ranks
    tracker: Any = None
    trial: Any = None
    reused: Any = None  # RunInfo of a finished run with the same fingerprint

    # -- opening ---------------------------------------------------------------------------
    def open(self, params: dict[str, str]) -> None:
        if not self.enabled:
            return
        cfg = self.cfg
        if cfg.track.enabled:
            from rank_sweep.track.runs import find_reusable_run
            from rank_sweep.track.store import ensure_store
            from rank_sweep.track.tracker import Tracker

            uri = self.tracking_uri()
            ensure_store(uri, cfg.track.experiment)
            self.reused = find_reusable_run(
                uri, cfg.track.experiment, self.identity.fingerprint, self._sweep_id()
            )
            if self.reused is not None:
                log.info(
                    "reusing finished run %s (%s, same effective config)",
                    self.reused.run_id,
                    self.reused.status,
                )
                self._adopt_reused(uri)
                return
            self.tracker = Tracker(uri, cfg.track.experiment)
            run_id = self.tracker.start(
                run_name=self.identity.label,
                tags=self._tags(),
                params=params,
                parent_run_id=getattr(self.sweep, "parent_run_id", None),
                resume_run_id=self._resumable_run_id(uri),
                system_metrics=bool(cfg.track.system_metrics),
            )
            self._save_ids(run_id=run_id, sweep_id=self._sweep_id())
        if self.sweep is not None and self._job_owns_trial():
            self._open_trial()

    def _sweep_id(self) -> str | None:
        return getattr(self.sweep, "sweep_id", None)

    def _resumable_run_id(self, uri: str) -> str | None:
        """The MLflow run this state dir last wrote to, if it is this sweep's (or, outside
        any sweep, a single run's): a killed job continues its own run. A run of another
        sweep stays where it is (that sweep's report keeps its row); this job opens its
        own run, while its training still resumes from the shared checkpoint."""
        saved = self._saved_ids()
        run_id = saved.get("run_id")
        if not run_id:
            return None
        if "sweep_id" in saved:
            owner = saved["sweep_id"]
        else:  # state written before run.json named its sweep: ask the store
            from rank_sweep.track.runs import run_tags

            owner = (run_tags(uri, run_id) or {}).get(C.TAG_SWEEP_ID)
        if owner != self._sweep_id():
            log.info("run %s belongs to sweep %s: this job opens its own run", run_id, owner)
            return None
        return run_id

    def _job_owns_trial(self) -> bool:
        """Under prune=sha/none the sweeper owns the Optuna trials; jobs only under the
        asynchronous pruners (asha, median), which each job asks itself."""
        from rank_sweep.prune.schedule import SYNC_PRUNERS

        return self.cfg.prune.pruner not in SYNC_PRUNERS

    def _open_trial(self) -> None:
        from rank_sweep.prune.study import make_pruner
        from rank_sweep.prune.trial import JobTrial

        self.trial = JobTrial.open(
            self.sweep.storage,
            self.sweep.study_name,
            make_pruner(self.cfg.prune),
            params=self.identity.trial_params(),
            fingerprint=self.identity.fingerprint,
            prunable=self.identity.is_lora,  # the baseline keeps its curve out of the pruners
        )

    def _adopt_reused(self, uri: str) -> None:
        """A run reused from another sweep (or a single run) is copied under this sweep."""
        if self.sweep is None or not getattr(self.sweep, "parent_run_id", None):
            return
        if self.reused.tags.get(C.TAG_SWEEP_ID) == self.sweep.sweep_id:
            return
        from rank_sweep.track.runs import copy_run

        copy_run(
            uri, self.reused.run_id, self.sweep.parent_run_id, {C.TAG_SWEEP_ID: self.sweep.sweep_id}
        )
        if not self._job_owns_trial():
            return
        self._open_trial()
        value = self.reused_objective()
        if self.reused.status in C.REUSABLE_STATUSES and value is not None:
            self.trial.complete(value)
        else:
            self.trial.prune()

    def tracking_uri(self) -> str:
        if self.sweep is not None and getattr(self.sweep, "tracking_uri", None):
            return self.sweep.tracking_uri
        return paths.tracking_uri(self.cfg.track.uri)

    def _tags(self) -> dict[str, str]:
        tags = {
            **self.identity.tags(),
            C.TAG_MODEL: self.cfg.model.name,
            C.TAG_DATASET: self.cfg.data.name,
        }
        if self.sweep is not None:
            tags[C.TAG_SWEEP_ID] = self.sweep.sweep_id
        return tags

    def _ids_path(self) -> Path:
        return self.state_dir / "run.json"

    def _saved_ids(self) -> dict[str, Any]:
        p = self._ids_path()
        try:
            return json.loads(p.read_text()) if p.exists() else {}
        except (OSError, json.JSONDecodeError):
            log.warning("ignoring unreadable %s", p)
            return {}

    def _save_ids(self, **ids: Any) -> None:
        data = {**self._saved_ids(), **ids}
        write_text_atomic(self._ids_path(), json.dumps(data))

    # -- during the job --------------------------------------------------------------------
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.enabled and self.tracker is not None:
            self.tracker.log_metrics(metrics, step)

    def log_params(self, params: dict[str, str]) -> None:
        if self.enabled and self.tracker is not None:
            self.tracker.log_params(params)

    def set_tags(self, tags: dict[str, str]) -> None:
        if self.enabled and self.tracker is not None:
            self.tracker.set_tags(tags)

    def report_eval(self, value: float, eval_index: int) -> bool:
        """Tell Optuna the objective after an eval; True means this trial should stop."""
        if not self.enabled or self.trial is None:
            return False
        return bool(self.trial.report(value, eval_index))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.enabled and self.tracker is not None and self.cfg.track.log_artifacts:
            self.tracker.log_artifact(str(path), artifact_path)

    # -- closing ---------------------------------------------------------------------------
    def finish(
        self,
        status: str,
        objective: float | None,
        *,
        error: str | None = None,
        pruned_step: int | None = None,
    ) -> None:
        if not self.enabled:
            return
        if self.trial is not None:
            if status in C.REUSABLE_STATUSES and objective is not None:
                self.trial.complete(objective)
            elif status == C.PRUNED:
                self.trial.prune()
            elif status == C.PAUSED:
                pass  # the trial stays RUNNING until the job resumes or is pruned
            else:
                self.trial.fail(error or "no objective")
        if self.tracker is not None:
            self.tracker.finish(status, error=error, pruned_step=pruned_step)

    # -- reuse -----------------------------------------------------------------------------
    def reused_objective(self) -> float | None:
        value = self.reused.metrics.get(objective_key(self.cfg))
        return None if value is None else float(value)

    def reused_source(self) -> str:
        """Run id that did the work (a reused run copied into a sweep points back to it)."""
        return self.reused.tags.get(C.TAG_REUSED_FROM) or self.reused.run_id

    def reused_summary(self) -> dict[str, Any]:
        """The reused run's summary.json (from its artifacts; rebuilt from its tags and
        metrics when it logged none), with `reused_from` and `weights` added."""
        from rank_sweep.track.runs import artifact_uri, read_artifact_text

        uri, source = self.tracking_uri(), self.reused_source()
        text = read_artifact_text(uri, source, C.SUMMARY_FILE)
        summary: dict[str, Any] = json.loads(text) if text else {}
        if not summary:
            summary = {
                **self.identity.summary(),
                "status": self.reused.status,
                "objective": {objective_key(self.cfg): self.reused_objective()},
                "metrics": dict(self.reused.metrics),
            }
        summary["reused_from"] = source
        weights = self.identity.weights_dir
        summary["weights"] = f"{artifact_uri(uri, source)}/{weights}" if weights else None
        return summary

    def restore_rung_record(self, path: Path) -> bool:
        """Copy the reused run's final rung record into this job's state dir (a sweep
        ranks arms by it; the run may have trained under another state root). True when
        the record is in place afterwards."""
        from rank_sweep.track.runs import read_artifact_text

        if path.exists():
            return True
        text = read_artifact_text(
            self.tracking_uri(), self.reused_source(), f"{C.RUNGS_ARTIFACT_DIR}/{path.name}"
        )
        if not text:
            return False
        write_text_atomic(path, text)
        return True
