"""UniCompress networks: frequency-prior extractor, attention fusion, VQ codebook, conditional INR.

Geometry: the encoder side works on tiles of ``TILE`` voxels cut into patches, one token per patch
(``PATCH`` by default: 4x4x4 = 64 tokens a tile; a coarser patch gives fewer indices per chunk,
for rates whose budget a chunk's indices at the default patch would exceed). The decoder side is
a SIREN evaluated per voxel on
``[trilerp(Z_q), trilerp(L), local phase]``: ``Z_q`` is the quantized token grid (codebook
indices), ``L`` a per-chunk continuous latent grid at ``STRIDE`` refined at encode time. Trilinear
interpolation spans tile borders, so tiles leave no seams in the output.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from streamcomp.errors import InputError
from streamcomp.models.siren import FunnelSiren

TILE = (8, 32, 32)
PATCH = (2, 8, 8)
STRIDE = (2, 4, 4)
PHASE_FEATURES = 6


def token_grid(patch: tuple[int, ...]) -> tuple[int, ...]:
    """Tokens per tile along each axis for patches of ``patch`` voxels."""
    return tuple(t // p for t, p in zip(TILE, patch, strict=True))


class PatchExtractor(nn.Module):
    """The feature extractor 𝔽: patch embedding plus a pointwise MLP, tokens (B, T, F)."""

    def __init__(self, features: int, patch: tuple[int, ...] = PATCH) -> None:
        super().__init__()
        self.embed = nn.Conv3d(1, features, patch, stride=patch)
        self.mlp = nn.Sequential(nn.GELU(), nn.Conv3d(features, features, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x[:, None])
        h = h + self.mlp(h)
        return h.flatten(2).transpose(1, 2)


class LatentEncoder(nn.Module):
    """Amortized guess of a block's latent grid (one cell per STRIDE patch), refined at encode time."""

    def __init__(self, in_channels: int, channels: int, width: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(in_channels, width, STRIDE, stride=STRIDE), nn.GELU(),
            nn.Conv3d(width, width, 1), nn.GELU(), nn.Conv3d(width, channels, 1),
        )

    def forward(self, components: list[torch.Tensor]) -> torch.Tensor:
        return self.net(torch.stack(components, dim=1))


class Fusion(nn.Module):
    """MLP to low-dim embeddings, per-modality self-attention, cross-attention fusion (eq. 3-4).

    ``E = MSA(LN(w)) + w`` per modality; the modalities' tokens are concatenated with learnable
    bottleneck tokens between them and learnable positional embeddings; the last modality's
    tokens (the raw image) query that sequence by cross-attention to give ``Z``.
    """

    def __init__(
        self, modalities: int, features: int, dim: int, tokens: int, heads: int = 2, bottleneck: int = 2
    ) -> None:
        super().__init__()
        self.embed = nn.ModuleList(
            nn.Sequential(nn.Linear(features, dim), nn.GELU(), nn.Linear(dim, dim)) for _ in range(modalities)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(modalities))
        self.self_attn = nn.ModuleList(
            nn.MultiheadAttention(dim, heads, batch_first=True) for _ in range(modalities)
        )
        self.bottleneck = nn.Parameter(torch.randn(max(modalities - 1, 0), bottleneck, dim) * 0.02)
        self.pos = nn.Parameter(torch.randn(modalities, tokens, dim) * 0.02)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, dim)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        batch = tokens[0].shape[0]
        seq = []
        for i, w in enumerate(tokens):
            e = self.embed[i](w)
            n = self.norms[i](e)
            e = self.self_attn[i](n, n, n, need_weights=False)[0] + e
            if i:
                seq.append(self.bottleneck[i - 1].expand(batch, -1, -1))
            seq.append(e + self.pos[i])
        query = seq[-1]
        kv = self.norm_kv(torch.cat(seq, dim=1))
        z = query + self.cross(self.norm_q(query), kv, kv, need_weights=False)[0]
        return self.out(z)


