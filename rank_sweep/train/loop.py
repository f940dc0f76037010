"""The one training loop for LoRA and full fine-tuning (the method only decides which
parameters require grad), for one process, FSDP2 and DeepSpeed.

Step s (1-based) consumes grad_accum micro-batches of micro_batch clips per rank from a
seeded per-epoch permutation; sample k of step s draws its sigma and noise from its own
seed (seed, s, k), so a step is the same whether it is split into micro-batches, ranks or
resumed from a checkpoint (bitwise on CPU).

Cost figures are the job's own (train/perf.py): peak memory from a high-water mark reset
for this job (several Hydra jobs share one process), step time as a median with p10-p90
over timed steps (warm-up excluded; evaluations never fall inside a step's timing).

`train.checkpoint_every <= 0` writes no checkpoint at all (benchmarks); the job then
cannot resume and a rerun starts over.

`train.stop_at = S` pauses: after step S the loop checkpoints (always, whatever
checkpoint_every says) and returns with `paused=True`; the LR schedule is built from
`train.steps` and the pause is not recorded in the checkpoint, so resuming with a later
stop_at (or none) is bitwise the run that never paused.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist
from tqdm.auto import tqdm

from rank_sweep.track import contract as C
from rank_sweep.train import requeue
from rank_sweep.train import state as train_state
from rank_sweep.train.checkpoint import rng_state, set_rng_state
from rank_sweep.train.dist import (
    DeepSpeedModel,
    DistContext,
    any_rank,
    is_sharded,
    unwrap,
    with_grad_accum,
)
from rank_sweep.train.perf import PeakMemory, step_time_stats
from rank_sweep.train.precision import PRECISIONS, amp_dtype_for  # noqa: F401 (re-export)
from rank_sweep.train.steps import (
    DataPos,
    ForwardFn,
    collate,
    cosine_warmup_factor,
    micro_batch_loss,
    mix_seed,
    next_indices,
    to_device,
    validation_loss,
    warmup_steps,
)

log = logging.getLogger(__name__)

TIMING_WARMUP = 2  # first optimizer steps of a process are excluded from step time


class NonFiniteLossError(RuntimeError):
    pass


@dataclass
class TrainHooks:
    on_log: Callable[[dict[str, float], int], None] | None = None  # rank 0 only
    on_eval: Callable[[int, float | None], bool] | None = None  # every rank; True = stop
    get_extra: Callable[[], dict] | None = None  # small caller state saved in checkpoints
    set_extra: Callable[[dict], None] | None = None


@dataclass
class TrainResult:
    steps_done: int
    final_train_loss: float | None
    final_val_loss: float | None
    step_time_s: float  # median over timed steps (warm-up and evals excluded)
    peak_mem_mb: float  # this job's own peak (see train/perf.py)
    stopped_early: bool = False
    stop_step: int | None = None
    step_time_p10_s: float = 0.0
    step_time_p90_s: float = 0.0
    step_time_n: int = 0
    mem_method: str = ""
    paused: bool = False  # stopped at train.stop_at with a checkpoint, to be resumed


@dataclass
class _Progress:
    """Everything the loop itself must carry across a resume."""

    step: int = 0
    pos: DataPos = field(default_factory=DataPos)
    recent: list[float] = field(default_factory=list)  # last log_every step losses
    val_loss: float | None = None
    times: list[float] = field(default_factory=list)  # timed steps, kept across resumes
    peak_mem_mb: float = 0.0
    mem_method: str = ""
    stopped_early: bool = False
    eval_pending: bool = False  # checkpointed just before an eval that has not finished

    def to_state(self) -> dict[str, Any]:
        d = asdict(self)
        d["pos"] = [self.pos.epoch, self.pos.offset]
        return d

    @classmethod
    def from_state(cls, d: dict[str, Any]) -> _Progress:
        d = dict(d)
        d["pos"] = DataPos(*d["pos"])
        return cls(**d)


def _grad_norm(params: list[torch.Tensor], max_norm: float, want: bool, step: int) -> float | None:
    """Total gradient norm (computed when clipping or logging); clips to max_norm > 0.
    A non-finite norm raises before the optimizer can write NaN into the weights."""
    if max_norm <= 0 and not want:
        return None
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    full = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # DTensor under FSDP2
    value = float(full)
    if not math.isfinite(value):
        raise NonFiniteLossError(f"non-finite gradient norm {value} at step {step} (finite loss)")
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return value


class _Stepper:
    """backward / optimizer step for plain torch and FSDP2 (the optimizer sees local shards)."""

    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, sched: Any, cfg: Any):
        self.model, self.opt, self.sched, self.cfg = model, opt, sched, cfg
        self.params = [p for p in model.parameters() if p.requires_grad]

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        if is_sharded(self.model):
            self.model.set_requires_gradient_sync(last)  # one reduce-scatter per step
        (loss / int(self.cfg.grad_accum)).backward()

    def step(self, want_norm: bool, step: int) -> float | None:
        norm = _grad_norm(self.params, float(self.cfg.max_grad_norm), want_norm, step)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        return norm


class _DeepSpeedStepper(_Stepper):
    """DeepSpeed scales by grad_accum, clips and steps at the accumulation boundary itself;
    it wants `engine.step()` after every micro-batch backward."""

    def __init__(self, model: DeepSpeedModel, opt: torch.optim.Optimizer, sched: Any, cfg: Any):
        super().__init__(model, opt, sched, cfg)
        self.engine = model.engine

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        self.engine.backward(loss)
        if not last:
            self.engine.step()

    def step(self, want_norm: bool, step: int) -> float | None:
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)


def _model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _all_mean(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.distributed:
        value = value.clone()
        tdist.all_reduce(value)
        value /= ctx.world_size
    return value


def _result(p: _Progress) -> TrainResult:
    times = step_time_stats(p.times)
    return TrainResult(
        steps_done=p.step,
        final_train_loss=sum(p.recent) / len(p.recent) if p.recent else None,
        final_val_loss=p.val_loss,
        step_time_s=times.median_s,
        peak_mem_mb=p.peak_mem_mb,
        stopped_early=p.stopped_early,
        stop_step=p.step if p.stopped_early else None,
        step_time_p10_s=times.p10_s,
        step_time_p90_s=times.p90_s,
        step_time_n=times.n,
        mem_method=p.mem_method,
    )


def train(
    transformer: torch.nn.Module,
    train_set: Any,
    cfg: Any,
    *,
    lr: float,
    state_dir: Path,
    forward_fn: ForwardFn,
    shift: float,
    val_set: Any = None,
    eval_every: int = 0,
    hooks: TrainHooks | None = None,
    dist: DistContext | None = None,
    memory: PeakMemory | None = None,
) -> TrainResult:
    """Train `transformer` (plain, FSDP2-sharded or a DeepSpeedModel) for cfg.steps optimizer
    steps, resuming from `state_dir/checkpoint` when present. Raises NonFiniteLossError on
    a NaN/inf loss, before it reaches the weights."""
    hooks = hooks or TrainHooks()
    device = _model_device(unwrap(transformer))
    # The job's own peak: reset here unless the caller reset it earlier (at job start).
    memory = memory or PeakMemory(device).reset()
    ctx = dist or DistContext(device=device)
    cfg = with_grad_accum(cfg, ctx.world_size)  # train.global_batch -> accumulation
    requeue.install()  # SLURM's pre-timeout signal -> checkpoint -> exit 75
    state_dir = Path(state_dir)
    amp = amp_dtype_for(str(cfg.mixed_precision), device)
    model = transformer
    if cfg.activation_checkpointing:
        unwrap(model).enable_gradient_checkpointing()
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters: apply the finetune method first")
    opt = torch.optim.AdamW(
        params,
        lr=lr,
        betas=tuple(float(b) for b in cfg.betas),
        weight_decay=float(cfg.weight_decay),
    )
    total = int(cfg.steps)  # the schedule's length: never the pause step
    stop_at = int(getattr(cfg, "stop_at", None) or 0)
    if stop_at >= total:
        stop_at = 0  # stopping at the end is just finishing
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        partial(
            cosine_warmup_factor, total=total, warmup=warmup_steps(total, float(cfg.warmup_ratio))
        ),
    )
    if isinstance(model, DeepSpeedModel):
        model.initialize(opt, sched)
        stepper: _Stepper = _DeepSpeedStepper(model, opt, sched, cfg)
    else:
        stepper = _Stepper(model, opt, sched, cfg)

    if ctx.is_main and state_dir.exists():
        for stale in state_dir.glob(".checkpoint-tmp-*"):  # left by a kill during a write
            shutil.rmtree(stale, ignore_errors=True)
    prog = _Progress()
    saved = train_state.restore(state_dir, model, opt, sched, ctx)
    if saved is not None:
        prog = _Progress.from_state(saved["progress"])
        set_rng_state(saved["rng"])
        if hooks.set_extra is not None:
            hooks.set_extra(dict(saved.get("extra", {})))
        log.info(
            "resumed from step %d (epoch %d, offset %d)", prog.step, prog.pos.epoch, prog.pos.offset
        )
        if (prog.step >= total or prog.stopped_early) and not prog.eval_pending:
            return _result(prog)
        if stop_at and prog.step >= stop_at:  # a rerun of a finished rung: nothing to train
            return _paused(prog)

    def checkpoint(step: int) -> None:
        extra = hooks.get_extra() if hooks.get_extra is not None else {}
        payload = {"progress": prog.to_state(), "rng": rng_state(), "extra": extra}
        train_state.save(state_dir, step, model, opt, sched, payload, ctx)

    mb, accum, world = int(cfg.micro_batch), int(cfg.grad_accum), ctx.world_size
    every = int(cfg.checkpoint_every)
    has_eval = hooks.on_eval is not None

    def run_eval(step: int, is_eval: bool) -> bool:
        """Validation loss and the eval hook at `step`; True = stop early."""
        final = step == total
        is_val = is_eval or (int(cfg.val_every) > 0 and step % int(cfg.val_every) == 0)
        val_loss = None
        if val_set is not None and len(val_set) > 0 and is_val:
            val_loss = validation_loss(
                model, val_set, forward_fn, cfg, shift, device, amp, ctx.rank, world
            )
            prog.val_loss = val_loss
            if ctx.is_main and hooks.on_log is not None:
                hooks.on_log({C.VAL_LOSS: val_loss}, step)
        stop = False
        if is_eval and hooks.on_eval is not None:
            stop = any_rank(bool(hooks.on_eval(step, val_loss)), ctx) and not final
        prog.eval_pending = False
        prog.stopped_early = stop
        return stop

    log_every = max(1, int(cfg.log_every))
    seg_times: list[float] = []
    model.train()
    # `disable` is passed only on other ranks, so TQDM_DISABLE=1 still silences rank 0
    quiet = {} if ctx.is_main else {"disable": True}
    bar = tqdm(total=total, initial=prog.step, desc="train", dynamic_ncols=True, **quiet)
    if prog.eval_pending:  # cut inside this eval last time: run it again before training on
        log.info("re-running the eval at step %d that the last run did not finish", prog.step)
        stop = run_eval(prog.step, True)
        checkpoint(prog.step)
        if stop or prog.step >= total:
            bar.close()
            return _result(prog)
    try:
        for step in range(prog.step + 1, total + 1):
            t0 = time.perf_counter()
            lr_now = opt.param_groups[0]["lr"]
            losses = []
            for micro in range(accum):
                idx, prog.pos = next_indices(prog.pos, len(train_set), mb * world, int(cfg.seed))
                mine = idx[ctx.rank * mb : (ctx.rank + 1) * mb]
                slot0 = micro * mb * world + ctx.rank * mb
                seeds = [mix_seed(int(cfg.seed), step, slot0 + j) for j in range(mb)]
                batch = to_device(collate([train_set[i] for i in mine]), device)
                loss = micro_batch_loss(model, batch, forward_fn, cfg, shift, seeds, amp)
                stepper.backward(loss, last=micro == accum - 1)
                losses.append(loss.detach().float())
            step_loss = float(_all_mean(torch.stack(losses).mean(), ctx))
            if not math.isfinite(step_loss):
                raise NonFiniteLossError(
                    f"non-finite training loss {step_loss} at step {step} (lr {lr_now:.3g}); "
                    "lower finetune.lr or check the data/latents"
                )
            want_log = step % log_every == 0 or step == total
            grad_norm = stepper.step(want_norm=want_log, step=step)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seg_times.append(time.perf_counter() - t0)
            # Warm-up steps of this process (also after a resume) are not timed; eval time
            # never falls inside [t0, now].
            if len(seg_times) > TIMING_WARMUP:
                prog.times.append(seg_times[-1])
            elif step == total and not prog.times:  # too short to skip warm-up: time all
                prog.times = list(seg_times)
            prog.step = step
            prog.recent = (prog.recent + [step_loss])[-log_every:]
            prog.peak_mem_mb = max(prog.peak_mem_mb, memory.peak_mb())
            prog.mem_method = memory.method
            bar.update(1)
            # refresh=False: the redraw follows mininterval (rare in a log file, see runtime.py)
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr_now:.2e}", refresh=False)
            if want_log and ctx.is_main and hooks.on_log is not None:
                metrics = {C.TRAIN_LOSS: sum(prog.recent) / len(prog.recent), C.TRAIN_LR: lr_now}
                if grad_norm is not None:
                    metrics[C.TRAIN_GRAD_NORM] = grad_norm
                hooks.on_log(metrics, step)

            final = step == total
            is_eval = final or (eval_every > 0 and step % eval_every == 0)
            if every > 0 and is_eval and has_eval:  # a cut inside the eval reruns only it
                prog.eval_pending = True
                checkpoint(step)
            stop = run_eval(step, is_eval)
            pause = step == stop_at and not stop
            periodic = every > 0 and (stop or final or step % every == 0 or (is_eval and has_eval))
            saved = pause or periodic
            if saved:
                checkpoint(step)
            if stop:
                log.info("stopped early at step %d by on_eval", step)
                break
            if pause:
                log.info("paused at step %d of %d (train.stop_at)", step, total)
                return _paused(prog)
            if requeue.requested(ctx):
                if every > 0 and not saved:
                    checkpoint(step)
                bar.close()
                requeue.exit_for_requeue(ctx.rank)
    finally:
        bar.close()
    return _result(prog)


def _paused(p: _Progress) -> TrainResult:
    r = _result(p)
    r.paused = True
    return r
