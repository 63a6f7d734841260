"""``sr``: end-to-end downsampling + INR + super-resolution (Wang et al., the fourth seed paper).

Per chunk, the block is low-passed in the frequency domain and resampled by ``factors`` per axis (a
DCT crop: the Fourier low-pass of the block's mirror extension, so chunk edges do not ring), and a
funnel SIREN is fitted to the smaller block (fewer coordinates to fit). One super-resolution
network (:class:`~streamcomp.models.sr.SRNet`), shared by every chunk of the array and stored,
counted, in its codec configuration, restores full resolution, or any other: it is queried at
continuous positions.

Fit, once per array, on a sample of its chunks:

1. every sample chunk's SIREN is fitted to its low-pass block and quantized to its budget, as an
   encode would;
2. the SR network learns to map those decoded low-resolution blocks to the full-resolution chunks.

Then every chunk's SIREN is refined through the frozen network against its full-resolution block
(``refine_steps``), so each INR learns what the network makes of it, and one bit per chunk says
whether the network lowers that chunk's error (else the SIREN alone decodes it).

Both steps minimise squared error, what PSNR scores; ``loss="l1"`` trains with the paper's L1
(higher SSIM, lower PSNR). Each chunk's SIREN is the widest its budget buys, as ``siren``'s: the
paper's one width for every chunk (the sample's median) lost more on the whole MRI than the shared
network's correction recovers (README, ``sr``).

The paper's trade-off point picks the downsampling factors (DS) and the network's channels (NC):
with ``factors="auto"`` / ``channels=0`` every combination is tried on the sample, each network's
stored bytes taken from the chunks' budgets, and the one that minimises the paper's objective
1/PSNR + 1 - SSIM + (1 - CR) on held-out sample chunks is kept (CR differs between settings only by
the network's bytes, as the budgets are the run's).
"""

from __future__ import annotations

import math
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import fft

from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors
from streamcomp.device import single_thread
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import FitTargets, Target, encode_only
from streamcomp.methods.inr import (
    _ARCH,
    MAX_HIDDEN,
    QUALITY_REL_STEP,
    Network,
    evaluate,
    linear_tensors,
)
from streamcomp.methods.siren import SirenMethod, SirenParams
from streamcomp.metrics import psnr, ssim
from streamcomp.models.coords import coords_at, grid
from streamcomp.models.sr import GridState, SRNet, low_res_coords, low_res_positions
from streamcomp.optim import Adam

NET_REL_STEP = 2.0**-8  # the stored network's quantization step, relative to each tensor's std
CANDIDATE_FACTORS = {3: ("1x1x1", "1x2x2", "2x2x2"), 4: ("1x1x1x1", "1x1x2x2", "1x2x2x2")}
CANDIDATE_CHANNELS = (4, 8)
DECODE_BATCH = 1 << 13  # points per SIREN or network pass outside training (memory grows with them)
_HEAD = struct.Struct("<BBBH")  # ndim, channels, width, SIREN width; then one byte per axis: the factor
_CHUNK = struct.Struct("<HB")  # a chunk's SIREN width, and whether the network decodes it
DEFAULT_MSE = 1e-3  # a sample's error target when the fit is given none
LOSSES = {"mse": lambda d: torch.mean(d * d), "l1": lambda d: torch.mean(torch.abs(d))}


@dataclass(frozen=True)
class SRParams(SirenParams):
    layers: int = 5
    factors: str = encode_only("auto")
    channels: int = encode_only(0)
    width: int = encode_only(16)
    fit_chunks: int = encode_only(8)
    sr_steps: int = encode_only(400)
    sr_lr: float = encode_only(3e-3)
    refine_steps: int = encode_only(100)
    refine_lr: float = encode_only(1e-4)
    loss: str = encode_only("mse")

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"sr loss must be one of {sorted(LOSSES)}, got {self.loss!r}")
        if self.factors != "auto":
            parse_factors(self.factors, None)
        if not 0 <= self.channels <= 64 or not 1 <= self.width <= 64:
            raise InputError("sr needs 0 <= channels <= 64 (0: search) and 1 <= width <= 64")
        if self.fit_chunks < 2:
            raise InputError("sr needs fit_chunks >= 2 (one to learn from, one to judge on)")


