"""Generate-and-score in batches: the full protocol without holding the clips.

The final tier at 14B is 2048 clips of 81 x 480 x 832 x 3 bytes (~199 GB). Here:

* Clips are generated `batch_size` at a time (clip i: first frame and prompt of eval item
  i, noise seed `eval.seed + i`, so batch composition never changes the noise). Each batch
  goes straight to the detectors with only the frames they need (the first `frames` for
  I3D; one frame per clip for Inception, index from `kid_frame_index`), and only the
  features (~20 KB per clip) are kept.
* Batches are dealt round-robin to the data-parallel ranks (batch b -> rank b % world).
  All ranks step through the same rounds so that sharded models (FSDP, ZeRO-3), whose
  forward is collective, stay in lockstep; a rank with nothing to do in a round that
  others still need repeats a batch and throws the result away.
* Every finished batch is written to the progress store as its own .npz (atomic rename),
  pinned by a meta record of everything that decides the clips. A killed eval restarts
  and recomputes only the missing batches; because each batch's clips and noise depend
  only on its index, the resumed number equals the uninterrupted one, and equals the
  number of a run with a different world size.
* The features are gathered on rank 0 (all_gather_object), in clip order.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rank_sweep.eval.metrics import kid_frame_index

log = logging.getLogger(__name__)

META_FILE = "meta.json"


@dataclass(frozen=True)
class Batches:
    n: int
    size: int

    def __post_init__(self) -> None:
        if self.n < 1 or self.size < 1:
            raise ValueError(f"need n >= 1 clips and batch size >= 1, got {self.n}, {self.size}")

    @property
    def count(self) -> int:
        return -(-self.n // self.size)

    def bounds(self, b: int) -> tuple[int, int]:
        return b * self.size, min((b + 1) * self.size, self.n)

    def rounds(self, world: int) -> int:
        return -(-self.count // world)


def meta_key(meta: dict[str, Any]) -> str:
    canon = json.dumps({k: str(v) for k, v in meta.items()}, sort_keys=True)
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


class BatchStore:
    """Per-batch feature files under `root` (None: memory only). A meta record pins what
    the batches are; a store whose meta differs is emptied, never mixed."""

    def __init__(self, root: Path | None, meta: dict[str, Any]) -> None:
        self.root = None if root is None else Path(root)
        self.meta = {k: str(v) for k, v in meta.items()}
        if self.root is None:
            return
        meta_path = self.root / META_FILE
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text())
            except (OSError, json.JSONDecodeError):
                old = None
            if old != self.meta:
                log.warning("eval progress in %s is for another protocol: starting over", self.root)
                shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, exist_ok=True)
        if not meta_path.is_file():
            _write_atomic(meta_path, json.dumps(self.meta, sort_keys=True).encode())

    def path(self, b: int) -> Path:
        assert self.root is not None
        return self.root / f"batch-{b:06d}.npz"

    def load(self, b: int) -> dict[str, np.ndarray] | None:
        if self.root is None or not self.path(b).is_file():
            return None
        try:
            with np.load(self.path(b), allow_pickle=False) as z:
                return {k: np.asarray(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            log.warning("eval progress file %s unreadable: recomputing it", self.path(b).name)
            return None

    def save(self, b: int, feats: dict[str, np.ndarray]) -> None:
        if self.root is None:
            return
        path = self.path(b)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, **feats)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def done(self) -> list[int]:
        if self.root is None:
            return []
        return sorted(int(p.stem.split("-")[1]) for p in self.root.glob("batch-*.npz"))


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass
class GenerationJob:
    """What to generate and how to score it (one tier, one eval)."""

    spec: Any  # WanSpec
    model: torch.nn.Module
    conditioning: Callable[[int], dict[str, torch.Tensor]]  # clip i -> tensors [1, ...]
    detectors: dict[str, Any]  # "video" (I3D) and/or "frame" (Inception)
    batches: Batches
    sample_frames: int
    detector_frames: int
    steps: int
    guidance_scale: float
    seed: int
    on_clips: Callable[[int, np.ndarray], None] | None = None  # (first clip index, uint8 clips)

    def _cond(self, start: int, stop: int) -> dict[str, torch.Tensor]:
        items = [self.conditioning(i) for i in range(start, stop)]
        out = {k: torch.cat([it[k] for it in items]) for k in ("cond", "text", "image")}
        if "neg" in items[0]:
            out["neg"] = items[0]["neg"].expand(stop - start, *items[0]["neg"].shape[1:])
        return out

    @torch.no_grad()
    def run_batch(self, b: int) -> dict[str, np.ndarray]:
        from rank_sweep.eval.sample import sample_from_conditioning

        start, stop = self.batches.bounds(b)
        video = sample_from_conditioning(
            self.spec,
            self.model,
            self._cond(start, stop),
            num_frames=self.sample_frames,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            seed=self.seed + start,  # clip i gets seed + i whatever the batching
        ).numpy()  # uint8 [B, T, H, W, 3]
        if self.on_clips is not None:
            self.on_clips(start, video)
        feats: dict[str, np.ndarray] = {"index": np.arange(start, stop)}
        t = self.detector_frames
        if "video" in self.detectors:
            feats["video"] = self.detectors["video"].features(video[:, :t])
        if "frame" in self.detectors:
            pick = [kid_frame_index(self.seed, i, t) for i in range(start, stop)]
            one = video[np.arange(stop - start), pick][:, None]  # [B, 1, H, W, 3]
            feats["frame"] = self.detectors["frame"].features(one)[:, 0]
        del video  # only features leave this function
        return feats


def generate_features(
    job: GenerationJob, store: BatchStore, ctx: Any = None
) -> dict[str, np.ndarray] | None:
    """Features of all clips in clip order on rank 0 (None on the other ranks)."""
    from rank_sweep.train.dist import any_rank

    rank = 0 if ctx is None else int(ctx.rank)
    world = 1 if ctx is None or not ctx.distributed else int(ctx.world_size)
    count = job.batches.count
    mine: dict[int, dict[str, np.ndarray]] = {}
    for r in range(job.batches.rounds(world)):
        b = r * world + rank
        have = store.load(b) if b < count else None
        if have is not None:
            mine[b] = have
        need = b < count and have is None
        if not any_rank(need, ctx):
            continue  # the whole round was done before a kill
        feats = job.run_batch(b if b < count else count - 1)  # lockstep filler when idle
        if need:
            store.save(b, feats)
            mine[b] = feats
            log.info("eval batch %d/%d done (rank %d)", b + 1, count, rank)
    parts: list[dict[int, dict[str, np.ndarray]]] = [mine]
    if world > 1:
        import torch.distributed as tdist

        parts = [None] * world  # type: ignore[list-item]
        tdist.all_gather_object(parts, mine)
    if rank != 0:
        return None
    every = {b: f for part in parts for b, f in part.items()}
    missing = [b for b in range(count) if b not in every]
    if missing:
        raise RuntimeError(f"eval batches {missing} were produced by no rank")
    for b in range(count):  # rank 0 keeps the gathered batches too (resume without peers)
        if store.root is not None and not store.path(b).is_file():
            store.save(b, every[b])
    kinds = [k for k in every[0] if k != "index"]
    out = {k: np.concatenate([every[b][k] for b in range(count)]) for k in kinds}
    index = np.concatenate([every[b]["index"] for b in range(count)])
    if not np.array_equal(index, np.arange(job.batches.n)):
        raise RuntimeError("gathered eval features are not in clip order")
    return out
