"""The plan of a sweep: every job of the multirun (sweeper params x command-line sweeps),
composed with the same Hydra config as `python -m rank_sweep`, planned, deduplicated by
job identity, and totalled under the pruning schedule the config declares.

Pruning: a synchronous successive-halving schedule (`prune.rungs` as fractions of
train.steps, `prune.eta`) keeps ceil(n/eta) LoRA arms per rung, so only the finalists
train to the end and run the final tier; the full baseline is never ranked. Without
rungs (ASHA, median: asynchronous, nothing guaranteed) nothing is assumed pruned.
`sweep.gpu_hours_no_pruning` is the bound when nothing separates and nothing is pruned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig

from rank_sweep.plan.hardware import Figures, GpuSpec, gpu_kind_of, resolve_gpu
from rank_sweep.plan.job import JobPlan, Launcher, plan_job
from rank_sweep.plan.tiers import generation_sharded, sel


class PlanRefused(ValueError):
    """At least one job cannot fit or finish; the message has one line per reason."""


@dataclass
class SweepPlan:
    jobs: list[JobPlan]
    gpu: GpuSpec
    launcher: Launcher
    arms_per_rung: list[int]  # LoRA arms training in each rung segment
    rungs: list[float]
    finalists: int  # LoRA arms that reach the end (and its final tier)
    train_gpu_hours: float
    eval_gpu_hours: float
    gpu_hours: float
    gpu_hours_no_pruning: float
    train_gpu_hours_no_pruning: float
    notes: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> list[str]:
        return [r for j in self.jobs for r in j.refusals]

    @property
    def total_to_train(self) -> float:
        return self.gpu_hours / self.train_gpu_hours if self.train_gpu_hours else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": {
                "kind": self.gpu.kind,
                "name": self.gpu.name,
                "peak_bf16_tflops": self.gpu.peak_bf16_flops / 1e12,
                "memory_gb": self.gpu.memory_gb,
                "train_util": self.gpu.train_util,
                "sample_util": self.gpu.sample_util,
                "source": self.gpu.source,
            },
            "launcher": vars(self.launcher),
            "jobs": [j.to_dict() for j in self.jobs],
            "sweep": {
                "jobs": len(self.jobs),
                "rungs": self.rungs,
                "lora_arms_per_rung": self.arms_per_rung,
                "finalists": self.finalists,
                "train_gpu_hours": round(self.train_gpu_hours, 2),
                "eval_gpu_hours": round(self.eval_gpu_hours, 2),
                "gpu_hours": round(self.gpu_hours, 2),
                "gpu_hours_no_pruning": round(self.gpu_hours_no_pruning, 2),
                "train_gpu_hours_no_pruning": round(self.train_gpu_hours_no_pruning, 2),
                "total_to_train": round(self.total_to_train, 3),
                "generation_sharded": generation_sharded(),
                "refusals": self.refusals,
                "notes": self.notes,
            },
        }


def pick_gpu(cfg: DictConfig, hydra_cfg: Any = None) -> GpuSpec:
    kind = str(sel(cfg, "plan.gpu", "auto"))
    if kind == "auto":
        constraint = sel(hydra_cfg, "launcher.constraint", None) if hydra_cfg is not None else None
        kind = (gpu_kind_of(str(constraint)) if constraint else None) or (
            "cpu" if cfg.model.get("path") is None else "h100"
        )
    return resolve_gpu(
        kind,
        Figures.load(sel(cfg, "plan.figures", None)),
        sel(cfg, "plan.train_util", None),
        sel(cfg, "plan.sample_util", None),
    )


def rung_schedule(cfg: DictConfig, n_arms: int) -> tuple[list[float], list[int]]:
    """(rung fractions, LoRA arms training in each segment) under synchronous halving."""
    rungs = sel(cfg, "prune.rungs", None)
    if n_arms == 0 or rungs is None or str(sel(cfg, "prune.pruner", "none")) == "none":
        return [1.0], [n_arms]
    fractions = sorted(float(r) for r in rungs)
    if fractions[-1] < 1.0:
        fractions.append(1.0)
    eta = int(sel(cfg, "prune.eta", None) or sel(cfg, "prune.reduction_factor", 2))
    arms, n = [], n_arms
    for _ in fractions:
        arms.append(n)
        n = max(1, math.ceil(n / eta))  # decided at the end of segment i
    return fractions, arms


def plan_sweep(
    job_cfgs: list[DictConfig], hydra_cfg: Any = None, gpu: GpuSpec | None = None
) -> SweepPlan:
    from rank_sweep.job.identity import fingerprint

    if not job_cfgs:
        raise ValueError("no jobs to plan")
    gpu = gpu or pick_gpu(job_cfgs[0], hydra_cfg)
    launcher = Launcher.from_hydra(hydra_cfg)
    seen: dict[str, JobPlan] = {}
    for cfg in job_cfgs:
        fp = fingerprint(cfg)
        if fp not in seen:  # e.g. the full baseline under several lora.rank values
            seen[fp] = plan_job(cfg, gpu, launcher)
    jobs = list(seen.values())
    lora = [j for j in jobs if j.method == "lora"]
    full = [j for j in jobs if j.method != "lora"]
    rungs, arms = rung_schedule(job_cfgs[0], len(lora))
    # Which arms survive is unknown before the run: cost the schedule with the mean arm.
    segs = [r - p for r, p in zip(rungs, [0.0, *rungs[:-1]])]
    frac_units = sum(a * s for a, s in zip(arms, segs))  # arm-fractions of training
    finalists = arms[-1] if lora else 0
    mean = (lambda f: sum(f(j) for j in lora) / len(lora)) if lora else (lambda f: 0.0)
    lora_train = mean(lambda j: j.train_gpu_hours) * frac_units
    lora_eval = (
        mean(lambda j: j.val_gpu_hours + periodic_share(j)) * frac_units
        + mean(lambda j: j.final_gpu_hours) * finalists
    )
    full_train = sum(j.train_gpu_hours for j in full)
    full_eval = sum(j.eval_gpu_hours for j in full)
    train_h, eval_h = lora_train + full_train, lora_eval + full_eval
    notes = [
        f"{gpu.name}: {gpu.peak_bf16_flops / 1e12:.0f} TFLOP/s bf16 peak, utilization "
        f"train {gpu.train_util:.2f} / sampling {gpu.sample_util:.2f} ({gpu.source})",
        "generation sharded over ranks"
        if generation_sharded()
        else "generation NOT sharded: every rank of a job generates every eval clip",
    ]
    if len(rungs) > 1:
        notes.append(
            f"successive halving at {rungs} of train.steps: LoRA arms per segment {arms}, "
            f"{finalists} finalist(s) run the final tier"
        )
    return SweepPlan(
        jobs=jobs,
        gpu=gpu,
        launcher=launcher,
        arms_per_rung=arms,
        rungs=rungs,
        finalists=finalists,
        train_gpu_hours=train_h,
        eval_gpu_hours=eval_h,
        gpu_hours=train_h + eval_h,
        gpu_hours_no_pruning=sum(j.gpu_hours for j in jobs),
        train_gpu_hours_no_pruning=sum(j.train_gpu_hours for j in jobs),
        notes=notes,
    )


def periodic_share(job: JobPlan) -> float:
    """Periodic-generation GPU-hours per unit of training fraction."""
    return sum(t.gpu_hours for t in job.tiers if t.name == "periodic")


def check(plan: SweepPlan) -> None:
    if plan.refusals:
        raise PlanRefused("\n".join(plan.refusals))
