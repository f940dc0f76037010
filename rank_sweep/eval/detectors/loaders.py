"""Load the video (I3D) and frame (FID Inception) detectors from published weight files.

Accepted files: the TorchScript archives (`i3d_torchscript.pt`, `inception-2015-12-05.pt`)
or state dicts in pytorch-i3d / pytorch-fid key layout. TorchScript can run code, so only
published files (known sha256), the project's own cached files, or files the user vouches
for (`eval.trust_torchscript=true`) are loaded; see trust.py. A cached random-init file
that cannot be loaded is rebuilt. With no path, a seeded random-init
detector of the real architecture is scripted once with torch.jit.script (scripting, unlike
tracing, keeps the rescale/resize flags and any input size working) and saved as TorchScript
under `cache_dir()/detectors/`, then loaded through the same TorchScript path, so the
embedded default exercises the code that the published files take.

Frame detector output: per-frame pool features shaped [B, T, 2048]. FID/KID for videos are
image metrics over frames (StyleGAN-V's fid on videos, the FID/KID columns of video papers),
so KID runs on frames; keeping the clip axis lets bootstrap CIs resample whole clips, since
frames of one clip are not independent samples.
"""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import nn

from rank_sweep.eval.detectors import i3d, inception
from rank_sweep.eval.detectors.trust import (
    UntrustedDetector,
    judge,
    sidecar,
    write_sidecar,
)
from rank_sweep.paths import cache_dir
from rank_sweep.utils.atomic import atomic_file
from rank_sweep.utils.device import pick_device

log = logging.getLogger(__name__)

VIDEO_PROBE_FRAMES = 16  # the protocol's clip length; I3D needs >= 8 frames for its pools


class DetectorError(ValueError):
    """A detector weight file that is missing, of an unknown format, or of the wrong shapes."""


def _auto_device(device: Union[str, torch.device, None]) -> torch.device:
    return pick_device(device)


@dataclass
class Detector:
    """A loaded detector. `features` takes uint8 videos [B, T, H, W, 3] (numpy or torch) and
    returns float64 [B, D] (video) or [B, T, D] per-frame features (frame; see module doc)."""

    name: str  # i3d | inception
    kind: str  # video | frame
    sha256: str  # of the weight file
    pretrained: bool
    feature_dim: int
    path: Path
    size: int  # input resolution the frames are resized to
    module: Any = field(repr=False)  # ScriptModule or nn.Module with the published signature
    device: torch.device = field(default_factory=lambda: torch.device("cpu"), repr=False)
    chunk: int = 64  # frames per Inception forward (bounds activation memory)
    published: Optional[str] = None  # the published file this is (by sha256), if any
    # Seeded random weights (no training at all): features follow pixel statistics, not
    # content, so they need not rank videos by quality (stamped `weights: random`).
    random_weights: bool = False

    def features(self, videos: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        # No JIT graph optimization: it only re-profiles a conv net for several slow first
        # calls and fuses nothing that matters here.
        with torch.no_grad(), torch.jit.optimized_execution(False):
            return self._features(videos)

    def _features(self, videos: Union[np.ndarray, torch.Tensor]) -> np.ndarray:
        x = torch.as_tensor(np.asarray(videos) if not torch.is_tensor(videos) else videos)
        if x.ndim != 5 or x.shape[-1] != 3 or x.dtype != torch.uint8:
            raise ValueError(
                f"{self.name}: videos must be uint8 [B, T, H, W, 3], got {x.dtype} {tuple(x.shape)}"
            )
        x = x.to(self.device)
        if self.kind == "video":
            out = self.module(
                x.permute(0, 4, 1, 2, 3).contiguous(),
                rescale=True,
                resize=True,
                return_features=True,
            )
            return out.double().cpu().numpy()
        b, t = x.shape[:2]
        frames = x.reshape(b * t, *x.shape[2:]).permute(0, 3, 1, 2).contiguous()
        parts = [
            self.module(frames[i : i + self.chunk], return_features=True).double().cpu()
            for i in range(0, len(frames), self.chunk)
        ]
        return torch.cat(parts).reshape(b, t, -1).numpy()


# -- random-init files ------------------------------------------------------------------------
def _init_weights(net: nn.Module) -> None:
    # He-normal convs with identity BN keep activations O(1) through ~50 random layers, so
    # random features are informative (PyTorch's default init shrinks them layer by layer).
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=m.in_features**-0.5)
            nn.init.zeros_(m.bias)


