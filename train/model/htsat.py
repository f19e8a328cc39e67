"""HTS-AT, the audio encoder of SemanticAC: a Swin-T over a log-mel folded into an image.

Paper: Chen et al., "HTS-AT: a hierarchical token-semantic audio transformer" (ICASSP 2022),
on top of Liu et al., "Swin Transformer" (ICCV 2021). Parity target: the original code
(RetroCirce/HTS-Audio-Transformer @2e29471, model/htsat.py); module and parameter names are
the official checkpoint's, so train/model/weights.py loads it by stripping a prefix.

    log-mel [B, 1, 1001, 64]
      -> bn0 (BatchNorm over the mel axis)
      -> bicubic time resize to 1024 frames, fold into a 256x256 image   (MelToImage)
      -> patch embedding 4x4 -> [B, 64*64, 96]                           (PatchEmbed)
      -> 4 Swin stages, patch merging between them -> [B, 8*8, 768]      (SwinStage)
      -> LayerNorm -> the (768, 8, 8) map that CSCM reads

The log-mel itself is computed outside the model (edge/features.py): STFT inside an ONNX or
TensorRT graph is a trap. Everything here exports to ONNX with a dynamic batch: static shapes
are Python ints fixed at construction, the batch is always -1, and the resize is a matrix.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass
class HTSATConfig:
    """The architecture. Defaults are the paper's HTS-AT (Swin-T, ~27.5 M parameters)."""

    spec_size: int = 256  # side of the square image the Swin sees
    patch_size: int = 4  # patch side and stride (the official checkpoints use 4 and 4)
    in_chans: int = 1
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (4, 8, 16, 32)
    window_size: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    n_mels: int = 64
    num_frames: int = 1001  # a 10 s clip at hop 320 / 32 kHz, centred STFT: 32000 * 10 / 320 + 1

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)  # JSON/YAML give lists
        self.num_heads = tuple(int(h) for h in self.num_heads)
        if len(self.depths) != len(self.num_heads):
            raise ValueError(f"depths {self.depths} and num_heads {self.num_heads} must have the same length")
        for i, heads in enumerate(self.num_heads):
            if (self.embed_dim * 2**i) % heads:
                raise ValueError(f"stage {i}: width {self.embed_dim * 2**i} is not divisible by num_heads {heads}")
        if self.spec_size % self.n_mels:
            raise ValueError(f"spec_size {self.spec_size} must be a multiple of n_mels {self.n_mels}")
        if not 1 < self.num_frames <= self.time_frames:
            raise ValueError(f"num_frames {self.num_frames} must be in 2..{self.time_frames} "
                             f"(spec_size * spec_size / n_mels): the image can hold no more")
        if self.grid_size % 2 ** (self.num_stages - 1):
            raise ValueError(f"the patch grid {self.grid_size} cannot be halved {self.num_stages - 1} times")

    @classmethod
    def small(cls) -> HTSATConfig:
        """A CPU-sized HTS-AT (~1.4 M parameters; a batch of 16 in ~0.4 s on 2 CPU cores).

        Same input, image, patch grid, window and 8x8 output map as the paper's, so everything
        downstream (CSCM, export, the edge) is unchanged; only width and depth shrink. Stage 3
        keeps two blocks so its shifted windows still mix across window borders; stage 4 needs
        only one, as its 8x8 grid is a single window (no shift there, even in the paper model).
        """
        return cls(embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8))

    @property
    def num_stages(self) -> int:
        return len(self.depths)

    @property
    def freq_ratio(self) -> int:
        return self.spec_size // self.n_mels  # time chunks stacked along frequency (4)

    @property
    def time_frames(self) -> int:
        return self.spec_size * self.freq_ratio  # frames after the resize (1024)

    @property
    def grid_size(self) -> int:
        return self.spec_size // self.patch_size  # patch grid side of stage 1 (64)

    @property
    def out_grid(self) -> int:
        return self.grid_size // 2 ** (self.num_stages - 1)  # side of the output map (8)

    @property
    def num_features(self) -> int:
        return self.embed_dim * 2 ** (self.num_stages - 1)  # width of the output map (768)


# -----------------------------------------------------------------------------
# mel -> image


