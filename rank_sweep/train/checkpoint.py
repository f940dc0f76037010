"""Atomic, resumable training checkpoints.

Layout of `state_dir/checkpoint/`:
  trainable.safetensors  trainable weights by parameter name (LoRA A/B, or everything for full)
  state.pt               optimizer (keyed by parameter name), scheduler, RNG, data position,
                         step, caller's extra, result so far; only tensors/dicts/lists/ints/
                         floats/str, so `torch.load(weights_only=True)` reads it
  deepspeed/             DeepSpeed engine state instead of the optimizer (deepspeed only)

A checkpoint is written into a temp dir and swapped in with two renames
(checkpoint -> checkpoint.old, temp -> checkpoint); a kill between them leaves
checkpoint.old, so there is never a moment without a complete checkpoint. The previous
checkpoint stays as checkpoint.old after the swap: when the newest cannot be read (a
truncated file, a bad disk block), `load_latest` falls back to it and says so, and only
when neither can be read does the error name the dir to delete. After a job completes,
`prune_finished` trims the dir to what reuse needs (`train.keep_checkpoints`). Parameter names (not positions) key the optimizer state, and sharded
models are gathered to full tensors, so a resumed job may change its world size (not with
DeepSpeed, whose engine state is per rank).
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from rank_sweep.integrity import safetensors_whole

log = logging.getLogger(__name__)

CKPT = "checkpoint"
OLD = "checkpoint.old"
WEIGHTS = "trainable.safetensors"
STATE = "state.pt"
FORMAT_VERSION = 1
# Fault injection for the kill tests: "STEP:PHASE:SECONDS" sleeps while writing the
# checkpoint of STEP, at PHASE = write (files written, not swapped in) | swap (old one moved
# aside, new one not yet in place) | after (swap done).
PAUSE_ENV = "RANK_SWEEP_CKPT_PAUSE"


class CheckpointError(RuntimeError):
    pass


@dataclass
class Loaded:
    path: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]


# ---- RNG state as weights_only-loadable values ----


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        # python's state is a tuple of 625 ints below 2**32: int64 holds them exactly
        "python": {
            "version": int(py_version),
            "state": torch.tensor(py_state, dtype=torch.int64),
            "gauss": py_gauss,
        },
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def set_rng_state(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = s["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in s and torch.cuda.is_available() and len(s["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(s["cuda"])


# ---- optimizer state keyed by parameter name (single process) ----


def optimizer_state_by_name(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with parameter names instead of positions (the format
    torch.distributed.checkpoint's full optimizer state dict uses)."""
    names = {id(p): n for n, p in model.named_parameters()}
    sd = opt.state_dict()
    index_to_name: dict[int, str] = {}
    i = 0
    for group in opt.param_groups:
        for p in group["params"]:
            index_to_name[i] = names[id(p)]
            i += 1
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        g["params"] = [index_to_name[j] for j in g["params"]]
        groups.append(g)
    return {"state": {index_to_name[k]: v for k, v in sd["state"].items()}, "param_groups": groups}


def load_optimizer_state_by_name(
    model: torch.nn.Module, opt: torch.optim.Optimizer, sd: dict
) -> None:
    names = {id(p): n for n, p in model.named_parameters()}
    name_to_index: dict[str, int] = {}
    i = 0
    for group in opt.param_groups:
        for p in group["params"]:
            name_to_index[names[id(p)]] = i
            i += 1
    missing = sorted(set(name_to_index) - {n for g in sd["param_groups"] for n in g["params"]})
    if missing:
        raise CheckpointError(
            f"checkpoint optimizer state lacks {len(missing)} trainable params, e.g. {missing[:3]}"
        )
    groups = []
    for g in sd["param_groups"]:
        g = dict(g)
        g["params"] = [name_to_index[n] for n in g["params"]]
        groups.append(g)
    opt.load_state_dict(
        {"state": {name_to_index[k]: v for k, v in sd["state"].items()}, "param_groups": groups}
    )


# ---- write / find / read ----


def _pause(step: int, phase: str) -> None:
    spec = os.environ.get(PAUSE_ENV)
    if not spec:
        return
    want_step, want_phase, seconds = spec.split(":")
    if int(want_step) == step and want_phase == phase:
        log.warning("%s: pausing %ss at step %d phase %s", PAUSE_ENV, seconds, step, phase)
        time.sleep(float(seconds))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tmp_dir(state_dir: Path, step: int) -> Path:
    """Deterministic, so every rank of a DeepSpeed job writes its part into the same dir."""
    return Path(state_dir) / f".checkpoint-tmp-{step:09d}"


