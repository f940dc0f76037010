"""Clip sampling as pure functions: which source frames make an N-frame clip.

A clip takes N frames spaced `step = native_fps / target_fps * stride` source frames
apart (rounded half up), so a 30 fps video sampled at 16 fps with stride 1 takes every
1.875th frame. Training starts at a random frame drawn from (seed, epoch, index);
evaluation always starts at frame 0, so the conditioning image is the video's own first
frame and two runs see identical clips.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

_MASK = (1 << 63) - 1  # numpy seeds must be non-negative


def frame_step(native_fps: float, target_fps: Optional[float], stride: int) -> float:
    """Source frames between consecutive clip frames."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    ratio = 1.0 if target_fps is None else float(native_fps) / float(target_fps)
    return ratio * stride


def clip_offsets(frames: int, step: float) -> list[int]:
    """Offsets from the clip start of each of the `frames` source frames."""
    return [int(math.floor(j * step + 0.5)) for j in range(frames)]


def clip_span(frames: int, step: float) -> int:
    """Source frames a clip covers, first to last inclusive."""
    return clip_offsets(frames, step)[-1] + 1


def train_start(total: int, span: int, seed: int, epoch: int, index: int) -> int:
    """Random start in [0, total - span], a pure function of (seed, epoch, index)."""
    if total < span:
        raise ValueError(f"video has {total} frames, clip needs {span}")
    rng = np.random.default_rng([seed & _MASK, epoch & _MASK, index & _MASK])
    return int(rng.integers(0, total - span + 1))


def eval_start(total: int, span: int) -> int:
    """Evaluation clips start at frame 0 (the video's first frame conditions I2V)."""
    if total < span:
        raise ValueError(f"video has {total} frames, clip needs {span}")
    return 0


def subset_order(n: int, max_clips: Optional[int], seed: int) -> list[int]:
    """Visiting order of listed clips: natural, or a seeded shuffle when capped so a
    capped subset spreads over classes instead of taking the first few classes."""
    if max_clips is None or max_clips >= n:
        return list(range(n))
    return np.random.default_rng([seed & _MASK, 7]).permutation(n).tolist()
