"""What a complete diffusers-format WanImageToVideoPipeline directory contains.

Both Wan layouts are accepted: Wan2.1 I2V (one `transformer`, CLIP `image_encoder` +
`image_processor`) and Wan2.2 (`transformer` + `transformer_2` for A14B's two experts; no
image encoder for A14B and TI2V-5B). What a dir must hold is read from its own
model_index.json: a component listed as [null, null] there is absent by design.
"""

from __future__ import annotations

import json
from pathlib import Path


class ModelError(ValueError):
    """A model directory or model option that cannot be used (one-line message)."""


_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")

# part -> (required config file, needs weights); sharded checkpoints (the 14B ships
# diffusion_pytorch_model-0000k-of-0000n.safetensors + index) count as weights too.
PARTS: dict[str, tuple[str, bool]] = {
    "transformer": ("config.json", True),
    "transformer_2": ("config.json", True),
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
    index_file = path / "model_index.json"
    missing = [] if index_file.is_file() else ["model_index.json"]
    index = _read_index(index_file)
    for part, (cfg, needs_weights) in PARTS.items():
        if not _expected(part, index):
            continue
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


# Components a Wan pipeline may leave out ([null, null] in model_index.json), and whether
# they are expected when the index does not mention them (an old or hand-made dir).
_OPTIONAL = {"transformer_2": False, "image_encoder": True, "image_processor": True}


def _read_index(index_file: Path) -> dict:
    try:
        return json.loads(index_file.read_text())
    except (OSError, ValueError):
        return {}


def _expected(part: str, index: dict) -> bool:
    if part not in _OPTIONAL:
        return True
    entry = index.get(part)
    if entry is None:
        return _OPTIONAL[part]
    return isinstance(entry, list) and entry[:1] != [None]


def pipeline_options(path: Path) -> dict:
    """Wan2.2 switches of a model dir's model_index.json: boundary_ratio (two experts,
    None for one transformer) and expand_timesteps (TI2V-5B)."""
    index = _read_index(Path(path) / "model_index.json")
    has_second = _expected("transformer_2", index)
    ratio = index.get("boundary_ratio")
    if has_second and ratio is None:
        raise ModelError(f"{path} has transformer_2 but no boundary_ratio in model_index.json")
    return {
        "boundary_ratio": float(ratio) if has_second else None,
        "expand_timesteps": bool(index.get("expand_timesteps", False)),
    }