def write_checkpoint(
    state_dir: Path,
    step: int,
    weights: dict[str, torch.Tensor],
    state: dict[str, Any],
    prepared: Path | None = None,
) -> Path:
    """Write weights + state atomically; `prepared` is a temp dir already holding other parts."""
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = prepared or tmp_dir(state_dir, step)
    if prepared is None and tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().contiguous().cpu() for k, v in weights.items()},
        str(tmp / WEIGHTS),
        metadata={"step": str(step)},
    )
    torch.save({**state, "step": int(step), "format": FORMAT_VERSION}, tmp / STATE)
    for f in (tmp / WEIGHTS, tmp / STATE):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    _fsync_dir(tmp)
    _pause(step, "write")
    final, old = state_dir / CKPT, state_dir / OLD
    if final.exists() and not intact(final):
        # The newest is damaged (the run resumed from checkpoint.old): keep the good old one.
        log.warning("discarding unreadable checkpoint %s; keeping %s", final, old)
        shutil.rmtree(final)
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    _pause(step, "swap")
    os.rename(tmp, final)
    _fsync_dir(state_dir)
    _pause(step, "after")
    log.info("checkpoint at step %d -> %s", step, final)
    return final


def _complete(path: Path) -> bool:
    return (path / WEIGHTS).is_file() and (path / STATE).is_file()


def intact(path: Path) -> bool:
    """Cheap structural check (sizes and zip directory, no full read) of a checkpoint dir."""
    path = Path(path)
    return (
        _complete(path)
        and safetensors_whole(path / WEIGHTS)
        and zipfile.is_zipfile(path / STATE)  # torch.save writes a zip; truncation loses its end
    )


def candidates(state_dir: Path) -> list[Path]:
    """Complete checkpoints, newest first: `checkpoint`, then `checkpoint.old` (the
    previous one, or the only one after a kill between the two renames of a swap)."""
    return [Path(state_dir) / n for n in (CKPT, OLD) if _complete(Path(state_dir) / n)]


def find_checkpoint(state_dir: Path) -> Path | None:
    """The newest complete checkpoint dir (not read; `load_latest` reads with fallback)."""
    found = candidates(state_dir)
    return found[0] if found else None


def read_checkpoint(path: Path) -> Loaded:
    try:
        weights = load_file(str(path / WEIGHTS))
        state = torch.load(path / STATE, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: {exc}") from exc
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format')}, this code reads {FORMAT_VERSION}"
        )
    return Loaded(path=path, weights=weights, state=state)


def load_latest(state_dir: Path) -> Loaded | None:
    """Read the newest readable checkpoint; None when there is none at all.

    An unreadable newest one is logged and the previous one used (the steps since then
    are replayed, bitwise, by the loop); if none can be read the error says which dir to
    delete to start the job over.
    """
    found = candidates(state_dir)
    errors = []
    for path in found:
        try:
            loaded = read_checkpoint(path)
        except CheckpointError as exc:
            log.warning("%s; trying the previous checkpoint", str(exc).splitlines()[0][:300])
            errors.append(path.name)
            continue
        if errors:
            log.warning(
                "resuming from the previous checkpoint %s (step %s): %s could not be read",
                path,
                loaded.state.get("step"),
                ", ".join(errors),
            )
        return loaded
    if found:
        raise CheckpointError(
            f"checkpoints in {state_dir} cannot be read ({', '.join(errors)}); "
            f"delete {state_dir} to start this job over"
        )
    return None


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def prune_finished(state_dir: Path, keep: int) -> int:
    """Trim a completed job's state to what reuse needs; returns the bytes freed.

    keep >= 2: both checkpoints stay. keep 1: the previous one goes. keep 0: also the
    optimizer/scheduler state (Adam moments are 2x the trainable weights: hundreds of GB
    for a full 14B job) and DeepSpeed engine files; the final trainable weights, progress,
    RNG and eval history stay, so a rerun still finds the job finished and can re-log it.
    """
    state_dir = Path(state_dir)
    if keep >= 2 or not state_dir.is_dir():
        return 0
    before = _dir_bytes(state_dir)
    for stale in [state_dir / OLD, *state_dir.glob(".checkpoint-tmp-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    final = state_dir / CKPT
    if keep == 0 and _complete(final):
        state = torch.load(final / STATE, map_location="cpu", weights_only=True)
        slim = {k: v for k, v in state.items() if k not in ("optimizer", "scheduler")}
        slim["pruned"] = True
        tmp = final / (STATE + ".tmp")
        torch.save(slim, tmp)
        os.replace(tmp, final / STATE)
        shutil.rmtree(final / "deepspeed", ignore_errors=True)
    freed = before - _dir_bytes(state_dir)
    log.info(
        "pruned finished job state %s (keep_checkpoints=%d): freed %.1f MB",
        state_dir,
        keep,
        freed / 1e6,
    )
    return freed
