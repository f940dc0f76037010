"""Sample videos a person can look at: real clip beside the generated ones, upscaled.

Tiny-model clips are 32-64 px: a speck in MLflow's artifact viewer. Nearest-neighbour
upscaling keeps their pixels honest (no smoothing that would flatter a blurry sample),
and putting the real clip from the same first frame on the left makes the comparison
the eye needs. The strip (first | middle | last frame) is what the report shows per run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SEPARATOR_PX = 4  # white gap between panels


def upscale_nearest(frames: np.ndarray, factor: int) -> np.ndarray:
    """uint8 [T,H,W,3] (or [H,W,3]) repeated `factor` times along H and W."""
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=-3).repeat(factor, axis=-2)


def view_factor(height: int, min_height: int = 256) -> int:
    """Integer zoom so the panel is at least `min_height` px tall (1 for large clips)."""
    return max(1, -(-min_height // max(height, 1)))


def _fit_frames(clip: np.ndarray, frames: int) -> np.ndarray:
    """Clip to `frames` frames, holding the last one if it is shorter."""
    clip = clip[:frames]
    if len(clip) < frames:
        clip = np.concatenate([clip, np.repeat(clip[-1:], frames - len(clip), axis=0)])
    return clip


def side_by_side(
    real: np.ndarray | None, fakes: list[np.ndarray], min_height: int = 256
) -> np.ndarray:
    """uint8 [T, H*k, W*k*n + gaps, 3]: real | fake 1 | fake 2 ... (T = longest clip)."""
    panels = ([real] if real is not None else []) + list(fakes)
    if not panels:
        raise ValueError("side_by_side needs at least one clip")
    h, w = panels[0].shape[1:3]
    if any(p.shape[1:3] != (h, w) for p in panels):
        raise ValueError(f"side_by_side: panels differ in size {[p.shape[1:3] for p in panels]}")
    t = max(len(p) for p in panels)
    k = view_factor(h, min_height)
    gap = np.full((t, h * k, SEPARATOR_PX, 3), 255, np.uint8)
    row: list[np.ndarray] = []
    for i, p in enumerate(panels):
        if i:
            row.append(gap)
        row.append(upscale_nearest(_fit_frames(np.asarray(p, np.uint8), t), k))
    out = np.concatenate(row, axis=2)
    # yuv420p needs even sizes
    return out[:, : out.shape[1] // 2 * 2, : out.shape[2] // 2 * 2]


def frame_strip(clip: np.ndarray, min_height: int = 128) -> np.ndarray:
    """uint8 [H*k, 3*W*k + gaps, 3]: the first, middle and last frame of a clip."""
    t = len(clip)
    picks = [clip[0], clip[t // 2], clip[t - 1]]
    k = view_factor(clip.shape[1], min_height)
    gap = np.full((clip.shape[1] * k, SEPARATOR_PX, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for i, f in enumerate(picks):
        if i:
            parts.append(gap)
        parts.append(upscale_nearest(np.asarray(f, np.uint8), k))
    return np.concatenate(parts, axis=1)


def write_png(path: Path, image: np.ndarray) -> Path:
    """An RGB uint8 image as PNG through PyAV (no imaging library needed)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="image2") as container:
        stream = container.add_stream("png")
        stream.width, stream.height, stream.pix_fmt = image.shape[1], image.shape[0], "rgb24"
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_eval_samples(
    out_dir: Path,
    step: int,
    real: np.ndarray | None,
    fakes: list[np.ndarray],
    fps: float,
    tag: str = "",
) -> list[Path]:
    """Per eval: one side-by-side mp4 (real | generated) and the strip PNG of clip 0.
    Names start with the step so the newest sorts last."""
    from rank_sweep.data.video import write_video

    out_dir = Path(out_dir)
    stem = f"step{step:06d}" + (f"_{tag}" if tag else "")
    clip = side_by_side(real, [_fit_size(f, real) for f in fakes])
    video = write_video(out_dir / f"{stem}_side_by_side.mp4", clip, fps=fps)
    strip = write_png(out_dir / f"{stem}_strip.png", frame_strip(fakes[0]))
    return [video, strip]


def _fit_size(fake: np.ndarray, real: np.ndarray | None) -> np.ndarray:
    """Generated clips share the real clip's size; crop defensively if a model pads."""
    if real is None:
        return fake
    return fake[:, : real.shape[1], : real.shape[2]]
