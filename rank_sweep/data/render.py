"""Procedural video classes for the synthetic datasets: each differs in motion and looks.

Pure numpy, seeded by the caller's Generator, so the same (seed, class, video) always
renders the same frames. Kept separate from the layout writers so tests and benchmarks
can render frames without touching disk.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

Renderer = Callable[[np.random.Generator, int, int, int, np.ndarray], np.ndarray]


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return yy, xx


def _compose(bg: np.ndarray, fg: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend a foreground color over a background by a [H,W] mask in [0,1]."""
    return bg * (1.0 - mask[..., None]) + fg * mask[..., None]


def _bounce(p0: float, v: float, t: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Position of a point moving at speed v reflected between lo and hi (triangle wave)."""
    span = max(hi - lo, 1e-6)
    x = (p0 - lo + v * t) % (2 * span)
    return lo + np.where(x > span, 2 * span - x, x)


def moving_square(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    side = max(4, int(min(h, w) * rng.uniform(0.2, 0.3)))
    ts = np.arange(t, dtype=np.float32)
    xs = _bounce(
        rng.uniform(0, w - side), rng.uniform(1.5, 3.0) * rng.choice([-1, 1]), ts, 0, w - side
    )
    ys = _bounce(
        rng.uniform(0, h - side), rng.uniform(0.5, 1.5) * rng.choice([-1, 1]), ts, 0, h - side
    )
    bg = np.full((h, w, 3), rng.uniform(10, 40), np.float32)
    out = []
    for x, y in zip(xs, ys):
        m = ((xx >= x) & (xx < x + side) & (yy >= y) & (yy < y + side)).astype(np.float32)
        out.append(_compose(bg, color, m))
    return np.stack(out)


def bouncing_ball(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    r = max(3.0, min(h, w) * rng.uniform(0.1, 0.16))
    ts = np.arange(t, dtype=np.float32)
    xs = _bounce(rng.uniform(r, w - r), rng.uniform(1.0, 2.5), ts, r, w - r)
    period = rng.uniform(8, 14)
    ys = (h - r) - (h - 2 * r) * np.abs(np.sin(np.pi * (ts / period + rng.uniform())))
    bg = np.stack([np.linspace(60, 20, h)[:, None].repeat(w, 1)] * 3, -1).astype(np.float32)
    out = []
    for x, y in zip(xs, ys):
        d = np.sqrt((xx - x) ** 2 + (yy - y) ** 2)
        out.append(_compose(bg, color, np.clip(r - d + 0.5, 0, 1)))
    return np.stack(out)


def panning_stripes(rng, t, h, w, color):
    _, xx = _grid(h, w)
    period = rng.uniform(8, 16)
    speed = rng.uniform(1.0, 2.5) * rng.choice([-1, 1])
    out = []
    for i in range(t):
        s = 0.5 + 0.5 * np.sin(2 * np.pi * (xx + speed * i) / period)
        out.append(_compose(np.full((h, w, 3), 230, np.float32), color, s))
    return np.stack(out)


def zooming_rings(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    cy, cx = h / 2 + rng.uniform(-3, 3), w / 2 + rng.uniform(-3, 3)
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    base = rng.uniform(5, 9)
    zoom = rng.uniform(0.03, 0.06)
    out = []
    for i in range(t):
        s = 0.5 + 0.5 * np.cos(2 * np.pi * d / (base * (1 + zoom * i)))
        out.append(_compose(np.zeros((h, w, 3), np.float32), color, s))
    return np.stack(out)


def flickering_blocks(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    cell = int(rng.integers(6, 12))
    board = ((yy // cell + xx // cell) % 2).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi)
    freq = rng.uniform(0.6, 1.2)
    out = []
    for i in range(t):
        on = 0.5 + 0.5 * np.sin(freq * i + phase)
        out.append(_compose(np.full((h, w, 3), 128, np.float32), color * on, board))
    return np.stack(out)


def rotating_bar(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    cy, cx = h / 2, w / 2
    width = max(2.0, min(h, w) * 0.08)
    omega = rng.uniform(0.15, 0.3) * rng.choice([-1, 1])
    a0 = rng.uniform(0, np.pi)
    out = []
    for i in range(t):
        a = a0 + omega * i
        dist = np.abs((xx - cx) * np.sin(a) - (yy - cy) * np.cos(a))
        out.append(
            _compose(np.full((h, w, 3), 200, np.float32), color, np.clip(width - dist, 0, 1))
        )
    return np.stack(out)


def drifting_gradient(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    vy, vx = rng.uniform(-1.5, 1.5), rng.uniform(1.0, 2.0)
    out = []
    for i in range(t):
        s = 0.5 + 0.5 * np.sin(2 * np.pi * ((xx - vx * i) / w + (yy - vy * i) / h))
        out.append(_compose(np.full((h, w, 3), 20, np.float32), color, s))
    return np.stack(out)


def pulsing_circle(rng, t, h, w, color):
    yy, xx = _grid(h, w)
    d = np.sqrt((yy - h / 2) ** 2 + (xx - w / 2) ** 2)
    r0, amp = min(h, w) * 0.25, min(h, w) * rng.uniform(0.1, 0.18)
    freq = rng.uniform(0.4, 0.8)
    out = []
    for i in range(t):
        r = r0 + amp * np.sin(freq * i)
        out.append(_compose(np.full((h, w, 3), 90, np.float32), color, np.clip(r - d + 0.5, 0, 1)))
    return np.stack(out)


CLASSES: list[tuple[str, Renderer, tuple[int, int, int]]] = [
    ("MovingSquare", moving_square, (230, 60, 50)),
    ("BouncingBall", bouncing_ball, (250, 200, 40)),
    ("PanningStripes", panning_stripes, (30, 80, 200)),
    ("ZoomingRings", zooming_rings, (60, 220, 120)),
    ("FlickeringBlocks", flickering_blocks, (240, 240, 240)),
    ("RotatingBar", rotating_bar, (120, 30, 160)),
    ("DriftingGradient", drifting_gradient, (250, 120, 20)),
    ("PulsingCircle", pulsing_circle, (20, 200, 220)),
]


# Domains of the embedded world (see rank_sweep/world): the base model is pretrained on
# BASE (translation, bounce, panning, zoom: plain look); the fine-tuning target is TARGET
# (motions the base never saw: flicker, rotation, drift, pulse) in a film look (sepia tone,
# vignette, grain-free so the tiny VAE can reconstruct it). "all" is the legacy set: class
# index c as is, plain look.
DOMAINS = ("all", "base", "target")
BASE_CLASSES = (0, 1, 2, 3)
TARGET_CLASSES = (4, 5, 6, 7)
_TINT = np.array([1.0, 0.78, 0.52], np.float32)  # sepia-like channel gains of the film look


def domain_class(domain: str, c: int) -> int:
    """Global class index of the domain's c-th class (past 4 classes: the next hue cycle)."""
    if domain == "all":
        return c
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; allowed: {', '.join(DOMAINS)}")
    table = BASE_CLASSES if domain == "base" else TARGET_CLASSES
    return table[c % len(table)] + len(CLASSES) * (c // len(table))


def film_look(frames: np.ndarray) -> np.ndarray:
    """The target style: luminance mapped to a warm tint, lifted blacks and a vignette.
    Float [T,H,W,3] in, float out; applied per frame, so it does not depend on motion."""
    h, w = frames.shape[1:3]
    lum = frames @ np.array([0.299, 0.587, 0.114], np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r2 = ((yy - (h - 1) / 2) / (h / 2)) ** 2 + ((xx - (w - 1) / 2) / (w / 2)) ** 2
    vignette = np.clip(1.0 - 0.35 * r2, 0.3, 1.0)
    out = (25.0 + 0.85 * lum[..., None] * _TINT) * vignette[None, :, :, None]
    return out


def class_name(index: int) -> str:
    """CamelCase class name; past the base list a letter suffix keeps names unique."""
    name = CLASSES[index % len(CLASSES)][0]
    cycle = index // len(CLASSES)
    return name if cycle == 0 else f"{name}{chr(ord('A') + cycle)}"


def readable(name: str) -> str:
    """'ApplyEyeMakeup' -> 'apply eye makeup'; 'playing guitar' stays as is."""
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name)
    return " ".join(words.replace("_", " ").split()).lower()


def caption_for(name: str) -> str:
    return f"a video of {readable(name)}"


def render(
    index: int,
    rng: np.random.Generator,
    frames: int,
    height: int,
    width: int,
    *,
    style: str = "plain",
) -> np.ndarray:
    """uint8 [T,H,W,3] frames of class `index`; color jitter per video, hue per class cycle.
    style: plain | film (the target domain's look)."""
    _, fn, base = CLASSES[index % len(CLASSES)]
    cycle = index // len(CLASSES)
    color = np.roll(np.array(base, np.float32), cycle) + rng.uniform(-20, 20, 3).astype(np.float32)
    out = fn(rng, frames, height, width, np.clip(color, 0, 255))
    if style == "film":
        out = film_look(out)
    elif style != "plain":
        raise ValueError(f"unknown style {style!r}; allowed: plain, film")
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def domain_style(domain: str) -> str:
    return "film" if domain == "target" else "plain"


def render_domain(
    domain: str, c: int, rng: np.random.Generator, frames: int, height: int, width: int
) -> np.ndarray:
    """Frames of the c-th class of `domain`, in the domain's look."""
    return render(domain_class(domain, c), rng, frames, height, width, style=domain_style(domain))
