"""The embedded world: a trained tiny VAE, a tiny Wan I2V base pretrained on the base
synthetic domain, and tiny video and frame detectors, built once from a seed and fingerprinted."""

import logging

from rank_sweep.world.build import World, ensure_world, world_dir
from rank_sweep.world.config import PRESETS, WorldRecipe, recipe_for, world_fingerprint

log = logging.getLogger(__name__)

__all__ = [
    "PRESETS",
    "World",
    "WorldRecipe",
    "ensure_world",
    "recipe_for",
    "world_dir",
    "world_fingerprint",
    "world_for",
    "resolve_detector_path",
    "world_stamp",
]


def world_for(model_cfg) -> World | None:
    """The world a model config uses (`model.world` preset, `model.tiny_seed` seed), built on
    first use; None when the config names no world (a real checkpoint or random tiny)."""
    preset = getattr(model_cfg, "world", None)
    if not preset or getattr(model_cfg, "path", None) is not None:
        return None
    return ensure_world(str(preset), int(getattr(model_cfg, "tiny_seed", 0)))


def resolve_detector_path(value, model_cfg, kind: str = "video") -> str | None:
    """`eval.i3d_path` (kind video) / `eval.inception_path` (kind frame): "world" means the
    world's trained detector of that kind when the model is the world's; with any other
    model (a real checkpoint, random tiny weights) it falls back to the random-init network
    (logged; the stamp names the detector actually used)."""
    if value != "world":
        return value
    key, net = {"video": ("i3d_path", "I3D"), "frame": ("inception_path", "Inception")}[kind]
    world = world_for(model_cfg)
    if world is None:
        log.warning("eval.%s=world but the model is not the world's: random-init %s", key, net)
        return None
    return str(world.detector_path if kind == "video" else world.frame_detector_path)


def world_stamp(model_cfg) -> dict[str, str]:
    """Protocol-stamp fields naming the world a metric was measured in ({} without one)."""
    preset = getattr(model_cfg, "world", None)
    if not preset or getattr(model_cfg, "path", None) is not None:
        return {}
    seed = int(getattr(model_cfg, "tiny_seed", 0))
    return {"world.preset": str(preset), "world.fingerprint": world_fingerprint(str(preset), seed)}
