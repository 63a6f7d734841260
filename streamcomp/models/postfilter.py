"""A decoder-side post-filter for wavelet-coded chunks: a small residual CNN trained once per array.

Why: a dead-zone quantized wavelet leaves ringing along edges and flattened texture whose shape
depends on the data, not on the chunk, so a network trained on the array's own sample (decoded
chunks against their originals) removes part of it at no cost in per-chunk bytes. Video codecs do
the same in the loop (HEVC's SAO, VVC's ALF) and overfitted neural codecs after it (Cool-chic's
post-filter); here it runs after the wavelet decode, and a chunk's section says whether it applies.

Inputs are normalised by the chunk's own mean and spread, and the correction is scaled by the
chunk's quantizer step (the artefacts grow with it), so one network serves every rate of an array.
Serial-section EM, coded per section, gets in-plane kernels (1x3x3); volumes coded in 3D get 3x3x3.
A fit starts from a filter of its shape trained on other volumes (``starts/``, see
:mod:`streamcomp.methods.starts`), which its few sample chunks then tune.
The filter is float arithmetic: unlike the entropy model it needs no bit-exact evaluation, since
nothing is decoded from its output.
"""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from streamcomp.errors import ChunkFormatError
from streamcomp.models.start_points import read_start
from streamcomp.optim import Adam

_HEAD = struct.Struct("<4sBBB")  # magic, version, kernel depth (1 or 3), channels
_MAGIC = b"SCPF"
# Version 1 stored every parameter in float16. Version 2 stores each layer as float16 scales (one
# per output channel), int8 weights and float16 biases: half the bytes, for a gain within a
# hundredth of a dB of float16's where it was measured (the README's post-filter section).
_VERSION = 2
_READS = (1, 2)
_INT8 = 127
LAYERS = 3
# Voxels filtered at a time (each activation is 8 channels of them, 32 MiB): memory follows the
# slab, not the chunk. A default 64x128x128 chunk is one slab: in 16-section slabs the halo
# sections recomputed at every boundary cost a fifth of the filter's decode time.
SLAB_VOXELS = 1 << 20
_HALO = LAYERS  # each 3-deep layer reaches one section further
PATCH = (8, 32, 32)  # many small patches train faster than few large ones at equal voxels
BATCH = 4
Scalar = float | torch.Tensor


def _native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). There :func:`apply` runs
    the filter's convolutions in bfloat16; elsewhere bfloat16 is emulated, slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


BFLOAT16 = _native_bfloat16()


