"""One Hydra job: validate, find the sweep it belongs to, run it (spawning workers if asked)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rank_sweep.config.validate import validate

log = logging.getLogger(__name__)


def plan_line(cfg: DictConfig) -> str:
    from rank_sweep.job.identity import JobIdentity

    method = JobIdentity.from_config(cfg).describe()
    return (
        f"plan: model={cfg.model.name} method={method} data={cfg.data.name}"
        f"[{cfg.data.layout}] {cfg.data.frames}x{cfg.data.height}x{cfg.data.width}"
        f" steps={cfg.train.steps} eval.every={cfg.eval.every}"
        f" dist={cfg.dist.backend}x{cfg.dist.nproc_per_node} prune={cfg.prune.pruner}"
    )


def _hydra_context() -> tuple[Path | None, Any, Path | None]:
    """(job output dir, sweep info, sweep dir of a multirun) from Hydra's runtime."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None, None
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    if hc.mode != RunMode.MULTIRUN:
        return out, None, None
    from rank_sweep.sweep.callbacks import read_sweep_info

    sweep_dir = Path(hc.sweep.dir)
    return out, read_sweep_info(sweep_dir), sweep_dir


def run_job(cfg: DictConfig) -> float | None:
    from rank_sweep.runtime import apply_threads, plan_threads, quiet_logging

    quiet_logging()  # after Hydra configured logging for this job
    apply_threads(plan_threads())
    validate(cfg)
    log.info(plan_line(cfg))
    if cfg.dry_run:
        return None
    out_dir, sweep, sweep_dir = _hydra_context()
    if cfg.output_dir:
        out_dir = Path(cfg.output_dir)
    if out_dir is None:
        raise ValueError("output_dir=null outside Hydra: pass output_dir=PATH")

    nproc = int(cfg.dist.nproc_per_node)
    if nproc > 1 and "RANK" not in os.environ:
        from rank_sweep.train.dist import launch

        container = OmegaConf.to_container(cfg, resolve=True)
        results = launch(_worker, nproc, container, str(out_dir), sweep, sweep_dir)
        return results
    return _run_here(cfg, out_dir, sweep, sweep_dir)


def _job_name() -> str:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return "job"
    return HydraConfig.get().job.override_dirname or f"job{HydraConfig.get().job.num}"


def _worker(container: dict, out_dir: str, sweep: Any, sweep_dir: Path | None) -> float | None:
    if not logging.getLogger().handlers:  # spawned workers start without Hydra's logging
        logging.basicConfig(
            level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
        )
    cfg = OmegaConf.create(container)
    return _run_here(cfg, Path(out_dir), sweep, sweep_dir)


def _run_here(cfg: DictConfig, out_dir: Path, sweep: Any, sweep_dir: Path | None) -> float | None:
    from rank_sweep.job.runner import run

    ctx = None
    if cfg.dist.backend != "single" or "RANK" in os.environ:
        from rank_sweep.train.dist import init_distributed

        ctx = init_distributed(cfg.dist)
    try:
        outcome = run(cfg, out_dir, sweep=sweep, dist_ctx=ctx)
    except Exception as exc:
        if sweep_dir is None:
            raise
        # The failure is recorded (MLflow `failed`, Optuna FAIL); the sweep goes on and its
        # end callback exits non-zero naming the failed jobs.
        from rank_sweep.sweep.callbacks import record_failure

        record_failure(sweep_dir, _job_name(), f"{type(exc).__name__}: {exc}")
        log.exception("job failed; the sweep continues with the next job")
        return None
    return outcome.objective
