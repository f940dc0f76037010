"""The body of one job: data -> precompute -> adapters -> train with periodic eval -> save.

One code path for LoRA and full fine-tuning, for the tiny CPU model and the 14B model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rank_sweep.job.identity import fingerprint, state_dir
from rank_sweep.job.reporter import Reporter, objective_key
from rank_sweep.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    status: str  # completed | pruned | failed | reused
    objective: float | None
    summary: dict[str, Any]


def pick_device(cfg: DictConfig, local_rank: int = 0) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device=cuda was asked for but no CUDA device is visible")
    return torch.device("cuda", local_rank)


def _sample_frames(cfg: DictConfig) -> int:
    return int(cfg.eval.sample_frames or cfg.data.frames)


def run(cfg: DictConfig, out_dir: Path, sweep: Any = None, dist_ctx: Any = None) -> JobOutcome:
    """Train and evaluate one job; every outcome (also failure) is reported before returning."""
    from rank_sweep.track.tracker import flatten_config

    is_main = dist_ctx is None or dist_ctx.is_main
    sdir = state_dir(cfg)
    reporter = Reporter(cfg, sdir, sweep=sweep, enabled=is_main)
    params = flatten_config(OmegaConf.to_container(cfg, resolve=True))
    params["device"] = str(pick_device(cfg, getattr(dist_ctx, "local_rank", 0)).type)
    params["job.fingerprint"] = fingerprint(cfg)
    reporter.open(params)
    from rank_sweep.train.dist import any_rank

    if any_rank(reporter.reused is not None, dist_ctx):  # rank 0 looked it up; all follow
        return JobOutcome("reused", reporter.reused_objective() if is_main else None, {})
    try:
        return _run(cfg, out_dir, sdir, reporter, dist_ctx)
    except BaseException as exc:  # reported, then re-raised: never swallowed
        error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        reporter.finish("failed", None, error=error)
        raise


def _run(
    cfg: DictConfig, out_dir: Path, sdir: Path, reporter: Reporter, dist_ctx: Any
) -> JobOutcome:
    from rank_sweep.data import build_dataset
    from rank_sweep.eval.evaluator import Evaluator
    from rank_sweep.model.adapters import apply_finetune, save_result
    from rank_sweep.model.precompute import cache_key, precompute
    from rank_sweep.model.spec import WanSpec, forward_batch
    from rank_sweep.train.loop import TrainHooks, train

    device = pick_device(cfg, getattr(dist_ctx, "local_rank", 0))
    torch.manual_seed(cfg.train.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))

    d = cfg.data
    size = dict(frames=int(d.frames), height=int(d.height), width=int(d.width))
    train_set = build_dataset(
        d, d.train_split, train=True, seed=cfg.train.seed, max_clips=d.max_train_clips, **size
    )
    val_set = build_dataset(d, d.eval_split, train=False, max_clips=cfg.train.val_clips, **size)
    n_eval = max(int(cfg.eval.num_real), int(cfg.eval.num_fake))
    eval_size = dict(size, frames=max(_sample_frames(cfg), int(cfg.eval.frames)))
    eval_set = build_dataset(d, d.eval_split, train=False, max_clips=n_eval, **eval_size)
    skipped = len(train_set.skipped) + len(val_set.skipped) + len(eval_set.skipped)
    reporter.log_metrics({"data/train_clips": len(train_set), "data/skipped_clips": skipped}, 0)
    if skipped:
        log.warning("skipped %d unreadable clips (see data check for reasons)", skipped)

    spec = WanSpec.from_config(cfg.model, device=device)
    spec.load_encoders()
    lat_root = cache_dir() / "latents"
    train_pre = precompute(
        spec,
        train_set,
        lat_root / cache_key(spec.path, train_set.fingerprint(), **size),
        desc="train latents",
    )
    val_pre = precompute(
        spec,
        val_set,
        lat_root / cache_key(spec.path, val_set.fingerprint(), **size),
        desc="val latents",
    )
    evaluator = Evaluator(cfg, spec, eval_set, device)
    evaluator.prepare()  # real features + sampling conditioning, while the encoders are loaded
    spec.free_encoders()

    transformer = spec.load_transformer()
    total_params = sum(p.numel() for p in transformer.parameters())
    # Re-seed right before the (random) adapter init: building caches above draws random
    # numbers only when a cache is missing, so without this a rank's init (and its rung
    # metrics) would depend on which job of the sweep happened to run first.
    torch.manual_seed(cfg.train.seed)
    trainable = apply_finetune(transformer, cfg.finetune.method, cfg.lora)
    reporter.log_metrics(
        {"model/trainable_params": trainable, "model/total_params": total_params}, 0
    )
    log.info(
        "%s: %s trainable of %s params", cfg.finetune.method, f"{trainable:,}", f"{total_params:,}"
    )
    transformer.to(device)
    model = transformer
    if dist_ctx is not None and dist_ctx.world_size > 1:
        from rank_sweep.train.dist import wrap_model

        model = wrap_model(transformer, cfg.dist, dist_ctx, cfg.train)

    history: list[dict[str, float]] = []
    key = objective_key(cfg)
    every = int(cfg.eval.every)

    def on_log(metrics: dict[str, float], step: int) -> None:
        reporter.log_metrics(metrics, step)

    def on_eval(step: int, val_loss: float | None) -> bool:
        final = step >= cfg.train.steps
        result = evaluator.evaluate(model, step, final=final, out_dir=out_dir)
        metrics = dict(result.metrics)
        if val_loss is not None:
            metrics["val/loss"] = val_loss
        reporter.log_metrics(metrics, step)
        if not history:  # the stamp is fixed for the job: log it once (params are immutable)
            reporter.log_params(
                {f"protocol.{cfg.data.name}.{k}": v for k, v in result.stamp.items()}
            )
            reporter.set_tags({"detector.pretrained": result.stamp.get("detector.pretrained", "")})
        for video in result.videos:
            reporter.log_artifact(video, "samples")
        history.append({"step": step, **metrics})
        eval_index = -(-step // every)
        value = metrics.get(key)
        if value is None:
            raise KeyError(f"prune.metric={key!r} is not produced by eval (got {sorted(metrics)})")
        # Only rank 0 reports; the loop makes every rank follow its decision.
        return reporter.report_eval(float(value), eval_index) and not final

    hooks = TrainHooks(
        on_log=on_log,
        on_eval=on_eval,
        get_extra=lambda: {"history": json.dumps(history)},
        set_extra=lambda extra: history.extend(json.loads(extra.get("history", "[]"))),
    )
    t0 = time.time()
    result = train(
        model,
        train_pre,
        cfg.train,
        lr=float(cfg.finetune.lr) * float(cfg.train.lr_scale),
        state_dir=sdir,
        forward_fn=forward_batch,
        shift=float(cfg.train.shift or cfg.model.flow_shift),
        val_set=val_pre,
        eval_every=every,
        hooks=hooks,
        dist=dist_ctx,
    )
    if not result.stopped_early:  # rung record (paired per-item val loss) for the sweeper
        from rank_sweep.prune.rung import record_rung

        record_rung(cfg, sdir, model, val_pre, result.steps_done, history, final=not result.paused,
                    forward_fn=forward_batch, shift=float(cfg.train.shift or cfg.model.flow_shift),
                    dist_ctx=dist_ctx)  # fmt: skip
    if result.paused:  # the sweeper decides; a survivor is relaunched and resumes
        reporter.finish("paused", None)
        log.info("job paused at step %d of %d for the sweeper", result.steps_done, cfg.train.steps)
        return JobOutcome("paused", None, {"steps": result.steps_done, "status": "paused"})
    status = "pruned" if result.stopped_early else "completed"
    objective = history[-1].get(key) if history else None
    summary = {
        "method": cfg.finetune.method,
        "rank": int(cfg.lora.rank) if cfg.finetune.method == "lora" else None,
        "alpha": float(cfg.lora.alpha) if cfg.finetune.method == "lora" else None,
        "alpha_mode": cfg.lora.alpha_mode if cfg.finetune.method == "lora" else None,
        "trainable_params": trainable,
        "total_params": total_params,
        "steps": result.steps_done,
        "status": status,
        "pruned_step": result.stop_step if result.stopped_early else None,
        "final_train_loss": result.final_train_loss,
        "final_val_loss": result.final_val_loss,
        "step_time_s": result.step_time_s,
        "peak_mem_mb": result.peak_mem_mb,
        "wall_s": round(time.time() - t0, 2),
        "objective": {key: objective},
        "evals": history,
        "skipped_clips": skipped,
        "fingerprint": fingerprint(cfg),
    }
    plain = transformer
    if dist_ctx is not None and dist_ctx.world_size > 1:
        from rank_sweep.train.state import unsharded_copy

        def build() -> Any:
            fresh = spec.load_transformer()
            apply_finetune(fresh, cfg.finetune.method, cfg.lora)
            return fresh

        plain = unsharded_copy(model, build, dist_ctx)  # collective: every rank calls it
    if reporter.enabled:
        saved = save_result(plain, cfg.finetune.method, out_dir / _result_dir(cfg), _lora_meta(cfg))
        (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        reporter.log_metrics(
            {
                "perf/step_time_s": result.step_time_s,
                "perf/peak_mem_mb": result.peak_mem_mb,
                "train/steps_done": result.steps_done,
            },
            result.steps_done,
        )
        reporter.log_artifact(out_dir / "config.yaml")
        reporter.log_artifact(out_dir / "summary.json")
        reporter.log_artifact(saved, _result_dir(cfg))
        reporter.finish(status, objective, pruned_step=summary["pruned_step"])
    log.info("job %s at step %d: %s=%s", status, result.steps_done, key, objective)
    return JobOutcome(status, objective, summary)


def _result_dir(cfg: DictConfig) -> str:
    return "adapter" if cfg.finetune.method == "lora" else "model"


def _lora_meta(cfg: DictConfig) -> dict[str, Any] | None:
    if cfg.finetune.method != "lora":
        return None
    return {
        "rank": int(cfg.lora.rank),
        "alpha": float(cfg.lora.alpha),
        "alpha_mode": cfg.lora.alpha_mode,
    }