class PostFilter(nn.Module):
    """conv - LeakyReLU - conv - LeakyReLU - conv, replicate-padded; the last layer starts at zero,
    so an untrained filter changes nothing."""

    def __init__(self, depth: int = 3, channels: int = 8) -> None:
        super().__init__()
        if depth not in (1, 3) or not 1 <= channels <= 64:
            raise ValueError(f"post-filter takes kernel depth 1 or 3 and 1-64 channels, got {depth}, {channels}")
        self.depth, self.channels = depth, channels
        widths = [1] + [channels] * (LAYERS - 1) + [1]
        # Unpadded: forward() pads each layer's input by replicating its faces.
        self.convs = nn.ModuleList(nn.Conv3d(a, b, (depth, 3, 3)) for a, b in itertools.pairwise(widths))
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, ends: tuple[bool, bool] = (True, True)) -> torch.Tensor:
        """The correction for ``x``; ``ends``: see :meth:`correct`."""
        # Activations are channels-last: oneDNN's convolutions with few channels run 2.5-4x faster
        # so than on channel planes (bfloat16 and float32 alike).
        if self.depth == 3:
            x = x.contiguous(memory_format=torch.channels_last_3d)
            for i, conv in enumerate(self.convs):
                x = _conv3d(conv, replicate_pad(x, 3, ends), activate=i < LAYERS - 1)
            return x
        # In-plane kernels convolve each section as an image: the same arithmetic, and training runs
        # 1.4x faster so than through 3D convolutions with one-deep kernels (decoding alike).
        n, _, d, h, w = x.shape
        y = x.transpose(1, 2).reshape(n * d, 1, h, w).contiguous(memory_format=torch.channels_last)
        for i, conv in enumerate(self.convs):
            y = _conv2d(conv, replicate_pad(y, 2), activate=i < LAYERS - 1)
        return y.reshape(n, d, 1, h, w).transpose(1, 2)

    def correct(
        self, decoded: torch.Tensor, mean: Scalar, spread: Scalar, step: Scalar, ends: tuple[bool, bool] = (True, True)
    ) -> torch.Tensor:
        """``decoded`` (N, 1, D, H, W) plus the filter's correction (per volume: scalars, or (N, 1, 1, 1, 1)).
        ``ends`` say whether its first and last sections are the volume's faces; a 3x3x3 filter reads
        the sections beyond an inner face (a slab's neighbours) and returns :data:`LAYERS` fewer there."""
        trim = LAYERS if self.depth == 3 else 0
        inner = decoded[:, :, (0 if ends[0] else trim) : decoded.shape[2] - (0 if ends[1] else trim)]
        return inner + step * self((decoded - mean) / spread, ends)

    def to_bytes(self) -> bytes:
        """The filter as stored (version 2): per layer, float16 scales, int8 weights, float16 biases."""
        parts = [_HEAD.pack(_MAGIC, _VERSION, self.depth, self.channels)]
        for conv in self.convs:
            w = conv.weight.detach().reshape(conv.out_channels, -1).numpy()
            scale = (np.abs(w).max(axis=1) / _INT8).astype("<f2")
            safe = np.where(scale > 0, scale.astype(np.float32), 1.0)[:, None]
            weights = np.clip(np.round(w / safe), -_INT8, _INT8).astype(np.int8)
            parts += [scale.tobytes(), weights.tobytes(), conv.bias.detach().numpy().astype("<f2").tobytes()]
        return b"".join(parts)

    def stored(self) -> PostFilter:
        """The filter a decoder rebuilds from :meth:`to_bytes`: what the encoder must judge and flag with."""
        return PostFilter.from_bytes(self.to_bytes())

    @classmethod
    def from_bytes(cls, blob: bytes) -> PostFilter:
        if len(blob) < _HEAD.size:
            raise ChunkFormatError("post-filter state is shorter than its header")
        magic, version, depth, channels = _HEAD.unpack_from(blob, 0)
        if magic != _MAGIC or version not in _READS:
            raise ChunkFormatError(
                f"post-filter state has magic {magic!r} version {version}: not a filter this build reads "
                f"(it reads versions {_READS}); upgrade streamcomp to read this array"
            )
        try:
            net = cls(depth, channels)
        except ValueError as e:
            raise ChunkFormatError(f"post-filter state is invalid: {e}") from None
        count = sum(p.numel() for p in net.parameters())
        expected = 2 * count if version == 1 else sum(c.weight.numel() + 4 * c.out_channels for c in net.convs)
        if len(blob) != _HEAD.size + expected:
            raise ChunkFormatError(
                f"post-filter state holds {len(blob) - _HEAD.size} bytes of weights, expected {expected}"
            )
        if version == 1:
            values = np.frombuffer(blob, "<f2", count, _HEAD.size).astype(np.float32)
        else:
            values = _int8_values(net, blob)
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(torch.from_numpy(values), net.parameters())
        return net.eval()


def _native(x: torch.Tensor) -> torch.dtype | None:
    """The dtype oneDNN computes ``x`` in when called directly, or None where it is not (a GPU):
    float32 on CPU, and at inference under CPU autocast its dtype (bfloat16: the decode), which
    the calls below then cast ``x`` and the weights to, as autocast would. Training under autocast
    keeps autocast's own path."""
    if x.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    if torch.is_autocast_enabled("cpu"):
        return None if torch.is_grad_enabled() else torch.get_autocast_dtype("cpu")
    return torch.float32 if x.dtype == torch.float32 else None


