"""Build the embedded world once, from a seed, into the cache:

    <cache>/world/<preset>-s<seed>-<fingerprint>/
        model/         diffusers WanImageToVideoPipeline (trained VAE, pretrained base)
        detector.pt    TorchScript video detector (I3D call signature), for FVD
        frame_detector.pt  TorchScript frame detector (FID Inception call signature), for KID
        world.json     fingerprint, recipe, build metrics (PSNR, reconstruction FVD, ...)

Order: VAE (both domains) -> pipeline written with it -> detector (real clips and their VAE
reconstructions) -> base transformer (base domain) -> frame detector (own generators, so the
parts before it are the bytes they were without it) -> metrics. Written to a temp dir and
renamed into place, so a crashed or concurrent build never leaves a half world behind.
All randomness comes from local generators seeded from the world seed; the global torch RNG
is forked, never reseeded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rank_sweep.paths import cache_dir
from rank_sweep.runtime import progress_kwargs
from rank_sweep.world.config import WORLD_VERSION, WorldRecipe, recipe_for, world_fingerprint

log = logging.getLogger(__name__)

MARKER = "world.json"
DETECTOR_FILE = "detector.pt"
FRAME_DETECTOR_FILE = "frame_detector.pt"


@dataclass(frozen=True)
class World:
    root: Path
    preset: str
    seed: int
    fingerprint: str

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def detector_path(self) -> Path:
        return self.root / DETECTOR_FILE

    @property
    def frame_detector_path(self) -> Path:
        return self.root / FRAME_DETECTOR_FILE

    def info(self) -> dict[str, Any]:
        return json.loads((self.root / MARKER).read_text())


def world_dir(preset: str, seed: int = 0) -> Path:
    return cache_dir() / "world" / f"{preset}-s{int(seed)}-{world_fingerprint(preset, seed)}"


def ensure_world(preset: str, seed: int = 0, *, force: bool = False) -> World:
    """The built world for (preset, seed): reused when present, built on first use."""
    final = world_dir(preset, seed)
    world = World(final, preset, int(seed), world_fingerprint(preset, seed))
    if (final / MARKER).exists() and not force:
        return world
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
    try:
        log.info("building the embedded world %s (seed %d) into %s", preset, seed, final)
        build_world(tmp, preset, int(seed))
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / MARKER).exists():
                raise
            log.info("another process built %s first; using it", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return world


def _pools(r: WorldRecipe, seed: int, split: int, per_class: int):
    from rank_sweep.world.pools import render_pool

    args = (r.classes, per_class, r.render_frames, r.height, r.width, seed)
    return render_pool("base", *args, split=split), render_pool("target", *args, split=split)


@torch.no_grad()
def _features(net: torch.nn.Module, clips: np.ndarray) -> np.ndarray:
    """Detector features of the first 16 frames of uint8 clips [N, T, H, W, 3], float64."""
    x = torch.from_numpy(np.ascontiguousarray(clips[:, :16])).permute(0, 4, 1, 2, 3)
    return net(x.contiguous()).double().numpy()


def build_world(out: Path, preset: str, seed: int) -> dict[str, Any]:
    """Train and write every part of the world into `out`; returns the world.json dict."""
    r = recipe_for(preset)
    out = Path(out)
    gen = np.random.default_rng([seed, WORLD_VERSION])
    threads = torch.get_num_threads()
    torch.set_num_threads(r.threads)  # part of the recipe: the bytes depend on it
    try:
        info = _build(out, preset, seed, r, gen)
    finally:
        torch.set_num_threads(threads)
    return info


def _build(out: Path, preset: str, seed: int, r: WorldRecipe, gen: np.random.Generator) -> dict:
    from rank_sweep.eval.metrics import fvd_from_features
    from rank_sweep.model.spec import WanSpec
    from rank_sweep.model.tiny import make_tiny
    from rank_sweep.world import base, detector, frame_detector
    from rank_sweep.world import vae as wvae
    from rank_sweep.world.pools import windows

    timings: dict[str, float] = {}
    total = r.vae_steps + r.det_steps + r.base_steps + r.frame_det_steps
    bar = tqdm(total=total, desc=f"world build ({preset})", unit="step", **progress_kwargs())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        t0 = time.perf_counter()
        tr_base, tr_target = _pools(r, seed, 0, r.videos_per_class)
        ho_base, ho_target = _pools(r, seed, 1, max(1, r.eval_clips // r.classes))
        all_videos = np.concatenate([tr_base.videos, tr_target.videos])
        all_labels = np.concatenate([tr_base.labels, tr_target.labels])

        # 1. VAE on both domains
        bar.set_postfix_str("VAE", refresh=False)
        t = time.perf_counter()
        vae = wvae.new_vae(r)
        vae_losses = wvae.train_vae(vae, all_videos, r, gen, progress=bar.update)
        wvae.set_latent_stats(vae, windows(all_videos, r.frames, gen))
        timings["vae_s"] = time.perf_counter() - t
        model_dir = out / "model"
        make_tiny(model_dir, seed=seed, vae=vae)

        # 2. detector on real clips and their reconstructions (same labels)
        bar.set_postfix_str("detector", refresh=False)
        t = time.perf_counter()
        recon = wvae.reconstruct(vae, all_videos)
        net = detector.TinyVideoNet(size=max(r.height, r.width), width=r.det_width)
        det_losses = detector.train_detector(
            net, np.concatenate([all_videos, recon]), np.concatenate([all_labels, all_labels]),
            steps=r.det_steps, batch=r.det_batch, lr=r.det_lr, frames=16, gen=gen,
            progress=bar.update,
        )  # fmt: skip
        from rank_sweep.eval.detectors.loaders import save_torchscript
        from rank_sweep.eval.detectors.trust import write_sidecar

        save_torchscript(net, out / DETECTOR_FILE)
        write_sidecar(out / DETECTOR_FILE)  # the project's own file: trusted by its hash
        timings["detector_s"] = time.perf_counter() - t

        # 3. base transformer on the base domain
        bar.set_postfix_str("base transformer", refresh=False)
        t = time.perf_counter()
        spec = WanSpec(path=model_dir, device=torch.device("cpu"), dtype=torch.float32, shift=3.0)
        clips = np.concatenate([windows(tr_base.videos, r.frames, gen) for _ in range(2)])
        data = base.encode_clips(spec, clips, tr_base.captions * 2)
        transformer = spec.load_transformer()
        base_losses = base.pretrain(
            transformer, data, r, shift=spec.shift, seed=seed, progress=bar.update
        )
        transformer.save_pretrained(model_dir / "transformer", safe_serialization=True)
        timings["base_s"] = time.perf_counter() - t

        # 4. frame detector (KID) on real frames and their reconstructions' frames
        bar.set_postfix_str("frame detector", refresh=False)
        t = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            fnet = frame_detector.TinyFrameNet(size=max(r.height, r.width), width=r.frame_det_width)
            frame_losses = frame_detector.train_frame_detector(
                fnet, np.concatenate([all_videos, recon]), np.concatenate([all_labels, all_labels]),
                steps=r.frame_det_steps, batch=r.frame_det_batch, lr=r.frame_det_lr,
                gen=np.random.default_rng([seed, WORLD_VERSION, 4]), progress=bar.update,
            )  # fmt: skip
        save_torchscript(fnet, out / FRAME_DETECTOR_FILE)
        write_sidecar(out / FRAME_DETECTOR_FILE)
        timings["frame_detector_s"] = time.perf_counter() - t
        bar.close()

        # 5. what the world is worth: reconstruction quality and detector accuracy
        t = time.perf_counter()
        metrics: dict[str, float] = {}
        # held-out clips of r.frames (4k+1, so the VAE round-trips them whole); the detector
        # sees the first 16 frames, as the evaluation protocol does
        held = {
            "base": windows(ho_base.videos, r.frames, gen),
            "target": windows(ho_target.videos, r.frames, gen),
        }
        feats: dict[str, np.ndarray] = {}
        for dom, real in held.items():
            rec = wvae.reconstruct(vae, real)
            metrics[f"vae_psnr_db/{dom}"] = wvae.psnr(real, rec)
            feats[dom] = _features(net, real)
            metrics[f"recon_fvd/{dom}"] = fvd_from_features(feats[dom], _features(net, rec))
        labels = np.concatenate([ho_base.labels, ho_target.labels])
        both = np.concatenate([held["base"], held["target"]])[:, :16]
        metrics["detector_acc/heldout"] = detector.accuracy(net, both, labels)
        metrics["frame_detector_acc/heldout"] = frame_detector.frame_accuracy(fnet, both, labels)
        # the FVD between the two domains' real clips: the scale a fine-tune can close
        metrics["fvd_base_vs_target"] = fvd_from_features(feats["base"], feats["target"])
        timings["metrics_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0

    info = {
        "preset": preset,
        "seed": seed,
        "fingerprint": world_fingerprint(preset, seed),
        "world_version": WORLD_VERSION,
        "recipe": asdict(r),
        "build_command": f"python -m rank_sweep.world build --preset {preset} --seed {seed}",
        "metrics": {k: round(float(v), 4) for k, v in metrics.items()},
        "losses": {
            "vae": [round(vae_losses[0], 5), round(vae_losses[-1], 5)],
            "detector": [round(det_losses[0], 5), round(det_losses[-1], 5)],
            "base": [round(base_losses[0], 5), round(base_losses[-1], 5)],
            "frame_detector": [round(frame_losses[0], 5), round(frame_losses[-1], 5)],
        },
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "torch": torch.__version__,  # kernels (and so the bytes) may differ across versions
        "detector": {"name": detector.DETECTOR_NAME, "pretrained": False, "file": DETECTOR_FILE},
        "frame_detector": {
            "name": frame_detector.FRAME_DETECTOR_NAME,
            "pretrained": False,
            "file": FRAME_DETECTOR_FILE,
        },  # fmt: skip
    }
    (out / MARKER).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    log.info(
        "world %s built in %.1f s: %s", info["fingerprint"], timings["total_s"], info["metrics"]
    )
    return info