def parse_factors(text: str, ndim: int | None) -> tuple[int, ...]:
    """``"1x2x2"`` -> (1, 2, 2): integer downsampling factors per axis, 1 to 8."""
    try:
        factors = tuple(int(v) for v in text.lower().split("x"))
    except ValueError:
        factors = ()
    if not factors or not all(1 <= f <= 8 for f in factors) or (ndim is not None and len(factors) != ndim):
        axes = "per axis" if ndim is None else f"for each of the {ndim} axes"
        raise InputError(f"sr factors must be 'auto' or integers 1-8 {axes} like 1x2x2, got {text!r}")
    return factors


def low_shape(shape: tuple[int, ...], factors: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(n / f) for n, f in zip(shape, factors, strict=True))


def downsample(block: np.ndarray, factors: tuple[int, ...]) -> np.ndarray:
    """The block low-passed and resampled ``factors`` times coarser: its orthonormal DCT cropped to
    the low frequencies, inverted, scaled to keep the mean."""
    shape = low_shape(block.shape, factors)
    if shape == block.shape:
        return block.astype(np.float32)
    coeffs = fft.dctn(block.astype(np.float64), norm="ortho")[tuple(slice(0, m) for m in shape)]
    gain = math.sqrt(math.prod(shape) / block.size)
    return (fft.idctn(coeffs, norm="ortho") * gain).astype(np.float32)


