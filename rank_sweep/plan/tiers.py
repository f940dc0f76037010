"""How often the job evaluates and at what size, read from the config exactly as the
code on this branch runs it.

- validation loss (periodic tier, cheap): `train.val_clips` forwards at every eval step
  and every `train.val_every` steps, split over the data-parallel ranks;
- periodic generation: at every `eval.every` step before the last, `eval.num_fake` clips
  (or the settings of an `eval.periodic` node where the config has one);
- final tier: once at the end, `eval.num_fake` clips with the protocol's steps and
  guidance (or an `eval.final` node).
Generation is split over ranks only when the evaluator says it shards
(`rank_sweep.eval.evaluator.SHARDED_GENERATION`); otherwise every rank generates every clip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rank_sweep.plan.flops import ClipShape


@dataclass(frozen=True)
class GenTier:
    name: str  # periodic | final
    runs: int  # times per job that runs to the end
    clips: int
    steps: int
    guidance: float
    clip: ClipShape


def sel(cfg: DictConfig, key: str, default: Any = None) -> Any:
    value = OmegaConf.select(cfg, key, default=default)
    return default if value is None else value


def _tier_node(cfg: DictConfig, name: str) -> Any:
    node = OmegaConf.select(cfg, f"eval.{name}", default=None)
    return node if isinstance(node, DictConfig) else None


def _first(node: Any, keys: tuple[str, ...], default: Any) -> Any:
    for k in keys:
        if node is not None and node.get(k) is not None:
            return node.get(k)
    return default


def generation_sharded() -> bool:
    from rank_sweep.eval import evaluator

    return bool(getattr(evaluator, "SHARDED_GENERATION", False))


def eval_points(steps: int, every: int) -> int:
    """Eval steps strictly before the last step (the last one is the final tier)."""
    return (steps - 1) // every if 0 < every < steps else 0


def val_points(steps: int, every: int, val_every: int) -> int:
    points = {steps}
    if every > 0:
        points |= set(range(every, steps + 1, every))
    if val_every > 0:
        points |= set(range(val_every, steps + 1, val_every))
    return len(points)


def generation_tiers(cfg: DictConfig) -> list[GenTier]:
    e, d = cfg.eval, cfg.data
    steps, every = int(cfg.train.steps), int(e.every)
    flat = dict(
        clips=int(e.num_fake),
        steps=int(e.sample_steps),
        guidance=float(e.guidance_scale),
        frames=int(e.sample_frames or d.frames),
    )

    def tier(name: str, runs: int) -> GenTier:
        node = _tier_node(cfg, name)
        clips = int(_first(node, ("num_fake", "num_clips", "clips"), flat["clips"]))
        if node is not None and node.get("enabled") is False:
            clips = 0
        if name == "periodic" and node is not None and "metrics" in node and not node.metrics:
            clips = 0  # the periodic tier scores validation loss only: nothing generated
        frames = int(_first(node, ("sample_frames", "frames"), flat["frames"]))
        return GenTier(
            name=name,
            runs=runs if clips > 0 else 0,
            clips=clips,
            steps=int(_first(node, ("sample_steps", "steps"), flat["steps"])),
            guidance=float(_first(node, ("guidance_scale",), flat["guidance"])),
            clip=ClipShape(frames, int(d.height), int(d.width)),
        )

    periodic_every = int(_first(_tier_node(cfg, "periodic"), ("every",), every))
    return [tier("periodic", eval_points(steps, periodic_every)), tier("final", 1)]
