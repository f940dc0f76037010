"""Parallel backends: single process, FSDP2 (`fully_shard` per transformer block, then
the root) and DeepSpeed ZeRO-2/3; process-group setup from torchrun/SLURM env vars, and
`launch` that spawns the workers itself when a job is started as one plain process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as tdist

from rank_sweep.train.precision import amp_dtype_for
from rank_sweep.utils.device import pick_device

log = logging.getLogger(__name__)

BACKENDS = ("single", "fsdp", "deepspeed")
COMM_BACKENDS = ("auto", "nccl", "gloo")  # auto: nccl on GPU, gloo on CPU
ZERO_STAGES = (2, 3)  # DeepSpeed stages the deepspeed backend runs


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    is_main: bool = True

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 and tdist.is_available() and tdist.is_initialized()


def _env_int(*names: str, default: int) -> int:
    for n in names:
        if os.environ.get(n):
            return int(os.environ[n])
    return default


def expand_nodelist(nodelist: str) -> list[str]:
    """Host names of a SLURM node list in its compressed form: `node[01-03,07]`,
    `gpu-a[1-2]-ib,login5`, `rack[1-2]-n[1-2]` (zero padding kept, groups crossed)."""
    entries, depth, cur = [], 0, ""
    for ch in nodelist.strip():
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            entries.append(cur)
            cur = ""
        else:
            cur += ch
    entries.append(cur)
    hosts: list[str] = []
    for entry in filter(None, (e.strip() for e in entries)):
        hosts.extend(_expand_entry(entry))
    return hosts


def _expand_entry(entry: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", entry)
    if m is None:
        return [entry]
    head, tail = entry[: m.start()], entry[m.end() :]
    values: list[str] = []
    for part in m.group(1).split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            width = len(lo)
            values.extend(str(i).zfill(width) for i in range(int(lo), int(hi) + 1))
        else:
            values.append(part)
    return [h for v in values for h in _expand_entry(head + v + tail)]


def slurm_rendezvous(env: dict[str, str] | None = None) -> dict[str, str]:
    """torchrun-style variables of one SLURM task: RANK/WORLD_SIZE/LOCAL_RANK from
    SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID, MASTER_ADDR = first host of the job's node
    list, MASTER_PORT from the environment or derived from the job id (the same on every
    node, distinct between jobs sharing a node). Empty outside a multi-task SLURM step."""
    env = dict(os.environ if env is None else env)
    ntasks = int(env.get("SLURM_NTASKS") or env.get("SLURM_NPROCS") or 1)
    if ntasks <= 1 or "SLURM_PROCID" not in env:
        return {}
    out = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": str(ntasks),
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
    }
    if env.get("SLURM_NTASKS_PER_NODE", "").isdigit():
        out["LOCAL_WORLD_SIZE"] = env["SLURM_NTASKS_PER_NODE"]
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    addr = env.get("MASTER_ADDR") or (expand_nodelist(nodelist) or [""])[0]
    if not addr:
        raise RuntimeError(
            "SLURM task without MASTER_ADDR and without SLURM_JOB_NODELIST: cannot find rank 0"
        )
    out["MASTER_ADDR"] = addr
    job = int(env.get("SLURM_JOB_ID") or 0)
    out["MASTER_PORT"] = env.get("MASTER_PORT") or str(15000 + job % 20000)
    return out


def init_distributed(dist_cfg: Any) -> DistContext:
    """Join the process group described by torchrun (RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*) or
    by a multi-task SLURM step (`slurm_rendezvous`: one task per GPU, on one or several
    nodes). backend=single without such env vars gives a one-process context."""
    backend = str(dist_cfg.backend)
    if backend not in BACKENDS:
        raise ValueError(
            f"dist.backend={backend!r} is not supported; allowed: {', '.join(BACKENDS)}"
        )
    if "RANK" not in os.environ:
        for key, value in slurm_rendezvous().items():
            os.environ.setdefault(key, value)
    rank = _env_int("RANK", "SLURM_PROCID", default=0)
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    local = _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)
    nodes = int(getattr(dist_cfg, "nodes", 1) or 1)
    expected = nodes * int(dist_cfg.nproc_per_node)
    if nodes > 1 and world != expected:
        raise RuntimeError(
            f"dist.nodes={nodes} x dist.nproc_per_node={dist_cfg.nproc_per_node} = {expected} "
            f"ranks, but the environment has {world}: launch one SLURM task per GPU "
            "(hydra.launcher.nodes / tasks_per_node) or torchrun --nnodes"
        )
    device = pick_device("auto", local, set_current=True)
    if world <= 1:
        return DistContext(0, 1, 0, device, True)
    if not tdist.is_initialized():
        comm = str(getattr(dist_cfg, "comm_backend", "auto"))
        if comm == "auto":
            comm = "nccl" if device.type == "cuda" else "gloo"  # one of COMM_BACKENDS
        os.environ.setdefault("RANK", str(rank))
        os.environ.setdefault("WORLD_SIZE", str(world))
        os.environ.setdefault("LOCAL_RANK", str(local))
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise RuntimeError(
                f"rank {rank} of {world}: MASTER_ADDR and MASTER_PORT must be set to join the group"
            )
        tdist.init_process_group(
            backend=comm,
            rank=rank,
            world_size=world,
            device_id=device if device.type == "cuda" else None,
        )
    log.info("rank %d/%d on %s", rank, world, device)
    return DistContext(rank, world, local, device, rank == 0)


def grad_accum_for(train_cfg: Any, world: int) -> int:
    """Micro-batches per optimizer step on each rank: global_batch / (micro_batch x world)
    when `train.global_batch` is set (it must divide exactly), else `train.grad_accum`."""
    gb = getattr(train_cfg, "global_batch", None)
    if gb is None:
        return int(train_cfg.grad_accum)
    per_pass = int(train_cfg.micro_batch) * int(world)
    if int(gb) < per_pass or int(gb) % per_pass:
        raise ValueError(
            f"train.global_batch={gb} is not a multiple of micro_batch x world size = "
            f"{train_cfg.micro_batch} x {world}: pick a global batch divisible by {per_pass}"
        )
    return int(gb) // per_pass


def with_grad_accum(train_cfg: Any, world: int) -> Any:
    """A copy of the train config whose grad_accum is the one `grad_accum_for` derives
    (the loop and DeepSpeed read grad_accum); the same object when nothing changes."""
    accum = grad_accum_for(train_cfg, world)
    if int(train_cfg.grad_accum) == accum:
        return train_cfg
    if dataclasses.is_dataclass(train_cfg):
        return dataclasses.replace(train_cfg, grad_accum=accum)
    from omegaconf import OmegaConf

    copy = OmegaConf.create(OmegaConf.to_container(train_cfg, resolve=True))
    copy.grad_accum = accum
    return copy


def any_rank(flag: bool, ctx: DistContext | None) -> bool:
    """True on every rank when it is True on any rank (e.g. rank 0 decided to stop)."""
    if ctx is None or not ctx.distributed:
        return flag
    import torch.distributed as tdist

    t = torch.tensor([1.0 if flag else 0.0], device=ctx.device)
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


class DeepSpeedModel(torch.nn.Module):
    """A transformer that DeepSpeed will own. `deepspeed.initialize` needs the optimizer and
    lr schedule, which the training loop builds (it knows lr and steps), so the loop calls
    `initialize` and then drives `engine.backward` / `engine.step`."""

    def __init__(self, module: torch.nn.Module, ds_config: dict):
        super().__init__()
        self.module = module
        self.ds_config = ds_config
        self.engine: Any = None

    def initialize(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> Any:
        import deepspeed

        # A torch optimizer avoids compiling DeepSpeed's fused Adam op (minutes, needs nvcc).
        self.engine, _, _, _ = deepspeed.initialize(
            model=self.module,
            optimizer=optimizer,
            lr_scheduler=scheduler,
            config=self.ds_config,
        )
        return self.engine

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return (self.engine or self.module)(*args, **kwargs)


def deepspeed_config(dist_cfg: Any, train_cfg: Any, device: torch.device, world: int = 1) -> dict:
    stage = int(dist_cfg.zero_stage)
    if stage not in ZERO_STAGES:
        raise ValueError(
            f"dist.zero_stage={stage} is not supported for deepspeed; allowed: {ZERO_STAGES}"
        )
    use_bf16 = amp_dtype_for(str(train_cfg.mixed_precision), device) is torch.bfloat16
    cfg: dict = {
        "train_micro_batch_size_per_gpu": int(train_cfg.micro_batch),
        "gradient_accumulation_steps": grad_accum_for(train_cfg, world),
        "zero_optimization": {"stage": stage},
        "bf16": {"enabled": bool(use_bf16)},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    if float(train_cfg.max_grad_norm) > 0:
        cfg["gradient_clipping"] = float(train_cfg.max_grad_norm)
    return cfg


def wrap_model(
    transformer: torch.nn.Module, dist_cfg: Any, ctx: DistContext, train_cfg: Any
) -> torch.nn.Module:
    """Shard or hand over the (already adapted, on-device) transformer per `dist.backend`."""
    backend = str(dist_cfg.backend)
    if backend == "single" or (ctx.world_size <= 1 and backend == "fsdp"):
        return transformer
    if backend == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # Parameters gathered in the loop's autocast dtype (train.mixed_precision).
        param_dtype = amp_dtype_for(str(train_cfg.mixed_precision), ctx.device)
        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        reshard = bool(dist_cfg.reshard_after_forward)
        for block in transformer.blocks:
            fully_shard(block, mp_policy=mp, reshard_after_forward=reshard)
        fully_shard(transformer, mp_policy=mp, reshard_after_forward=reshard)
        return transformer
    if backend == "deepspeed":
        return DeepSpeedModel(
            transformer, deepspeed_config(dist_cfg, train_cfg, ctx.device, ctx.world_size)
        )
    raise ValueError(f"dist.backend={backend!r} is not supported; allowed: {', '.join(BACKENDS)}")


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The diffusers transformer inside whatever wrapper `wrap_model` returned."""
    return model.module if isinstance(model, DeepSpeedModel) else model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


