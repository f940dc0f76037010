"""Cross-field and range checks that types cannot express. Each failure is one line
naming the key, the value and what is allowed.

The allowed values of each choice are imported from the module that acts on them, so a
value the code learns is allowed here at once, and nothing is allowed that the code lacks.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

from rank_sweep.data.layouts import LAYOUTS
from rank_sweep.eval.scoring import KNOWN_METRICS
from rank_sweep.model.adapters import ALPHA_MODES, BASE_METHOD, METHODS
from rank_sweep.model.spec import MODEL_DTYPES
from rank_sweep.prune.study import PRUNERS
from rank_sweep.train.dist import BACKENDS, COMM_BACKENDS, ZERO_STAGES
from rank_sweep.train.flow import SAMPLING_MODES
from rank_sweep.train.precision import PRECISIONS
from rank_sweep.utils.device import DEVICES


class ConfigError(ValueError):
    """A config value is out of its allowed set; the message is one line."""


def _bad(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is invalid: allowed {allowed}")


def _choice(cfg: DictConfig, key: str, allowed: tuple[str, ...]) -> None:
    value = cfg_get(cfg, key)
    if value not in allowed:
        raise _bad(key, value, " | ".join(allowed))


def _int_range(cfg: DictConfig, key: str, lo: int, hi: int | None = None) -> None:
    value = cfg_get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi and value > hi):
        raise _bad(key, value, f"an int in [{lo}, {hi}]" if hi else f"an int >= {lo}")


def cfg_get(cfg: DictConfig, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first invalid value; called before any work starts."""
    _int_range(cfg, "lora.rank", 1, 1024)
    if not cfg.lora.alpha > 0:
        raise _bad("lora.alpha", cfg.lora.alpha, "a number > 0")
    if not 0.0 <= cfg.lora.dropout < 1.0:
        raise _bad("lora.dropout", cfg.lora.dropout, "a number in [0, 1)")
    if not cfg.lora.alpha_ratio > 0:
        raise _bad("lora.alpha_ratio", cfg.lora.alpha_ratio, "a number > 0")
    if not cfg.lora.target_modules:
        raise _bad("lora.target_modules", [], "a non-empty list of block Linear names")
    _choice(cfg, "lora.alpha_mode", ALPHA_MODES)
    _choice(cfg, "finetune.method", METHODS)
    if cfg.finetune.method != BASE_METHOD and not cfg.finetune.lr > 0:
        raise _bad("finetune.lr", cfg.finetune.lr, "a number > 0")
    _choice(cfg, "model.dtype", MODEL_DTYPES)
    _choice(cfg, "model.arch", ("wan2.1_i2v", "wan2.2_i2v_a14b", "wan2.2_ti2v_5b"))
    _choice(cfg, "lora.experts", ("both", "high", "low"))
    _choice(cfg, "finetune.save_dtype", ("bfloat16", "float32"))
    if not cfg.train.lr_scale > 0:
        raise _bad("train.lr_scale", cfg.train.lr_scale, "a number > 0")

    _choice(cfg, "data.layout", LAYOUTS)
    frames = cfg.data.frames
    if frames < 1 or (frames - 1) % 4:
        raise _bad("data.frames", frames, "4k+1 frames (1, 5, 9, ..., 81): the VAE stride is 4")
    for key in ("data.height", "data.width"):
        v = cfg_get(cfg, key)
        if v < 16 or v % 16:
            raise _bad(key, v, "a positive multiple of 16 (VAE stride 8 x patch 2)")
        if cfg.model.arch == "wan2.2_ti2v_5b" and v % 32:
            raise _bad(key, v, "a multiple of 32 for Wan2.2 TI2V-5B (VAE stride 16 x patch 2)")
    _int_range(cfg, "data.fold", 1, 3)
    _int_range(cfg, "data.stride", 1)
    if cfg.data.fps is not None and not cfg.data.fps > 0:
        raise _bad("data.fps", cfg.data.fps, "null (native rate) or a number > 0")
    if cfg.data.root is None and cfg.data.name != "synthetic":
        raise _bad("data.root", None, "a dataset directory (only data=synthetic may leave it null)")
    longest = max(frames, cfg.eval.frames, cfg.eval.sample_frames or 0)
    if cfg.data.name == "synthetic" and cfg.data.synth.frames < longest:
        raise _bad("data.synth.frames", cfg.data.synth.frames, f">= {longest} (the longest clip)")

    _int_range(cfg, "train.steps", 1)
    _int_range(cfg, "train.micro_batch", 1)
    _int_range(cfg, "train.grad_accum", 1)
    _int_range(cfg, "train.checkpoint_every", 1)
    _int_range(cfg, "train.keep_checkpoints", 0, 2)
    _int_range(cfg, "train.log_every", 1)
    _choice(cfg, "train.mixed_precision", PRECISIONS)
    _choice(cfg, "train.timestep_sampling", SAMPLING_MODES)
    if not 0.0 <= cfg.train.warmup_ratio < 1.0:
        raise _bad("train.warmup_ratio", cfg.train.warmup_ratio, "a number in [0, 1)")
    if len(cfg.train.betas) != 2 or not all(0.0 <= b < 1.0 for b in cfg.train.betas):
        raise _bad("train.betas", list(cfg.train.betas), "two numbers in [0, 1)")
    if not all(0.0 < q < 1.0 for q in cfg.train.val_quantiles):
        raise _bad("train.val_quantiles", list(cfg.train.val_quantiles), "numbers in (0, 1)")

    _choice(cfg, "dist.backend", BACKENDS)
    _int_range(cfg, "dist.nproc_per_node", 1)
    if cfg.dist.backend == "deepspeed" and cfg.dist.zero_stage not in ZERO_STAGES:
        stages = " | ".join(map(str, ZERO_STAGES))
        raise _bad("dist.zero_stage", cfg.dist.zero_stage, f"{stages} with dist.backend=deepspeed")
    _choice(cfg, "dist.comm_backend", COMM_BACKENDS)
    _choice(cfg, "device", DEVICES)

    bad = [m for m in cfg.eval.metrics if m not in KNOWN_METRICS]
    if bad or not cfg.eval.metrics:
        subset = f"a non-empty subset of [{', '.join(KNOWN_METRICS)}]"
        raise _bad("eval.metrics", list(cfg.eval.metrics), subset)
    for key in ("eval.every", "eval.num_real", "eval.num_fake", "eval.sample_steps", "eval.frames"):
        _int_range(cfg, key, 1)
    _int_range(cfg, "eval.detector_size", 32)
    sample_frames = cfg.eval.sample_frames or frames
    if (sample_frames - 1) % 4 or sample_frames < cfg.eval.frames:
        raise _bad(
            "eval.sample_frames",
            sample_frames,
            f"4k+1 frames >= eval.frames={cfg.eval.frames} (null = data.frames)",
        )
    if cfg.eval.num_real < 2 or cfg.eval.num_fake < 2:
        raise _bad("eval.num_fake", cfg.eval.num_fake, ">= 2 clips each side (covariances)")
    from rank_sweep.eval.tiers import validate_tiers  # eval tiers, splits, intervals

    _validate_issue17(cfg)
    validate_tiers(cfg, _bad)

    _choice(cfg, "prune.pruner", PRUNERS)
    if cfg.train.get("stop_at") is not None:
        _int_range(cfg, "train.stop_at", 1, int(cfg.train.steps))
    if cfg.prune.pruner == "sha":
        from rank_sweep.prune.schedule import PruneSettings

        try:
            PruneSettings.from_cfg(cfg.prune)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    _int_range(cfg, "prune.min_resource", 1)
    _int_range(cfg, "prune.reduction_factor", 2)


def _validate_issue17(cfg: DictConfig) -> None:
    """CLIP-SIM/LPIPS names, early stop and train.stages (checked by their own modules)."""
    from rank_sweep.eval.extra_metrics import EXTRA_METRICS
    from rank_sweep.train.stages import parse_stages

    bad = [m for m in cfg.eval.extra_metrics if m not in EXTRA_METRICS]
    if bad:
        raise _bad(
            "eval.extra_metrics", list(cfg.eval.extra_metrics), f"a subset of {list(EXTRA_METRICS)}"
        )
    _choice(cfg, "eval.lpips_net", ("alex", "vgg"))
    _choice(cfg, "train.early_stop.mode", ("auto", "min", "max"))
    _int_range(cfg, "train.early_stop.patience", 1)
    if not cfg.train.early_stop.min_delta >= 0:
        raise _bad("train.early_stop.min_delta", cfg.train.early_stop.min_delta, "a number >= 0")
    try:
        parse_stages(cfg.train)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
