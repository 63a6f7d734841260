"""UniCompress training: extractor pretraining, teacher, distillation to the student, refinement.

1. ``pretrain_extractor``: 𝔽 learns with the negative-free Barlow Twins objective (two augmented
   views, cross-correlation towards identity; paper App. E.3), then is frozen for the teacher.
2. ``train_teacher``: fusion, codebook, amortized latent encoder and conditional INR learn
   jointly on many tiles. Loss ``L_recon + γ L_quant`` (eq. 8), with uniform quantization noise
   on the latent grid and an L2 price on it (a proxy for its coded size). When chunks will store
   an all-zero grid (``latent_share`` 0, the default) the networks train on zeros too.
3. ``distill_student``: raw-only trainable extractor, shared frozen codebook, half-size INR;
   ``L_recon + L_code + L_KD + L_out`` (eq. 9-12), each term switchable for the ablation.
4. ``finetune_teacher``: the paper's final teacher fine-tune.
5. ``refine_latent``: encode time — a chunk's latent grid, starting from the amortized guess, is
   optimized with the network frozen.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from streamcomp.device import default_device
from streamcomp.methods.unicompress.model import (
    TILE,
    LatentINR,
    PatchExtractor,
    UniCompressNet,
    gather,
    parse_patch,
    random_index,
)
from streamcomp.methods.unicompress.params import MODALITIES, UniCompressParams
from streamcomp.methods.unicompress.prior import wavelet_components
from streamcomp.optim import Adam

log = logging.getLogger(__name__)



@dataclass
class TileSet:
    """Training tiles and their wavelet components, on the training device."""

    raw: torch.Tensor
    components: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.raw.shape[0]

    def select(self, names: list[str], idx: torch.Tensor) -> list[torch.Tensor]:
        return [self.components[n][idx] for n in names]


def cut_tiles(blocks: list[np.ndarray], max_tiles: int, seed: int = 0) -> np.ndarray:
    """All whole ``TILE``-sized tiles of the sample blocks (a random subset if too many)."""
    tiles = []
    for b in blocks:
        if any(n < t for n, t in zip(b.shape, TILE, strict=True)):
            pad = [(0, max(0, t - n)) for n, t in zip(b.shape, TILE, strict=True)]
            b = np.pad(b, pad, mode="edge")
        for z in range(0, b.shape[0] - TILE[0] + 1, TILE[0]):
            for y in range(0, b.shape[1] - TILE[1] + 1, TILE[1]):
                for x in range(0, b.shape[2] - TILE[2] + 1, TILE[2]):
                    tiles.append(b[z : z + TILE[0], y : y + TILE[1], x : x + TILE[2]])
    out = np.stack(tiles).astype(np.float32)
    if len(out) > max_tiles:
        out = out[np.random.default_rng(seed).choice(len(out), max_tiles, replace=False)]
    return out


def tile_components(tiles: np.ndarray, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """The frequency prior of tiles (paper eq. 2), by modality name."""
    low, high, raw = wavelet_components(tiles)
    return {n: torch.from_numpy(a).to(device) for n, a in zip(MODALITIES, (high, low, raw), strict=True)}


def make_tileset(tiles: np.ndarray) -> TileSet:
    comps = tile_components(tiles, default_device())
    return TileSet(comps["raw"], comps)


def _batches(n: int, batch: int, steps: int, seed: int, desc: str):
    """Random minibatch indices, one per step; progress goes to the debug log every quarter."""
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        if step % max(steps // 4, 1) == 0:
            log.debug("%s: step %d of %d", desc, step, steps)
        yield torch.randint(0, n, (min(batch, n),), generator=gen)


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    b = x.shape[0]
    scale = 1 + 0.1 * torch.randn(b, 1, 1, 1, generator=gen).to(x.device)
    shift = 0.1 * torch.randn(b, 1, 1, 1, generator=gen).to(x.device)
    noise = 0.05 * torch.randn(x.shape, generator=gen).to(x.device)
    return x * scale + shift + noise


def pretrain_extractor(
    extractor: PatchExtractor, tiles: TileSet, steps: int, batch: int, lr: float, seed: int
) -> PatchExtractor:
    """Barlow Twins on token features of two augmented views of every modality; then frozen."""
    dev = default_device()
    feat = extractor.embed.out_channels
    projector = torch.nn.Sequential(
        torch.nn.Linear(feat, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(), torch.nn.Linear(64, 64)
    ).to(dev)
    extractor.to(dev).train()
    opt = Adam([*extractor.parameters(), *projector.parameters()], lr)
    gen = torch.Generator().manual_seed(seed)
    for idx in _batches(len(tiles), batch, steps, seed, "pretrain extractor (Barlow Twins)"):
        x = torch.cat(tiles.select(list(MODALITIES), idx))
        z1 = projector(extractor(_augment(x, gen)).reshape(-1, feat))
        z2 = projector(extractor(_augment(x, gen)).reshape(-1, feat))
        z1 = (z1 - z1.mean(0)) / (z1.std(0) + 1e-5)
        z2 = (z2 - z2.mean(0)) / (z2.std(0) + 1e-5)
        c = z1.T @ z2 / z1.shape[0]
        on = (torch.diagonal(c) - 1).pow(2).sum()
        off = (c - torch.diag(torch.diagonal(c))).pow(2).sum()
        loss = on + 5e-3 * off
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in extractor.parameters():
        p.requires_grad_(False)
    return extractor.eval()


def tile_grid(z: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
    """Tokens of single tiles (B, T, d) as token grids (B, d, *grid)."""
    return z.transpose(1, 2).reshape(z.shape[0], z.shape[2], *grid)


def _latent(net: UniCompressNet, comps: list[torch.Tensor], p: UniCompressParams) -> torch.Tensor:
    """The latent grid the networks train with: the amortized guess when chunks will code one
    (``latent_share`` > 0), else zeros, which is what every chunk then stores."""
    lat = net.encode_latent(comps)
    return lat if p.latent_share > 0 else torch.zeros_like(lat)


def _teacher_loss(net, tiles, names, idx, pos, p):
    comps = tiles.select(names, idx)
    zq, _, lq = net.codebook(net.encode_tokens(comps))
    lat = _latent(net, comps, p)
    lat_noisy = lat + p.latent_noise * (torch.rand_like(lat) - 0.5)
    pred = net.inr(tile_grid(zq, net.token_grid), lat_noisy, pos, TILE)
    recon = F.mse_loss(pred, gather(tiles.raw[idx], pos))
    return recon + p.gamma * lq + p.latent_l2 * lat.pow(2).mean(), recon


def train_teacher(
    net: UniCompressNet, tiles: TileSet, names: list[str], p: UniCompressParams, steps: int, lr: float,
    desc: str = "teacher",
) -> float:
    """Joint training of fusion, codebook, latent encoder and INR (extractor frozen)."""
    opt = Adam([q for q in net.parameters() if q.requires_grad], lr, steps=max(steps, 1), eta_min=lr * 0.05)
    recon = torch.tensor(0.0)
    net.train()
    gen = torch.Generator(device=tiles.raw.device).manual_seed(p.seed + 3)
    for idx in _batches(len(tiles), p.batch, steps, p.seed + 1, desc):
        pos = random_index(len(idx), p.train_points, TILE, gen, tiles.raw.device)
        loss, recon = _teacher_loss(net, tiles, names, idx, pos, p)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(recon.detach())


def distill_student(
    student: UniCompressNet, teacher: UniCompressNet, tiles: TileSet, names: list[str], p: UniCompressParams
) -> None:
    """Two-stage KD: codebook alignment (eq. 9), soft assignment KD (eq. 10), output match (eq. 11)."""
    lr = p.lr
    trained = [q for q in student.parameters() if q.requires_grad]
    opt = Adam(trained, lr, steps=max(p.student_steps, 1), eta_min=lr * 0.05)
    tau = p.tau
    teacher.eval()
    student.train()
    gen = torch.Generator(device=tiles.raw.device).manual_seed(p.seed + 4)
    for idx in _batches(len(tiles), p.batch, p.student_steps, p.seed + 2, "distill student"):
        pos = random_index(len(idx), p.train_points, TILE, gen, tiles.raw.device)
        with torch.no_grad():
            comps = tiles.select(names, idx)
            zt = teacher.encode_tokens(comps)
            zq_t = teacher.codebook.lookup(teacher.codebook.indices(zt))
            logits_t = teacher.codebook.logits(zt)
            pred_t = teacher.inr(tile_grid(zq_t, teacher.token_grid), _latent(teacher, comps, p), pos, TILE)
        zs = student.encode_tokens([tiles.raw[idx]])
        zq_s, _, _ = student.codebook(zs)
        lat = _latent(student, [tiles.raw[idx]], p)
        noisy = lat + p.latent_noise * (torch.rand_like(lat) - 0.5)
        pred_s = student.inr(tile_grid(zq_s, student.token_grid), noisy, pos, TILE)
        loss = F.mse_loss(pred_s, gather(tiles.raw[idx], pos)) + p.latent_l2 * lat.pow(2).mean()
        if p.kd_code:
            loss = loss + p.kd_code * (F.mse_loss(zs, zq_s.detach()) + F.mse_loss(zq_s, zq_t))
        if p.kd_logits:
            log_s = F.log_softmax(student.codebook.logits(zs) / tau, -1)
            log_t = F.log_softmax(logits_t / tau, -1)
            loss = loss + p.kd_logits * tau**2 * F.kl_div(log_s, log_t, log_target=True, reduction="batchmean")
        if p.kd_out:
            loss = loss + p.kd_out * F.mse_loss(pred_s, pred_t)
        opt.zero_grad()
        loss.backward()
        opt.step()


def prior_names(p: UniCompressParams) -> list[str]:
    """The prior's modalities the teacher sees, in MODALITIES order."""
    return [n for n in MODALITIES if n in p.prior.split(",")]


