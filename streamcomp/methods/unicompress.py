"""``unicompress`` (default): one shared conditional INR for all chunks, distilled to a student.

Shared state (fit once on a sample of the array's chunks, stored in the codec configuration):
the student's extractor, fusion, codebook and INR, quantized and entropy coded, plus a learned
categorical prior over codebook indices. A chunk's payload is its codebook indices (one per
2x8x8 patch, coded under that prior) and its latent grid, refined by gradient steps with the
student frozen, quantized with the step that fills the chunk's byte budget (or meets its error
target), and entropy coded. Encoding never retrains the shared network.
"""

from __future__ import annotations

import math

import constriction
import numpy as np
import torch

from streamcomp.device import single_thread
from streamcomp.errors import ChunkFormatError, InputError
from streamcomp.fit_unicompress import (
    build_student,
    build_teacher,
    cut_tiles,
    distill_student,
    make_tileset,
    pretrain_extractor,
    refine_latent,
    train_teacher,
)
from streamcomp.methods.base import Method, Target, register
from streamcomp.models.unicompress import STRIDE, TILE, TOKENS, UniCompressNet, latent_shape, tokens_to_grid
from streamcomp.quant import FINEST_REL_STEP, pack_tensors, pack_to_budget, unpack_tensors

SHARED_REL_STEP = 2.0**-6
DECODE_BATCH = 1 << 17
DECODE_BOX = 1 << 16
DECODE_ROWS = 4


def padded_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.ceil(n / t) * t for n, t in zip(shape, TILE, strict=True))