class SRMethod(SirenMethod):
    name = "sr"
    method_id = 7
    ndims = (3, 4)
    Params = SRParams
    half_scale_weight = 0.0  # its SIRENs fit low-resolution blocks: reads at a scale go through its SR network

    def __init__(self, **params) -> None:
        super().__init__(**params)
        self.factors: tuple[int, ...] | None = None
        self.hidden = 0
        self.net: SRNet | None = None
        self._blob: bytes | None = None

    def needs_fit(self) -> bool:
        return True

    # -- shared state ---------------------------------------------------------------------------
    def _use(self, factors: tuple[int, ...], hidden: int, net: SRNet) -> None:
        """Store the network quantized, and decode with exactly what is stored."""
        head = _HEAD.pack(len(factors), net.extract[0].out_channels, net.lift.out_features, hidden)
        self._blob = head + bytes(factors) + pack_tensors(_net_tensors(net), NET_REL_STEP)
        self.load_shared_state(self._blob)

    def shared_state(self) -> bytes:
        if self._blob is None:
            raise InputError("sr has no shared state yet: fit_shared() was not run")
        return self._blob

    def load_shared_state(self, blob: bytes) -> None:
        if len(blob) < _HEAD.size:
            raise ChunkFormatError("sr shared state is too short: the array's metadata is damaged")
        ndim, channels, width, hidden = _HEAD.unpack_from(blob)
        factors = tuple(blob[_HEAD.size : _HEAD.size + ndim])
        sane = ndim in self.ndims and len(factors) == ndim and all(1 <= f <= 8 for f in factors)
        if not (sane and channels and width and 1 <= hidden <= MAX_HIDDEN):
            raise ChunkFormatError("sr shared state names an impossible network: the array's metadata is damaged")
        net = SRNet(ndim, channels, width)
        tensors = unpack_tensors(blob[_HEAD.size + ndim :], [tuple(t.shape) for t in net.parameters()])
        with torch.no_grad():
            for p, t in zip(net.parameters(), tensors, strict=True):
                p.copy_(torch.from_numpy(t))
        net.requires_grad_(False)
        self.factors, self.hidden, self.net, self._blob = factors, hidden, net.eval(), blob

    def shared_state_size_estimate(self) -> int:
        return _HEAD.size + 3 + 4

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        return super().min_payload_bytes(shape) + 1

    # -- fit ------------------------------------------------------------------------------------
    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> list[str]:
        """Fit the SR network, and pick the trade-off point when factors or channels are searched."""
        if not samples:
            raise InputError("sr needs at least one non-constant chunk to train its network on")
        p, ndim = self.params, samples[0].ndim
        start = time.perf_counter()
        pick = np.unique(np.linspace(0, len(samples) - 1, min(p.fit_chunks, len(samples))).round().astype(int))
        blocks = [samples[i] for i in pick]
        chunk_targets = [Target(max_mse=DEFAULT_MSE) if targets is None else targets.targets[i] for i in pick]
        data_chunks = len(samples) if targets is None else targets.data_chunks
        factor_options = CANDIDATE_FACTORS[ndim] if p.factors == "auto" else (p.factors,)
        channel_options = CANDIDATE_CHANNELS if p.channels == 0 else (p.channels,)
        searched = len(factor_options) * len(channel_options) > 1
        held = set(range(1, len(blocks), 2)) if searched else set()
        fit = _Sample([blocks[i] for i in range(len(blocks)) if i not in held],
                      [chunk_targets[i] for i in range(len(blocks)) if i not in held], data_chunks)
        judge = _Sample([blocks[i] for i in sorted(held)], [chunk_targets[i] for i in sorted(held)], data_chunks)
        trials = []
        for text in factor_options:
            for channels in channel_options:
                self._train(fit, parse_factors(text, ndim), channels)
                score, quality = self._objective(judge) if searched else (0.0, "")
                trials.append((score, text, channels, self._blob, quality))
        score, text, channels, blob, _ = min(trials, key=lambda t: t[0])
        self.load_shared_state(blob)
        notes = [
            f"SR network trained in {time.perf_counter() - start:.1f} s on {len(fit.blocks)} sample chunks: "
            f"factors {text}, {channels} channels, median sample's SIREN {self.hidden} wide, {len(blob)} bytes stored"
        ]
        if searched:
            table = "; ".join(f"{t[1]}/{t[2]}ch {t[0]:.4f} ({t[4]})" for t in trials)
            notes.append(
                f"trade-off point, 1/PSNR + 1 - SSIM + (1 - CR) on {len(judge.blocks)} held-out samples: {table}"
            )
        return notes

    def _train(self, sample: _Sample, factors: tuple[int, ...], channels: int) -> None:
        """Fit the sample's SIRENs as an encode would, then the network on their decoded outputs."""
        p = self.params
        torch.manual_seed(p.seed)
        net = SRNet(len(factors), channels, p.width)
        self._use(factors, 1, net)  # the stored bytes the chunks' budgets give up
        self._use(factors, self._array_hidden(sample), net)
        decoded = []
        for block, target in zip(sample.blocks, sample.targets, strict=True):
            sections = self._encode_siren(block, sample.less_shared(target, self._blob))
            decoded.append(_Decoded.of(self.load(sections, block.ndim), factors, block))
        gen = torch.Generator().manual_seed(p.seed)
        opt = Adam(net.parameters(), p.sr_lr, steps=max(p.sr_steps, 1), eta_min=p.sr_lr * 0.05)
        with single_thread():
            for step in range(p.sr_steps):
                chunk = decoded[step % len(decoded)]
                idx, coords, values = _query_batch(chunk.block, p.batch, gen)
                positions = low_res_positions(coords, chunk.block.shape, tuple(chunk.grid_values.shape))
                out = net(chunk.grid_values, positions, chunk.base[idx])
                loss = LOSSES[p.loss](out - values)
                opt.zero_grad()
                loss.backward()
                opt.step()
        self._use(factors, self.hidden, net)

    def _array_hidden(self, sample: _Sample) -> int:
        """The paper's SN, stored with the network: what the median sample's budget buys, or, under
        an error target, the median width the samples grow to (where a chunk's SIREN starts)."""
        widths = []
        for block, target in zip(sample.blocks, sample.targets, strict=True):
            target = sample.less_shared(target, self._blob)
            if target.budget_bytes is not None:
                widths.append(self.hidden_for_budget(block.ndim, max(target.budget_bytes - _CHUNK.size, 1)))
            else:
                widths.append(_CHUNK.unpack(self._encode_siren(block, target)[0])[0])
        return int(np.median(widths))

    def _objective(self, sample: _Sample) -> tuple[float, str]:
        """The paper's trade-off objective over held-out samples, every stored byte counted."""
        quality, stored, raw = [], 0.0, 0
        for block, target in zip(sample.blocks, sample.targets, strict=True):
            sections = self.encode(block, sample.less_shared(target, self._blob))
            decoded = self.decode(sections, block.shape)
            quality.append((psnr(block, decoded, peak=2.0), ssim(block, decoded, peak=2.0)))
            stored += sum(map(len, sections)) + sample.share(self._blob)
            raw += block.size * 2  # CR against 16-bit voxels, the paper's MRI
        mean_psnr, mean_ssim = (float(np.mean(v)) for v in zip(*quality, strict=True))
        compression = 1 - stored / raw
        score = 1 / max(mean_psnr, 1e-3) + 1 - abs(mean_ssim) + (1 - compression)
        return score, f"{mean_psnr:.2f} dB, SSIM {mean_ssim:.4f}, CR {compression:.4f}"

    # -- per chunk ------------------------------------------------------------------------------
    def _ready(self) -> tuple[tuple[int, ...], SRNet]:
        if self.net is None or self.factors is None:
            raise InputError("sr needs its shared state: fit_shared() or a codec configuration")
        return self.factors, self.net

    def _encode_siren(self, block: np.ndarray, target: Target) -> list[bytes]:
        """The chunk's SIREN on its low-pass block, refined through the network: the widest the
        budget buys, quantized to it; or, under an error target, grown from the array's width until
        the chunk meets it."""
        factors, _ = self._ready()
        low = downsample(block, factors)
        if target.budget_bytes is not None:
            budget = max(target.budget_bytes - _CHUNK.size, 1)
            hidden = self.hidden_for_budget(block.ndim, budget)
            model = self._refine(self._fit(low, hidden), block)
            return self._sections(model, hidden, block, pack_to_budget(linear_tensors(model), budget))
        hidden = self.hidden
        while True:
            model = self._refine(self._fit(low, hidden), block)
            sections = self._sections(model, hidden, block, pack_tensors(linear_tensors(model), QUALITY_REL_STEP))
            err = float(np.mean((self.decode(sections, block.shape) - block) ** 2))
            if err <= target.max_mse or hidden >= MAX_HIDDEN or self.param_count(block.ndim, hidden) * 2 > low.size:
                return sections
            hidden = min(MAX_HIDDEN, math.ceil(hidden * 1.4))

    def _sections(self, model: torch.nn.Module, hidden: int, block: np.ndarray, weights: bytes) -> list[bytes]:
        """Architecture (width, and whether the network improves this chunk) and weights."""
        with_net = self.decode([_CHUNK.pack(hidden, 1), weights], block.shape)
        without = self.decode([_CHUNK.pack(hidden, 0), weights], block.shape)
        use_net = np.mean((with_net - block) ** 2) <= np.mean((without - block) ** 2)
        return [_CHUNK.pack(hidden, int(use_net)), weights]

    def _refine(self, model: torch.nn.Module, block: np.ndarray) -> torch.nn.Module:
        """End-to-end: the SIREN's output through the frozen network against the full-resolution
        block."""
        p = self.params
        if p.refine_steps <= 0:
            return model
        factors, net = self._ready()
        gen = torch.Generator().manual_seed(p.seed + 1)
        opt = Adam(model.parameters(), p.refine_lr)
        with single_thread():
            for _ in range(p.refine_steps):
                _, coords, values = _query_batch(block, p.batch, gen)
                opt.zero_grad()
                _backward_through_grid(model, net, factors, block.shape, coords, values, LOSSES[p.loss], p.batch)
                opt.step()
        return model

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        return self._encode_siren(block, target)

    def load(self, sections: list[bytes], ndim: int) -> Network:
        if len(sections) != 2 or len(sections[0]) != _CHUNK.size:
            raise ChunkFormatError("sr chunk must have an architecture and a weight section")
        return super().load([sections[0][: _ARCH.size], sections[1]], ndim)

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        factors, net = self._ready()
        siren = self.load(sections, len(shape))
        low = low_shape(shape, factors)
        if not _CHUNK.unpack(sections[0])[1]:
            return evaluate(siren, low_res_coords(low_res_positions(coords, tuple(shape), low), low), DECODE_BATCH)
        with torch.no_grad():
            state = net.prepare(_on_grid(siren, low, DECODE_BATCH))
            parts = [
                _predict(siren, net, state, tuple(shape), coords[i : i + DECODE_BATCH]).numpy()
                for i in range(0, coords.shape[0], DECODE_BATCH)
            ]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class _Sample:
    """Sample chunks with their targets; the stored network's bytes are shared by ``data_chunks``."""

    blocks: list[np.ndarray]
    targets: list[Target]
    data_chunks: int

    def share(self, blob: bytes) -> float:
        return len(blob) * 4 / 3 / max(self.data_chunks, 1)  # base64 in the metadata

    def less_shared(self, target: Target, blob: bytes) -> Target:
        """A chunk's target less its share of the stored network (what the final budgets give)."""
        if target.budget_bytes is None:
            return target
        return Target(budget_bytes=max(target.budget_bytes - math.ceil(self.share(blob)), 1))


