"""LPIPS (Zhang et al. 2018, v0.1) with the project's own AlexNet / VGG16 feature nets.

No torchvision (it breaks imports on these machines), so the backbones are written here
with the exact module indices of torchvision's `features` Sequential: a published backbone
file (`alexnet-owt-7be5be79.pth`, `vgg16-397923af.pth`, or any state dict holding the
`features.N.weight/bias` keys; `classifier.*` keys are ignored) loads strictly. The LPIPS
linear heads are the lpips package's v0.1 files (`weights/v0.1/alex.pth`, `vgg.pth`): keys
`lin{k}.model.1.weight`, shape [1, C_k, 1, 1] (index 1 because index 0 is the Dropout).

`eval.lpips_path` is a directory holding both: `<net>.pth` (heads) and the backbone file
(`alexnet*.pth` / `vgg16*.pth`). With no path, a seeded random-init pair is written in the
same two formats under `cache_dir()/detectors/` with a `random_init.json` beside them, and
loaded through the same code; such a detector is stamped pretrained=false.

Distance (per image pair): sum over taps k of mean_{h,w} || w_k * (f̂_k(x) - f̂_k(y)) ||²,
f̂ = channel-unit-normalised features of the scaled input, as the lpips package computes it.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from rank_sweep.paths import cache_dir

log = logging.getLogger(__name__)

NETS = ("alex", "vgg")
# Backbone file name patterns and LPIPS tap indices (outputs of these ReLUs) per net.
BACKBONE_GLOB = {"alex": "alexnet*.pth", "vgg": "vgg16*.pth"}
TAPS = {"alex": (1, 4, 7, 9, 11), "vgg": (3, 8, 15, 22, 29)}
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
MIN_SIZE = 64  # below this AlexNet's last taps collapse to 1x1: inputs are upsampled to it
_VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
RANDOM_MARKER = "random_init.json"


class LpipsError(ValueError):
    """Missing, foreign or mis-shaped LPIPS weight files."""


def alexnet_features() -> nn.Sequential:
    """torchvision AlexNet `features` (same indices 0..12, so the same state-dict keys)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=False),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=False), nn.MaxPool2d(3, 2),
    )  # fmt: skip


def vgg16_features() -> nn.Sequential:
    """torchvision VGG16 (no BN) `features`, indices 0..30."""
    layers: list[nn.Module] = []
    c_in = 3
    for v in _VGG_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c_in, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c_in = int(v)
    return nn.Sequential(*layers)


class Backbone(nn.Module):
    """Holds `features` so its state-dict keys are `features.N.*` as in torchvision files."""

    def __init__(self, net: str) -> None:
        super().__init__()
        self.net = net
        self.features = alexnet_features() if net == "alex" else vgg16_features()
        self.taps = TAPS[net]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                outs.append(x)
            if i >= self.taps[-1]:
                break
        return outs


