"""The two evaluation tiers, their settings and their metric names (defined once here).

* periodic: during training, cheap, on the validation slice carved from the training
  split (`<train_split>#val`): the per-item validation flow-matching loss (computed by the
  training loop on fixed items/noise/timesteps) and optionally a light FVD/KID on a few
  clips with fewer sampler steps. Its metrics are `val/loss`, `val_fvd/<ds>`, `val_kid/<ds>`.
  Pruning and model selection read only these.
* final: the full protocol, once at the end of a completed run, on `data.eval_split`
  (test). Its metrics are `fvd/<ds>`, `kid/<ds>` with `<m>_ci_lo/<ds>`, `<m>_ci_hi/<ds>`.

The two tiers are stamped apart (`eval.tier`), and their names never collide, so a report
cannot mix a periodic number with a final one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PERIODIC = "periodic"
FINAL = "final"
VAL_LOSS = "val/loss"
PERIODIC_PREFIX = "val_"
GEN_FEATURES_FILE = "gen_features.npz"  # per-run generated features (final tier artifact)
FEATURES_ARTIFACT_DIR = "eval_features"


def final_metric(name: str, dataset: str) -> str:
    """`fvd`, `ucf101` -> `fvd/ucf101` (also `fvd_ci_lo` -> `fvd_ci_lo/ucf101`)."""
    return f"{name}/{dataset}"


def periodic_metric(name: str, dataset: str) -> str:
    """`fvd`, `ucf101` -> `val_fvd/ucf101`."""
    return f"{PERIODIC_PREFIX}{name}/{dataset}"


def val_split(data_cfg: Any) -> str:
    return f"{data_cfg.train_split}#val"


def fit_split(data_cfg: Any) -> str:
    return f"{data_cfg.train_split}#fit"


def rung_metric(cfg: Any) -> str:
    """The value pruning and selection compare: prune.metric, else the periodic FVD when the
    periodic tier scores one, else the validation loss. Never a final-tier metric."""
    explicit = cfg.prune.metric
    if explicit:
        if not str(explicit).startswith((PERIODIC_PREFIX, "val/")):
            raise ValueError(
                f"prune.metric={explicit!r} is a final-tier (test split) metric; pruning and "
                f"selection must use a periodic one ({VAL_LOSS} or val_<metric>/<dataset>)"
            )
        return str(explicit)
    if "fvd" in list(cfg.eval.periodic.metrics):
        return periodic_metric("fvd", str(cfg.data.name))
    return VAL_LOSS


@dataclass(frozen=True)
class TierSettings:
    """What one tier generates and scores."""

    tier: str
    metrics: tuple[str, ...]
    split: str
    num_real: int
    num_fake: int
    sample_steps: int
    batch_size: int
    bootstrap: int

    def name(self, metric: str, dataset: str) -> str:
        return (final_metric if self.tier == FINAL else periodic_metric)(metric, dataset)


def final_settings(cfg: Any) -> TierSettings:
    e = cfg.eval
    return TierSettings(
        tier=FINAL,
        metrics=tuple(e.metrics),
        split=str(cfg.data.eval_split),
        num_real=int(e.num_real),
        num_fake=int(e.num_fake),
        sample_steps=int(e.sample_steps),
        batch_size=int(e.final.batch_size),
        bootstrap=int(e.bootstrap),
    )


def periodic_settings(cfg: Any) -> TierSettings | None:
    """None when the periodic tier is the validation loss only."""
    p = cfg.eval.periodic
    if not list(p.metrics):
        return None
    return TierSettings(
        tier=PERIODIC,
        metrics=tuple(p.metrics),
        split=val_split(cfg.data),
        num_real=int(p.num_clips),
        num_fake=int(p.num_clips),
        sample_steps=int(p.sample_steps),
        batch_size=int(cfg.eval.final.batch_size),
        bootstrap=0,
    )


def validate_tiers(cfg: Any, bad: Any) -> None:
    """Preflight of the tier, split and interval settings; `bad(key, value, allowed)` builds
    the one-line error (config/validate.py)."""
    e, d = cfg.eval, cfg.data
    if [m for m in e.periodic.metrics if m not in ("fvd", "kid", "kvd")]:
        raise bad("eval.periodic.metrics", list(e.periodic.metrics), "a subset of [fvd, kid, kvd]")
    if list(e.periodic.metrics) and int(e.periodic.num_clips) < 2:
        raise bad("eval.periodic.num_clips", e.periodic.num_clips, "an int >= 2")
    if int(e.periodic.sample_steps) < 1:
        raise bad("eval.periodic.sample_steps", e.periodic.sample_steps, "an int >= 1")
    if int(e.final.batch_size) < 1:
        raise bad("eval.final.batch_size", e.final.batch_size, "an int >= 1")
    if int(e.cov_ddof) not in (0, 1):
        raise bad("eval.cov_ddof", e.cov_ddof, "0 (StyleGAN-V) | 1")
    if not 0.5 <= float(e.interval_level) < 1.0:
        raise bad("eval.interval_level", e.interval_level, "a number in [0.5, 1)")
    if not 0.0 < float(d.val_fraction) < 1.0:
        raise bad("data.val_fraction", d.val_fraction, "a number in (0, 1)")
    if d.val_rule not in ("auto", "group", "youtube_id", "file"):
        raise bad("data.val_rule", d.val_rule, "auto | group | youtube_id | file")
    try:
        rung_metric(cfg)
    except ValueError as exc:
        raise bad("prune.metric", cfg.prune.metric, "val/loss or val_<metric>/<dataset>") from exc