def _activated(y: torch.Tensor, activate: bool) -> torch.Tensor:
    if not activate:
        return y
    return nn.functional.leaky_relu(y, 0.1) if y.requires_grad else nn.functional.leaky_relu_(y, 0.1)


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activate: bool) -> torch.Tensor:
    """An unpadded convolution (2D or 3D, channels-last in and out) through oneDNN, and its
    LeakyReLU where ``activate``: at inference fused into the convolution, which writes its output
    once instead of twice (the separate activation took a fifth of a 3x3x3 filter's decode time);
    training keeps the convolution with a backward."""
    dims = x.dim() - 2
    if torch.is_grad_enabled():
        y = torch.mkldnn_convolution(x, weight, bias, (0,) * dims, (1,) * dims, (1,) * dims, 1)
    else:
        attr, scalars = ("leaky_relu", [0.1]) if activate else ("none", [])
        fused = torch.ops.mkldnn._convolution_pointwise
        y = fused(x, weight, bias, [0] * dims, [1] * dims, [1] * dims, 1, attr, scalars, "")
        activate = False
    last = torch.channels_last_3d if dims == 3 else torch.channels_last
    return _activated(y.contiguous(memory_format=last), activate)


def _conv3d(conv: nn.Conv3d, x: torch.Tensor, activate: bool) -> torch.Tensor:
    """``conv(x)``, and its LeakyReLU where ``activate``, through oneDNN on CPU (:func:`_native`),
    channels-last in and out. ``F.conv3d`` sends a one-channel float32 input with fewer than 20480
    (channel x section x row) planes to ATen's unvectorised kernel, a heuristic meant for small
    images: the filter's first layer ran 4x slower there, and its plane-major output made the next
    two layers 2.5x slower too. A layer with one input or one output channel runs at inference as
    2D convolutions (:func:`_from_one_channel`, :func:`_to_one_channel`): oneDNN's 3D kernels are
    slow for a single channel (in float32 these layers took 36 and 50 ms a Mvoxel, against 59 for
    the middle one's eight times their multiplications; now 27 and 28; the first layer in bfloat16
    1.7x faster so). Training keeps the 3D ones, so that a fit trains as it did."""
    dtype = _native(x)
    if dtype is None:
        return _activated(conv(x), activate)
    weight, bias, x = conv.weight.to(dtype), conv.bias.to(dtype), x.to(dtype)
    if _by_planes(conv):
        return _one_channel(conv, weight, bias, x, activate)
    return _onednn(x, weight, bias, activate)


def _conv2d(conv: nn.Conv3d, x: torch.Tensor, activate: bool) -> torch.Tensor:
    """An in-plane layer on sections as images (N, C, H, W, channels-last), and its LeakyReLU
    where ``activate``; at inference through oneDNN as :func:`_conv3d` runs them, its one-channel
    layers with rows taking the place of sections (1x3 kernels over three rows as channels:
    1.4-1.6x faster than a 3x3 one on one channel)."""
    dtype = _native(x)
    if dtype is None or torch.is_grad_enabled():
        return _activated(nn.functional.conv2d(x, conv.weight[:, :, 0], conv.bias), activate)
    weight, bias, x = conv.weight.to(dtype), conv.bias.to(dtype), x.to(dtype)
    if _by_planes(conv):
        return _one_channel(conv, weight.transpose(2, 3), bias, x.unsqueeze(3), activate).squeeze(3)
    return _onednn(x, weight[:, :, 0], bias, activate)


def _by_planes(conv: nn.Conv3d) -> bool:
    """Whether a layer runs as planes of 2D convolutions: one input or output channel, at inference."""
    return (conv.in_channels == 1 or conv.out_channels == 1) and not torch.is_grad_enabled()


def _one_channel(
    conv: nn.Conv3d, weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, activate: bool
) -> torch.Tensor:
    """``conv``'s one-channel layer by ``weight`` (its kernel laid out as ``x``'s axes) on ``x``."""
    if conv.in_channels == 1:
        return _from_one_channel(weight, bias, x, activate)
    return _activated(_to_one_channel(weight, bias, x), activate)


def _from_one_channel(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor, activate: bool) -> torch.Tensor:
    """A convolution of one channel, ``x`` (N, 1, S, A, B), by ``weight`` (C, 1, 3, a, b), and its
    LeakyReLU where ``activate``, as a 2D one over (A, B) whose three input channels are each slice
    along S and the two after it."""
    n, _, depth, height, width = x.shape
    v = x[:, 0]
    slices = torch.stack([v[:, dz : depth - 2 + dz] for dz in range(3)], dim=-1)  # (N, S-2, A, B, 3)
    planes = slices.reshape(-1, height, width, 3).permute(0, 3, 1, 2)  # channels-last 2D
    y = _onednn(planes, weight[:, 0], bias, activate)  # (N * (S-2), C, A', B')
    return y.permute(0, 2, 3, 1).reshape(n, depth - 2, *y.shape[2:], -1).permute(0, 4, 1, 2, 3)


