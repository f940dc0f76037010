"""The embedded world's recipe: what is rendered and how long each part is trained.

A world is named by a preset (`model.world` in the config: demo | smoke) and a seed
(`model.tiny_seed`). The fingerprint hashes the full recipe, the seed and WORLD_VERSION,
so anything that changes the built bytes changes the fingerprint (and the cache dir).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

# Bump when the build code changes what it writes (2: fixed build threads). A new recipe
# field changes the fingerprint by itself; the frame detector (recipe's frame_det_*) left
# the version, and so every other part's bytes, as they were.
WORLD_VERSION = 2


@dataclass(frozen=True)
class WorldRecipe:
    height: int = 32
    width: int = 32
    frames: int = 17  # clip length of the transformer/detector pools (4k+1, >= 16)
    render_frames: int = 21  # frames per pool video (4k+1: the VAE round-trips it whole)
    videos_per_class: int = 16  # pool size per class and domain
    classes: int = 4  # per domain (base and target)
    # VAE: trained on both domains (a general-purpose VAE, as Wan's is)
    vae_base_dim: int = 8
    # wider at low resolution, like Wan's (1, 2, 4, 4): a 1-1-1-1 decoder squeezes every
    # upsample through 4 channels and stalls at the mean colour (measured: 9-15 dB)
    vae_dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    vae_steps: int = 200
    vae_batch: int = 4
    vae_frames: int = (
        5  # first frame + one 4-frame chunk: trains every causal path, half the cost of 9
    )
    vae_lr: float = 5e-3
    # base transformer: flow matching on the base domain only
    base_steps: int = 500
    base_batch: int = 8
    base_lr: float = 1e-3
    # detector: classifies the 8 classes plus static and time-shuffled clips
    det_steps: int = 300
    det_batch: int = 16
    det_lr: float = 2e-3
    det_width: int = 16  # channels of the first conv; features are 4x this
    # frame detector (KID): classifies single frames of the 8 classes; cheap (2D, 32 px)
    frame_det_steps: int = 300
    frame_det_batch: int = 64
    frame_det_lr: float = 2e-3
    frame_det_width: int = 16  # features are 4x this
    eval_clips: int = 32  # held-out clips for the build's PSNR / reconstruction FVD
    # CPU kernels split their reductions by thread count, so the trained weights depend on
    # it (measured: 1 vs 2 threads give other VAE/transformer bytes). A fixed count makes
    # the build the same on a quiet or a busy machine; 2 is this 2-core VM's full width.
    threads: int = 2


PRESETS: dict[str, WorldRecipe] = {
    "demo": WorldRecipe(),
    # Seconds, not minutes: for tests; the same code path, far from converged.
    "smoke": replace(
        WorldRecipe(),
        videos_per_class=3,
        vae_steps=3,
        base_steps=3,
        det_steps=3,
        frame_det_steps=3,
        frame_det_batch=16,
        base_batch=4,
        det_batch=8,
        eval_clips=8,
    ),
}


def recipe_for(preset: str) -> WorldRecipe:
    if preset not in PRESETS:
        raise ValueError(
            f"model.world={preset!r} is not a world preset; allowed: {', '.join(PRESETS)}"
        )
    return PRESETS[preset]


def world_fingerprint(preset: str, seed: int = 0) -> str:
    """Identity of the world (preset recipe + seed + build version), 16 hex chars."""
    blob = json.dumps(
        {"recipe": asdict(recipe_for(preset)), "seed": int(seed), "v": WORLD_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
