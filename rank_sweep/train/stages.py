"""Multi-stage recipe (`train.stages`): e.g. visual style first on stills / short windows,
then motion on full clips, each stage with its own data view, target modules, steps and lr.

Stages run the one training loop in sequence on the same model: stage k+1 continues from
stage k's adapter (same LoRA weights, a fresh optimizer and warm-up/cosine schedule over
its own steps). Each stage checkpoints into `state_dir/stage<k>`, so a rerun restores
stage 1's final weights, then stage 2's newest checkpoint: resume works across the
boundary. Steps reported to hooks (and MLflow) are global (stage offset added), so the
stages share one run; `on_stage` marks each boundary.

Data views of a precomputed clip (latents [16, T', H', W'], cond = mask(4) + first-frame
latent(16)):
- clips: unchanged.
- window: the first `latent_frames` latent frames of latents and cond (a shorter I2V clip:
  Wan's VAE is causal in time, so these are the latents of the first 4(k-1)+1 frames).
- stills: latent frame 0 only with the first-frame condition zeroed, so the model must
  produce the frame's look from text + CLIP image embedding: a style-only objective.
Validation always uses full clips (the same slice for every arm).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from rank_sweep.track import contract as C
from rank_sweep.train.loop import TrainHooks, TrainResult, train

log = logging.getLogger(__name__)

VIEWS = ("clips", "window", "stills")
# Run tags (readers: report/extra.py). To move into track/contract.py with the other names.
TAG_RECIPE = C.TAG_RECIPE
TAG_STAGES = C.TAG_STAGES


def recipe_name(stages: list[Stage]) -> str:
    return {0: "one_stage", 2: "two_stage"}.get(len(stages), f"{len(stages)}_stage")


@dataclass(frozen=True)
class Stage:
    name: str
    view: str  # clips | window | stills
    steps: int
    latent_frames: int = 1  # window only
    lr: float | None = None  # None: the job's lr
    target_modules: tuple[str, ...] | None = None  # None: every adapted module

    def describe(self) -> str:
        view = f"window{self.latent_frames}" if self.view == "window" else self.view
        return f"{self.name}:{view}"


def parse_stages(train_cfg: Any) -> list[Stage]:
    """`train.stages` as Stage records, validated (empty list = the one-stage recipe)."""
    raw = train_cfg.get("stages") if hasattr(train_cfg, "get") else None
    if not raw:
        return []
    stages = []
    for k, s in enumerate(raw, 1):
        s = OmegaConf.to_container(s, resolve=True) if OmegaConf.is_config(s) else dict(s)
        view = str(s.get("view", "clips"))
        if view not in VIEWS:
            raise ValueError(f"train.stages[{k - 1}].view={view!r}; allowed: {', '.join(VIEWS)}")
        steps = int(s.get("steps", 0))
        if steps < 1:
            raise ValueError(f"train.stages[{k - 1}].steps must be >= 1, got {steps}")
        tm = s.get("target_modules")
        stages.append(
            Stage(
                name=str(s.get("name") or f"stage{k}"),
                view=view,
                steps=steps,
                latent_frames=max(1, int(s.get("latent_frames") or 1)),
                lr=None if s.get("lr") is None else float(s["lr"]),
                target_modules=None if tm is None else tuple(str(t) for t in tm),
            )
        )
    total = sum(s.steps for s in stages)
    if total != int(train_cfg.steps):
        raise ValueError(
            f"train.steps={train_cfg.steps} must equal the sum of train.stages steps "
            f"({' + '.join(str(s.steps) for s in stages)} = {total})"
        )
    return stages


def describe(stages: list[Stage]) -> str:
    """`name:view:start-end|...` (global steps), the run's stage-boundary tag."""
    parts, start = [], 0
    for s in stages:
        parts.append(f"{s.describe()}:{start}-{start + s.steps}")
        start += s.steps
    return "|".join(parts)


