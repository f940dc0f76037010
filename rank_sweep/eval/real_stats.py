"""Detector features of the real evaluation clips, computed once and cached as .npz.

Every job of a sweep compares against the same real clips; caching the features (keyed by
dataset fingerprint, split, fold, frames, resolution and detector sha) makes the real side
cost nothing after the first job. Features (not just mean/cov) are kept because KID and the
bootstrap CIs need the samples.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rank_sweep.paths import cache_dir
from rank_sweep.utils.atomic import atomic_file
from rank_sweep.utils.keys import content_key

log = logging.getLogger(__name__)


def real_stats_key(**parts: Any) -> str:
    """Stable cache key from named parts (order-independent); readable prefix + hash."""
    if not parts:
        raise ValueError("real_stats_key needs at least one part (dataset, detector, ...)")
    return f"real_{content_key({k: str(v) for k, v in parts.items()}, 20)}"


def real_stats_path(key: str) -> Path:
    return cache_dir() / "real_stats" / f"{key}.npz"


def _read_cache(path: Path, num_clips: int, sha256: str) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            feats = np.asarray(z["features"], dtype=np.float64)
            sha = str(z["detector_sha256"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        log.warning(
            "real-feature cache %s unreadable (%s): recomputing", path.name, type(exc).__name__
        )
        return None
    if len(feats) != num_clips or sha != sha256:
        log.warning(
            "real-feature cache %s holds %d clips of detector %s, need %d of %s: recomputing",
            path.name, len(feats), sha[:12], num_clips, sha256[:12],
        )  # fmt: skip
        return None
    return feats


def _write_cache(path: Path, feats: np.ndarray, sha256: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Detector outputs are float32 widened to float64: storing float32 is lossless then.
    as32 = feats.astype(np.float32)
    store = as32 if np.array_equal(as32.astype(np.float64), feats) else feats
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        # A file object stops numpy appending another ".npz".
        np.savez(f, features=store, detector_sha256=np.array(sha256))


def real_features(
    dataset: Any, detector: Any, *, num_clips: int, key: str, batch_size: int = 4
) -> np.ndarray:
    """Features (float64, axis 0 = clip) of the first num_clips items' `video` (uint8
    [T, H, W, 3]), from `cache_dir()/real_stats/<key>.npz` when present and valid."""
    if num_clips < 1 or num_clips > len(dataset):
        raise ValueError(f"num_clips must be in 1..{len(dataset)} (dataset size), got {num_clips}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    path = real_stats_path(key)
    if path.exists():
        cached = _read_cache(path, num_clips, detector.sha256)
        if cached is not None:
            log.info("real features from cache %s (%d clips)", path.name, len(cached))
            return cached
    parts = []
    for start in tqdm(
        range(0, num_clips, batch_size), desc=f"real features ({detector.name})", leave=False
    ):
        stop = min(start + batch_size, num_clips)
        videos = np.stack([np.asarray(dataset[i]["video"]) for i in range(start, stop)])
        parts.append(detector.features(videos))
    feats = np.concatenate(parts).astype(np.float64)
    _write_cache(path, feats, detector.sha256)
    return feats


def cached_real(key: str, detector_sha: str, compute: Any) -> tuple[np.ndarray, bool]:
    """(features, from_cache): the features stored under `key` for this detector, else
    `compute()` (float64, axis 0 = clip) written there. For callers (the eval CLI) that only
    learn the number of usable clips while computing."""
    path = real_stats_path(key)
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                feats = np.asarray(z["features"], dtype=np.float64)
                if str(z["detector_sha256"]) == detector_sha:
                    log.info("real features from cache %s (%d clips)", path.name, len(feats))
                    return feats, True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            log.warning("real-feature cache %s unreadable: recomputing", path.name)
    feats = np.asarray(compute(), dtype=np.float64)
    _write_cache(path, feats, detector_sha)
    return feats, False
