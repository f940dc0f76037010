"""CLIP encoders for CLIP-SIM.

- Image-image forms (frame vs condition image, consecutive frames) use the CLIP vision
  encoder the Wan checkpoint already ships (`<model>/image_encoder` + `image_processor`,
  transformers CLIPVisionModel layout). If the checkpoint declares
  CLIPVisionModelWithProjection, its projected `image_embeds` are used (the space CLIP
  similarity is defined in); otherwise the post-layernorm CLS token (`pooler_output`).
  The tiny Wan's encoder is random-init, so a run on `model.path=null` is stamped
  pretrained=false.
- Text-frame form needs a text tower: a transformers `CLIPModel` dir (`eval.clip_path`,
  with its tokenizer and image processor). With no path, a tiny seeded random-init
  CLIPModel is written in the same layout under `cache_dir()/detectors/` with a
  `random_init.json` marker and loaded through the same `from_pretrained` code.

Every embedding is L2-normalised float64, so a cosine is a dot product.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rank_sweep.paths import cache_dir

log = logging.getLogger(__name__)

RANDOM_MARKER = "random_init.json"
TINY_SEED = 0


class ClipError(ValueError):
    """A CLIP directory that is missing parts or cannot be loaded."""


def _dir_sha256(directory: Path) -> str:
    """sha256 over the weight files of a transformers dir (names + bytes, sorted)."""
    from rank_sweep.eval.detectors.trust import file_sha256

    files = sorted(p for ext in ("*.safetensors", "*.bin") for p in directory.glob(ext))
    if not files:
        raise ClipError(f"no weight files (*.safetensors / *.bin) in {directory}")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + file_sha256(p).encode())
    return h.hexdigest()


def _pooled(out: Any) -> torch.Tensor:
    # transformers 5 returns a ModelOutput from get_*_features; older versions a tensor.
    return out if torch.is_tensor(out) else out.pooler_output


def _unit(x: torch.Tensor) -> np.ndarray:
    x = x.double()
    return (x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)).cpu().numpy()


def _to_pil(frames: np.ndarray | torch.Tensor) -> list:
    from PIL import Image

    arr = frames.cpu().numpy() if torch.is_tensor(frames) else np.asarray(frames)
    if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 [N, H, W, 3], got {arr.dtype} {arr.shape}")
    return [Image.fromarray(f) for f in arr]


@dataclass
class ClipImageEncoder:
    """Frames -> unit image embeddings with the Wan checkpoint's CLIP vision encoder."""

    name: str  # which output: image_embeds | pooler_output
    sha256: str
    pretrained: bool
    path: Path
    model: Any = field(repr=False)
    processor: Any = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"), repr=False)
    chunk: int = 64

    @torch.no_grad()
    def embed(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        outs = []
        for i in range(0, len(frames), self.chunk):
            pil = _to_pil(frames[i : i + self.chunk])
            px = self.processor(images=pil, return_tensors="pt").pixel_values.to(self.device)
            out = self.model(pixel_values=px)
            emb = out.image_embeds if self.name == "image_embeds" else out.pooler_output
            outs.append(_unit(emb))
        return np.concatenate(outs) if outs else np.zeros((0, 0))


def load_wan_image_encoder(
    model_dir: Path, *, pretrained: bool, device: str | torch.device = "cpu"
) -> ClipImageEncoder:
    """The checkpoint's `image_encoder` + `image_processor` (as WanImageToVideoPipeline)."""
    from transformers import AutoImageProcessor, CLIPVisionModel, CLIPVisionModelWithProjection

    enc_dir, proc_dir = Path(model_dir) / "image_encoder", Path(model_dir) / "image_processor"
    if not (enc_dir / "config.json").is_file() or not proc_dir.is_dir():
        raise ClipError(f"{model_dir} has no image_encoder/ + image_processor/ (Wan I2V layout)")
    arch = json.loads((enc_dir / "config.json").read_text()).get("architectures") or []
    with_proj = "CLIPVisionModelWithProjection" in arch
    cls = CLIPVisionModelWithProjection if with_proj else CLIPVisionModel
    dev = torch.device(device)
    model = cls.from_pretrained(str(enc_dir), dtype=torch.float32).to(dev).eval()
    return ClipImageEncoder(
        name="image_embeds" if with_proj else "pooler_output",
        sha256=_dir_sha256(enc_dir),
        pretrained=pretrained,
        path=enc_dir,
        model=model,
        processor=AutoImageProcessor.from_pretrained(str(proc_dir)),
        device=dev,
    )


@dataclass
class ClipTextImage:
    """A full CLIPModel: unit text embeddings and unit image embeddings in one space."""

    sha256: str
    pretrained: bool
    path: Path
    model: Any = field(repr=False)
    tokenizer: Any = field(repr=False)
    processor: Any = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"), repr=False)
    chunk: int = 64

    @torch.no_grad()
    def embed_text(self, prompts: list[str]) -> np.ndarray:
        max_len = int(self.model.config.text_config.max_position_embeddings)
        batch = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = self.model.get_text_features(
            input_ids=batch.input_ids.to(self.device),
            attention_mask=batch.attention_mask.to(self.device),
        )
        return _unit(_pooled(out))

    @torch.no_grad()
    def embed_images(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        outs = []
        for i in range(0, len(frames), self.chunk):
            pil = _to_pil(frames[i : i + self.chunk])
            px = self.processor(images=pil, return_tensors="pt").pixel_values.to(self.device)
            outs.append(_unit(_pooled(self.model.get_image_features(pixel_values=px))))
        return np.concatenate(outs)


def write_tiny_clip(out: Path, seed: int = TINY_SEED) -> Path:
    """A tiny random CLIPModel + tokenizer + image processor in transformers layout."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    from rank_sweep.model.tiny import _build_tokenizer, vocab_size

    out.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        cfg = CLIPConfig(
            text_config=dict(
                vocab_size=vocab_size(), hidden_size=32, intermediate_size=64,
                num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                pad_token_id=0, eos_token_id=1, bos_token_id=1,
            ),
            vision_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, image_size=32, patch_size=8,
            ),
            projection_dim=32,
        )  # fmt: skip
        CLIPModel(cfg).eval().save_pretrained(out, safe_serialization=True)
    # The tiny Wan's word-level tokenizer (T5 ids: pad 0, eos 1); CLIP pools at the eos id.
    _build_tokenizer(out)
    AutoTokenizer.from_pretrained(out)  # fail here, not at eval time, if it does not load
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(out)
    (out / RANDOM_MARKER).write_text(json.dumps({"seed": seed}))
    return out


def tiny_clip_dir(seed: int = TINY_SEED) -> Path:
    final = cache_dir() / "detectors" / f"clip_tiny_random_seed{seed}"
    if (final / RANDOM_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        write_tiny_clip(tmp, seed)
        try:
            os.rename(tmp, final)  # atomic; another process may have won the race
        except OSError:
            if not (final / RANDOM_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("wrote random-init tiny CLIPModel to %s", final)
    return final


def load_clip_text_image(path: str | None, device: str | torch.device = "cpu") -> ClipTextImage:
    """CLIPModel from `eval.clip_path` (transformers layout), or the cached tiny random one."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    directory = Path(path).expanduser() if path else tiny_clip_dir()
    if not (directory / "config.json").is_file():
        raise ClipError(f"eval.clip_path={directory} is not a transformers CLIPModel dir")
    dev = torch.device(device)
    try:
        model = CLIPModel.from_pretrained(str(directory), dtype=torch.float32).to(dev).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(directory))
        processor = AutoImageProcessor.from_pretrained(str(directory))
    except (OSError, ValueError) as exc:
        raise ClipError(f"eval.clip_path={directory} cannot be loaded: {exc}") from exc
    random_init = (directory / RANDOM_MARKER).is_file()
    if random_init:
        log.warning("CLIP text-frame model is random-init: CLIP-SIM text values are relative")
    return ClipTextImage(
        sha256=_dir_sha256(directory),
        pretrained=not random_init,
        path=directory,
        model=model,
        tokenizer=tokenizer,
        processor=processor,
        device=dev,
    )