def view_item(item: dict[str, Any], stage: Stage) -> dict[str, Any]:
    """One precomputed training item seen through the stage's data view."""
    if stage.view == "clips":
        return item
    k = 1 if stage.view == "stills" else stage.latent_frames
    out = dict(item)
    out["latents"] = item["latents"][:, :k]
    cond = item["cond"][:, :k]
    out["cond"] = torch.zeros_like(cond) if stage.view == "stills" else cond
    return out


class StageView(torch.utils.data.Dataset):
    def __init__(self, base: Any, stage: Stage) -> None:
        self.base, self.stage = base, stage

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return view_item(self.base[i], self.stage)


def set_trainable(model: torch.nn.Module, method: str, targets: tuple[str, ...] | None) -> int:
    """requires_grad on the stage's modules only; returns the trainable parameter count.

    LoRA: the adapter weights (`...<module>.lora_A/B...`) of the named modules. Full: the
    named modules' own weights. None: everything the method trains.
    """
    n = 0
    for name, p in model.named_parameters():
        if method == "lora":
            is_adapter = "lora_" in name
            on = is_adapter and (targets is None or any(f".{t}.lora_" in name for t in targets))
        else:
            on = targets is None or any(f".{t}." in f".{name}" for t in targets)
        p.requires_grad_(on)
        n += p.numel() if on else 0
    if n == 0:
        raise ValueError(f"train.stages target_modules {targets} select no {method} parameters")
    return n


def _shift(hooks: TrainHooks, offset: int) -> TrainHooks:
    def on_log(m: dict[str, float], step: int) -> None:
        hooks.on_log(m, step + offset)

    def on_eval(step: int, val: float | None) -> bool:
        return hooks.on_eval(step + offset, val)

    return replace(
        hooks,
        on_log=on_log if hooks.on_log else None,
        on_eval=on_eval if hooks.on_eval else None,
    )


def train_stages(
    model: torch.nn.Module,
    train_set: Any,
    cfg: Any,
    stages: list[Stage],
    *,
    method: str,
    lr: float,
    state_dir: Path,
    hooks: TrainHooks | None = None,
    on_stage: Callable[[int, Stage, int], None] | None = None,
    stop_requested: Callable[[], bool] | None = None,
    dist: Any = None,
    **train_kw: Any,
) -> TrainResult:
    """Run `stages` in order with `train`; returns one result over all stages (global steps).

    The loop ignores a stop asked at its own last step, so a stop asked at a stage's last
    eval (e.g. a plateau) is read from `stop_requested()` between stages.
    """
    if dist is not None and getattr(dist, "world_size", 1) > 1:
        raise ValueError("train.stages runs with dist=single (requires_grad changes per stage)")
    hooks = hooks or TrainHooks()
    offset, results = 0, []
    for k, stage in enumerate(stages, 1):
        n = set_trainable(model, method, stage.target_modules)
        log.info("stage %d/%d %s: %d steps, %s trainable params", k, len(stages),
                 stage.describe(), stage.steps, f"{n:,}")  # fmt: skip
        if on_stage is not None:
            on_stage(k, stage, offset)
        stage_cfg = OmegaConf.merge(cfg, {"steps": stage.steps, "stages": []})
        res = train(
            model,
            StageView(train_set, stage),
            stage_cfg,
            lr=lr if stage.lr is None else stage.lr,
            state_dir=Path(state_dir) / f"stage{k}",
            hooks=_shift(hooks, offset),
            dist=dist,
            **train_kw,
        )
        offset += res.steps_done
        if not res.stopped_early and k < len(stages) and stop_requested and stop_requested():
            res = replace(res, stopped_early=True, stop_step=res.steps_done)
        results.append(res)
        if res.stopped_early:
            break
    timed = [r for r in results if r.step_time_s > 0]
    last = results[-1]
    return TrainResult(
        steps_done=offset,
        final_train_loss=last.final_train_loss,
        final_val_loss=last.final_val_loss,
        step_time_s=sum(r.step_time_s * r.steps_done for r in timed)
        / max(1, sum(r.steps_done for r in timed)),
        peak_mem_mb=max(r.peak_mem_mb for r in results),
        stopped_early=last.stopped_early,
        stop_step=None if last.stop_step is None else offset,
    )