class NetLinLayer(nn.Module):
    """lpips' 1x1 head: `model = Sequential(Dropout, Conv2d(C, 1, 1, bias=False))`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Heads(nn.Module):
    """`lin0` .. `lin4`: the module names the published v0.1 files use."""

    def __init__(self, net: str) -> None:
        super().__init__()
        for k, c in enumerate(CHANNELS[net]):
            self.add_module(f"lin{k}", NetLinLayer(c))

    def layers(self) -> list[NetLinLayer]:
        return [getattr(self, f"lin{k}") for k in range(len(self._modules))]


class LPIPS(nn.Module):
    """Distance between two image batches in [-1, 1], [B, 3, H, W] -> [B]."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in NETS:
            raise LpipsError(f"eval.lpips_net={net!r} is not supported; allowed: {', '.join(NETS)}")
        self.net = net
        self.backbone = Backbone(net)
        self.heads = Heads(net)
        # lpips' ScalingLayer: maps [-1, 1] input to ImageNet-normalised statistics.
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))

    @staticmethod
    def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fx = self.backbone((x - self.shift) / self.scale)
        fy = self.backbone((y - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for a, b, head in zip(fx, fy, self.heads.layers()):
            d = (self._unit(a) - self._unit(b)).pow(2)
            total = total + head(d).mean(dim=(1, 2, 3))
        return total


# -- files ------------------------------------------------------------------------------------
def _torch_load(path: Path, what: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign files; re-raised as one
        raise LpipsError(
            f"LPIPS {what} {path} is not a torch state dict ({type(exc).__name__})"
        ) from exc
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise LpipsError(f"LPIPS {what} {path}: expected a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _load_into(module: nn.Module, sd: dict[str, torch.Tensor], path: Path, what: str) -> None:
    own = module.state_dict()
    missing = [k for k in own if k not in sd]
    wrong = [k for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or wrong:
        detail = f"missing {missing[:2]}" if missing else f"wrong shape {wrong[:2]}"
        raise LpipsError(f"LPIPS {what} {path} does not match the {module.__class__.__name__} "
                         f"layout: {detail}")  # fmt: skip
    module.load_state_dict({k: sd[k] for k in own}, strict=True)


def find_files(directory: Path, net: str) -> tuple[Path, Path]:
    """(heads file, backbone file) inside an `eval.lpips_path` directory."""
    directory = Path(directory).expanduser()
    heads = directory / f"{net}.pth"
    backbones = sorted(directory.glob(BACKBONE_GLOB[net]))
    if not heads.is_file() or not backbones:
        raise LpipsError(
            f"eval.lpips_path={directory} must hold {net}.pth (lpips v0.1 heads) and a "
            f"{BACKBONE_GLOB[net]} backbone state dict"
        )
    return heads, backbones[0]


def write_random(directory: Path, net: str, seed: int = 0) -> Path:
    """Seeded random-init heads + backbone in the published formats, with the marker."""
    directory.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LPIPS(net)
        for m in model.backbone.modules():
            if isinstance(m, nn.Conv2d):  # He init keeps random features O(1) through depth
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)
        for head in model.heads.layers():  # published heads are non-negative (lpips clamps)
            conv = head.model[1]
            conv.weight.data = torch.rand_like(conv.weight) / conv.weight.shape[1]
    name = "alexnet" if net == "alex" else "vgg16"
    tmp = directory / f"tmp-{os.getpid()}.pt"
    torch.save(model.backbone.state_dict(), tmp)
    os.replace(tmp, directory / f"{name}-random-seed{seed}.pth")
    torch.save(model.heads.state_dict(), tmp)
    os.replace(tmp, directory / f"{net}.pth")
    (directory / RANDOM_MARKER).write_text(json.dumps({"net": net, "seed": seed}))
    return directory


def random_dir(net: str, seed: int = 0) -> Path:
    d = cache_dir() / "detectors" / f"lpips_{net}_random_seed{seed}"
    if not (d / RANDOM_MARKER).is_file():
        log.info("writing random-init LPIPS-%s to %s", net, d)
        write_random(d, net, seed)
    return d


@dataclass
class LpipsDetector:
    net: str
    sha256: str  # of heads + backbone files (hash of the two hashes)
    pretrained: bool
    path: Path
    module: LPIPS = field(repr=False)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"), repr=False)
    chunk: int = 32

    @torch.no_grad()
    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """uint8 frames [N, H, W, 3] x2 -> float64 [N] distances (upsampled to >= 64 px)."""
        if a.shape != b.shape:
            raise ValueError(f"LPIPS needs equal shapes, got {tuple(a.shape)} vs {tuple(b.shape)}")
        out = []
        for i in range(0, len(a), self.chunk):
            x, y = (self._prep(t[i : i + self.chunk]) for t in (a, b))
            out.append(self.module(x, y).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def _prep(self, frames: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(frames).to(self.device).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        h, w = x.shape[-2:]
        if min(h, w) < MIN_SIZE:
            f = MIN_SIZE / min(h, w)
            x = F.interpolate(x, size=(round(h * f), round(w * f)), mode="bilinear",
                              align_corners=False)  # fmt: skip
        return x


def load_lpips(
    path: str | None, net: str = "alex", device: str | torch.device = "cpu"
) -> LpipsDetector:
    """Published files from `path` (a directory, see module doc) or the cached random pair."""
    import hashlib

    from rank_sweep.eval.detectors.trust import file_sha256

    directory = Path(path).expanduser() if path else random_dir(net)
    if path and not directory.is_dir():
        raise LpipsError(f"eval.lpips_path={directory} is not a directory")
    heads_file, backbone_file = find_files(directory, net)
    model = LPIPS(net)
    _load_into(model.backbone, _torch_load(backbone_file, "backbone"), backbone_file, "backbone")
    _load_into(model.heads, _torch_load(heads_file, "heads"), heads_file, "heads")
    digest = hashlib.sha256(
        (file_sha256(heads_file) + file_sha256(backbone_file)).encode()
    ).hexdigest()
    random_init = (directory / RANDOM_MARKER).is_file()
    if random_init:
        log.warning("LPIPS-%s is random-init: values only compare runs with each other", net)
    dev = torch.device(device)
    return LpipsDetector(
        net=net,
        sha256=digest,
        pretrained=not random_init,
        path=directory,
        module=model.to(dev).eval(),
        device=dev,
    )
