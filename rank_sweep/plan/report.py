"""Text rendering of a sweep plan and the hook the sweep start calls."""

from __future__ import annotations

import logging
from typing import Any

from rank_sweep.plan.sweep import SweepPlan

log = logging.getLogger(__name__)


def _h(x: float) -> str:
    if 0 < x < 0.1:
        return f"{x:.2g}"  # the tiny CPU model: GPU-hours are fractions of a second
    return f"{x:,.1f}" if x < 1000 else f"{x:,.0f}"


def format_plan(plan: SweepPlan) -> str:
    g = plan.gpu
    lim = plan.launcher.time_limit_h
    lines = [
        f"cost plan on {g.name} ({g.memory_gb:.0f} GB), launcher {plan.launcher.name}"
        + (f", time limit {lim:.0f} h, max requeues {plan.launcher.max_requeues}" if lim else ""),
        "",
        f"{'job':<9}{'GPUs':>5}{'batch':>7}{'samples':>9}{'PF/smp':>8}{'mem GB':>8}"
        f"{'train GPU-h':>12}{'eval GPU-h':>11}{'final GPU-h':>12}{'wall h':>8}{'starts':>7}",
    ]
    for j in plan.jobs:
        lines.append(
            f"{j.label:<9}{j.gpus:>5}{j.global_batch:>7}{j.samples_seen:>9,}"
            f"{j.train_pflop_per_sample:>8.2f}{j.peak_mem_gb:>8.1f}{_h(j.train_gpu_hours):>12}"
            f"{_h(j.eval_gpu_hours):>11}{_h(j.final_gpu_hours):>12}{j.wall_h:>8.1f}{j.starts or 'never':>7}"
        )
    if plan.jobs:
        m = plan.jobs[0].memory
        lines.append(
            f"memory of {plan.jobs[0].label} per GPU: weights {m.weights_gb:.1f}, grads "
            f"{m.grads_gb:.1f}, optimizer {m.optimizer_gb:.1f}, activations "
            f"{m.activations_ckpt_gb:.1f} with checkpointing / {m.activations_no_ckpt_gb:.1f} "
            f"without, sampling peak {m.sampling_gb:.1f}"
        )
    lines += [
        "",
        f"sweep: {_h(plan.gpu_hours)} GPU-h = training {_h(plan.train_gpu_hours)} + "
        f"evaluation {_h(plan.eval_gpu_hours)} (total / training = {plan.total_to_train:.2f}); "
        f"{_h(plan.gpu_hours_no_pruning)} GPU-h if nothing is pruned",
        *[f"  - {n}" for n in plan.notes],
    ]
    for r in plan.refusals:
        lines.append(f"REFUSED {r}")
    return "\n".join(lines)


def log_sweep_plan(config: Any) -> SweepPlan | None:
    """Plan the multirun that is starting (called from the sweep callback): log it, and
    raise PlanRefused when a job cannot fit or finish and `plan.refuse` is on. A plan
    that cannot be computed (e.g. a sweep syntax it does not expand) is a warning: the
    plan advises, the jobs' own config checks still run."""
    from omegaconf import OmegaConf

    from rank_sweep.plan.compose import compose_jobs
    from rank_sweep.plan.sweep import check, plan_sweep

    task = list(OmegaConf.select(config, "hydra.overrides.task", default=[]) or [])
    hydra_side = OmegaConf.select(config, "hydra.overrides.hydra", default=[]) or []
    prefixes = ("hydra/launcher", "hydra.launcher", "hydra/sweeper", "hydra.sweeper")
    task += [str(o) for o in hydra_side if str(o).lstrip("+~").startswith(prefixes)]
    try:
        jobs, hydra_cfg = compose_jobs(task, multirun=True)
        plan = plan_sweep(jobs, hydra_cfg)
    except Exception as exc:  # noqa: BLE001 -- reported, and the sweep's own checks follow
        log.warning("cost plan unavailable for this sweep: %s", str(exc).splitlines()[0])
        return None
    log.info("%s", format_plan(plan))
    if bool(OmegaConf.select(config, "plan.refuse", default=True)):
        check(plan)
    return plan


def log_plan_on_run(tracking_uri: str, run_id: str, plan: SweepPlan) -> None:
    """The plan as `plan.json` + headline params on the sweep's parent run."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    client.log_dict(run_id, plan.to_dict(), "plan.json")
    for key, value in (
        ("plan.gpu", plan.gpu.kind),
        ("plan.gpu_hours", f"{plan.gpu_hours:.1f}"),
        ("plan.train_gpu_hours", f"{plan.train_gpu_hours:.1f}"),
        ("plan.eval_gpu_hours", f"{plan.eval_gpu_hours:.1f}"),
    ):
        try:
            client.log_param(run_id, key, value)
        except Exception:  # noqa: BLE001 -- a resumed parent already has the param
            log.debug("param %s already on run %s", key, run_id)