def _predict(
    siren: Network, net: SRNet, state: GridState, shape: tuple[int, ...], coords: torch.Tensor
) -> torch.Tensor:
    """The chunk at ``coords``: the network reads ``state``, its :meth:`~SRNet.prepare` of the SIREN
    on the low-resolution grid, and corrects the SIREN at the queries themselves."""
    positions = low_res_positions(coords, shape, state.shape)
    return net.query(state, positions, siren(low_res_coords(positions, state.shape)).reshape(-1))


def _on_grid(siren: Network, low: tuple[int, ...], batch: int) -> torch.Tensor:
    """The SIREN on every low-resolution voxel, ``batch`` points at a time, without gradients."""
    return torch.from_numpy(evaluate(siren, grid(low), batch)).reshape(low)


@dataclass
class _Decoded:
    """A sample chunk as the network sees it: its SIREN on the low-resolution grid and at every
    full-resolution voxel (both fixed while the network trains), and the chunk itself."""

    grid_values: torch.Tensor
    base: torch.Tensor
    block: np.ndarray

    @classmethod
    def of(cls, siren: Network, factors: tuple[int, ...], block: np.ndarray) -> _Decoded:
        low = low_shape(block.shape, factors)
        positions = low_res_positions(grid(block.shape), block.shape, low)
        base = evaluate(siren, low_res_coords(positions, low), DECODE_BATCH)
        return cls(_on_grid(siren, low, DECODE_BATCH), torch.from_numpy(base), block)


