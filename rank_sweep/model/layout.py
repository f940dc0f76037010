"""What a complete diffusers-format WanImageToVideoPipeline directory contains."""

from __future__ import annotations

from pathlib import Path


class ModelError(ValueError):
    """A model directory or model option that cannot be used (one-line message)."""


_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")

# part -> (required config file, needs weights); sharded checkpoints (the 14B ships
# diffusion_pytorch_model-0000k-of-0000n.safetensors + index) count as weights too.
PARTS: dict[str, tuple[str, bool]] = {
    "transformer": ("config.json", True),
    "vae": ("config.json", True),
    "text_encoder": ("config.json", True),
    "image_encoder": ("config.json", True),
    "tokenizer": ("tokenizer_config.json", False),
    "image_processor": ("preprocessor_config.json", False),
    "scheduler": ("scheduler_config.json", False),
}


def missing_parts(path: Path) -> list[str]:
    """Relative names of everything a loadable I2V dir lacks; empty when complete."""
    path = Path(path)
    if not path.is_dir():
        return [f"{path} (no such directory)"]
    missing = [] if (path / "model_index.json").is_file() else ["model_index.json"]
    for part, (cfg, needs_weights) in PARTS.items():
        d = path / part
        if not (d / cfg).is_file():
            missing.append(f"{part}/{cfg}")
        if needs_weights and not any(any(d.glob(g)) for g in _WEIGHT_GLOBS):
            missing.append(f"{part}/<weights *.safetensors|*.bin>")
        if part == "tokenizer" and not any(
            (d / f).is_file() for f in ("tokenizer.json", "spiece.model")
        ):
            missing.append("tokenizer/<tokenizer.json|spiece.model>")
    return missing
