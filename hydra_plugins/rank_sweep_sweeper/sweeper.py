"""Synchronous successive halving as a Hydra Sweeper.

The command line expands into jobs exactly as Hydra's BasicSweeper does (cartesian
product, `hydra.sweeper.params` included). Jobs with the same fingerprint are one arm
(`-m finetune=lora,full lora.rank=4,8` trains the full baseline once). Then, with
`prune.pruner=sha`:

    for each rung step S (fractions `prune.rungs` of train.steps):
        launch every surviving arm that has no record at S as ONE launcher batch with
        `train.stop_at=S` (the last rung: no stop, the job completes);
        the launcher returns when all of them are done (basic, joblib, submitit alike),
        so the decision below never depends on launch order or timing;
        read each arm's per-item rung metric from its record file;
        replay the decision stored in the Optuna study for this rung, or decide with
        `rank_sweep.prune.decide.decide` and store it (Optuna user attr, trial states,
        `<sweep dir>/decisions.json`, MLflow via the protocol's `on_decision`).

The baseline (full fine-tune) is launched once, in the first batch, to its full budget and
never ranked. A rerun of a killed sweep finds the records of finished rungs and the stored
decisions, so it launches only what is still to train. `prune.pruner=none` is the same
loop with a single rung at 1.0; `asha`/`median` launch every arm once at full budget and
let each job ask Optuna (asynchronous, order-dependent).
"""

import hashlib
import importlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

DECISIONS_FILE = "decisions.json"


@dataclass
class Arm:
    key: str
    info: Any  # the protocol's ArmInfo: label, fingerprint, baseline, trial_params
    overrides: list[str]
    cfg: DictConfig
    trial: int | None = None


@dataclass
class SweepContext:
    sweep_id: str
    storage: str | None
    parent_run_id: str | None = None
    tracking_uri: str | None = None


@dataclass
class DecisionLog:
    """What `<sweep dir>/decisions.json` and the MLflow artifact hold."""

    sweep_id: str
    settings: dict[str, Any]
    arms: dict[str, list[str]] = field(default_factory=dict)  # key -> overrides
    rungs: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] | None = None
    baselines: dict[str, float] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        return {
            "sweep_id": self.sweep_id,
            "settings": self.settings,
            "arms": self.arms,
            "rungs": self.rungs,
            "final": self.final,
            "baselines": self.baselines,
        }

    def write(self, sweep_dir: Path) -> Path:
        path = sweep_dir / DECISIONS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.doc(), indent=2, sort_keys=True))
        tmp.replace(path)
        return path


class RankSweepSweeper(Sweeper):
    def __init__(
        self, params: dict[str, str] | None = None, protocol: str = "rank_sweep.prune.rung"
    ) -> None:
        super().__init__()
        self.params = dict(params or {})
        self.protocol_name = protocol
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Launcher | None = None
        self.job_idx = 0
        self.failed: list[JobReturn] = []

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- expansion --------------------------------------------------------------------------
    def _expand(self, arguments: list[str]) -> list[list[str]]:
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        params = [f"{k}={v}" for k, v in self.params.items()]
        overrides = parser.parse_overrides([*params, *arguments])
        return [list(job) for job in BasicSweeper.split_arguments(overrides, None)[0]]

    def _arms(self, jobs: list[list[str]], proto: ModuleType) -> list[Arm]:
        """One arm per fingerprint, in order of first appearance; a duplicate keeps the
        smallest override list so the choice does not depend on the command's order."""
        assert self.hydra_context is not None and self.config is not None
        by_fp: dict[str, Arm] = {}
        for job in jobs:
            full = self.hydra_context.config_loader.load_sweep_config(self.config, list(job))
            # The job's own keys only: hydra.job.* is not filled in until the launch.
            cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
            info = proto.describe(cfg)
            arm = by_fp.get(info.fingerprint)
            if arm is None:
                by_fp[info.fingerprint] = Arm(info.label, info, job, cfg)
            elif sorted(job) < sorted(arm.overrides):
                arm.overrides, arm.cfg = job, cfg
        arms = list(by_fp.values())
        labels = [a.key for a in arms]
        for a in arms:  # two configs with one label (e.g. alpha swept too): add the fingerprint
            if labels.count(a.key) > 1:
                a.key = f"{a.info.label}-{a.info.fingerprint[:8]}"
        if len(jobs) != len(arms):
            log.info(
                "%d jobs are %d distinct arms (same fingerprint = one job)", len(jobs), len(arms)
            )
        return arms

    # -- launching ------------------------------------------------------------------------
    def _launch(self, batch: list[list[str]]) -> Sequence[JobReturn]:
        assert self.launcher is not None
        log.info("launching %d job(s) as one batch", len(batch))
        results = self.launcher.launch(batch, initial_job_idx=self.job_idx)
        self.job_idx += len(batch)
        for r in results:
            if r.status == JobStatus.FAILED:
                self.failed.append(r)
        return results

    def _context(self, sweep_dir: Path, storage: str | None) -> SweepContext:
        from rank_sweep.sweep.callbacks import read_sweep_info, sweep_id_for

        info = read_sweep_info(sweep_dir)  # written by the multirun callback when present
        if info is not None:
            return SweepContext(info.sweep_id, info.storage, info.parent_run_id, info.tracking_uri)
        assert self.config is not None
        if "sweep_name" in self.config:
            sweep_id = sweep_id_for(self.config)
        else:
            task = sorted(str(o) for o in (self.config.hydra.overrides.get("task") or []))
            sweep_id = "sweep-" + hashlib.sha256(json.dumps(task).encode()).hexdigest()[:8]
        return SweepContext(sweep_id, storage)

    # -- the sweep ----------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> Any:
        from rank_sweep.prune.schedule import PruneSettings

        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        proto = importlib.import_module(self.protocol_name)
        settings = PruneSettings.from_cfg(self.config.prune)
        arms = self._arms(self._expand(arguments), proto)
        if not settings.synchronous:
            log.info(
                "prune=%s: one batch of %d jobs; each job asks Optuna", settings.pruner, len(arms)
            )
            returns = [self._launch([a.overrides for a in arms])]
        else:
            ctx = self._context(sweep_dir, settings.storage)
            returns = _Halving(self, proto, settings, arms, ctx, sweep_dir).run()
        if self.failed:
            _ = self.failed[0].return_value  # re-raises the job's exception, as BasicSweeper does
        return returns


