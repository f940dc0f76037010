"""In-memory clip pools of the world's two domains, rendered by the same renderer that
writes the synthetic dataset files, but from a separate seed stream so no world pool clip
is a dataset clip (the dataset's test split stays unseen by the VAE, base and detector)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rank_sweep.data.render import caption_for, class_name, domain_class, render_domain

_STREAM = 7919  # seed-stream tag of the world pools (the dataset uses [seed, c, v])


@dataclass
class Pool:
    videos: np.ndarray  # uint8 [N, T, H, W, 3]
    labels: np.ndarray  # int64 [N]: global class index
    captions: list[str]


def render_pool(
    domain: str, classes: int, videos_per_class: int, frames: int, h: int, w: int, seed: int,
    split: int = 0,
) -> Pool:  # fmt: skip
    """`split` selects a disjoint seed stream (0 = training pool, 1 = held-out pool)."""
    vids, labels, caps = [], [], []
    dom = {"base": 0, "target": 1}[domain]
    for c in range(classes):
        g = domain_class(domain, c)
        for v in range(videos_per_class):
            rng = np.random.default_rng([seed, _STREAM, split, dom, c, v])
            vids.append(render_domain(domain, c, rng, frames, h, w))
            labels.append(g)
            caps.append(caption_for(class_name(g)))
    return Pool(np.stack(vids), np.asarray(labels, np.int64), caps)


def windows(videos: np.ndarray, length: int, gen: np.random.Generator) -> np.ndarray:
    """One random `length`-frame window of each video: uint8 [N, length, H, W, 3]."""
    n, t = videos.shape[:2]
    starts = gen.integers(0, t - length + 1, size=n)
    return np.stack([videos[i, s : s + length] for i, s in enumerate(starts)])


def to_pixels(clips: np.ndarray) -> np.ndarray:
    """uint8 [N, T, H, W, 3] -> float32 [N, 3, T, H, W] in [-1, 1] (the VAE's input)."""
    x = clips.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))
