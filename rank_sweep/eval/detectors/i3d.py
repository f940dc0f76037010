"""Inception-I3D (Carreira & Zisserman 2017) with pytorch-i3d's module and state-dict names,
so `i3d_pretrained_400.pt` (piergiaj/pytorch-i3d layout) loads with strict=True.

Written TorchScript-friendly (explicit forward, int-only padding math) so the wrapper can be
`torch.jit.script`-ed and saved in the same file format as StyleGAN-V's `i3d_torchscript.pt`,
called as det(x_uint8_BCTHW, rescale=True, resize=True, return_features=True).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 400
FEATURE_DIM = 1024  # channels of Mixed_5c, the pooled "features" of pytorch-i3d


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    # TF "SAME" padding as pytorch-i3d computes it per forward (input-size dependent).
    if size % stride == 0:
        pad = max(kernel - stride, 0)
    else:
        pad = max(kernel - (size % stride), 0)
    return pad // 2, pad - pad // 2


def _pad_same(x: torch.Tensor, kernel: list[int], stride: list[int]) -> torch.Tensor:
    t0, t1 = _same_pad(x.shape[2], kernel[0], stride[0])
    h0, h1 = _same_pad(x.shape[3], kernel[1], stride[1])
    w0, w1 = _same_pad(x.shape[4], kernel[2], stride[2])
    return F.pad(x, [w0, w1, h0, h1, t0, t1])


class MaxPool3dSamePadding(nn.Module):
    """Zero-pad to TF SAME, then max-pool (as pytorch-i3d; no parameters)."""

    def __init__(self, kernel_size: list[int], stride: list[int]) -> None:
        super().__init__()
        self.kernel_size = list(kernel_size)
        self.stride = list(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(
            _pad_same(x, self.kernel_size, self.stride), self.kernel_size, self.stride
        )


class Unit3D(nn.Module):
    """conv3d (+ bn, eps 1e-3) (+ relu) with SAME padding; keys `conv3d.*`, `bn.*`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_shape: list[int] = (1, 1, 1),  # type: ignore[assignment]
        stride: list[int] = (1, 1, 1),  # type: ignore[assignment]
        activation: bool = True,
        use_batch_norm: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_shape = list(kernel_shape)
        self.stride = list(stride)
        self.activation = activation
        self.conv3d = nn.Conv3d(
            in_channels, out_channels, self.kernel_shape, self.stride, padding=0, bias=use_bias
        )
        self.bn = (
            nn.BatchNorm3d(out_channels, eps=0.001, momentum=0.01)
            if use_batch_norm
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv3d(_pad_same(x, self.kernel_shape, self.stride)))
        return F.relu(x) if self.activation else x


