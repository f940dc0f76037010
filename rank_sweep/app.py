"""One Hydra job: validate, then (for now) print the resolved plan."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from rank_sweep.config.validate import validate

log = logging.getLogger(__name__)


def plan_line(cfg: DictConfig) -> str:
    rank = f" rank={cfg.lora.rank} alpha={cfg.lora.alpha} ({cfg.lora.alpha_mode})"
    method = cfg.finetune.method + (rank if cfg.finetune.method == "lora" else "")
    return (
        f"plan: model={cfg.model.name} method={method} data={cfg.data.name}"
        f"[{cfg.data.layout}] {cfg.data.frames}x{cfg.data.height}x{cfg.data.width}"
        f" steps={cfg.train.steps} dist={cfg.dist.backend}x{cfg.dist.nproc_per_node}"
    )


def run_job(cfg: DictConfig) -> float | None:
    validate(cfg)
    log.info(plan_line(cfg))
    return None
