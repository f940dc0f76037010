"""Score generated against real detector features (FVD, KID, optional KVD, intervals)
and build the protocol stamp logged with every value."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rank_sweep.eval.metrics import (
    DEFAULT_DDOF,
    KID_FRAME_RULE,
    effective_subset_size,
    fvd_from_features,
    kid_from_features,
    kvd_from_features,
)
from rank_sweep.eval.stats import (
    INTERVAL_METHOD,
    BootstrapSpec,
    one_frame_per_clip,
    replicate_table,
    run_interval,
)
from rank_sweep.track import contract as C

KNOWN_METRICS = (C.FVD, C.KID, C.KVD)


def _need(feats: dict[str, np.ndarray], kind: str, metric: str, side: str) -> np.ndarray:
    if kind not in feats:
        raise ValueError(
            f"metric {metric!r} needs {side} features of kind {kind!r}, have {sorted(feats)}"
        )
    return np.asarray(feats[kind], dtype=np.float64)


def score(
    real: dict[str, np.ndarray],
    fake: dict[str, np.ndarray],
    *,
    metrics: list[str],
    kid_subsets: int,
    kid_subset_size: int,
    seed: int,
    bootstrap: int = 0,
    ddof: int = DEFAULT_DDOF,
    level: float = 0.95,
) -> dict[str, float]:
    """{"fvd", "kid", "kid_std", ["kvd", "kvd_std"], "kid_subset_size_used"} and, with
    bootstrap > 0, intervals "<metric>_ci_lo" / "<metric>_ci_hi" that contain the point
    (see `stats.py`: basic bootstrap about the median, resampling clips as counts).

    real/fake map detector kind to features: "video" (I3D, [N, 400]) and "frame"
    (Inception, [N, T, 2048] per frame or [N, 2048]). KID takes one frame per clip in
    each subset, so its subset size is at most the number of clips."""
    bad = [m for m in metrics if m not in KNOWN_METRICS]
    if bad or not metrics:
        raise ValueError(
            f"metrics {list(metrics)} invalid; allowed: a non-empty subset of {list(KNOWN_METRICS)}"
        )
    out: dict[str, float] = {}
    spec = BootstrapSpec(n_boot=int(bootstrap), seed=int(seed), level=level, ddof=int(ddof))
    if "fvd" in metrics:
        rv, fv = _need(real, "video", "fvd", "real"), _need(fake, "video", "fvd", "fake")
        out["fvd"] = fvd_from_features(rv, fv, ddof=ddof)
        if bootstrap > 0:
            ci = run_interval(out["fvd"], replicate_table("fvd", rv, [fv], spec)[:, 0], level)
            out["fvd_ci_lo"], out["fvd_ci_hi"] = ci.lo, ci.hi
    if "kid" in metrics:
        rf, ff = _need(real, "frame", "kid", "real"), _need(fake, "frame", "kid", "fake")
        rf, ff = one_frame_per_clip(rf, seed), one_frame_per_clip(ff, seed)
        m = effective_subset_size(len(rf), len(ff), kid_subset_size)
        out["kid"], out["kid_std"] = kid_from_features(rf, ff, kid_subsets, m, seed=seed)
        out["kid_subset_size_used"] = float(m)
        if bootstrap > 0:
            reps = replicate_table("kid", rf, [ff], spec)
            ci = run_interval(out["kid"], reps[:, 0], level)
            out["kid_ci_lo"], out["kid_ci_hi"] = ci.lo, ci.hi
    if "kvd" in metrics:
        rv, fv = _need(real, "video", "kvd", "real"), _need(fake, "video", "kvd", "fake")
        mv = effective_subset_size(len(rv), len(fv), kid_subset_size)
        out["kvd"], out["kvd_std"] = kvd_from_features(rv, fv, kid_subsets, mv, seed=seed)
    return out


def detector_weights(det: Any) -> str:
    """`published` | `project-trained` (e.g. the embedded world's) | `random` (seeded random
    init: its metric compares pixel statistics, not quality)."""
    if bool(det.pretrained):
        return C.WEIGHTS_PUBLISHED
    random = bool(getattr(det, "random_weights", False))
    return C.WEIGHTS_RANDOM if random else C.WEIGHTS_PROJECT


def _detector_stamp(prefix: str, det: Optional[Any]) -> dict[str, str]:
    if det is None:
        return {}
    return {
        f"{prefix}.name": str(det.name),
        f"{prefix}.sha256": str(det.sha256),
        f"{prefix}.pretrained": str(bool(det.pretrained)).lower(),
        f"{prefix}.{C.WEIGHTS_FIELD}": detector_weights(det),
        f"{prefix}.feature_dim": str(det.feature_dim),
        f"{prefix}.size": str(det.size),
        f"{prefix}.file": str(getattr(det, "path", "")),
    }


def protocol_stamp(
    video_det: Optional[Any],
    frame_det: Optional[Any],
    *,
    n_real: int,
    n_fake: int,
    frames: int,
    resolution: str,
    dataset: str,
    split: str,
    sample_steps: int,
    seed: int,
    kid_subset_size: int,
    fps: Any = "native",
    guidance_scale: float = 0.0,
    negative_prompt: str = "",
    sampler: str = "none",
    sample_frames: int = 0,
    model_dtype: str = "none",
    cov_ddof: int = DEFAULT_DDOF,
    bootstrap: int = 0,
    tier: str = "final",
    split_rule: str = "as-listed",
) -> dict[str, str]:
    """Flat str->str stamp (MLflow params/tags). `detector.pretrained` is "false" when any
    detector in use is random-init: such numbers only compare runs with each other.

    Every knob that changes the number is here (fps of the real clips, guidance, negative
    prompt, sampler, frames generated, model dtype, covariance ddof, KID frame rule,
    interval method, tier), so the report can refuse to compare unlike numbers. Clips that
    were not generated (the eval CLI) carry sampler "none"."""
    dets = [d for d in (video_det, frame_det) if d is not None]
    if not dets:
        raise ValueError("protocol_stamp needs at least one detector")
    stamp = {
        C.TAG_DETECTOR_PRETRAINED: str(all(bool(d.pretrained) for d in dets)).lower(),
        **_detector_stamp("detector.video", video_det),
        **_detector_stamp("detector.frame", frame_det),
        "eval.n_real": str(n_real),
        "eval.n_fake": str(n_fake),
        "eval.frames": str(frames),
        "eval.resolution": str(resolution),
        "eval.dataset": str(dataset),
        "eval.split": str(split),
        "eval.sample_steps": str(sample_steps),
        "eval.seed": str(seed),
        "eval.kid_subset_size": str(kid_subset_size),
        "eval.fps": str(fps),
        "eval.guidance_scale": f"{float(guidance_scale):g}",
        "eval.negative_prompt": str(negative_prompt),
        "eval.sampler": str(sampler),
        "eval.sample_frames": str(sample_frames),
        "eval.model_dtype": str(model_dtype),
        "eval.cov_ddof": str(int(cov_ddof)),
        "eval.kid_frame_rule": KID_FRAME_RULE,
        "eval.interval": f"{INTERVAL_METHOD} x{int(bootstrap)}" if bootstrap else "none",
        "eval.tier": str(tier),
        "eval.split_rule": str(split_rule),
    }
    return stamp
