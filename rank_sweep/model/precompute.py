"""Precompute cache: per-clip VAE latents, I2V condition, 512-token text embeddings and CLIP
image embeddings as safetensors, keyed by model + data + frames + resolution, shared by
every job of a sweep. Entries are written atomically; a corrupt one is recomputed."""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from rank_sweep.paths import latents_dir
from rank_sweep.utils.atomic import atomic_file
from rank_sweep.utils.keys import content_key

log = logging.getLogger(__name__)

KEYS = ("latents", "cond", "text_emb", "image_emb")
CACHE_VERSION = "1"  # bump when what is stored (or how it is encoded) changes
_SAMPLE_BYTES = 1 << 20  # bytes read from each end of a weight file for its fingerprint


def model_fingerprint(model_path: Path) -> str:
    """Content fingerprint of a model dir, independent of where it lives: every config
    file in full, and for weight files name, size and the first/last MiB (hashing 60 GB
    of 14B weights would take minutes; a changed checkpoint changes these)."""
    h = hashlib.sha256()
    root = Path(model_path)
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        if rel.startswith(".") or "/." in rel:
            continue
        size = f.stat().st_size
        h.update(f"{rel}:{size}\n".encode())
        with open(f, "rb") as fh:
            if f.suffix in (".json", ".txt", ".model") or size <= 2 * _SAMPLE_BYTES:
                h.update(fh.read())
            else:
                h.update(fh.read(_SAMPLE_BYTES))
                fh.seek(size - _SAMPLE_BYTES)
                h.update(fh.read(_SAMPLE_BYTES))
    return h.hexdigest()


def cache_key(
    model_path: Path, dataset_fingerprint: str, frames: int, height: int, width: int
) -> str:
    return content_key(
        {
            "v": CACHE_VERSION,
            "model": model_fingerprint(model_path),
            "data": dataset_fingerprint,
            "frames": int(frames),
            "size": [int(height), int(width)],
        },
        20,
    )


def precompute_cached(
    spec, dataset, *, frames: int, height: int, width: int, desc: str, fingerprint: str = ""
) -> PrecomputedSet:
    """`precompute` into the shared cache dir named by model + data + frames + size, so
    every job of a sweep (and the evaluator) finds the same entries. `fingerprint` names
    the data when `dataset` is a view (e.g. a Subset) without its own `fingerprint()`."""
    data_key = fingerprint or dataset.fingerprint()
    out_dir = latents_dir() / cache_key(spec.path, data_key, frames, height, width)
    return precompute(spec, dataset, out_dir, desc=desc)


def entry_path(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / f"clip-{int(index):07d}.safetensors"


def read_entry(path: Path) -> dict[str, Any]:
    """Load one entry (tensors + the item's dataset index); raises when truncated/corrupt.

    Tensors may be memory-mapped: entries are only ever replaced by rename, never
    rewritten in place, so a mapping stays valid while a reader holds it."""
    with safe_open(str(path), framework="pt") as f:
        missing = [k for k in KEYS if k not in f.keys()]
        if missing:
            raise ValueError(f"{path.name} lacks {missing}")
        out: dict[str, Any] = {k: f.get_tensor(k) for k in KEYS}
        out["index"] = int((f.metadata() or {}).get("index", -1))
        return out


def _valid(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        read_entry(path)
        return True
    except Exception as e:  # noqa: BLE001 - any unreadable entry is recomputed, and said so
        log.warning("precompute entry %s is unreadable (%s); recomputing it", path, e)
        return False


class PrecomputedSet(Dataset):
    """Torch dataset over a precompute dir: {latents, cond, text_emb, image_emb, index}
    where index is the source dataset item's `index`."""

    def __init__(self, out_dir: Path, indices: list[int]):
        self.out_dir = Path(out_dir)
        self.indices = list(indices)
        self.computed = 0  # entries computed (not reused) by the precompute that built this
        self.seconds_per_clip = 0.0

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return read_entry(entry_path(self.out_dir, self.indices[i]))


@torch.no_grad()
def encode_item(spec, item: dict, text_cache: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The four cached tensors of one dataset item (batch dim dropped)."""
    pixels = item["pixels"].unsqueeze(0)
    caption = str(item["caption"])
    if caption not in text_cache:
        text_cache[caption] = spec.encode_prompts([caption])[0].cpu()
    first = torch.as_tensor(item["first_frame"]).unsqueeze(0)
    ff_float = first.permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return {
        "latents": spec.encode_video(pixels)[0].cpu(),
        "cond": spec.i2v_condition(ff_float, pixels.shape[2])[0].cpu(),
        "text_emb": text_cache[caption],
        "image_emb": spec.encode_images(first)[0].cpu(),
    }


def precompute(spec, dataset, out_dir: Path, *, desc: str = "precompute") -> PrecomputedSet:
    """Fill `out_dir` with one entry per dataset item, reusing valid entries."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text_cache: dict[str, torch.Tensor] = {}
    indices: list[int] = []
    computed, spent = 0, 0.0
    for pos in tqdm(range(len(dataset)), desc=desc, leave=False):
        # Entries are named by position (the cache key pins the dataset), so a valid entry
        # is reused without decoding its video, which is the slow part.
        path = entry_path(out_dir, pos)
        indices.append(pos)
        if _valid(path):
            continue
        t0 = time.perf_counter()
        item = dataset[pos]
        tensors = {k: v.contiguous() for k, v in encode_item(spec, item, text_cache).items()}
        meta = {"caption": str(item["caption"]), "index": str(int(item.get("index", pos)))}
        with atomic_file(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)
        computed += 1
        spent += time.perf_counter() - t0
    result = PrecomputedSet(out_dir, indices)
    result.computed = computed
    result.seconds_per_clip = spent / computed if computed else 0.0
    log.info(
        "%s: %d entries (%d computed, %.3f s/clip) in %s",
        desc, len(indices), computed, result.seconds_per_clip, out_dir,
    )  # fmt: skip
    return result