def _backward_through_grid(
    siren: torch.nn.Module,
    net: SRNet,
    factors: tuple[int, ...],
    shape: tuple[int, ...],
    coords: torch.Tensor,
    values: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    batch: int,
) -> None:
    """Accumulate into the SIREN's gradients the loss of :func:`_predict` at ``coords``.

    The network reads the SIREN on the whole low-resolution grid, and at the queries, so the
    gradient flows back in two stages: through the network to those values, then from them through
    the SIREN ``batch`` points at a time. Exact, and the memory of a batch rather than of the grid
    (the SIREN's activations on every grid point were most of a chunk's fit memory)."""
    low = low_shape(shape, factors)
    positions = low_res_positions(coords, shape, low)
    points = torch.cat([grid(low), low_res_coords(positions, low)])
    values_at = torch.from_numpy(evaluate(siren, points, batch)).requires_grad_()
    grid_values, base = values_at[: math.prod(low)].reshape(low), values_at[math.prod(low) :]
    loss(net.query(net.prepare(grid_values), positions, base) - values).backward()
    upstream = values_at.grad.reshape(-1, 1)
    for i in range(0, points.shape[0], batch):
        siren(points[i : i + batch]).backward(upstream[i : i + batch])


def _net_tensors(net: SRNet) -> list[np.ndarray]:
    return [p.detach().numpy().astype(np.float32) for p in net.parameters()]


def _query_batch(
    block: np.ndarray, batch: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random full-resolution voxels of ``block``: their flat indices, [-1, 1] coordinates and values."""
    n = block.size
    idx = torch.randint(0, n, (batch,), generator=gen) if n > batch else torch.arange(n)
    coords = coords_at(idx, block.shape)
    values = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32)).reshape(-1)[idx]
    return idx, coords, values

