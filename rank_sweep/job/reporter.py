"""What a job tells the outside world: its MLflow child run and its Optuna trial.

Only the main rank reports. The run id is kept in the job's state dir, so a job killed
and rerun continues the same MLflow run and the same Optuna trial.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from rank_sweep.job.identity import fingerprint, job_label

log = logging.getLogger(__name__)


def objective_key(cfg: DictConfig) -> str:
    return cfg.prune.metric or f"fvd/{cfg.data.name}"


@dataclass
class Reporter:
    cfg: DictConfig
    state_dir: Path
    sweep: Any = None  # rank_sweep.sweep.callbacks.SweepInfo for multiruns
    enabled: bool = True  # False on non-main ranks
    tracker: Any = None
    trial: Any = None
    reused: Any = None  # a finished run with the same fingerprint
    history: list[dict[str, float]] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cfg)

    # -- opening ---------------------------------------------------------------------------
    def open(self, params: dict[str, str]) -> None:
        if not self.enabled:
            return
        cfg = self.cfg
        if cfg.track.enabled:
            from rank_sweep.track.store import ensure_store
            from rank_sweep.track.tracker import Tracker, find_run_by_fingerprint

            uri = self._tracking_uri()
            ensure_store(uri, cfg.track.experiment)
            self.reused = find_run_by_fingerprint(
                uri,
                cfg.track.experiment,
                self.fingerprint,
                ("completed", "pruned", "stopped_plateau"),
            )
            if self.reused is not None:
                log.info("reusing finished run %s (same effective config)", _run_id(self.reused))
                self._adopt_reused(uri)
                return
            self.tracker = Tracker(uri, cfg.track.experiment)
            saved = self._saved_ids()
            run_id = self.tracker.start(
                run_name=job_label(cfg),
                tags=self._tags(),
                params=params,
                parent_run_id=getattr(self.sweep, "parent_run_id", None),
                resume_run_id=saved.get("run_id"),
                system_metrics=bool(cfg.track.system_metrics),
            )
            self._save_ids(run_id=run_id)
        if self.sweep is not None:
            self._open_trial()

    def _open_trial(self) -> None:
        from rank_sweep.prune.study import make_pruner
        from rank_sweep.prune.trial import JobTrial

        cfg = self.cfg
        is_lora = cfg.finetune.method == "lora"
        self.trial = JobTrial.open(
            self.sweep.storage,
            self.sweep.study_name,
            make_pruner(cfg.prune),
            params={
                "method": cfg.finetune.method,
                "lora_rank": int(cfg.lora.rank) if is_lora else 0,
            },
            fingerprint=self.fingerprint,
            prunable=is_lora,  # the baseline keeps its curve out of the pruners
        )

    def _adopt_reused(self, uri: str) -> None:
        """A run reused from another sweep (or a single run) is copied under this sweep."""
        if self.sweep is None or not getattr(self.sweep, "parent_run_id", None):
            return
        if self.reused.tags.get("rank_sweep.sweep_id") == self.sweep.sweep_id:
            return
        from rank_sweep.track.runs import copy_run

        copy_run(
            uri,
            _run_id(self.reused),
            self.sweep.parent_run_id,
            {"rank_sweep.sweep_id": self.sweep.sweep_id},
        )
        self._open_trial()
        value = self.reused.metrics.get(objective_key(self.cfg))
        if self.reused.status == "completed" and value is not None:
            self.trial.complete(float(value))
        else:
            self.trial.prune()

    def _tracking_uri(self) -> str:
        from rank_sweep.track.store import default_tracking_uri

        if self.sweep is not None and getattr(self.sweep, "tracking_uri", None):
            return self.sweep.tracking_uri
        return self.cfg.track.uri or default_tracking_uri()

    def _tags(self) -> dict[str, str]:
        cfg = self.cfg
        tags = {
            "rank_sweep.method": cfg.finetune.method,
            "rank_sweep.lora_rank": str(cfg.lora.rank) if cfg.finetune.method == "lora" else "",
            "rank_sweep.fingerprint": self.fingerprint,
            "rank_sweep.model": cfg.model.name,
            "rank_sweep.dataset": cfg.data.name,
        }
        if self.sweep is not None:
            tags["rank_sweep.sweep_id"] = self.sweep.sweep_id
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
        self.state_dir.mkdir(parents=True, exist_ok=True)
        data = {**self._saved_ids(), **ids}
        tmp = self._ids_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self._ids_path())

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
            if status in ("completed", "stopped_plateau") and objective is not None:
                self.trial.complete(objective)
            elif status == "pruned":
                self.trial.prune()
            else:
                self.trial.fail(error or "no objective")
        if self.tracker is not None:
            self.tracker.finish(status, error=error, pruned_step=pruned_step)

    def reused_objective(self) -> float | None:
        from mlflow.tracking import MlflowClient

        run = MlflowClient(self._tracking_uri()).get_run(_run_id(self.reused))
        value = run.data.metrics.get(objective_key(self.cfg))
        return None if value is None else float(value)


def _run_id(info: Any) -> str:
    return getattr(info, "run_id", None) or info["run_id"]