def build_teacher(p: UniCompressParams) -> tuple[UniCompressNet, list[str]]:
    names = prior_names(p)
    from streamcomp.methods.unicompress.model import Codebook

    codebook = Codebook(p.codebook, p.dim)
    net = UniCompressNet(
        len(names), p.features, p.dim, codebook, p.latent_channels, p.teacher_hidden, p.layers, p.w0,
        patch=parse_patch(p.patch),
    )
    return net, names


def build_student(p: UniCompressParams, teacher: UniCompressNet | None) -> UniCompressNet:
    from streamcomp.methods.unicompress.model import Codebook

    codebook = teacher.codebook if teacher is not None else Codebook(p.codebook, p.dim)
    patch = parse_patch(p.patch)
    extractor = copy.deepcopy(teacher.extractor) if teacher is not None else PatchExtractor(p.features, patch)
    for q in extractor.parameters():
        q.requires_grad_(True)
    for q in codebook.parameters():
        q.requires_grad_(False)
    return UniCompressNet(
        1, p.features, p.dim, codebook, p.latent_channels, p.student_hidden, p.layers, p.w0,
        extractor=extractor, patch=patch,
    )


def refine_latent(
    inr: LatentINR, zq: torch.Tensor, block: torch.Tensor, valid: tuple[int, ...], start: torch.Tensor,
    steps: int, points: int, lr: float, seed: int,
) -> torch.Tensor:
    """Optimize one chunk's latent grid from ``start`` (network frozen) on voxels of its valid region."""
    shape = tuple(block.shape)
    latent = start.detach().clone().requires_grad_(True)
    opt = Adam([latent], lr, steps=max(steps, 1), eta_min=lr * 0.1)
    gen = torch.Generator(device=block.device).manual_seed(seed)
    for _ in range(steps):
        pos = random_index(1, points, valid, gen, block.device)
        loss = F.mse_loss(inr(zq, latent, pos, shape), gather(block[None], pos))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return latent.detach()