class InceptionModule(nn.Module):
    def __init__(self, in_channels: int, out: list[int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0], [1, 1, 1])
        self.b1a = Unit3D(in_channels, out[1], [1, 1, 1])
        self.b1b = Unit3D(out[1], out[2], [3, 3, 3])
        self.b2a = Unit3D(in_channels, out[3], [1, 1, 1])
        self.b2b = Unit3D(out[3], out[4], [3, 3, 3])
        self.b3a = MaxPool3dSamePadding([3, 3, 3], [1, 1, 1])
        self.b3b = Unit3D(in_channels, out[5], [1, 1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1
        )


class InceptionI3d(nn.Module):
    """Returns (logits averaged over the remaining time/space positions [B, classes],
    pooled Mixed_5c features [B, 1024]) for a float input in [-1, 1] shaped [B, 3, T, H, W]."""

    def __init__(self, num_classes: int = NUM_CLASSES, in_channels: int = 3) -> None:
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, [7, 7, 7], [2, 2, 2])
        self.MaxPool3d_2a_3x3 = MaxPool3dSamePadding([1, 3, 3], [1, 2, 2])
        self.Conv3d_2b_1x1 = Unit3D(64, 64, [1, 1, 1])
        self.Conv3d_2c_3x3 = Unit3D(64, 192, [3, 3, 3])
        self.MaxPool3d_3a_3x3 = MaxPool3dSamePadding([1, 3, 3], [1, 2, 2])
        self.Mixed_3b = InceptionModule(192, [64, 96, 128, 16, 32, 32])
        self.Mixed_3c = InceptionModule(256, [128, 128, 192, 32, 96, 64])
        self.MaxPool3d_4a_3x3 = MaxPool3dSamePadding([3, 3, 3], [2, 2, 2])
        self.Mixed_4b = InceptionModule(480, [192, 96, 208, 16, 48, 64])
        self.Mixed_4c = InceptionModule(512, [160, 112, 224, 24, 64, 64])
        self.Mixed_4d = InceptionModule(512, [128, 128, 256, 24, 64, 64])
        self.Mixed_4e = InceptionModule(512, [112, 144, 288, 32, 64, 64])
        self.Mixed_4f = InceptionModule(528, [256, 160, 320, 32, 128, 128])
        self.MaxPool3d_5a_2x2 = MaxPool3dSamePadding([2, 2, 2], [2, 2, 2])
        self.Mixed_5b = InceptionModule(832, [256, 160, 320, 32, 128, 128])
        self.Mixed_5c = InceptionModule(832, [384, 192, 384, 48, 128, 128])
        self.logits = Unit3D(
            FEATURE_DIM,
            num_classes,
            [1, 1, 1],
            activation=False,
            use_batch_norm=False,
            use_bias=True,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.MaxPool3d_2a_3x3(self.Conv3d_1a_7x7(x))
        x = self.MaxPool3d_3a_3x3(self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x)))
        x = self.MaxPool3d_4a_3x3(self.Mixed_3c(self.Mixed_3b(x)))
        x = self.Mixed_4f(self.Mixed_4e(self.Mixed_4d(self.Mixed_4c(self.Mixed_4b(x)))))
        x = self.Mixed_5c(self.Mixed_5b(self.MaxPool3d_5a_2x2(x)))
        # pytorch-i3d's AvgPool3d([2, 7, 7], stride 1) sized for 16x224x224 input; clamped so
        # smaller inputs (the CPU default) still run, and identical to it at 224.
        k = [min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4])]
        pooled = F.avg_pool3d(x, k, [1, 1, 1])
        logits = self.logits(pooled)
        return logits.mean(dim=[2, 3, 4]), pooled.mean(dim=[2, 3, 4])


class I3DDetector(nn.Module):
    """StyleGAN-V call signature around InceptionI3d. Input uint8 [B, 3, T, H, W];
    resize = per-frame bilinear to size x size (as TF FVD), rescale = [0, 255] -> [-1, 1];
    return_features=True gives the 400 logits averaged over time, else softmax probabilities.
    `pooled(...)` gives the 1024-d Mixed_5c features instead."""

    def __init__(self, net: InceptionI3d, size: int = 224, random_init: bool = False) -> None:
        super().__init__()
        self.net = net
        self.size = int(size)
        self.random_init = bool(random_init)  # read by the loader: stamps pretrained=false

    def _prep(self, x: torch.Tensor, rescale: bool, resize: bool) -> torch.Tensor:
        x = x.float()
        if resize and (x.shape[3] != self.size or x.shape[4] != self.size):
            # Time kept as is: trilinear at scale 1 on T is bilinear per frame.
            x = F.interpolate(
                x, size=[x.shape[2], self.size, self.size], mode="trilinear", align_corners=False
            )
        if rescale:
            x = x * (2.0 / 255.0) - 1.0
        return x

    def forward(
        self,
        x: torch.Tensor,
        rescale: bool = False,
        resize: bool = False,
        return_features: bool = False,
    ) -> torch.Tensor:
        logits, _ = self.net(self._prep(x, rescale, resize))
        return logits if return_features else F.softmax(logits, dim=1)

    @torch.jit.export
    def pooled(self, x: torch.Tensor, rescale: bool = True, resize: bool = True) -> torch.Tensor:
        _, feats = self.net(self._prep(x, rescale, resize))
        return feats
