"""``unicompress`` (the default method): one shared conditional INR for all chunks, distilled to a student.

Shared state (fit once on a sample of the array's chunks, stored in the codec configuration):
the student's extractor, fusion, codebook and INR, quantized and entropy coded, plus a learned
categorical prior over codebook indices. A chunk's payload has three sections: its codebook
indices (one per ``patch``, 2x8x8 voxels by default, coded under that prior), its latent grid (the student's amortized
guess, optionally refined by gradient steps with the student frozen; quantized and entropy coded),
and the wavelet-coded residual of the student's prediction (:mod:`streamcomp.coding.residual`). The
encoder tries that payload and the residual alone (empty index and latent sections), and keeps
the one with the lowest error; under an error target, the fewest bytes. Encoding never
retrains the shared network. With ``modes=auto``, held-out sample chunks decide at fit time
whether the student pays for its shared state at the run's rate; when it does not, it is dropped
and nothing is stored.

Why the residual, and why it is the default alone (``modes=residual``): the student's prediction
saturates (decoder capacity), and at the same bytes a wavelet code of the chunk beats it, so the
search kept the residual alone and the student was dropped on every volume measured
(``benchmarks/results/unicompress``); fitting it by default only spent time on work thrown away.

``network=teacher`` stores and codes with the teacher instead (no distillation; its extractor reads
the wavelet prior at encode time): the paper's teacher measured at equal bytes against its student.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from streamcomp.coding.quant import pack_tensors, pack_to_budget, unpack_tensors
from streamcomp.coding.residual import decode_residual, encode_residual, min_residual_bytes
from streamcomp.device import single_thread
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.methods.base import FitTargets, Method, Target
from streamcomp.methods.unicompress.bitstream import code_indices, decode_indices, padded_shape, split_tiles
from streamcomp.methods.unicompress.model import (
    STRIDE,
    TILE,
    UniCompressNet,
    latent_shape,
    parse_patch,
    token_grid,
    tokens_to_grid,
)
from streamcomp.methods.unicompress.params import UniCompressParams
from streamcomp.methods.unicompress.train import (
    build_student,
    build_teacher,
    cut_tiles,
    distill_student,
    make_tileset,
    pretrain_extractor,
    prior_names,
    refine_latent,
    tile_components,
    train_teacher,
)

SHARED_REL_STEP = 2.0**-6
DECODE_BOX = 1 << 16
DECODE_ROWS = 4
QUALITY_LATENT_REL_STEP = 2.0**-3  # latent step under an error target; the residual meets the target
HELD_OUT = 8  # sample chunks kept out of the fit to judge whether the student pays for its bytes


class UniCompressMethod(Method):
    name = "unicompress"
    method_id = 5
    # Larger chunks give the wavelet residual longer transforms and richer contexts at the same
    # rate (benchmarks/results/REPORT.md), and one still decodes quickly.
    default_chunks = {3: (32, 128, 128)}
    Params = UniCompressParams
    payload_sections = 3  # codebook indices, latent grid, residual

    def __init__(self, **params) -> None:
        super().__init__(**params)
        # The network chunks are coded with: the distilled student, or (to measure the paper's
        # teacher at equal bytes) the teacher itself, stored in the student's place.
        self.net: UniCompressNet | None = None
        self.index_probs: np.ndarray | None = None
        self._blob: bytes | None = None
        if not self.needs_fit():
            self.load_shared_state(b"")

    # ---- shared state -------------------------------------------------------------------------
    def needs_fit(self) -> bool:
        return self.params.modes != "residual"

    def fit_note(self) -> str:
        return (
            "chunks are coded by the wavelet residual alone, no network is fitted (modes=residual, the default; "
            "modes=auto fits the student and keeps it where it pays)"
        )

    def fit_shared(self, samples: list[np.ndarray], targets: FitTargets | None = None) -> list[str]:
        """Fit teacher and student; nothing to fit when chunks are coded by their residual alone.

        With ``targets`` (the pipeline passes them) and ``modes=auto``, up to :data:`HELD_OUT`
        sample chunks are kept out of the fit and encoded both ways at this run's rate: with the
        student (plus residual), and by the residual alone given the bytes the shared state would
        have taken. When the student does not pay for its shared state, it is dropped: the array
        stores no shared state and every chunk is coded by its residual (``net`` stays None).
        """
        if not self.needs_fit():
            self.load_shared_state(b"")
            return []
        judge = targets is not None and self.params.modes == "auto"
        if judge and not self.params.save_teacher and self._no_room_for_inr(samples, targets):
            return [self._drop_inr(
                f"the rate leaves no room next to the {self.params.network}'s shared state, so it was not fitted"
            )]
        held = min(HELD_OUT, len(samples) // 4) if judge else 0
        train = samples[: len(samples) - held]
        with single_thread():
            self._fit_shared(train)
            if judge:
                pick = range(len(train), len(samples)) if held else range(len(samples))
                blocks = [samples[i] for i in pick]
                return self._judge_inr(blocks, [targets.targets[i] for i in pick], targets.data_chunks)
        return []

    def _judge_inr(self, blocks: list[np.ndarray], targets: list[Target], data_chunks: int) -> list[str]:
        """Keep the student only if, on ``blocks``, it beats the residual alone given its bytes.

        ``targets`` are planned without shared state (:meth:`shared_state_size_estimate` is 0), so
        with the student each chunk has its share of the shared state's bytes less.
        """
        per_chunk = math.ceil(len(self._blob) * 4 / 3) / max(data_chunks, 1)  # base64 in the metadata
        with_inr = alone = 0.0
        for block, target in zip(blocks, targets, strict=True):
            alone += self._residual_candidate(block, target)[0]
            if target.budget_bytes is None:
                with_inr += per_chunk + min(cost for cost, _ in self._candidates(block, target))
            else:
                less = Target(budget_bytes=max(target.budget_bytes - math.ceil(per_chunk), 1))
                with_inr += min(cost for cost, _ in self._candidates(block, less))
        if with_inr >= alone:
            what = "MSE" if targets[0].budget_bytes is not None else "bytes"
            return [self._drop_inr(
                f"on {len(blocks)} held-out chunks the {self.params.network}'s prediction did not pay for its "
                f"shared state ({what} {with_inr:.4g} with it, {alone:.4g} without)"
            )]
        return []

    def _no_room_for_inr(self, samples: list[np.ndarray], targets: FitTargets) -> bool:
        """Whether no sample's budget, less its share of the student's smallest shared state, can
        hold the smallest payload that uses the student: then fitting it would be wasted."""
        if targets.targets[0].budget_bytes is None:
            return False
        per_chunk = math.ceil(self._net_state_bytes() * 4 / 3 / max(targets.data_chunks, 1))
        return all(
            t.budget_bytes - per_chunk < self._min_inr_payload(b.shape)
            for b, t in zip(samples, targets.targets, strict=True)
        )

    def _drop_inr(self, why: str) -> str:
        """Forget the network; the note says why (the pipeline logs it on the driver)."""
        self.load_shared_state(b"")
        return f"{why}; every chunk is coded by its wavelet residual and no shared state is stored"

    def _fit_shared(self, samples: list[np.ndarray]) -> None:
        p = self.params
        if not samples:
            raise InputError("unicompress needs at least one non-constant chunk to learn from")
        torch.manual_seed(p.seed)
        tiles = make_tileset(cut_tiles(samples, p.max_tiles, p.seed))
        teacher, names = self._teacher(tiles)
        if not p.teacher:
            train_teacher(teacher, tiles, names, p, p.teacher_steps, p.lr)
        net = teacher
        if p.network == "student":
            net = build_student(p, teacher).to(tiles.raw.device)
            distill_student(net, teacher, tiles, names, p)
        if not p.teacher and p.finetune_steps:
            lr = p.lr * 0.3
            train_teacher(teacher, tiles, names, p, p.finetune_steps, lr, "teacher fine-tune")
        if p.save_teacher:
            torch.save({"params": p.as_dict(), "names": names, "state": teacher.cpu().state_dict()}, p.save_teacher)
        seen = [tiles.raw] if p.network == "student" else tiles.select(names, torch.arange(len(tiles)))
        with torch.no_grad():
            idx = net.codebook.indices(net.encode_tokens(seen))
        counts = np.bincount(idx.cpu().numpy().reshape(-1), minlength=p.codebook).astype(np.float64)
        probs = ((counts + 0.5) / (counts + 0.5).sum()).astype(np.float32)
        state = net.cpu().state_dict()
        tensors = [state[k].detach().numpy().astype(np.float32) for k in sorted(state)]
        # Quantize once; encoding then uses exactly the weights every decoder will load.
        self.load_shared_state(probs.tobytes() + pack_tensors(tensors, SHARED_REL_STEP))

    def _teacher(self, tiles) -> tuple[UniCompressNet, list[str]]:
        p = self.params
        teacher, names = build_teacher(p)
        if p.teacher:
            saved = torch.load(p.teacher, map_location="cpu", weights_only=True)
            arch = ("features", "dim", "codebook", "latent_channels", "patch", "teacher_hidden", "layers", "prior")
            names_known = set(p.as_dict())
            known = UniCompressParams.parse(self.name, {k: v for k, v in saved["params"].items() if k in names_known})
            if any(getattr(known, k) != getattr(p, k) for k in arch):
                raise InputError(f"teacher {p.teacher} was trained with another architecture")
            teacher, names = build_teacher(known)
            teacher.load_state_dict(saved["state"])
            return teacher.to(tiles.raw.device), names
        teacher.to(tiles.raw.device)
        pretrain_extractor(teacher.extractor, tiles, p.pretrain_steps, p.batch, p.lr, p.seed)
        with torch.no_grad():
            pick = torch.arange(min(len(tiles), 64))
            teacher.codebook.init_from(teacher.encode_tokens(tiles.select(names, pick)))
        return teacher, names

    def shared_state(self) -> bytes:
        if self._blob is None:
            raise InputError("unicompress has no shared state yet: fit_shared() was not run")
        return self._blob

    def load_shared_state(self, blob: bytes) -> None:
        """Restore the coding network; an empty blob means no INR (chunks carry their residual alone)."""
        if not blob:
            self.net, self.index_probs, self._blob = None, None, b""
            return
        k = self.params.codebook
        if len(blob) < 4 * k:
            raise ChunkFormatError("unicompress shared state is truncated")
        self.index_probs = np.frombuffer(blob[: 4 * k], np.float32).astype(np.float64)
        net = self._build_net()
        state = net.state_dict()
        keys = sorted(state)
        tensors = unpack_tensors(blob[4 * k :], [tuple(state[key].shape) for key in keys])
        net.load_state_dict({key: torch.from_numpy(t) for key, t in zip(keys, tensors, strict=True)})
        self.net = net.eval()
        for q in self.net.parameters():
            q.requires_grad_(False)
        self._blob = bytes(blob)

    def shared_state_size_estimate(self) -> int:
        """Index prior plus the student's weights at no less than ~7 bits each (8.3 measured); 0
        unless the student is forced, since the fit drops it when the rate cannot carry it."""
        return self._net_state_bytes() if self.params.modes == "inr" else 0

    def _build_net(self) -> UniCompressNet:
        """An untrained network of the stored architecture: the student, or the teacher when measured."""
        if self.params.network == "student":
            return build_student(self.params, None)
        return build_teacher(self.params)[0]

    def _net_state_bytes(self) -> int:
        weights = sum(v.numel() for v in self._build_net().state_dict().values())
        return 4 * self.params.codebook + weights * 7 // 8

    def _require_net(self) -> UniCompressNet:
        if self.net is None:
            raise InputError("unicompress needs its shared state: fit_shared() or a codec configuration")
        return self.net

    # ---- chunks -------------------------------------------------------------------------------
    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        return self._min_inr_payload(shape) if self.params.modes == "inr" else min_residual_bytes(shape)

    def _tokens_per_tile(self) -> int:
        return math.prod(token_grid(parse_patch(self.params.patch)))

    def _min_inr_payload(self, shape: tuple[int, ...]) -> int:
        """Indices at about 2 bits each, a minimal latent section and an all-zero residual."""
        tiles = math.prod(n // t for n, t in zip(padded_shape(shape), TILE, strict=True))
        return tiles * self._tokens_per_tile() // 4 + 32 + min_residual_bytes(shape)

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        """Index, latent and residual sections; the split of bytes between them is searched per chunk."""
        return min(self._candidates(block, target), key=lambda c: c[0])[1]

    def _candidates(self, block: np.ndarray, target: Target) -> list[tuple[float, list[bytes]]]:
        """(cost, sections) of every payload the modes allow: residual alone, student + residual."""
        if self._blob is None:
            raise InputError("unicompress needs its shared state: fit_shared() or a codec configuration")
        modes = self.params.modes
        candidates = [] if modes == "inr" else [self._residual_candidate(block, target)]
        if modes != "residual" and self.net is not None:
            candidates.append(self._inr_candidate(block, target))
        if not candidates:
            raise InputError("unicompress modes=inr needs its INR, but this array stores none")
        return candidates

    def _residual_candidate(self, block: np.ndarray, target: Target) -> tuple[float, list[bytes]]:
        return self._candidate(block, [b"", b""], np.zeros(block.shape, np.float32), target)

    def _inr_candidate(self, block: np.ndarray, target: Target) -> tuple[float, list[bytes]]:
        """Index + latent + residual payload.

        ``latent_share`` of the budget left after the indices goes to the latent grid: the
        student's amortized guess, refined by ``refine_steps`` gradient steps. Both are 0 by
        default, which stores an all-zero grid: measured with the student forced, every byte moved
        from the latents to the residual bought more, and refinement lowered PSNR, as a refined grid
        codes worse (``benchmarks/results/unicompress``). The prediction's information comes from
        the codebook indices.
        """
        net, p = self._require_net(), self.params
        valid = tuple(block.shape)
        pshape = padded_shape(valid)
        padded = np.pad(block, [(0, a - b) for a, b in zip(pshape, valid, strict=True)], mode="edge")
        tiles, counts = split_tiles(padded)
        block_t = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))
        with torch.no_grad():
            idx = net.codebook.indices(net.encode_tokens(self._components(tiles)))
        zq = tokens_to_grid(net.codebook.lookup(idx), counts, net.token_grid)
        idx_bytes = code_indices(self.index_probs, idx.numpy().reshape(-1))
        share = float(p.latent_share)
        if share <= 0:
            packed = pack_tensors([np.zeros((1, *latent_shape(pshape, p.latent_channels)), np.float32)], 1.0)
        else:
            with torch.no_grad():
                start = net.encode_latent(self._components(padded[None].astype(np.float32)))
            with single_thread():
                lat = refine_latent(
                    net.inr, zq, block_t, valid, start,
                    p.refine_steps, p.refine_points, p.refine_lr, p.seed,
                ).numpy()
            if target.budget_bytes is None:
                packed = pack_tensors([lat], QUALITY_LATENT_REL_STEP)
            else:
                packed = pack_to_budget([lat], max(int((target.budget_bytes - len(idx_bytes)) * share), 1))
        return self._candidate(block, [idx_bytes, packed], self._predict(zq, packed, pshape, valid), target)

    def _components(self, tiles: np.ndarray) -> list[torch.Tensor]:
        """What the coding network's extractor reads: the raw tiles (student), or the prior (teacher)."""
        if self.params.network == "student":
            return [torch.from_numpy(tiles)]
        comps = tile_components(tiles)
        return [comps[n] for n in prior_names(self.params)]

    def _predict(self, zq: torch.Tensor, packed: bytes, pshape, valid) -> np.ndarray:
        lat = unpack_tensors(packed, [(1, *latent_shape(pshape, self.params.latent_channels))])[0]
        return self._evaluate(zq, lat, valid)

    @staticmethod
    def _candidate(block: np.ndarray, sections: list[bytes], prediction: np.ndarray, target: Target):
        """(cost, sections) of one split: cost is the MSE under a budget, the bytes under an error target."""
        residual = block - prediction
        if target.budget_bytes is not None:
            data, decoded = encode_residual(residual, budget=target.budget_bytes - sum(map(len, sections)))
            over = sum(map(len, sections)) + len(data) > target.budget_bytes
            return float(np.mean((decoded - residual) ** 2)) + (1e9 if over else 0.0), [*sections, data]
        data, _ = encode_residual(residual, max_mse=target.max_mse)
        return sum(map(len, sections)) + len(data), [*sections, data]

    @torch.no_grad()
    def _evaluate(self, zq: torch.Tensor, lat: np.ndarray, valid: tuple[int, ...]) -> np.ndarray:
        """The student's prediction of a whole block: dense upsampling, one cache-sized box at a time."""
        decode = self._require_net().inr.decoder(zq, torch.from_numpy(lat))
        out = np.empty(valid, np.float32)
        rows_y = max(STRIDE[1], DECODE_BOX // (DECODE_ROWS * valid[2]))
        for z in range(0, valid[0], DECODE_ROWS):
            for y in range(0, valid[1], rows_y):
                hi = (min(z + DECODE_ROWS, valid[0]), min(y + rows_y, valid[1]))
                out[z : hi[0], y : hi[1]] = decode((z, y), hi, valid[2]).numpy()
        return out

    def _parse(self, sections: list[bytes], shape: tuple[int, ...]) -> tuple[torch.Tensor, np.ndarray] | None:
        """(zq, latent grid) of a chunk whose sections carry an INR prediction; None for residual-only."""
        if len(sections) != 3:
            raise ChunkFormatError("unicompress chunk must have index, latent and residual sections")
        if not sections[0] and not sections[1]:
            return None
        net = self._require_net()
        pshape = padded_shape(shape)
        counts = tuple(n // t for n, t in zip(pshape, TILE, strict=True))
        idx = decode_indices(self.index_probs, sections[0], math.prod(counts) * self._tokens_per_tile())
        if idx.min(initial=0) < 0 or idx.max(initial=0) >= self.params.codebook:
            raise ChunkFormatError("unicompress chunk has codebook indices out of range")
        zq = tokens_to_grid(net.codebook.lookup(torch.from_numpy(idx.astype(np.int64))), counts, net.token_grid)
        lat = unpack_tensors(sections[1], [(1, *latent_shape(pshape, self.params.latent_channels))])[0]
        return zq, lat

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        shape = tuple(shape)
        parsed = self._parse(sections, shape)
        out = np.zeros(shape, np.float32) if parsed is None else self._evaluate(*parsed, shape)
        out += decode_residual(sections[2], shape)
        return out

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        """Values at ``coords`` in the block's [-1, 1] cube: the voxel grid sampled trilinearly."""
        whole = torch.from_numpy(self.decode(sections, shape))[None, None]
        where = coords.float().flip(-1).reshape(1, -1, 1, 1, 3)
        sampled = F.grid_sample(whole, where, mode="bilinear", padding_mode="border", align_corners=True)
        return sampled.reshape(-1).numpy()