class _Halving:
    """The rung loop of one synchronous sweep (see the module docstring)."""

    def __init__(self, sweeper: RankSweepSweeper, proto: ModuleType, settings: Any,
                 arms: list[Arm], ctx: SweepContext, sweep_dir: Path) -> None:  # fmt: skip
        self.sweeper, self.proto, self.settings = sweeper, proto, settings
        self.arms, self.ctx, self.sweep_dir = arms, ctx, sweep_dir
        self.study = self.trials = None
        self.stored: dict[int, Any] = {}
        if ctx.storage:
            import optuna

            from rank_sweep.prune.study import open_study, stored_decisions
            from rank_sweep.prune.trial import ArmTrials

            self.study = open_study(ctx.storage, ctx.sweep_id, optuna.pruners.NopPruner(), True)
            self.trials = ArmTrials(self.study)
            self.stored = stored_decisions(self.study)
        s = settings
        self.log = DecisionLog(
            ctx.sweep_id,
            {
                "pruner": s.pruner,
                "rungs": list(s.rungs),
                "eta": s.eta,
                "delta_min": s.delta_min,
                "confidence": s.confidence,
                "rung_metric": s.rung_metric,
            },  # fmt: skip
            arms={a.key: sorted(a.overrides) for a in sorted(arms, key=lambda a: a.key)},
        )

    def _record(self, arm: Arm, step: int) -> Any:
        from rank_sweep.prune.rung import read_record

        return read_record(self.proto.record_path(arm.cfg, step))

    def _finished(self, arm: Arm) -> bool:
        """The arm has its final record: it completed its budget (here or in a reused run)."""
        rec = self._record(arm, self.proto.budget(arm.cfg))
        return rec is not None and rec.final

    def _budget(self, ranked: list[Arm]) -> int:
        budgets = {self.proto.budget(a.cfg) for a in ranked}
        if len(budgets) > 1:
            raise ValueError(
                f"arms have different budgets {sorted(budgets)}: successive halving compares "
                "arms at the same step; sweep train.steps with prune=none"
            )
        return budgets.pop() if budgets else self.proto.budget(self.sweeper.config)

    def run(self) -> list[Sequence[JobReturn]]:
        from rank_sweep.prune.decide import decide
        from rank_sweep.prune.schedule import rung_steps
        from rank_sweep.prune.study import store_decision

        s = self.settings
        if self.trials is not None:
            for a in self.arms:
                a.trial = self.trials.ensure(
                    a.key, a.info.trial_params, a.info.fingerprint, prunable=not a.info.baseline
                )
        ranked = [a for a in self.arms if not a.info.baseline]
        baselines = [a for a in self.arms if a.info.baseline]
        steps = rung_steps(s.rungs, self._budget(ranked))
        cfgs = {a.key: a.cfg for a in self.arms}
        returns: list[Sequence[JobReturn]] = []
        pending = list(baselines)  # launched with the first batch, to their full budget
        alive = list(ranked)
        for k, step in enumerate(steps):
            last = k == len(steps) - 1
            if len(alive) <= 1 and not last:
                continue  # nothing left to rank: straight to the full budget
            # An arm with its record at this rung is not relaunched (a rerun trains nothing),
            # nor is one that already finished its budget (a reused run), except at the end:
            # a finished job launched again returns at once, reusing its run, and so appears
            # in this sweep's tracking as well.
            todo = [
                a for a in alive
                if last or (self._record(a, step) is None and not self._finished(a))
            ]  # fmt: skip
            batch = [a.overrides + ([] if last else [self.proto.stop_override(step)]) for a in todo]
            batch += [b.overrides for b in pending]
            pending = []
            if batch:
                log.info("rung %d (step %d): %d arm(s) to train, %d with records", k, step,
                         len(todo), len(alive) - len(todo))  # fmt: skip
                returns.append(self.sweeper._launch(batch))
            else:
                log.info("rung %d (step %d): every arm has its record; nothing to train", k, step)
            records = {a.key: self._record(a, step) for a in alive}
            # A run reused from elsewhere (another sweep or a single run) has its final record
            # only: its compute is spent, so it is not ranked before the end, it goes on.
            carried = [a for a in alive if records[a.key] is None and self._finished(a)]
            for a in carried:
                log.info("arm %s finished its budget in a reused run: no record at step %d, "
                         "not ranked before the final rung", a.key, step)  # fmt: skip
            for a in [a for a in alive if records[a.key] is None and a not in carried]:
                log.error(
                    "arm %s wrote no record at step %d: treated as failed (the job failed, or "
                    "it reused a finished run that logged no rung record)", a.key, step,
                )  # fmt: skip
                if self.trials is not None:
                    self.trials.fail(a.trial, f"no rung record at step {step}")
            alive = [a for a in alive if records[a.key] is not None]
            if not alive:
                alive = carried
                if not carried:
                    break
                continue
            metrics = {a.key: records[a.key].values(s.rung_metric) for a in alive}
            if self.trials is not None:
                for a in alive:
                    self.trials.report(
                        a.trial, step, math.fsum(metrics[a.key]) / len(metrics[a.key])
                    )
            d = decide(self.ctx.sweep_id, k, step, metrics, eta=s.eta, delta_min=s.delta_min,
                       confidence=s.confidence)  # fmt: skip
            if last:
                self._finish(d, alive)
                break
            stored = self.stored.get(k)
            if stored is not None and stored.step == step and set(stored.arms) == set(metrics):
                if stored.outcome() != d.outcome():
                    log.warning("rung %d: stored decision differs from the metrics now; "
                                "replaying the stored one", k)  # fmt: skip
                d = stored
                log.info("rung %d: replayed stored decision: kept %s, pruned %s", k,
                         list(d.kept), list(d.pruned))  # fmt: skip
            else:
                if self.study is not None:
                    store_decision(self.study, d)
                log.info("rung %d (step %d): best %s, kept %s, pruned %s", k, step, d.best,
                         list(d.kept), list(d.pruned))  # fmt: skip
            self.log.rungs.append(d.to_dict())
            for key in d.pruned:
                if self.trials is not None:
                    arm = next(a for a in alive if a.key == key)
                    self.trials.prune(arm.trial, d.arms[key].reason)
            self.log.write(self.sweep_dir)
            self.proto.on_decision(self.ctx, d, cfgs, self.log.doc())
            alive = [a for a in alive if a.key in d.kept] + carried
        for b in baselines:
            rec = self._record(b, self.proto.budget(b.cfg))
            if rec is None:
                log.error("baseline %s wrote no final record", b.key)
                if self.trials is not None:
                    self.trials.fail(b.trial, "no final record")
                continue
            vals = rec.values(s.rung_metric)
            self.log.baselines[b.key] = math.fsum(vals) / len(vals)
            if self.trials is not None:
                self.trials.complete(b.trial, self.log.baselines[b.key])
        path = self.log.write(self.sweep_dir)
        self.proto.on_final(self.ctx, cfgs, self.log.doc())
        log.info("sweep %s decisions: %s", self.ctx.sweep_id, path)
        return returns

    def _finish(self, d: Any, alive: list[Arm]) -> None:
        """The last rung prunes nothing: it names the best and the arms tied with it."""
        tied = sorted(k for k, f in d.arms.items() if f.lo <= self.settings.delta_min)
        self.log.final = {
            "step": d.step,
            "best": d.best,
            "tied_with_best": tied,
            "arms": {
                k: {"mean": f.mean, "diff": f.diff, "lo": f.lo, "hi": f.hi}
                for k, f in d.arms.items()
            },  # fmt: skip
        }
        if self.trials is not None:
            for a in alive:
                self.trials.complete(a.trial, d.arms[a.key].mean)
        log.info("final rung (step %d): best %s, tied with it %s", d.step, d.best, tied)