def _to_one_channel(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A convolution of ``x`` (N, C, S, A, B, channels-last) by ``weight`` (1, C, 3, a, b) as 2D ones
    of each slice along S to three planes, one per kernel tap along S, summed across slices."""
    n, channels, depth, height, width = x.shape
    planes = x.permute(0, 2, 1, 3, 4).reshape(n * depth, channels, height, width)  # a view, channels-last
    y = _onednn(planes, weight[0].transpose(0, 1).contiguous(), None, False)
    y = y.reshape(n, depth, 3, *y.shape[2:])
    out = y[:, : depth - 2, 0] + y[:, 1 : depth - 1, 1] + y[:, 2:, 2] + bias
    return out.unsqueeze(1).contiguous(memory_format=torch.channels_last_3d)


def replicate_pad(x: torch.Tensor, axes: int, ends: tuple[bool, bool] = (True, True)) -> torch.Tensor:
    """``x`` (4D or 5D) padded by one voxel at both ends of its last ``axes`` (2 or 3) axes,
    repeating the faces, in ``x``'s memory format; the first of those axes only at the ``ends``
    that are true. Inference copies the faces itself:
    ``F.pad(mode="replicate")`` computes the same 3-4x slower on CPU in bfloat16, where it took a
    quarter of the filter's decode time; training keeps F.pad, whose backward is faster than
    autograd through the copies."""
    pads = [(int(ends[0]), int(ends[1]))] + [(1, 1)] * (axes - 1)
    if x.requires_grad:
        flat = tuple(side for pair in reversed(pads) for side in pair)  # F.pad lists the last axis first
        padded = nn.functional.pad(x.reshape(-1, *x.shape[-axes - 1 :]), flat, mode="replicate")
        return padded.reshape(*x.shape[:-axes], *padded.shape[-axes:])
    last = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
    layout = last if x.is_contiguous(memory_format=last) else torch.contiguous_format
    sizes = x.shape[-axes:]
    shape = (*x.shape[:-axes], *(n + a + b for n, (a, b) in zip(sizes, pads, strict=True)))
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=layout)
    core = [slice(a, a + n) for n, (a, _) in zip(sizes, pads, strict=True)]
    y[(..., *core)] = x
    for k in reversed(range(axes)):  # the last axis first; each pass fills its faces in full along the axes done
        (a, b), n = pads[k], sizes[k]
        head, whole = core[:k], [slice(None)] * (axes - 1 - k)
        if a:
            y[(..., *head, 0, *whole)] = y[(..., *head, a, *whole)]
        if b:
            y[(..., *head, a + n, *whole)] = y[(..., *head, a + n - 1, *whole)]
    return y


def _int8_values(net: PostFilter, blob: bytes) -> np.ndarray:
    """The parameters of a version-2 state, in ``net.parameters()`` order (weight, bias per layer)."""
    pos, values = _HEAD.size, []
    for conv in net.convs:
        out, size = conv.out_channels, conv.weight[0].numel()
        scale = np.frombuffer(blob, "<f2", out, pos).astype(np.float32)
        weights = np.frombuffer(blob, np.int8, out * size, pos + 2 * out).reshape(out, size)
        bias = np.frombuffer(blob, "<f2", out, pos + 2 * out + out * size).astype(np.float32)
        values += [(weights * scale[:, None]).reshape(-1), bias]
        pos += 4 * out + out * size
    return np.concatenate(values).astype(np.float32)


def start_name(depth: int, channels: int) -> str:
    """The file name of the starting point for a filter of this shape."""
    return f"postfilter_{depth}x3x3_{channels}ch.bin"


def load_start(where: str, depth: int, channels: int) -> PostFilter | None:
    """The filter a fit starts from for this shape: the package's ("shipped"), one in the folder
    ``where``, or none ("none", or no start of this shape there: the fit then starts from zeros)."""
    blob = read_start(where, start_name(depth, channels))
    return None if blob is None else PostFilter.from_bytes(blob)


def _stats(decoded: np.ndarray, step: float) -> tuple[float, float]:
    """The chunk's mean and spread (its standard deviation, at least one step: flat chunks stay flat)."""
    return float(decoded.mean()), float(decoded.std()) + step


def apply(net: PostFilter, decoded: np.ndarray, step: float) -> np.ndarray:
    """``decoded`` (a chunk, 3D or 4D: leading axes are filtered as separate volumes) filtered, in
    slabs of at most :data:`SLAB_VOXELS` voxels with enough neighbours that the result equals a
    whole-chunk pass; in bfloat16 where the CPU computes it natively (:data:`BFLOAT16`)."""
    mean, spread = _stats(decoded, step)
    volumes = torch.from_numpy(np.ascontiguousarray(decoded, np.float32)).reshape(-1, 1, *decoded.shape[-3:])
    depth = volumes.shape[2]
    halo = _HALO if net.depth == 3 else 0
    slab = max(SLAB_VOXELS // (volumes.shape[0] * volumes.shape[3] * volumes.shape[4]), 1)  # sections
    out = torch.empty_like(volumes)
    # bfloat16 convolutions where the CPU has them: the filter runs twice as fast and its correction
    # moves by 0.0002 of a quantizer step on average (0.014 at most) from float32's.
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=BFLOAT16):
        for z in range(0, depth, slab):
            lo, hi = max(z - halo, 0), min(z + slab + halo, depth)
            ends = (lo == 0, hi == depth)  # the neighbours beyond an inner face are read, not filtered
            done = net.correct(volumes[:, :, lo:hi], mean, spread, step, ends)
            first = lo if ends[0] else lo + halo
            out[:, :, z : min(z + slab, depth)] = done[:, :, z - first : z - first + min(slab, depth - z)]
    return out.reshape(decoded.shape).numpy()


@dataclass(frozen=True)
class Pair:
    """A sample chunk as decoded at its rate, its original and its quantizer step."""

    decoded: np.ndarray
    original: np.ndarray
    step: float


def fit(
    pairs: list[Pair], depth: int, channels: int, steps: int, lr: float, seed: int, start: PostFilter | None = None
) -> PostFilter:
    """Train on random patches of ``pairs`` (MSE in units of each chunk's step, so coarse and fine
    chunks weigh alike), from ``start``'s weights when given (else the last layer at zero); the
    patch is the chunk where the chunk is smaller, and a step's patches share the smallest of
    their shapes, so that they run as one batch (much faster than one by one, for 3x3x3 kernels
    above all)."""
    if not pairs:
        raise ValueError("the post-filter needs at least one sample chunk")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = PostFilter(depth, channels)
    if start is not None:
        if (start.depth, start.channels) != (depth, channels):
            raise ValueError(
                f"a {start.depth}-deep, {start.channels}-channel start cannot seed a {depth}-deep, "
                f"{channels}-channel filter"
            )
        net.load_state_dict(start.state_dict())
    volumes = []
    for p in pairs:
        mean, spread = _stats(p.decoded, p.step)
        shape = (-1, 1, *p.decoded.shape[-3:])
        volumes.append((torch.from_numpy(np.asarray(p.decoded, np.float32).reshape(shape)),
                        torch.from_numpy(np.asarray(p.original, np.float32).reshape(shape)), mean, spread, p.step))
    # A constant rate: the filter is far from converged within any affordable budget, and a
    # decaying rate only slows it (measured on the head CT).
    opt = Adam(net.parameters(), lr)
    for _ in range(steps):
        picks = [volumes[rng.integers(len(volumes))] for _ in range(BATCH)]
        size = [min(p, *(v[0].shape[2 + i] for v in picks)) for i, p in enumerate(PATCH)]
        decoded, original, norms = [], [], []
        for dec, orig, mean, spread, step in picks:
            v = rng.integers(dec.shape[0])
            corner = [rng.integers(0, s - p + 1) for s, p in zip(dec.shape[2:], size, strict=True)]
            window = (v, slice(None), *(slice(c, c + p) for c, p in zip(corner, size, strict=True)))
            decoded.append(dec[window])
            original.append(orig[window])
            norms.append((mean, spread, step))
        mean, spread, step = torch.tensor(norms, dtype=torch.float32).T.reshape(3, -1, 1, 1, 1, 1)
        y = net.correct(torch.stack(decoded), mean, spread, step)
        loss = (((y - torch.stack(original)) / step) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()