def build_random(name: str, size: int, seed: int = 0) -> nn.Module:
    """The wrapper module (published call signature) with seeded random weights, eval mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if name == "i3d":
            net: nn.Module = i3d.InceptionI3d()
            _init_weights(net)
            return i3d.I3DDetector(net, size=size, random_init=True).eval()
        net = inception.FIDInceptionV3()
        _init_weights(net)
        return inception.InceptionDetector(net, size=size, random_init=True).eval()


def save_torchscript(module: nn.Module, path: Path) -> None:
    """torch.jit.script + save, atomically (tmp file in the same dir, then rename)."""
    with atomic_file(path) as tmp:
        torch.jit.save(torch.jit.script(module.eval()), str(tmp))


def own_dir() -> Path:
    """Where the project writes its random-init detector files (trusted via sidecars)."""
    return cache_dir() / "detectors"


def trusted_root() -> Path:
    """Files the project wrote itself live under its cache (random-init detectors, the
    embedded world's trained detector); one with a matching sha256 sidecar is trusted."""
    return cache_dir()


def random_detector_path(name: str, size: int, seed: int = 0, rebuild: bool = False) -> Path:
    """Cached random-init TorchScript file; written once (size and seed in the name), with
    its sha256 beside it; `rebuild` rewrites a file that could not be loaded."""
    path = own_dir() / f"{name}_random_seed{seed}_s{size}.pt"
    if rebuild or not path.exists() or not sidecar(path).exists():
        log.info("writing random-init %s detector (size %d) to %s", name, size, path)
        save_torchscript(build_random(name, size, seed), path)
        write_sidecar(path)
    return path


# -- loading ---------------------------------------------------------------------------------
def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())


def _load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for non-torch files; re-raised below
        raise DetectorError(
            f"{what} weights {path} are neither a TorchScript archive nor a torch state dict "
            f"({type(exc).__name__})"
        ) from exc
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise DetectorError(
            f"{what} weights {path}: expected a state dict of tensors, got {type(obj).__name__}"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _load_strict(net: nn.Module, sd: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = net.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} (expected {tuple(v.shape)})"
        for k, v in own.items()
        if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} wrong shapes (e.g. {wrong[0]})")
        raise DetectorError(
            f"{what} state dict {path} does not match the {what} layout: {'; '.join(parts)}"
        )
    net.load_state_dict(sd, strict=True)


def _probe(module: Any, kind: str, size: int, device: torch.device, path: Path, what: str) -> int:
    """Call the module once as the protocol does; return its feature dim or raise."""
    side = min(size, 64)  # the wrapper resizes internally; a small probe input is enough
    try:
        with torch.no_grad(), torch.jit.optimized_execution(False):
            if kind == "video":
                x = torch.zeros(
                    1, 3, VIDEO_PROBE_FRAMES, side, side, dtype=torch.uint8, device=device
                )
                out = module(x, rescale=True, resize=True, return_features=True)
            else:
                x = torch.zeros(2, 3, side, side, dtype=torch.uint8, device=device)
                out = module(x, return_features=True)
    except Exception as exc:  # any failure of a foreign TorchScript call; re-raised below
        first = str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ""
        raise DetectorError(
            f"{what} file {path} cannot be called with the published signature: "
            f"{type(exc).__name__}: {first}"
        ) from exc
    if not torch.is_tensor(out) or out.ndim != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise DetectorError(f"{what} file {path} returned {shape}, expected [batch, features]")
    return int(out.shape[1])