class Codebook(nn.Module):
    """Learnable codebook with nearest-codeword quantization (eq. 5) and its loss (eq. 7)."""

    def __init__(self, size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(size, dim) * 0.1)
        self.beta = beta

    def logits(self, z: torch.Tensor) -> torch.Tensor:
        """Negative squared distances to every codeword: the assignment 'logits' used for KD."""
        return -(z.pow(2).sum(-1, keepdim=True) - 2 * z @ self.embedding.T + self.embedding.pow(2).sum(-1))

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        return self.logits(z).argmax(-1)

    def lookup(self, idx: torch.Tensor) -> torch.Tensor:
        return self.embedding[idx]

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Straight-through quantized ``z``, the indices, and ``||sg[z]-z_q||² + β||z-sg[z_q]||²``."""
        idx = self.indices(z)
        zq = self.lookup(idx)
        loss = F.mse_loss(zq, z.detach()) + self.beta * F.mse_loss(z, zq.detach())
        return z + (zq - z).detach(), idx, loss

    @torch.no_grad()
    def init_from(self, z: torch.Tensor) -> None:
        """Start the codewords on encoder outputs so none is dead from the first step."""
        flat = z.reshape(-1, z.shape[-1])
        pick = torch.randint(0, flat.shape[0], (self.embedding.shape[0],))
        self.embedding.copy_(flat[pick] + 0.01 * torch.randn_like(self.embedding))


def tokens_to_grid(z: torch.Tensor, tiles: tuple[int, int, int], grid: tuple[int, int, int]) -> torch.Tensor:
    """Tile tokens (n_tiles, T, d), tiles in C order over a chunk, to a grid (1, d, Z, Y, X);
    ``grid``: tokens per tile along each axis."""
    tz, ty, tx = tiles
    gz, gy, gx = grid
    d = z.shape[-1]
    g = z.reshape(tz, ty, tx, gz, gy, gx, d).permute(6, 0, 3, 1, 4, 2, 5)
    return g.reshape(1, d, tz * gz, ty * gy, tx * gx)


class LatentINR(nn.Module):
    """Conditional SIREN F(x, Z_q, L) on per-voxel features ``[trilerp(G), phase(x)]``.

    ``G`` is the token grid upsampled (exactly, by the integer factor patch/STRIDE) to the latent
    grid's resolution and concatenated with the latent grid. Because the first layer is linear
    before its sine, it commutes with trilinear interpolation: a full-block decode projects ``G``
    at latent resolution (1/32 of the voxels) and upsamples one hidden-width grid.
    """

    def __init__(self, token_dim: int, latent_channels: int, hidden: int, layers: int, w0: float) -> None:
        super().__init__()
        self.grid_dim = token_dim + latent_channels
        self.net = FunnelSiren(self.grid_dim + PHASE_FEATURES, [hidden] * (layers - 1), w0=w0)

    @staticmethod
    def phase(index: torch.Tensor) -> torch.Tensor:
        """sin/cos of each voxel's position inside its latent cell, (..., 6) from voxel indices (..., 3)."""
        stride = torch.tensor(STRIDE, dtype=torch.float32, device=index.device)
        angle = 2 * math.pi * ((index + 0.5) / stride)
        return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)

    @staticmethod
    def combined_grid(zq: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(zq, size=tuple(latent.shape[2:]), mode="trilinear", align_corners=False)
        return torch.cat([up, latent], dim=1)

    def features_at(self, zq: torch.Tensor, latent: torch.Tensor, index: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Features at voxel positions ``index`` (B, N, 3), float voxel units, of blocks of ``shape``.

        Trilinear sampling in grid_sample's align_corners=False convention, so voxel centres fall
        on the same relative positions of the grid whatever its resolution, and positions between
        voxels (decode at other scales) interpolate smoothly.
        """
        size = torch.tensor(shape, dtype=torch.float32, device=index.device)
        where = ((2 * index + 1) / size - 1).flip(-1).reshape(index.shape[0], -1, 1, 1, 3)  # (x, y, z)
        grid = self.combined_grid(zq, latent)
        sample = F.grid_sample(grid, where, mode="bilinear", padding_mode="border", align_corners=False)
        return torch.cat([sample.flatten(2).transpose(1, 2), self.phase(index)], dim=-1)

    def forward(self, zq: torch.Tensor, latent: torch.Tensor, index: torch.Tensor, shape: tuple) -> torch.Tensor:
        """Predictions at voxel positions ``index`` (B, N, 3) of blocks of ``shape``: (B, N)."""
        return self.net(self.features_at(zq, latent, index, shape)).squeeze(-1)

    @staticmethod
    def _upsample_box(g: torch.Tensor, lo: tuple[int, int], hi: tuple[int, int]) -> torch.Tensor:
        """Voxels [lo, hi) along z and y (all x) of ``g`` upsampled by STRIDE (align_corners=False).

        Only the cells that box reads (plus a one-cell halo) are upsampled; with an integer scale
        this equals the same box of upsampling the whole grid.
        """
        cells, offsets, size = [], [], []
        for axis, (a, b) in enumerate(zip(lo, hi, strict=True)):
            n, s = g.shape[2 + axis], STRIDE[axis]
            c0, c1 = max(int((a + 0.5) // s - 1), 0), min(int((b - 0.5) // s + 2), n)
            cells.append(slice(c0, c1))
            offsets.append(a - c0 * s)
            size.append((c1 - c0) * s)
        up = F.interpolate(g[:, :, cells[0], cells[1]], size=(*size, g.shape[4] * STRIDE[2]),
                           mode="trilinear", align_corners=False)
        return up[:, :, offsets[0] : offsets[0] + hi[0] - lo[0], offsets[1] : offsets[1] + hi[1] - lo[1]]

    def decoder(self, zq: torch.Tensor, latent: torch.Tensor) -> Callable[[tuple, tuple, int], torch.Tensor]:
        """A function decoding boxes [lo, hi) in (z, y), x up to ``width``, of one block, channel-first.

        ``w0`` is folded into the weights and sines run in place: decoding is memory-bound, so
        every pass over the activations saved counts. Call it under ``torch.no_grad()``.
        """
        first, *rest = self.net.body
        weight = first.w0 * first.linear.weight
        projected = torch.einsum("hc,bczyx->bhzyx", weight[:, : self.grid_dim], self.combined_grid(zq, latent))
        phase = (self.phase(voxel_index(STRIDE)) @ weight[:, self.grid_dim :].T + first.w0 * first.linear.bias).T
        table = phase.reshape(-1, *STRIDE)
        layers = [(layer.w0 * layer.linear.weight, layer.w0 * layer.linear.bias[:, None]) for layer in rest]
        head = (self.net.head.weight, self.net.head.bias[:, None])

        def decode(lo: tuple[int, int], hi: tuple[int, int], width: int) -> torch.Tensor:
            h = self._upsample_box(projected, lo, hi)[0, :, :, :, :width]
            shape = h.shape[1:]
            reps = [math.ceil((n + o % s) / s) for n, o, s in zip(shape, (*lo, 0), STRIDE, strict=True)]
            tile = table.repeat(1, *reps)[:, lo[0] % STRIDE[0] :, lo[1] % STRIDE[1] :]
            x = h.add_(tile[:, : shape[0], : shape[1], : shape[2]]).sin_().reshape(h.shape[0], -1)
            for w, b in layers:
                x = torch.addmm(b, w, x).sin_()
            return torch.addmm(head[1], head[0], x).reshape(shape)

        return decode


def voxel_index(shape: tuple[int, ...], device: torch.device | str = "cpu") -> torch.Tensor:
    """Integer voxel positions of a block as floats, (N, 3), C order."""
    axes = [torch.arange(n, dtype=torch.float32, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)


def random_index(batch: int, points: int, valid: tuple[int, ...], gen: torch.Generator, device) -> torch.Tensor:
    """Random integer voxel positions inside ``valid``, (batch, points, 3)."""
    hi = torch.tensor(valid, dtype=torch.float32, device=device)
    return (torch.rand(batch, points, 3, generator=gen, device=device) * hi).floor()


def gather(blocks: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Values of blocks (B, z, y, x) at integer positions ``index`` (B, N, 3): (B, N)."""
    b = torch.arange(blocks.shape[0], device=blocks.device)[:, None].expand(-1, index.shape[1])
    i = index.long()
    return blocks[b, i[..., 0], i[..., 1], i[..., 2]]


def latent_shape(shape: tuple[int, ...], channels: int) -> tuple[int, ...]:
    return (channels, *(math.ceil(n / s) for n, s in zip(shape, STRIDE, strict=True)))


class UniCompressNet(nn.Module):
    """Teacher (3 modalities: high, low, raw) or student (raw only) network around shared parts."""

    def __init__(
        self, modalities: int, features: int, dim: int, codebook: Codebook, latent_channels: int,
        hidden: int, layers: int, w0: float, extractor: PatchExtractor | None = None,
        patch: tuple[int, ...] = PATCH,
    ) -> None:
        super().__init__()
        self.modalities = modalities
        self.token_grid = token_grid(patch)
        self.extractor = extractor if extractor is not None else PatchExtractor(features, patch)
        self.fusion = Fusion(modalities, features, dim, math.prod(self.token_grid))
        self.codebook = codebook
        self.latent_encoder = LatentEncoder(modalities, latent_channels)
        self.inr = LatentINR(dim, latent_channels, hidden, layers, w0)

    def encode_tokens(self, components: list[torch.Tensor]) -> torch.Tensor:
        """Continuous fused tokens Z (B, T, d) from the modality components (each (B, *TILE))."""
        return self.fusion([self.extractor(c) for c in components[-self.modalities :]])

    def encode_latent(self, components: list[torch.Tensor]) -> torch.Tensor:
        """The amortized latent grid (B, C, ...) of blocks whose sizes are multiples of STRIDE."""
        return self.latent_encoder(components[-self.modalities :])


def parse_patch(spec: str) -> tuple[int, int, int]:
    """A token patch ``"ZxYxX"``: it must tile ``TILE`` and be a multiple of the latent ``STRIDE``."""
    try:
        patch = tuple(int(n) for n in str(spec).lower().split("x"))
    except ValueError:
        patch = ()
    if len(patch) != 3 or any(p <= 0 or t % p or p % s for p, t, s in zip(patch, TILE, STRIDE, strict=True)):
        coarsest = "x".join(map(str, TILE))
        raise InputError(
            f"patch must be ZxYxX dividing the {coarsest} tile and a multiple of the latent stride "
            f"{'x'.join(map(str, STRIDE))} per axis (e.g. {'x'.join(map(str, PATCH))}, 4x16x16), got {spec!r}"
        )
    return patch
