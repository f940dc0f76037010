"""Sample videos a person can see: real | generated side by side, upscaled without smoothing."""

from __future__ import annotations

import numpy as np

from rank_sweep.data.video import read_frames
from rank_sweep.eval.samples import frame_strip, side_by_side, write_eval_samples


def _clip(t: int, value: int) -> np.ndarray:
    return np.full((t, 32, 32, 3), value, np.uint8)


def test_side_by_side_upscales_nearest_and_keeps_panel_order():
    real, fake = _clip(9, 10), _clip(5, 200)
    out = side_by_side(real, [fake], min_height=128)
    assert out.shape[:2] == (9, 128)  # 32 px -> x4, the longer clip's length
    left, right = out[0, :, :128], out[0, :, -128:]
    assert (left == 10).all() and (right == 200).all()  # exact pixels: no interpolation
    assert (out[-1, :, -128:] == 200).all()  # a short clip holds its last frame


def test_strip_and_mp4_are_written_and_decodable(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 255, (17, 32, 32, 3), dtype=np.uint8)
    fakes = [rng.integers(0, 255, (17, 32, 32, 3), dtype=np.uint8) for _ in range(2)]
    video, strip = write_eval_samples(tmp_path, 12, real, fakes, fps=8)
    frames = read_frames(video, list(range(17)))
    assert frames.shape[1] >= 256 and frames.shape[2] > 3 * 256  # three panels, viewable size
    assert strip.suffix == ".png" and strip.stat().st_size > 0
    assert frame_strip(fakes[0]).shape[1] > 3 * frame_strip(fakes[0]).shape[0] * 0.9
