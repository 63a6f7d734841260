"""``sci``: SCI (Yang et al., AAAI 2023) inside a chunk: adaptive octree partitioning by spectrum
concentration, one funnel SIREN per leaf block, parameters allocated by |x| / D(x), deblocking.

Per chunk:

1. octree over the normalized block, D(x) (eq. 9) per node, flat nodes pruned;
2. leaves chosen by the integer program of eq. 8, 10-12 (HiGHS via ``scipy.optimize.milp``), at
   most ``a_max`` network leaves, no more than the budget can give ``min_leaf_params`` each, none
   smaller than the volume whose by-volume share of the budget is ``min_leaf_params``
   (``partition``: ``adaptive``, or the ablations ``equal`` = EP and ``none`` = NP);
3. the chunk's parameter budget (bytes * 8 / ``bits_per_param``) split over the leaves in
   proportion to |x|/D(x) (``allocation``: ``sci``; ablations ``by_size`` |x|, ``by_d`` 1/D,
   ``equal``); each leaf's funnel SIREN gets the widest width that fits its share;
4. all leaves fitted at once (:class:`~streamcomp.models.siren.BatchedFunnelSiren`, batched
   matmuls; leaves of similar width share a batch), then quantized *jointly*: one step scale per
   layer role across leaves, one entropy-coded stream, the step bisected to fill the budget;
5. deblocking strength chosen against the real chunk and stored (``deblock``: ``auto``, ``off``).

Payload: a layout section (deblock code, split bits, entropy-coded leaf widths with 0 for a flat
leaf, a float16 value per flat leaf) and the weight section.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from streamcomp.coding.entropy import decode_ints, encode_ints
from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors
from streamcomp.device import default_device
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import Method, Target, encode_only
from streamcomp.methods.inr import MAX_HIDDEN, QUALITY_REL_STEP, evaluate
from streamcomp.methods.sci import deblock as dbk
from streamcomp.methods.sci import partition as part
from streamcomp.methods.siren import SirenParams
from streamcomp.models.coords import grid
from streamcomp.models.siren import BatchedFunnelSiren, SirenWeights, funnel_widths, linear_shapes, mlp_params
from streamcomp.optim import Adam
from streamcomp.values import normalize

_LEN = struct.Struct("<H")
ALLOCATIONS = ("sci", "by_size", "by_d", "equal")
GROUP_SPREAD = 1.5  # leaves whose widths differ by less than this share one batched network
MIN_LEAF_BATCH = 256  # sampled points per leaf and step, at least (all of a smaller leaf)


def allocation_weights(sizes: np.ndarray, ds: np.ndarray, mode: str) -> np.ndarray:
    """Relative parameter shares of blocks of ``sizes`` voxels and concentrations ``ds``."""
    ds = np.maximum(ds, 1e-6)
    if mode == "sci":
        return sizes / ds
    if mode == "by_size":
        return sizes.astype(np.float64)
    if mode == "by_d":
        return 1.0 / ds
    if mode == "equal":
        return np.ones(len(sizes))
    raise InputError(f"allocation must be one of {ALLOCATIONS}, got {mode!r}")


@dataclass(frozen=True)
class SciParams(SirenParams):
    """SIREN's leaf network, plus the partition and the allocation of parameters over leaves.

    ``d_noise_floor``: measure D(x) only above the chunk's estimated noise floor
    (:func:`~streamcomp.methods.sci.partition.spectrum_concentration`), so that noise does not
    read as spectrum spread and near-flat noisy blocks neither draw parameters nor gain D by
    being split. Off by default (eq. 9 as the paper writes it): with the minimum leaf volume in
    place it did not help on real EM/CT crops (``benchmarks/results/sci_issue18.md``).
    ``min_leaf_params``: the smallest network a leaf may get, on average (eq. 11's a_max) and as
    a minimum leaf volume (:meth:`SciMethod.partition`).
    """

    levels: int = 3
    min_side: int = 4
    a_max: int = 50
    m: int = 1
    min_leaf_params: int = 1000
    flat_tol: float = 1e-3
    partition: str = "adaptive"
    allocation: str = "sci"
    deblock: str = "auto"
    d_noise_floor: bool = encode_only(False)


class SciMethod(Method):
    name = "sci"
    method_id = 3
    ndims = (3,)
    Params = SciParams

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        if p.partition not in part.PARTITIONERS:
            raise InputError(f"partition must be one of {sorted(part.PARTITIONERS)}, got {p.partition!r}")
        if p.allocation not in ALLOCATIONS:
            raise InputError(f"allocation must be one of {ALLOCATIONS}, got {p.allocation!r}")
        if p.deblock not in ("auto", "off"):
            raise InputError(f"deblock must be 'auto' or 'off', got {p.deblock!r}")
        if int(p.layers) < 3 or not 1 <= int(p.levels) <= 6 or int(p.min_side) < 1:
            raise InputError("sci needs layers >= 3, 1 <= levels <= 6 and min_side >= 1")

    # ---- sizes -------------------------------------------------------------------------------
    def widths(self, hidden: int) -> list[int]:
        return funnel_widths(hidden, int(self.params.layers), float(self.params.fr))

    def leaf_params(self, hidden: int, ndim: int = 3) -> int:
        return mlp_params(ndim, self.widths(hidden))

    def hidden_for(self, n_params: float, ndim: int = 3) -> int:
        hidden = 2
        while hidden < MAX_HIDDEN and self.leaf_params(hidden + 1, ndim) <= n_params:
            hidden += 1
        return hidden

    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        """One leaf of width 2: layout, side information, ~1.5 bits per weight."""
        side = 4 + 2 * 2 * int(self.params.layers) + 13
        return 1 + 8 + 16 + side + math.ceil(self.leaf_params(2, len(shape)) * 1.5 / 8)

    def chunk_weight(self, block: np.ndarray) -> float:
        """Cross-chunk budget weight for :func:`streamcomp.plan.assign_budgets`: |x| / D(x) under
        the ``sci`` allocation (the chunk normalized as the chunk layer will), else |x|."""
        if self.params.allocation != "sci":
            return float(block.size)
        x = normalize(block)[0]
        d = part.spectrum_concentration(x, int(self.params.m), self.noise_sigma(x))
        return float(block.size) / max(d, 1e-6)

    def noise_sigma(self, block: np.ndarray) -> float:
        """The noise std D(x) is measured above (0 without ``d_noise_floor``): one estimate per
        chunk, so every node of the octree is compared against the same floor."""
        return part.noise_sigma(block) if self.params.d_noise_floor else 0.0

    # ---- partition + allocation --------------------------------------------------------------
    def partition(self, block: np.ndarray, total_params: float) -> tuple[list[part.Node], list[int]]:
        """Leaves by the chosen partitioner: at most ``total_params / min_leaf_params`` network
        leaves (eq. 11), and none smaller than the volume whose by-volume share of the budget is
        ``min_leaf_params``. Eq. 11 bounds only the count, so the program (D grows as blocks
        shrink, even at the same content) split to that count with leaves too small for their
        networks, and lost to EP (``benchmarks/results/sci_issue18.md``)."""
        p = self.params
        nodes = part.build_tree(
            block, int(p.levels), int(p.min_side), int(p.m), float(p.flat_tol), self.noise_sigma(block)
        )
        min_params = max(int(p.min_leaf_params), 1)
        a_max = max(1, min(int(p.a_max), int(total_params // min_params)))
        min_size = math.ceil(min_params * block.size / max(total_params, 1.0))
        leaves = part.PARTITIONERS[p.partition](nodes, a_max, min_size)
        return nodes, leaves

    def allocate(self, nodes: list[part.Node], leaves: list[int], total_params: float, ndim: int) -> list[int]:
        """Width per leaf (0 for flat leaves) filling ``total_params`` in the chosen proportions."""
        net = [i for i in leaves if not nodes[i].flat]
        hidden = dict.fromkeys(leaves, 0)
        if not net:
            return [0] * len(leaves)
        sizes = np.array([nodes[i].size for i in net], np.float64)
        ds = np.array([nodes[i].d for i in net])
        w = allocation_weights(sizes, ds, self.params.allocation)
        targets = total_params * w / w.sum()
        hs = [self.hidden_for(t, ndim) for t in targets]
        used = sum(self.leaf_params(h, ndim) for h in hs)
        while True:  # hand what rounding left over to the leaves furthest below their share
            order = np.argsort([(self.leaf_params(h, ndim) - t) / t for h, t in zip(hs, targets, strict=True)])
            for k in order:
                extra = self.leaf_params(hs[k] + 1, ndim) - self.leaf_params(hs[k], ndim)
                if hs[k] < MAX_HIDDEN and used + extra <= total_params:
                    hs[k] += 1
                    used += extra
                    break
            else:
                break
        for i, h in zip(net, hs, strict=True):
            hidden[i] = h
        return [hidden[i] for i in leaves]

    # ---- fitting -----------------------------------------------------------------------------
    def fit_leaves(self, block: np.ndarray, boxes: list[part.Box], hiddens: list[int]) -> list[list[np.ndarray]]:
        """Fit one funnel SIREN per box (batched); each as FunnelSiren-ordered numpy tensors."""
        p = self.params
        device = default_device()
        torch.manual_seed(int(p.seed))
        order = sorted(range(len(boxes)), key=lambda i: hiddens[i])
        groups: list[list[int]] = []
        for i in order:
            if groups and hiddens[i] <= GROUP_SPREAD * hiddens[groups[-1][0]]:
                groups[-1].append(i)
            else:
                groups.append([i])
        out: list[list[np.ndarray]] = [[] for _ in boxes]
        for g, members in enumerate(groups):
            model = BatchedFunnelSiren(block.ndim, [self.widths(hiddens[i]) for i in members], float(p.w0))
            model = model.to(device)
            sizes = [math.prod(hi - lo for lo, hi in boxes[i]) for i in members]
            nmax = max(sizes)
            coords = torch.zeros(len(members), nmax, block.ndim)
            values = torch.zeros(len(members), nmax, 1)
            for r, i in enumerate(members):
                sub = block[_slices(boxes[i])]
                coords[r, : sizes[r]] = grid(sub.shape)
                values[r, : sizes[r], 0] = torch.from_numpy(np.ascontiguousarray(sub, np.float32)).reshape(-1)
            start_at_leaf_means(model, [float(block[_slices(boxes[i])].mean()) for i in members])
            coords, values = coords.to(device), values.to(device)
            counts = torch.tensor(sizes, device=device, dtype=torch.float32)[:, None]
            # Every leaf sees the same share of its voxels per step as a one-network chunk would
            # (batch / chunk size): a big leaf is not starved because many small leaves exist.
            b = min(nmax, max(MIN_LEAF_BATCH, math.ceil(int(p.batch) * nmax / block.size)))
            full = all(s <= b for s in sizes) and len(set(sizes)) == 1
            gen = torch.Generator(device=device).manual_seed(int(p.seed) + g)
            steps = int(p.steps)
            opt = Adam(model.parameters(), float(p.lr), steps=max(steps, 1), eta_min=float(p.lr) * 0.05)
            rows = torch.arange(len(members), device=device)[:, None]
            for _ in range(steps):
                if full:
                    x, y = coords, values
                else:
                    idx = (torch.rand(len(members), b, device=device, generator=gen) * counts).long()
                    x, y = coords[rows, idx], values[rows, idx]
                loss = ((model(x) - y) ** 2).mean(dim=(1, 2)).sum()
                opt.zero_grad()
                loss.backward()
                opt.step()
            model = model.cpu()
            for r, i in enumerate(members):
                out[i] = model.network_tensors(r)
        return out

    # ---- payload -----------------------------------------------------------------------------
    @staticmethod
    def _roles(leaf_tensors: list[list[np.ndarray]]) -> list[np.ndarray]:
        """Tensor ``k`` of every network leaf, flattened and concatenated: one scale per role."""
        nets = [t for t in leaf_tensors if t]
        if not nets:
            return []
        return [np.concatenate([t[k].reshape(-1) for t in nets]) for k in range(len(nets[0]))]

    def _layout(self, shape, boxes_split: bytes, hiddens: list[int], flat_values: list[float], code: int) -> bytes:
        hs = encode_ints(np.array(hiddens, np.int32))
        flats = np.array(flat_values, np.float16).tobytes()
        return bytes([code]) + boxes_split + _LEN.pack(len(hs)) + hs + flats

    def _encode_with(self, block: np.ndarray, total_params: float, budget: int | None) -> tuple[list[bytes], float]:
        """Partition, allocate, fit, quantize (to ``budget`` bytes, or finely when None), deblock."""
        p = self.params
        ndim = block.ndim
        nodes, leaves = self.partition(block, total_params)
        hiddens = self.allocate(nodes, leaves, total_params, ndim)
        boxes = [nodes[i].box for i in leaves]
        splits = part.encode_splits(block.shape, int(p.levels), int(p.min_side), boxes)
        flat_values = [float(block[nodes[i].slices].mean()) for i, h in zip(leaves, hiddens, strict=True) if h == 0]
        net_idx = [k for k, h in enumerate(hiddens) if h > 0]
        fitted = self.fit_leaves(block, [boxes[k] for k in net_idx], [hiddens[k] for k in net_idx]) if net_idx else []
        roles = self._roles(fitted)
        layout = self._layout(block.shape, splits, hiddens, flat_values, 0)
        if not roles:
            weights = b""
        elif budget is not None:
            weights = pack_to_budget(roles, max(budget - len(layout), 1))
        else:
            weights = pack_tensors(roles, QUALITY_REL_STEP)
        raw = self._decode_raw(boxes, hiddens, flat_values, weights, block.shape)
        code = 0
        if p.deblock == "auto":
            code = dbk.best_strength(raw, block, boxes)
        out = dbk.deblock(raw, boxes, dbk.strength_of(code)) if code else raw
        layout = self._layout(block.shape, splits, hiddens, flat_values, code)
        return [layout, weights], float(np.mean((out - block) ** 2))

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        bpp = float(self.params.bits_per_param)
        if target.budget_bytes is not None:
            layout_guess = 24 + 2 * min(int(self.params.a_max), 64)
            total = max(target.budget_bytes - layout_guess, 1) * 8 / bpp
            sections, _ = self._encode_with(block, total, target.budget_bytes)
            return sections
        total = max(block.size / 64, self.leaf_params(4, block.ndim))
        while True:
            sections, err = self._encode_with(block, total, None)
            if err <= target.max_mse or total * 2 > block.size:
                return sections
            total *= 1.5

    def _parse(self, sections: list[bytes], shape: tuple[int, ...]):
        if len(sections) != 2 or not sections[0]:
            raise ChunkFormatError("sci chunk must have a layout and a weight section")
        layout, weights = sections
        p = self.params
        code = layout[0]
        boxes, used = part.decode_splits(layout[1:], shape, int(p.levels), int(p.min_side))
        pos = 1 + used
        if len(layout) < pos + _LEN.size:
            raise ChunkFormatError("sci layout section is truncated")
        (n_hs,) = _LEN.unpack_from(layout, pos)
        pos += _LEN.size
        hiddens = [int(h) for h in decode_ints(layout[pos : pos + n_hs], len(boxes))]
        pos += n_hs
        n_flat = sum(h == 0 for h in hiddens)
        if len(layout) != pos + 2 * n_flat or any(not 0 <= h <= MAX_HIDDEN for h in hiddens):
            raise ChunkFormatError("sci layout section does not match its leaf list")
        flats = np.frombuffer(layout[pos:], np.float16).astype(np.float32).tolist()
        return code, boxes, hiddens, flats, weights

    def _leaf_models(self, boxes, hiddens, weights: bytes, ndim: int) -> list[SirenWeights | None]:
        """Each leaf's network (None for a flat leaf); the stored weights are grouped by role
        (every network's first weight, then every first bias, ...)."""
        per_net = [linear_shapes(ndim, self.widths(h)) for h in hiddens if h]
        if not per_net:
            return [None] * len(hiddens)
        sizes = [[math.prod(s) for s in shapes] for shapes in per_net]
        role_sizes = [sum(s[k] for s in sizes) for k in range(len(sizes[0]))]
        roles = unpack_tensors(weights, [(n,) for n in role_sizes])
        offsets = [0] * len(roles)
        live = []
        for shapes, sz in zip(per_net, sizes, strict=True):
            tensors = []
            for k, (shape, n) in enumerate(zip(shapes, sz, strict=True)):
                tensors.append(roles[k][offsets[k] : offsets[k] + n].reshape(shape))
                offsets[k] += n
            live.append(SirenWeights(tensors, float(self.params.w0)))
        nets = iter(live)
        return [next(nets) if h else None for h in hiddens]

    def _decode_raw(self, boxes, hiddens, flats, weights, shape) -> np.ndarray:
        out = np.zeros(shape, np.float32)
        nets = self._leaf_models(boxes, hiddens, weights, len(shape))
        flat_iter = iter(flats)
        for box, net in zip(boxes, nets, strict=True):
            sl = tuple(slice(lo, hi) for lo, hi in box)
            sub_shape = tuple(hi - lo for lo, hi in box)
            if net is None:
                out[sl] = next(flat_iter)
            else:
                out[sl] = evaluate(net, grid(sub_shape)).reshape(sub_shape)
        return out

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        code, boxes, hiddens, flats, weights = self._parse(sections, shape)
        raw = self._decode_raw(boxes, hiddens, flats, weights, shape)
        return dbk.deblock(raw, boxes, dbk.strength_of(code)) if code else raw

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        """Values at arbitrary coordinates (each from the leaf that holds it; no deblocking)."""
        _, boxes, hiddens, flats, weights = self._parse(sections, shape)
        nets = self._leaf_models(boxes, hiddens, weights, len(shape))
        c = coords.float()
        n = torch.tensor(shape, dtype=torch.float32)
        vox = (c + 1) / 2 * (n - 1)  # voxel position along each axis
        idx = torch.clamp(torch.round(vox), torch.zeros_like(n), n - 1).long()
        out = torch.zeros(c.shape[0])
        flat_iter = iter(flats)
        for box, net in zip(boxes, nets, strict=True):
            lo = torch.tensor([b[0] for b in box])
            hi = torch.tensor([b[1] for b in box])
            inside = ((idx >= lo) & (idx < hi)).all(dim=1)
            value = next(flat_iter) if net is None else None
            if not inside.any():
                continue
            if net is None:
                out[inside] = value
                continue
            span = (hi - lo - 1).float()
            local = torch.where(span > 0, -1 + 2 * (vox[inside] - lo) / span.clamp(min=1), torch.zeros(()))
            out[inside] = torch.from_numpy(evaluate(net, local))
        return out.numpy()


def start_at_leaf_means(model: BatchedFunnelSiren, means: list[float]) -> None:
    """Set each network's output bias to its leaf's mean before fitting.

    A narrow leaf network (a few dozen weights) cannot move its output by more than about
    ``lr * steps`` in a short fit, so a near-flat leaf far from 0 (air in CT at -0.9) used to
    decode tens of dB below a constant; starting at the mean leaves the fit only the variation.
    Encode-side only: the bias is stored like every other weight.
    """
    with torch.no_grad():
        bias = model.biases[-1]
        bias[:, 0] = torch.tensor(means, dtype=bias.dtype, device=bias.device)


def _slices(box: part.Box) -> tuple[slice, ...]:
    return tuple(slice(lo, hi) for lo, hi in box)
