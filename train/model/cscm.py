"""CSCM, the convolutional similarity calculation module of SemanticAC (paper section 2.2).

The audio encoder's last feature map M (B, D, h, w) = (B, 768, 8, 8) goes through
CBAM (Woo et al. 2018: a channel gate, then a spatial gate), a small CNN block of 3x3 and
1x1 convolutions, a global mean pool and a Linear to the joint embedding (B, C), C = 1024.
The text tower maps label prompts to the same C; the top model L2-normalises both and
compares them by cosine similarity (Eq. 2).

The paper fixes only D, h, w = 768, 8, 8 and C = 1024 (section 3.2) and the kernel sizes
(3x3 and 1x1, section 3.4). The widths chosen here are in `CSCMConfig`.

Global pooling is written as `x.mean(...)` / `x.amax(...)`, never adaptive pooling:
`F.adaptive_max_pool2d` fails torch 2.11's default (dynamo) ONNX exporter.
"""

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class CSCMConfig:
    """Widths of CSCM. The paper gives none; these are ours.

    hidden_dim: channels of the CNN block; None means in_dim // 2 (384 for D = 768).
        Half width keeps the 3x3 convolution, the biggest layer, at D*D/2*9 weights
        (2.65M for D = 768) instead of 5.3M at full width, so the whole module stays near
        3.3M parameters against ~28M for a 4-layer SeqTransf at D = 768: the paper's point
        is a light module. A quarter width would squeeze 768 channels to 192 before
        widening again to C = 1024.
    reduction: CBAM channel-MLP reduction; 16 as in CBAM and the paper's reference [22].
    spatial_kernel: CBAM spatial-gate kernel; 7 as in CBAM (on an 8x8 map it sees
        almost the whole grid from every position).
    """

    hidden_dim: int | None = None
    reduction: int = 16
    spatial_kernel: int = 7


class ChannelGate(nn.Module):
    """CBAM channel attention: which of the D channels matter for this clip."""

    def __init__(self, dim: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, dim // reduction)  # at least one unit for tiny test widths
        # One MLP shared by both pooled descriptors (CBAM Eq. 2).
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        avg = self.mlp(x.mean((2, 3)))  # each channel's average response: (B, D)
        peak = self.mlp(x.amax((2, 3)))  # each channel's strongest response: (B, D)
        gate = torch.sigmoid(avg + peak)  # one weight in (0, 1) per channel: (B, D)
        return x * gate[:, :, None, None]  # reweight the channels: (B, D, h, w)


class SpatialGate(nn.Module):
    """CBAM spatial attention: which of the h*w positions (time-frequency patches) matter."""

    def __init__(self, kernel_size: int = 7):
        super().__init__()
        # bias=False: the BatchNorm right after it has its own shift.
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        # Max and mean over the channels, stacked (CBAM's order): (B, 2, h, w)
        pooled = torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)
        gate = torch.sigmoid(self.bn(self.conv(pooled)))  # one weight per position: (B, 1, h, w)
        return x * gate  # reweight the positions: (B, D, h, w)


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al. 2018): channel gate, then spatial gate."""

    def __init__(self, dim: int, reduction: int = 16, spatial_kernel: int = 7):
        super().__init__()
        self.channel = ChannelGate(dim, reduction)
        self.spatial = SpatialGate(spatial_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        x = self.channel(x)  # what to look at
        return self.spatial(x)  # where to look


class ConvBNReLU(nn.Module):
    """Convolution (size-preserving padding), BatchNorm, ReLU."""

    def __init__(self, in_dim: int, out_dim: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class CSCM(nn.Module):
    """The map (B, D, h, w) -> CBAM -> 3x3 and 1x1 convolutions -> mean pool -> (B, C).

    The CNN block is 3x3 conv D -> H, then 1x1 conv H -> H (H = hidden_dim, default D/2),
    each with BatchNorm and ReLU: the 3x3 mixes neighbouring time-frequency patches, the
    1x1 mixes channels. No residual around it: the block changes the width, so a shortcut
    would need a learned D -> H projection of its own (+D*H weights), and two layers on
    top of a pretrained encoder do not need one for gradients to flow. The output is not
    normalised; the top model does that.
    """

    def __init__(
        self,
        in_dim: int,
        embed_dim: int = 1024,
        hidden_dim: int | None = None,
        reduction: int = 16,
        spatial_kernel: int = 7,
    ):
        super().__init__()
        hidden_dim = hidden_dim or max(1, in_dim // 2)  # see CSCMConfig for why half
        self.cbam = CBAM(in_dim, reduction, spatial_kernel)
        self.conv3 = ConvBNReLU(in_dim, hidden_dim, 3)
        self.conv1 = ConvBNReLU(hidden_dim, hidden_dim, 1)
        self.proj = nn.Linear(hidden_dim, embed_dim)
        self.out_dim = embed_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        x = self.conv1(self.conv3(self.cbam(x)))  # attention, then the CNN block: (B, H, h, w)
        x = x.mean((2, 3))  # global average pool: (B, H)
        return self.proj(x)  # into the joint embedding space: (B, C)

    def columns(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, D, h, w)
        """One embedding per row of the map, (B, h, C): h is time where the map is (time, frequency), as
        YAMNet's is (16 rows of 0.31 s for a 5 s window). Their mean is `forward(x)`, as the Linear
        commutes with the mean; scored on their own they tell apart sounds that take turns in a window
        (benchmarks/time_columns.py)."""
        x = self.conv1(self.conv3(self.cbam(x)))
        return self.proj(x.mean(3).transpose(1, 2))
