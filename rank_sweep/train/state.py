"""Gather and restore model + optimizer state for each backend, on top of checkpoint.py.

Single process: parameter tensors and a name-keyed optimizer state. FSDP2: full (unsharded)
state dicts gathered to rank 0's CPU via torch.distributed.checkpoint, so the checkpoint
is the same file a single process writes and a resume may use another world size.
DeepSpeed: the engine's own checkpoint (per-rank optimizer shards, frozen weights
excluded) inside our checkpoint dir, plus the trainable weights gathered for inspection.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as tdist

from rank_sweep.train.checkpoint import (
    CheckpointError,
    load_latest,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    tmp_dir,
    write_checkpoint,
)
from rank_sweep.train.dist import DeepSpeedModel, DistContext, is_sharded

DS_DIR = "deepspeed"
DS_TAG = "state"


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full trainable tensors by name; collective for sharded models (call on every rank;
    ranks other than 0 get an empty dict)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options())
    if isinstance(model, DeepSpeedModel):
        return _deepspeed_weights(model)
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def unsharded_copy(
    model: torch.nn.Module, build: Callable[[], torch.nn.Module], ctx: DistContext
) -> torch.nn.Module | None:
    """A plain module holding the trained weights, for saving in diffusers formats.

    Plain model: the model itself. Sharded (FSDP2) or DeepSpeed model: collective, call on
    every rank; rank 0 gets `build()` (the same transformer with the same finetune method
    applied; frozen weights come from it, which is right as training never changed them)
    loaded with the gathered trainable weights, other ranks get None."""
    if not is_sharded(model) and not isinstance(model, DeepSpeedModel):
        return model
    weights = trainable_weights(model)
    if not ctx.is_main:
        return None
    plain = build()
    _copy_weights(plain, weights)
    return plain


def _deepspeed_weights(model: DeepSpeedModel) -> dict[str, torch.Tensor]:
    params = [(n, p) for n, p in model.module.named_parameters() if p.requires_grad]
    if int(model.ds_config["zero_optimization"]["stage"]) == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters([p for _, p in params]):
            return {n: p.detach().float().cpu().clone() for n, p in params}
    return {n: p.detach().float().cpu().clone() for n, p in params}


def save(
    state_dir: Path,
    step: int,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    extra_state: dict[str, Any],
    ctx: DistContext,
) -> None:
    """Write one checkpoint; every rank calls it (gathers are collective), rank 0 writes."""
    state_dir = Path(state_dir)
    weights = trainable_weights(model)
    state = dict(extra_state)
    prepared = None
    if isinstance(model, DeepSpeedModel):
        prepared = tmp_dir(state_dir, step)
        if ctx.is_main and prepared.exists():
            shutil.rmtree(prepared)
        _barrier(ctx)
        model.engine.save_checkpoint(
            str(prepared / DS_DIR), tag=DS_TAG, exclude_frozen_parameters=True
        )
        _barrier(ctx)
    elif is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        state["optimizer"] = get_optimizer_state_dict(model, opt, options=_full_options())
        state["scheduler"] = sched.state_dict()
    else:
        state["optimizer"] = optimizer_state_by_name(model, opt)
        state["scheduler"] = sched.state_dict()
    if ctx.is_main:
        write_checkpoint(state_dir, step, weights, state, prepared=prepared)
    _barrier(ctx)


def restore(
    state_dir: Path,
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sched: Any,
    ctx: DistContext,
) -> dict[str, Any] | None:
    """Load the newest checkpoint into model/optimizer/scheduler; returns its state dict
    (step, data position, RNG, extra, result so far) or None when there is none."""
    loaded = load_latest(state_dir)  # falls back to the previous checkpoint if unreadable
    if loaded is None:
        return None
    path, state = loaded.path, loaded.state
    if state.get("pruned"):  # a completed job trimmed to its final weights: nothing to resume
        _load_final_weights(model, loaded.weights, path)
        return state
    if isinstance(model, DeepSpeedModel):
        load_path, _ = model.engine.load_checkpoint(
            str(path / DS_DIR), tag=DS_TAG, load_module_strict=False
        )
        if load_path is None:
            raise RuntimeError(f"DeepSpeed found no engine state under {path / DS_DIR}")
    elif is_sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, loaded.weights, options=opts)
        set_optimizer_state_dict(model, opt, state["optimizer"], options=opts)
        sched.load_state_dict(state["scheduler"])
    else:
        _copy_weights(model, loaded.weights)
        load_optimizer_state_by_name(model, opt, state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    return state


def _load_final_weights(model: torch.nn.Module, weights: dict, path: Path) -> None:
    """Weights of a trimmed (completed) checkpoint: enough to export and re-log the job."""
    if isinstance(model, DeepSpeedModel):
        raise CheckpointError(
            f"{path} was trimmed after the job completed (train.keep_checkpoints=0) and "
            "DeepSpeed cannot load it; use the store that has its run, or delete "
            f"{path.parent} to train it again"
        )
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, strict=False)
        set_model_state_dict(model, weights, options=opts)
        return
    _copy_weights(model, weights)


def _copy_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> None:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(weights))
    if missing:
        raise RuntimeError(
            f"checkpoint lacks {len(missing)} trainable params, e.g. {missing[:3]}: "
            "was it written by another finetune method or LoRA rank?"
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(weights[n])


def _barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        tdist.barrier()
