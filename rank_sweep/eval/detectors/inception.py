"""The FID InceptionV3 (TF inception-2015-12-05 graph as ported by pytorch-fid), written
here because torchvision must not be installed. Module and state-dict names follow
torchvision's Inception3 without AuxLogits and with a 1008-way fc, i.e. the layout of
pytorch-fid's `pt_inception-2015-12-05-*.pth`; the FID-specific blocks differ from
torchvision's only in pooling (avg pools exclude padding; Mixed_7c max-pools its pool branch).

The wrapper takes uint8 NCHW like NVIDIA's TorchScript `inception-2015-12-05.pt`:
det(x, return_features=True) -> [N, 2048] pool features.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEATURE_DIM = 2048
NUM_CLASSES = 1008  # the TF graph's 1008-way softmax (1000 classes + unused)
MIN_SIZE = 75  # smallest input for which Mixed_7a's stride-2 3x3 still has a valid output


class BasicConv2d(nn.Module):
    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: list[int],
        stride: int = 1,
        padding: list[int] = (0, 0),  # type: ignore[assignment]
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=list(padding), bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg3(x: torch.Tensor) -> torch.Tensor:
    # The TF graph's average pools do not count padding (pytorch-fid's FIDInception* fix).
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, [1, 1])
        self.branch5x5_1 = BasicConv2d(cin, 48, [1, 1])
        self.branch5x5_2 = BasicConv2d(48, 64, [5, 5], padding=[2, 2])
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, [1, 1])
        self.branch3x3dbl_2 = BasicConv2d(64, 96, [3, 3], padding=[1, 1])
        self.branch3x3dbl_3 = BasicConv2d(96, 96, [3, 3], padding=[1, 1])
        self.branch_pool = BasicConv2d(cin, pool_features, [1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(_avg3(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, [3, 3], stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, [1, 1])
        self.branch3x3dbl_2 = BasicConv2d(64, 96, [3, 3], padding=[1, 1])
        self.branch3x3dbl_3 = BasicConv2d(96, 96, [3, 3], stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, [1, 1])
        self.branch7x7_1 = BasicConv2d(cin, c7, [1, 1])
        self.branch7x7_2 = BasicConv2d(c7, c7, [1, 7], padding=[0, 3])
        self.branch7x7_3 = BasicConv2d(c7, 192, [7, 1], padding=[3, 0])
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, [1, 1])
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, [7, 1], padding=[3, 0])
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, [1, 7], padding=[0, 3])
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, [7, 1], padding=[3, 0])
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, [1, 7], padding=[0, 3])
        self.branch_pool = BasicConv2d(cin, 192, [1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_3(self.branch7x7dbl_2(self.branch7x7dbl_1(x)))
        d = self.branch7x7dbl_5(self.branch7x7dbl_4(d))
        return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(_avg3(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, [1, 1])
        self.branch3x3_2 = BasicConv2d(192, 320, [3, 3], stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, [1, 1])
        self.branch7x7x3_2 = BasicConv2d(192, 192, [1, 7], padding=[0, 3])
        self.branch7x7x3_3 = BasicConv2d(192, 192, [7, 1], padding=[3, 0])
        self.branch7x7x3_4 = BasicConv2d(192, 192, [3, 3], stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    def __init__(self, cin: int, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool  # FID Mixed_7c (TF graph quirk): max instead of avg pool
        self.branch1x1 = BasicConv2d(cin, 320, [1, 1])
        self.branch3x3_1 = BasicConv2d(cin, 384, [1, 1])
        self.branch3x3_2a = BasicConv2d(384, 384, [1, 3], padding=[0, 1])
        self.branch3x3_2b = BasicConv2d(384, 384, [3, 1], padding=[1, 0])
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, [1, 1])
        self.branch3x3dbl_2 = BasicConv2d(448, 384, [3, 3], padding=[1, 1])
        self.branch3x3dbl_3a = BasicConv2d(384, 384, [1, 3], padding=[0, 1])
        self.branch3x3dbl_3b = BasicConv2d(384, 384, [3, 1], padding=[1, 0])
        self.branch_pool = BasicConv2d(cin, 192, [1, 1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        if self.max_pool:
            pool = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pool = _avg3(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pool)], 1)


class FIDInceptionV3(nn.Module):
    """Float input in [-1, 1], [N, 3, H, W] -> 2048-d pool features (fc kept for the layout)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, [3, 3], stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, [3, 3])
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, [3, 3], padding=[1, 1])
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, [1, 1])
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, [3, 3])
        self.Mixed_5b = InceptionA(192, 32)
        self.Mixed_5c = InceptionA(256, 64)
        self.Mixed_5d = InceptionA(288, 64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, 128)
        self.Mixed_6c = InceptionC(768, 160)
        self.Mixed_6d = InceptionC(768, 160)
        self.Mixed_6e = InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = F.max_pool2d(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)), 3, stride=2)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))))
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
        return x.mean(dim=[2, 3])


class InceptionDetector(nn.Module):
    """NVIDIA-TorchScript call signature: uint8 [N, 3, H, W] -> bilinear resize to size,
    [0, 255] -> [-1, 1]; return_features=True gives [N, 2048], else class probabilities."""

    def __init__(self, net: FIDInceptionV3, size: int = 299, random_init: bool = False) -> None:
        super().__init__()
        self.net = net
        self.size = int(size)
        self.random_init = bool(random_init)  # read by the loader: stamps pretrained=false

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if x.shape[2] != self.size or x.shape[3] != self.size:
            x = F.interpolate(x, size=[self.size, self.size], mode="bilinear", align_corners=False)
        feats = self.net(x * (2.0 / 255.0) - 1.0)
        if return_features:
            return feats
        return F.softmax(self.net.fc(feats), dim=1)
