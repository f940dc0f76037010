"""The plan of one job: FLOPs, memory per GPU, GPU-hours of training and of each eval
tier, wall time against the launcher's time limit, global batch and samples seen, and
the one-line refusals (what to change) when it cannot fit or cannot finish."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from omegaconf import DictConfig

from rank_sweep.plan.flops import Arch, ClipShape, transformer_config_for
from rank_sweep.plan.hardware import GpuSpec
from rank_sweep.plan.memory import MemoryPlan, plan_memory
from rank_sweep.plan.tiers import generation_sharded, generation_tiers, sel, val_points
from rank_sweep.track import contract as C

LOAD_H = 0.1  # per (re)start: load weights, latents and detectors (~6 min at 14B)
MEM_HEADROOM = 0.95  # fragmentation: plan to use at most 95% of the card
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Launcher:
    """What the launcher gives a job: GPUs, a time limit and how often it may requeue."""

    time_limit_h: float | None = None  # None: no limit (basic / joblib)
    max_requeues: int = 0
    gpus_per_node: int | None = None
    nodes: int = 1
    name: str = "basic"

    @classmethod
    def from_hydra(cls, hydra_cfg: Any) -> Launcher:
        launcher = sel(hydra_cfg, "launcher", None) if hydra_cfg is not None else None
        if launcher is None or "Slurm" not in str(launcher.get("_target_", "")):
            name = (
                str(launcher.get("_target_", "basic")).rsplit(".", 1)[-1] if launcher else "basic"
            )
            return cls(name=name)
        return cls(
            time_limit_h=float(launcher.timeout_min) / 60.0,
            max_requeues=int(launcher.get("max_num_timeout") or 0),
            gpus_per_node=launcher.get("gpus_per_node"),
            nodes=int(launcher.get("nodes") or 1),
            name="submitit_slurm",
        )


@dataclass
class TierCost:
    name: str
    runs: int
    clips: int
    pflop_per_run: float
    gpu_hours: float  # all runs, all GPUs of the job
    wall_h_per_run: float


@dataclass
class JobPlan:
    label: str
    method: str
    rank: int | None
    gpus: int
    global_batch: int
    grad_accum: int
    samples_seen: int
    trainable_params: int
    total_params: int
    train_pflop_per_sample: float
    train_gpu_hours: float
    train_wall_h: float
    val_gpu_hours: float
    tiers: list[TierCost]
    eval_gpu_hours: float
    gpu_hours: float
    wall_h: float
    starts: int  # allocations needed under the time limit (1 + requeues); 0 = never finishes
    memory: MemoryPlan
    peak_mem_gb: float
    gpu_memory_gb: float
    refusals: list[str] = field(default_factory=list)

    @property
    def final_gpu_hours(self) -> float:
        return sum(t.gpu_hours for t in self.tiers if t.name == "final")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["memory"] = self.memory.to_dict()
        d["final_gpu_hours"] = self.final_gpu_hours
        for k, v in d.items():
            if isinstance(v, float):
                d[k] = round(v, 3)
        return d


def world_size(cfg: DictConfig) -> int:
    return int(sel(cfg, "dist.nodes", 1)) * int(cfg.dist.nproc_per_node)


def lora_trainable(arch_cfg: dict, cfg: DictConfig) -> int:
    from rank_sweep.model.adapters import analytic_lora_params

    return analytic_lora_params(arch_cfg, int(cfg.lora.rank), list(cfg.lora.target_modules))


def plan_job(cfg: DictConfig, gpu: GpuSpec, launcher: Launcher | None = None) -> JobPlan:
    from rank_sweep.train.dist import grad_accum_for

    launcher = launcher or Launcher()
    arch_cfg, stride = transformer_config_for(cfg.model)
    arch = Arch.from_config(arch_cfg, stride)
    method = str(cfg.finetune.method)
    is_base = method == C.METHOD_NONE  # the untrained base: one final-tier eval, no training
    rank = int(cfg.lora.rank) if method == "lora" else None
    total = arch.total_params()
    trainable = lora_trainable(arch_cfg, cfg) if method == "lora" else 0 if is_base else total
    world = world_size(cfg)
    t = cfg.train
    accum = grad_accum_for(t, world)
    global_batch = int(t.micro_batch) * accum * world
    steps = 0 if is_base else int(t.steps)
    clip = ClipShape(int(cfg.data.frames), int(cfg.data.height), int(cfg.data.width))
    recompute = bool(t.activation_checkpointing)
    targets = len(list(cfg.lora.target_modules)) if method == "lora" else 12
    per_sample = arch.train_flops(clip, rank, recompute, lora_targets=targets)
    train_gpu_s = steps * global_batch * per_sample / (gpu.peak_bf16_flops * gpu.train_util)

    fwd_rate = gpu.peak_bf16_flops * gpu.sample_util
    n_val = 0 if is_base else val_points(steps, int(cfg.eval.every), int(t.val_every))
    val_gpu_s = n_val * int(t.val_clips) * arch.forward_flops(clip) / fwd_rate
    sharded = generation_sharded()
    tiers: list[TierCost] = []
    for tier in generation_tiers(cfg):
        if is_base and tier.name == "periodic":
            continue
        per_clip_s = arch.sample_flops(tier.clip, tier.steps, tier.guidance) / fwd_rate
        one_run_s = tier.clips * per_clip_s  # one GPU's worth of work for one eval
        wall_s = one_run_s / world if sharded else one_run_s
        gpu_s = one_run_s if sharded else one_run_s * world  # unsharded: every rank repeats it
        tiers.append(
            TierCost(
                name=tier.name,
                runs=tier.runs,
                clips=tier.clips,
                pflop_per_run=tier.clips
                * arch.sample_flops(tier.clip, tier.steps, tier.guidance)
                / 1e15,
                gpu_hours=tier.runs * gpu_s / 3600,
                wall_h_per_run=wall_s / 3600,
            )
        )
    eval_gpu_h = val_gpu_s / 3600 + sum(c.gpu_hours for c in tiers)
    train_wall = train_gpu_s / 3600 / world
    wall = train_wall + val_gpu_s / 3600 / world + sum(c.runs * c.wall_h_per_run for c in tiers)
    base_bytes = DTYPE_BYTES.get(str(cfg.model.dtype), 4)
    sample_frames = max([tc.clip.frames for tc in generation_tiers(cfg)] + [clip.frames])
    mem = plan_memory(
        arch,
        clip,
        method="lora" if is_base else method,  # the base: frozen weights, no optimizer
        trainable=trainable,
        base_dtype_bytes=base_bytes,
        micro_batch=int(t.micro_batch),
        checkpointing=recompute,
        backend=str(cfg.dist.backend),
        zero_stage=int(cfg.dist.zero_stage),
        world=world,
        sample_clip=ClipShape(sample_frames, clip.height, clip.width),
    )
    periodic = next((c for c in tiers if c.name == "periodic"), None)
    final = next((c for c in tiers if c.name == "final"), None)
    starts = count_starts(
        train_wall + val_gpu_s / 3600 / world,
        [periodic.wall_h_per_run] * periodic.runs if periodic else [],
        final.wall_h_per_run if final and final.runs else 0.0,
        launcher.time_limit_h,
    )
    wall += max(starts, 1) * LOAD_H
    from rank_sweep.job.identity import JobIdentity  # owns the arm's label

    plan = JobPlan(
        label=JobIdentity.from_config(cfg).label,
        method=method,
        rank=rank,
        gpus=world,
        global_batch=global_batch,
        grad_accum=accum,
        samples_seen=steps * global_batch,
        trainable_params=trainable,
        total_params=total,
        train_pflop_per_sample=per_sample / 1e15,
        train_gpu_hours=train_gpu_s / 3600,
        train_wall_h=train_wall,
        val_gpu_hours=val_gpu_s / 3600,
        tiers=tiers,
        eval_gpu_hours=eval_gpu_h,
        gpu_hours=train_gpu_s / 3600 + eval_gpu_h,
        wall_h=wall,
        starts=starts,
        memory=mem,
        peak_mem_gb=mem.peak_gb,
        gpu_memory_gb=gpu.memory_gb,
    )
    plan.refusals = refusals(plan, cfg, launcher, gpu)
    return plan


def count_starts(
    train_h: float, periodic_h: list[float], final_h: float, limit_h: float | None
) -> int:
    """Allocations a job needs under a time limit. Training splits anywhere (the requeue
    signal checkpoints at a step boundary); an eval does not: a checkpoint is written
    before it, so an eval cut by the limit reruns whole in the next allocation."""
    if not limit_h:
        return 1
    usable = limit_h - LOAD_H
    if usable <= 0:
        return 0
    chunks = len(periodic_h) + 1
    items: list[tuple[float, bool]] = []
    for h in periodic_h:
        items += [(train_h / chunks, True), (h, False)]
    items += [(train_h / chunks, True), (final_h, False)]
    starts, left = 1, usable
    for hours, splittable in items:
        if splittable:
            while hours > left + 1e-9:
                hours -= left
                starts, left = starts + 1, usable
            left -= hours
        elif hours > 0:
            if hours > usable:
                return 0  # refused below: one eval longer than the limit
            if hours > left:
                starts, left = starts + 1, usable
            left -= hours
    return starts


def refusals(plan: JobPlan, cfg: DictConfig, launcher: Launcher, gpu: GpuSpec) -> list[str]:
    """One line per reason the job cannot run as configured, each saying what to change."""
    out: list[str] = []
    cap = gpu.memory_gb * MEM_HEADROOM
    if plan.peak_mem_gb > cap:
        m = plan.memory
        if plan.method == "lora" and str(cfg.model.dtype) != "bfloat16":
            fix = "set model.dtype=bfloat16 (frozen base in bf16)"
        elif (
            not cfg.train.activation_checkpointing
            and m.activations_no_ckpt_gb > m.activations_ckpt_gb
        ):
            fix = "set train.activation_checkpointing=true"
        elif plan.method == "full" or plan.gpus == 1:
            fix = "shard it: dist=fsdp or dist=deepspeed_zero3 with more GPUs (dist.nproc_per_node, dist.nodes)"
        else:
            fix = "use more GPUs per job or a larger card (plan.gpu=h200)"
        out.append(
            f"{plan.label}: needs ~{plan.peak_mem_gb:.0f} GB per GPU > {cap:.0f} GB usable on "
            f"{gpu.kind} (weights {m.weights_gb:.0f}, grads {m.grads_gb:.0f}, optimizer "
            f"{m.optimizer_gb:.0f}, activations {m.activations_gb:.0f}): {fix}"
        )
    if launcher.time_limit_h:
        usable = launcher.time_limit_h - LOAD_H
        for tier in plan.tiers:
            if tier.runs and tier.wall_h_per_run > usable:
                out.append(
                    f"{plan.label}: one {tier.name} eval takes ~{tier.wall_h_per_run:.0f} h on "
                    f"{plan.gpus} GPU(s) > the {launcher.time_limit_h:.0f} h time limit: lower "
                    "eval.num_fake / eval.sample_steps, or run generation on more GPUs"
                )
        if plan.starts == 0 and not any("eval takes" in r for r in out):
            out.append(
                f"{plan.label}: the {launcher.time_limit_h:.2f} h time limit leaves no time "
                f"after the ~{LOAD_H:.1f} h of loading: raise hydra.launcher.timeout_min"
            )
        if plan.starts - 1 > launcher.max_requeues:
            out.append(
                f"{plan.label}: ~{plan.wall_h:.0f} h of wall needs {plan.starts - 1} requeue(s) of "
                f"the {launcher.time_limit_h:.0f} h limit: set hydra.launcher.max_num_timeout>="
                f"{plan.starts - 1} (or use more GPUs per job)"
            )
        if (
            launcher.gpus_per_node is not None
            and plan.gpus > int(launcher.gpus_per_node) * launcher.nodes
        ):
            out.append(
                f"{plan.label}: the job uses {plan.gpus} GPUs but the launcher asks for "
                f"{launcher.gpus_per_node} x {launcher.nodes} node(s): set "
                "hydra.launcher.gpus_per_node / hydra.launcher.nodes to match dist"
            )
    return out