def bicubic_resize_matrix(n_in: int, n_out: int, a: float = -0.75) -> torch.Tensor:
    """The [n_out, n_in] matrix M with M @ x == F.interpolate(x, mode='bicubic', align_corners=True)
    along one axis.

    PyTorch's bicubic is Keys' cubic convolution with a = -0.75, applied per axis; with
    align_corners the output sample i sits at i * (n_in - 1) / (n_out - 1) in the input, and the
    four taps around it are clamped to the border (so a clamped tap adds to the edge sample).
    Positions and weights are computed in float32 like PyTorch's kernel: in float64 the sample
    positions move by ~1e-5 frames, enough for a 6e-4 error on a log-mel of magnitude 25.
    """
    f32 = np.float32
    a = f32(a)

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    scale = f32(n_in - 1) / f32(n_out - 1) if n_out > 1 else f32(0)
    pos = np.arange(n_out, dtype=f32) * scale
    left = np.minimum(np.floor(pos).astype(np.int64), n_in - 1)
    t = np.clip(pos - left.astype(f32), f32(0), f32(1))
    weights = np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=1)  # [n_out, 4]
    taps = np.clip(left[:, None] + np.arange(-1, 3), 0, n_in - 1)  # [n_out, 4]
    matrix = np.zeros((n_out, n_in), dtype=f32)
    np.add.at(matrix, (np.repeat(np.arange(n_out), 4), taps.ravel()), weights.ravel())
    return torch.from_numpy(matrix)


class MelToImage(nn.Module):
    """Resize the time axis to spec_size * freq_ratio frames and fold it into a square image.

    As HTS-AT's `reshape_wav2img`: the 1024 frames are cut into 4 chunks of 256 and the chunks
    are stacked along frequency, so image row = chunk * 64 + mel bin, column = frame in chunk.
    The bicubic resize is a constant matrix (a MatMul in ONNX, not a Resize op); the mel axis
    needs none, as bicubic with an unchanged size is the identity.
    """

    def __init__(self, num_frames: int, n_mels: int, spec_size: int):
        super().__init__()
        self.num_frames, self.n_mels, self.spec_size = num_frames, n_mels, spec_size
        self.freq_ratio = spec_size // n_mels
        resize = bicubic_resize_matrix(num_frames, spec_size * self.freq_ratio)
        self.register_buffer("resize", resize, persistent=False)  # [1024, T]: derived, never saved

    def forward(self, x):
        # (not while tracing for ONNX: there the sizes are tensors, and the export fixes them anyway)
        if not torch.jit.is_tracing() and x.shape[-2:] != (self.num_frames, self.n_mels):
            raise ValueError(f"expected a log-mel [B, 1, {self.num_frames}, {self.n_mels}], got {list(x.shape)}")
        # bicubic resize along time
        x = torch.matmul(self.resize, x)  # [B, 1, 1024, F]
        # cut time into freq_ratio chunks and stack them along frequency
        x = x.transpose(2, 3)  # [B, 1, F, 1024]
        x = x.reshape(-1, 1, self.n_mels, self.freq_ratio, self.spec_size)  # [B, 1, F, 4, 256]
        x = x.transpose(2, 3)  # [B, 1, 4, F, 256]
        return x.reshape(-1, 1, self.spec_size, self.spec_size)  # [B, 1, 4*F, 256]


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> tokens: a strided convolution, then LayerNorm."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x):
        x = self.proj(x)  # [B, C, H, W]
        x = x.flatten(2).transpose(1, 2)  # [B, H*W, C], row-major over (H, W)
        return self.norm(x)


# -----------------------------------------------------------------------------
# Swin blocks