# ---- launching workers ----


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(local_rank: int, nproc: int, port: int, fn: Callable, args: tuple, queue: Any) -> None:
    os.environ.update(
        {
            "RANK": str(local_rank),
            "LOCAL_RANK": str(local_rank),
            "WORLD_SIZE": str(nproc),
            "LOCAL_WORLD_SIZE": str(nproc),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    try:
        result = fn(*args)
    finally:
        if tdist.is_initialized():
            tdist.destroy_process_group()
    if local_rank == 0:
        queue.put(result)


def launch(fn: Callable, nproc: int, *args: Any) -> Any:
    """Run `fn(*args)` in `nproc` local workers with torchrun-style env vars and return
    rank 0's result. Under torchrun (RANK set), as one of several SLURM tasks
    (SLURM_NTASKS > 1: the tasks are the workers) or with nproc 1 it just calls fn.

    A worker that raises makes `torch.multiprocessing.spawn` terminate the others and
    re-raise here (ProcessRaisedException naming the rank and carrying the traceback)."""
    if nproc <= 1 or "RANK" in os.environ or _env_int("SLURM_NTASKS", default=1) > 1:
        return fn(*args)
    import torch.multiprocessing as mp

    from rank_sweep.train import requeue

    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    requeue.install()  # the signal reaches this process: hand it to the workers
    procs = mp.start_processes(
        _worker, args=(nproc, free_port(), fn, args, queue), nprocs=nproc, join=False,
        start_method="spawn",
    )  # fmt: skip
    requeue.forward_to_children([p.pid for p in procs.processes])
    try:
        while not procs.join():
            pass
    except mp.ProcessExitedException as exc:
        if exc.exit_code == requeue.REQUEUE_EXIT_CODE:  # workers checkpointed for requeue
            requeue.exit_for_requeue(0)
        raise
    finally:
        requeue.forward_to_children([])
    return queue.get() if not queue.empty() else None