def split_tiles(block: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Tiles of an edge-padded block, C order, and the tile counts per axis."""
    counts = tuple(n // t for n, t in zip(block.shape, TILE, strict=True))
    (cz, cy, cx), (tz, ty, tx) = counts, TILE
    tiles = block.reshape(cz, tz, cy, ty, cx, tx).transpose(0, 2, 4, 1, 3, 5).reshape(-1, *TILE)
    return np.ascontiguousarray(tiles), counts


def _categorical(probs: np.ndarray):
    return constriction.stream.model.Categorical(probs.astype(np.float64), perfect=False)


@register
class UniCompressMethod(Method):
    name = "unicompress"
    method_id = 5
    defaults = {
        "features": 16,
        "dim": 16,
        "codebook": 256,
        "latent_channels": 8,
        "teacher_hidden": 48,
        "student_hidden": 32,
        "layers": 4,
        "w0": 10.0,
        "prior": "high,low,raw",
        "pretrain_steps": 50,
        "teacher_steps": 300,
        "student_steps": 200,
        "finetune_steps": 50,
        "batch": 16,
        "train_points": 2048,
        "lr": 3e-3,
        "gamma": 1.0,
        "latent_l2": 1e-3,
        "latent_noise": 0.05,
        "tau": 2.0,
        "kd_code": 1.0,
        "kd_logits": 1.0,
        "kd_out": 1.0,
        "refine_steps": 40,
        "refine_points": 16384,
        "refine_lr": 0.02,
        "max_tiles": 512,
        "seed": 0,
        "teacher": "",
        "save_teacher": "",
        "progress": True,
    }

    def __init__(self, **params) -> None:
        super().__init__(**params)
        prior = [m for m in self.params["prior"].split(",") if m]
        if not prior or set(prior) - {"high", "low", "raw"}:
            raise InputError(f"prior must name some of high,low,raw, got {self.params['prior']!r}")
        self.student: UniCompressNet | None = None
        self.index_probs: np.ndarray | None = None
        self._blob: bytes | None = None

    # ---- shared state -------------------------------------------------------------------------
    def fit_shared(self, samples: list[np.ndarray]) -> None:
        with single_thread():
            self._fit_shared(samples)

    def _fit_shared(self, samples: list[np.ndarray]) -> None:
        p = self.params
        if not samples:
            raise InputError("unicompress needs at least one non-constant chunk to learn from")
        torch.manual_seed(p["seed"])
        tiles = make_tileset(cut_tiles(samples, p["max_tiles"], p["seed"]))
        teacher, names = self._teacher(tiles)
        if not p["teacher"]:
            train_teacher(teacher, tiles, names, p, p["teacher_steps"], p["lr"], p["progress"])
        student = build_student(p, teacher).to(tiles.raw.device)
        distill_student(student, teacher, tiles, names, p, p["progress"])
        if not p["teacher"] and p["finetune_steps"]:
            lr = p["lr"] * 0.3
            train_teacher(teacher, tiles, names, p, p["finetune_steps"], lr, p["progress"], "teacher fine-tune")
        if p["save_teacher"]:
            torch.save({"params": dict(p), "names": names, "state": teacher.cpu().state_dict()}, p["save_teacher"])
        with torch.no_grad():
            idx = student.codebook.indices(student.encode_tokens([tiles.raw]))
        counts = np.bincount(idx.cpu().numpy().reshape(-1), minlength=p["codebook"]).astype(np.float64)
        probs = ((counts + 0.5) / (counts + 0.5).sum()).astype(np.float32)
        state = student.cpu().state_dict()
        tensors = [state[k].detach().numpy().astype(np.float32) for k in sorted(state)]
        # Quantize once; encoding then uses exactly the weights every decoder will load.
        self.load_shared_state(probs.tobytes() + pack_tensors(tensors, SHARED_REL_STEP))

    def _teacher(self, tiles) -> tuple[UniCompressNet, list[str]]:
        p = self.params
        teacher, names = build_teacher(p)
        if p["teacher"]:
            saved = torch.load(p["teacher"], map_location="cpu", weights_only=True)
            arch = ("features", "dim", "codebook", "latent_channels", "teacher_hidden", "layers")
            if any(saved["params"][k] != p[k] for k in arch):
                raise InputError(f"teacher {p['teacher']} was trained with another architecture")
            teacher, names = build_teacher(saved["params"])
            teacher.load_state_dict(saved["state"])
            return teacher.to(tiles.raw.device), names
        teacher.to(tiles.raw.device)
        pretrain_extractor(teacher.extractor, tiles, p["pretrain_steps"], p["batch"], p["lr"], p["seed"], p["progress"])
        with torch.no_grad():
            pick = torch.arange(min(len(tiles), 64))
            teacher.codebook.init_from(teacher.encode_tokens(tiles.select(names, pick)))
        return teacher, names

    def shared_state(self) -> bytes:
        if self._blob is None:
            raise InputError("unicompress has no shared state yet: fit_shared() was not run")
        return self._blob

    def load_shared_state(self, blob: bytes) -> None:
        k = self.params["codebook"]
        if len(blob) < 4 * k:
            raise ChunkFormatError("unicompress shared state is truncated")
        self.index_probs = np.frombuffer(blob[: 4 * k], np.float32).astype(np.float64)
        student = build_student(self.params, None)
        state = student.state_dict()
        keys = sorted(state)
        tensors = unpack_tensors(blob[4 * k :], [tuple(state[key].shape) for key in keys])
        student.load_state_dict({key: torch.from_numpy(t) for key, t in zip(keys, tensors, strict=True)})
        self.student = student.eval()
        for q in self.student.parameters():
            q.requires_grad_(False)
        self._blob = bytes(blob)

    def shared_state_size_estimate(self) -> int:
        """Index prior plus the student's weights at no less than ~7 bits each (8.3 measured)."""
        weights = sum(v.numel() for v in build_student(self.params, None).state_dict().values())
        return 4 * self.params["codebook"] + weights * 7 // 8

    def _require_student(self) -> UniCompressNet:
        if self.student is None:
            raise InputError("unicompress needs its shared state: fit_shared() or a codec configuration")
        return self.student

    # ---- chunks -------------------------------------------------------------------------------
    def min_payload_bytes(self, shape: tuple[int, ...]) -> int:
        tiles = math.prod(n // t for n, t in zip(padded_shape(shape), TILE, strict=True))
        return tiles * TOKENS // 4 + 32

    def _code_indices(self, idx: np.ndarray) -> bytes:
        coder = constriction.stream.stack.AnsCoder()
        coder.encode_reverse(idx.astype(np.int32), _categorical(self.index_probs))
        return coder.get_compressed().tobytes()

    def _decode_indices(self, data: bytes, count: int) -> np.ndarray:
        if len(data) % 4:
            raise ChunkFormatError("unicompress index section is not whole 32-bit words")
        coder = constriction.stream.stack.AnsCoder(np.frombuffer(data, np.uint32).copy())
        return coder.decode(_categorical(self.index_probs), count)

    def encode(self, block: np.ndarray, target: Target) -> list[bytes]:
        student = self._require_student()
        p = self.params
        valid = tuple(block.shape)
        pshape = padded_shape(valid)
        padded = np.pad(block, [(0, a - b) for a, b in zip(pshape, valid, strict=True)], mode="edge")
        tiles, counts = split_tiles(padded)
        block_t = torch.from_numpy(np.ascontiguousarray(padded, dtype=np.float32))
        with torch.no_grad():
            idx = student.codebook.indices(student.encode_tokens([torch.from_numpy(tiles)]))
            start = student.encode_latent([block_t[None]])
        zq = tokens_to_grid(student.codebook.lookup(idx), counts)
        with single_thread():
            latent = refine_latent(
                student.inr, zq, block_t, valid, start, p["refine_steps"], p["refine_points"], p["refine_lr"], p["seed"]
            )
        idx_bytes = self._code_indices(idx.numpy().reshape(-1))
        lat = latent.numpy()
        if target.budget_bytes is not None:
            return [idx_bytes, pack_to_budget([lat], max(target.budget_bytes - len(idx_bytes), 1))]
        return [idx_bytes, self._pack_for_quality(zq, lat, block, valid, target.max_mse)]

    def _pack_for_quality(self, zq, lat, block, valid, max_mse) -> bytes:
        """Coarsest latent quantization whose decoded chunk meets ``max_mse`` (bisection)."""
        lo, hi = math.log2(FINEST_REL_STEP), 2.0
        best = pack_tensors([lat], 2.0**lo)
        for _ in range(14):
            mid = 0.5 * (lo + hi)
            packed = pack_tensors([lat], 2.0**mid)
            decoded = self._evaluate(zq, unpack_tensors(packed, [lat.shape])[0], padded_shape(valid), valid)
            if float(np.mean((decoded - block) ** 2)) <= max_mse:
                best, lo = packed, mid
            else:
                hi = mid
        return best

    @torch.no_grad()
    def _evaluate(self, zq: torch.Tensor, lat: np.ndarray, pshape, valid, index: torch.Tensor | None = None):
        inr = self._require_student().inr
        latent = torch.from_numpy(lat)
        if index is None:  # the whole block: dense upsampling, one cache-sized box at a time
            decode = inr.decoder(zq, latent)
            out = np.empty(valid, np.float32)
            rows_y = max(STRIDE[1], DECODE_BOX // (DECODE_ROWS * valid[2]))
            for z in range(0, valid[0], DECODE_ROWS):
                for y in range(0, valid[1], rows_y):
                    hi = (min(z + DECODE_ROWS, valid[0]), min(y + rows_y, valid[1]))
                    out[z : hi[0], y : hi[1]] = decode((z, y), hi, valid[2]).numpy()
            return out
        out = [inr(zq, latent, index[None, i : i + DECODE_BATCH], pshape).reshape(-1)
               for i in range(0, index.shape[0], DECODE_BATCH)]
        return torch.cat(out).numpy() if out else np.zeros(0, np.float32)

    def _parse(self, sections: list[bytes], shape: tuple[int, ...]):
        if len(sections) != 2:
            raise ChunkFormatError("unicompress chunk must have an index and a latent section")
        student = self._require_student()
        pshape = padded_shape(shape)
        counts = tuple(n // t for n, t in zip(pshape, TILE, strict=True))
        idx = self._decode_indices(sections[0], math.prod(counts) * TOKENS)
        if idx.min(initial=0) < 0 or idx.max(initial=0) >= self.params["codebook"]:
            raise ChunkFormatError("unicompress chunk has codebook indices out of range")
        zq = tokens_to_grid(student.codebook.lookup(torch.from_numpy(idx.astype(np.int64))), counts)
        lat = unpack_tensors(sections[1], [(1, *latent_shape(pshape, self.params["latent_channels"]))])[0]
        return zq, lat, pshape

    def decode(self, sections: list[bytes], shape: tuple[int, ...]) -> np.ndarray:
        zq, lat, pshape = self._parse(sections, shape)
        return self._evaluate(zq, lat, pshape, tuple(shape))

    def decode_at(self, sections: list[bytes], shape: tuple[int, ...], coords: torch.Tensor) -> np.ndarray:
        zq, lat, pshape = self._parse(sections, shape)
        n = torch.tensor([max(s - 1, 0) for s in shape], dtype=torch.float32)
        index = (coords.float() + 1) / 2 * n
        return self._evaluate(zq, lat, pshape, tuple(shape), index=index)

