"""Cost model of a sweep before launch: FLOPs, memory per GPU, GPU-hours of training and
of each evaluation tier, wall time against the launcher's limit (see README, research
scale). `python -m rank_sweep.plan +experiment=NAME [--json]`."""

from rank_sweep.plan.flops import Arch, ClipShape
from rank_sweep.plan.hardware import GPUS, GpuSpec, resolve_gpu
from rank_sweep.plan.job import JobPlan, Launcher, plan_job
from rank_sweep.plan.sweep import PlanRefused, SweepPlan, plan_sweep

__all__ = [
    "GPUS",
    "Arch",
    "ClipShape",
    "GpuSpec",
    "JobPlan",
    "Launcher",
    "PlanRefused",
    "SweepPlan",
    "plan_job",
    "plan_sweep",
    "resolve_gpu",
]
