"""Score generated against real detector features (FVD, KID, optional KVD, bootstrap CIs)
and build the protocol stamp logged with every value."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from rank_sweep.eval.metrics import (
    bootstrap_ci,
    effective_subset_size,
    fvd_from_features,
    kid_from_features,
    kvd_from_features,
)
from rank_sweep.track import contract as C

KNOWN_METRICS = (C.FVD, C.KID, C.KVD)


def _frames_flat(x: np.ndarray) -> np.ndarray:
    # Per-frame Inception features [clips, T, D] -> samples [clips * T, D]; [N, D] unchanged.
    return x.reshape(-1, x.shape[-1])


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
) -> dict[str, float]:
    """{"fvd", "kid", "kid_std", ["kvd", "kvd_std"], "kid_subset_size_used"} and, with
    bootstrap > 0, 95% percentile CIs "<metric>_ci_lo" / "<metric>_ci_hi" over clips.

    real/fake map detector kind to features: "video" (I3D, [N, 400]) and "frame"
    (Inception, [N, T, 2048] per frame or [N, 2048]). KID runs on frames."""
    bad = [m for m in metrics if m not in KNOWN_METRICS]
    if bad or not metrics:
        raise ValueError(
            f"metrics {list(metrics)} invalid; allowed: a non-empty subset of {list(KNOWN_METRICS)}"
        )
    out: dict[str, float] = {}
    if "fvd" in metrics:
        rv, fv = _need(real, "video", "fvd", "real"), _need(fake, "video", "fvd", "fake")
        out["fvd"] = fvd_from_features(rv, fv)
        if bootstrap > 0:
            out[C.ci_name(C.FVD, "lo")], out[C.ci_name(C.FVD, "hi")] = bootstrap_ci(
                rv, fv, fvd_from_features, bootstrap, seed
            )
    if "kid" in metrics:
        rf, ff = _need(real, "frame", "kid", "real"), _need(fake, "frame", "kid", "fake")
        m = effective_subset_size(len(_frames_flat(rf)), len(_frames_flat(ff)), kid_subset_size)
        out["kid"], out["kid_std"] = kid_from_features(
            _frames_flat(rf), _frames_flat(ff), kid_subsets, m, seed=seed
        )
        out["kid_subset_size_used"] = float(m)
        if bootstrap > 0:
            # Each replicate re-runs KID; a tenth of the subsets keeps the final eval
            # affordable, and the extra subset noise only widens (never narrows) the CI.
            subsets = max(10, kid_subsets // 10)

            def kid_fn(r: np.ndarray, f: np.ndarray) -> float:
                r, f = _frames_flat(r), _frames_flat(f)
                size = min(m, len(r), len(f))
                return kid_from_features(r, f, subsets, size, seed=seed)[0]

            ci = bootstrap_ci(rf, ff, kid_fn, bootstrap, seed)
            out[C.ci_name(C.KID, "lo")], out[C.ci_name(C.KID, "hi")] = ci
    if "kvd" in metrics:
        rv, fv = _need(real, "video", "kvd", "real"), _need(fake, "video", "kvd", "fake")
        mv = effective_subset_size(len(rv), len(fv), kid_subset_size)
        out["kvd"], out["kvd_std"] = kvd_from_features(rv, fv, kid_subsets, mv, seed=seed)
    return out


def _detector_stamp(prefix: str, det: Optional[Any]) -> dict[str, str]:
    if det is None:
        return {}
    return {
        f"{prefix}.name": str(det.name),
        f"{prefix}.sha256": str(det.sha256),
        f"{prefix}.pretrained": str(bool(det.pretrained)).lower(),
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
) -> dict[str, str]:
    """Flat str->str stamp (MLflow params/tags). `detector.pretrained` is "false" when any
    detector in use is random-init: such numbers only compare runs with each other."""
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
    }
    return stamp