def _load(
    name: str,
    kind: str,
    path: Optional[str],
    size: int,
    device: Union[str, torch.device, None],
    expected_dim: int,
    trust_torchscript: bool = False,
) -> Detector:
    if path is not None:
        file = Path(path).expanduser()
        if not file.is_file():
            raise DetectorError(f"{_WHAT[name]} weights not found: {file}")
        return _load_file(name, kind, file, size, device, expected_dim, trust_torchscript)
    file = random_detector_path(name, size)
    try:
        return _load_file(name, kind, file, size, device, expected_dim, trust_torchscript)
    except (DetectorError, UntrustedDetector) as exc:
        # Our own cached file (a truncated write, a bad block): rebuilt, never fatal.
        log.warning("cached random-init detector unusable (%s); rebuilding it", exc)
        file = random_detector_path(name, size, rebuild=True)
        return _load_file(name, kind, file, size, device, expected_dim, trust_torchscript)


_WHAT = {"i3d": "I3D", "inception": "Inception"}


def _load_file(
    name: str,
    kind: str,
    file: Path,
    size: int,
    device: Union[str, torch.device, None],
    expected_dim: int,
    trust_torchscript: bool,
) -> Detector:
    what = _WHAT[name]
    dev = _auto_device(device)
    torchscript = _is_torchscript(file)
    verdict = judge(file, torchscript, trust_torchscript, trusted_root(), what)
    if torchscript:
        try:
            module = torch.jit.load(str(file), map_location=dev).eval()
        except RuntimeError as exc:
            raise DetectorError(
                f"{what} TorchScript {file} cannot be loaded: {str(exc).splitlines()[0][:160]}"
            ) from exc
        random_init = bool(getattr(module, "random_init", False))
        random_weights = random_init
        size_used = int(getattr(module, "size", size))
        # A project-trained detector (rank_sweep.world) names itself and its feature width,
        # and is no published network: stamped pretrained=false like a random one.
        random_init = random_init or bool(getattr(module, "project_trained", False))
        name = str(getattr(module, "detector_name", name))
        expected_dim = int(getattr(module, "feature_dim", expected_dim))
    else:
        net: nn.Module = i3d.InceptionI3d() if name == "i3d" else inception.FIDInceptionV3()
        _load_strict(net, _load_state_dict(file, what), file, what)
        wrapper = i3d.I3DDetector if name == "i3d" else inception.InceptionDetector
        module = wrapper(net, size=size).to(dev).eval()
        random_init, random_weights, size_used = False, False, size
    dim = _probe(module, kind, size_used, dev, file, what)
    if dim != expected_dim:
        raise DetectorError(f"{what} file {file} gives {dim}-d outputs, expected {expected_dim}")
    det = Detector(
        name=name,
        kind=kind,
        sha256=verdict.sha256,
        pretrained=not random_init,
        feature_dim=dim,
        path=file,
        size=size_used,
        module=module,
        device=dev,
        published=verdict.published,
        random_weights=random_weights,
    )
    if random_init:
        log.warning(
            "%s detector %s is no published network (random-init or project-trained): metrics only compare runs with each other",
            what,
            file.name,
        )
    return det


def load_video_detector(
    path: Optional[str],
    *,
    size: int = 224,
    device: Union[str, torch.device, None] = None,
    trust_torchscript: bool = False,
) -> Detector:
    """I3D (Kinetics-400 logits averaged over time, 400-d). path None = cached random init.
    An unknown TorchScript file needs trust_torchscript (see trust.py)."""
    return _load("i3d", "video", path, int(size), device, i3d.NUM_CLASSES, trust_torchscript)


def load_frame_detector(
    path: Optional[str],
    *,
    size: int = 299,
    device: Union[str, torch.device, None] = None,
    trust_torchscript: bool = False,
) -> Detector:
    """FID InceptionV3 (2048-d pool features per frame). path None = cached random init.

    Sizes below 75 (where InceptionV3 has no valid output) are raised to 75 and the size
    used is what the Detector (and so the stamp) carries.
    """
    size = int(size)
    if size < inception.MIN_SIZE:
        log.warning(
            "Inception input size %d < %d: using %d", size, inception.MIN_SIZE, inception.MIN_SIZE
        )
        size = inception.MIN_SIZE
    return _load("inception", "frame", path, size, device, inception.FEATURE_DIM, trust_torchscript)