def window_partition(x, window: int):
    """[B, H, W, C] -> [B * nW, window * window, C], windows in row-major order."""
    _, H, W, C = x.shape
    x = x.reshape(-1, H // window, window, W // window, window, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # [B, H/w, W/w, w, w, C]
    return x.reshape(-1, window * window, C)


def window_reverse(windows, window: int, H: int, W: int):
    """[B * nW, window * window, C] -> [B, H, W, C]; the inverse of window_partition."""
    C = windows.shape[-1]
    x = windows.reshape(-1, H // window, W // window, window, window, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # [B, H/w, w, W/w, w, C]
    return x.reshape(-1, H, W, C)


def relative_position_index(window: int) -> torch.Tensor:
    """[w*w, w*w]: for each token pair of a window, the row of their (dy, dx) in the bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)  # [N, N, 2] in 0..2w-2
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shifted_window_mask(H: int, W: int, window: int, shift: int) -> torch.Tensor:
    """[nW, w*w, w*w] additive mask for shifted windows: after the cyclic shift, a window at the
    border holds pieces from opposite edges of the image; tokens of different pieces must not
    attend to each other. -100 (not -inf) as the original, so softmax never sees a full -inf row.
    """
    region = torch.zeros(1, H, W, 1)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for label, (h, w) in enumerate((h, w) for h in cuts for w in cuts):
        region[:, h, w, :] = label
    region = window_partition(region, window).squeeze(-1)  # [nW, w*w]
    different = region[:, None, :] != region[:, :, None]  # [nW, w*w, w*w]
    return torch.zeros(different.shape).masked_fill(different, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside each window, plus a learned relative position bias."""

    def __init__(self, dim: int, window: int, num_heads: int, qkv_bias: bool, attn_drop: float, proj_drop: float):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        # one learned bias per head for each of the (2w-1)^2 relative offsets
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", relative_position_index(window), persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def position_bias(self):
        N = self.window * self.window
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]  # [N*N, nH]
        return bias.view(N, N, -1).permute(2, 0, 1)  # [nH, N, N]

    def forward(self, x, mask=None):
        N, C = x.shape[1], x.shape[2]  # x: [B*nW, N, C]
        # project to queries, keys, values, split the heads
        qkv = self.qkv(x).reshape(-1, N, 3, self.num_heads, C // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B*nW, nH, N, hd]
        # scaled dot products plus the relative position bias
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.position_bias()  # [B*nW, nH, N, N]
        # shifted windows: forbid attention across the pieces that the shift brought together
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(-1, nW, self.num_heads, N, N) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, N, N)
        attn = self.attn_drop(attn.softmax(dim=-1))
        # weighted sum of values, merge the heads, project
        x = (attn @ v).transpose(1, 2).reshape(-1, N, C)  # [B*nW, N, C]
        return self.proj_drop(self.proj(x))


class DropPath(nn.Module):
    """Stochastic depth: in training, drop the whole residual branch of a sample with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training or self.p == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1.0 - self.p)
        return x * keep / (1.0 - self.p)  # rescaled so the expectation is unchanged

    def extra_repr(self):
        return f"p={self.p}"


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class SwinBlock(nn.Module):
    """(Shifted) window attention and an MLP, each pre-normed and residual.

    A grid no larger than the window is one window: then there is nothing to shift.
    """

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int,
                 mlp_ratio: float, qkv_bias: bool, drop: float, attn_drop: float, drop_path: float):
        super().__init__()
        if resolution <= window:
            window, shift = resolution, 0
        self.resolution, self.window, self.shift = resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)
        mask = shifted_window_mask(resolution, resolution, window, shift) if shift else None
        self.register_buffer("attn_mask", mask, persistent=False)  # [nW, N, N] or None

    def forward(self, x):
        R, C = self.resolution, x.shape[-1]  # x: [B, R*R, C]
        # cyclic shift so that the new windows straddle the previous block's window borders
        y = self.norm1(x).view(-1, R, R, C)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        # attention inside each window
        y = self.attn(window_partition(y, self.window), self.attn_mask)  # [B*nW, w*w, C]
        y = window_reverse(y, self.window, R, R)  # [B, R, R, C]
        # undo the shift
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(-1, R * R, C))
        # MLP
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def extra_repr(self):
        return f"resolution={self.resolution}, window={self.window}, shift={self.shift}"


class PatchMerging(nn.Module):
    """Halve the grid, double the width: concatenate each 2x2 neighbourhood, norm, project 4C -> 2C."""

    def __init__(self, dim: int, resolution: int):
        super().__init__()
        self.resolution = resolution
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x):
        R, C = self.resolution, x.shape[-1]
        x = x.view(-1, R, R, C)
        # the original's order of the four neighbours: (0,0), (1,0), (0,1), (1,1) as (row, col)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        x = x.view(-1, (R // 2) * (R // 2), 4 * C)  # [B, R/2*R/2, 4C]
        return self.reduction(self.norm(x))  # [B, R/2*R/2, 2C]


class SwinStage(nn.Module):
    """`depth` blocks at one resolution, shifting on every odd block, then patch merging."""

    def __init__(self, dim: int, resolution: int, depth: int, num_heads: int, window: int, mlp_ratio: float,
                 qkv_bias: bool, drop: float, attn_drop: float, drop_path: list[float], downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList([
            SwinBlock(dim, resolution, num_heads, window, shift=0 if i % 2 == 0 else window // 2,
                      mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop, attn_drop=attn_drop,
                      drop_path=drop_path[i])
            for i in range(depth)])
        self.downsample = PatchMerging(dim, resolution) if downsample else None

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if self.downsample is not None else x


# -----------------------------------------------------------------------------
# the encoder


class HTSAT(nn.Module):
    """log-mel [B, 1, T, F] -> the last Swin stage as a map [B, C, 8, 8] (C = embed_dim * 8)."""

    def __init__(self, cfg: HTSATConfig):
        super().__init__()
        self.cfg = cfg
        self.bn0 = nn.BatchNorm2d(cfg.n_mels)
        self.to_image = MelToImage(cfg.num_frames, cfg.n_mels, cfg.spec_size)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        # stochastic depth grows linearly from 0 at the first block to drop_path_rate at the last
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.num_heads)):
            first = sum(cfg.depths[:i])
            self.layers.append(SwinStage(
                dim=cfg.embed_dim * 2**i, resolution=cfg.grid_size // 2**i, depth=depth, num_heads=heads,
                window=cfg.window_size, mlp_ratio=cfg.mlp_ratio, qkv_bias=cfg.qkv_bias, drop=cfg.drop_rate,
                attn_drop=cfg.attn_drop_rate, drop_path=dpr[first:first + depth],
                downsample=i < cfg.num_stages - 1))
        self.norm = nn.LayerNorm(cfg.num_features)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, WindowAttention):
            nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)

    def forward_image(self, mel):
        """log-mel [B, 1, T, F] -> the image the Swin sees [B, 1, 256, 256]."""
        # normalise each mel bin: BatchNorm2d needs the mel axis as channels
        x = self.bn0(mel.transpose(1, 3)).transpose(1, 3)  # [B, 1, T, F]
        # resize time to 1024 frames, fold into 4 chunks stacked along frequency
        return self.to_image(x)  # [B, 1, 256, 256]

    def forward_tokens(self, mel):
        """log-mel [B, 1, T, F] -> the last stage's tokens after LayerNorm [B, 64, C]."""
        x = self.patch_embed(self.forward_image(mel))  # [B, 64*64, embed_dim]
        x = self.pos_drop(x)
        for layer in self.layers:
            x = layer(x)  # [B, 64*64, 96] -> ... -> [B, 8*8, 768]
        return self.norm(x)

    def forward(self, mel):
        """log-mel [B, 1, T, F] -> [B, C, 8, 8], row i of the map = image rows 32i..32i+31.

        The original's layout: tokens are row-major over the (H, W) grid, so the map is a plain
        transpose and reshape (`x.permute(0, 2, 1).reshape(B, C, SF, ST)`).
        """
        x = self.forward_tokens(mel)  # [B, 64, C]
        return x.transpose(1, 2).reshape(-1, self.cfg.num_features, self.cfg.out_grid, self.cfg.out_grid)


def build_htsat(cfg: HTSATConfig | None = None) -> HTSAT:
    """The HTS-AT audio encoder for `cfg` (default: the paper's), freshly initialised."""
    cfg = cfg or HTSATConfig()
    model = HTSAT(cfg)
    log.info("HTS-AT %s: %.2f M parameters", asdict(cfg), count_parameters(model) / 1e6)
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers excluded).

    The paper-size HTS-AT has 27,534,488: the official checkpoint's parameters less the frozen
    STFT/mel kernels and the AudioSet head (tscam_conv, head).
    """
    return sum(p.numel() for p in model.parameters())
