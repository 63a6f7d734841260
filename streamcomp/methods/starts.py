"""Train the shipped starting points: the context model and the post-filters a fit tunes instead
of fitting from scratch.

Why: within a fit's budget a post-filter trained from zeros is far from converged, and a context
model's teacher and student cost most of the fit. Started from ones trained on other volumes, a
fit gets as far in a fraction of the time (the README's learned-coder section measures it). A
start is a starting point, never what an array stores: every array still carries the model and
filter its decode runs.

    python -m streamcomp.methods.starts --out DIR VOLUME [VOLUME ...]

samples each volume's chunks (of the shape a ``wavelet`` fit learns from, its ``FIT_CROP``;
non-constant ones), codes them at :data:`RATIOS` with the hand-set coder's steps, and trains on
all of them: one post-filter per
kernel depth (in-plane starts learn from CT as well as EM: every volume's sections are images)
and the context model, a teacher of :data:`TEACHER_HIDDEN` units in two layers with the student
distilled from it (its inputs are integer context buckets and band classes, the same for every
modality, so one start serves all). The folder it writes (a file per start and ``starts.json``,
what they were trained on) is what the ``start`` parameter takes; ``streamcomp/models/starts/``
holds the shipped ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from streamcomp.coding import fit_context
from streamcomp.format.chunk import method_target
from streamcomp.methods.wavelet import FIT_CROP, WaveletMethod
from streamcomp.models import postfilter
from streamcomp.plan import block_stats, chunk_grid
from streamcomp.source.readers import open_source
from streamcomp.values import normalize

logger = logging.getLogger(__name__)

RATIOS = (16.0, 64.0, 256.0)  # the filter's inputs are scaled by the step: one start serves every rate
CHUNKS_PER_VOLUME = 12
DEPTHS = (1, 3)
CHANNELS = 8  # the default filter's width (a start seeds only a filter of its own shape)
STEPS = 3000
TEACHER_HIDDEN = 64  # offline, the teacher can be larger than a fit could afford
CONTEXT_LR = 0.01  # a quarter of a fit's: many more steps, on many volumes' rows
SEED = 0


def volume_data(src: str, ratios: tuple[float, ...] = RATIOS, count: int = CHUNKS_PER_VOLUME,
                seed: int = SEED) -> tuple[list[postfilter.Pair], list[fit_context.ContextStats]]:
    """Up to ``count`` non-constant chunks of the volume at ``src``, each decoded at every ratio
    (the filter's pairs), and their context statistics at every ratio."""
    source = open_source(src)
    method = WaveletMethod()
    chunks = FIT_CROP.get(len(source.shape))
    if chunks is None:
        raise ValueError(f"{src}: a {len(source.shape)}-D volume; starts are trained on 3-D and 4-D volumes")
    items = list(chunk_grid(source.shape, chunks))
    rng = np.random.default_rng(seed)
    blocks = []
    for i in rng.permutation(len(items)):
        block = source.read(items[i].slices)
        if block_stats(block)[2] == "data":
            blocks.append(block)
        if len(blocks) == count:
            break
    if not blocks:
        raise ValueError(f"{src}: every chunk is constant, nothing to train on")
    samples = [normalize(b) for b in blocks]
    pairs, stats = [], []
    for ratio in ratios:
        targets = [
            method_target(b.dtype, b.ndim, lo, hi, int(b.nbytes / ratio), None, method)
            for b, (_, lo, hi) in zip(blocks, samples, strict=True)
        ]
        decoded, _, context = method.start_data([norm for norm, _, _ in samples], targets)
        pairs += decoded
        stats.append(context)
    return pairs, stats


def train(volumes: list[str], out: str | Path, steps: int = STEPS, seed: int = SEED) -> dict:
    """Write the starts trained on ``volumes``' chunks to ``out``; returns the record also written
    there as ``starts.json``."""
    if not volumes:
        raise ValueError("starts need at least one volume to train on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    pairs, stats = [], []
    for src in volumes:
        logger.info("sampling %s", src)
        more_pairs, more_stats = volume_data(src, seed=seed)
        pairs += more_pairs
        stats += more_stats
    params = WaveletMethod.Params()
    record = {
        "volumes": [{"source": src, "sha256": _digest(src)} for src in volumes],
        "ratios": list(RATIOS), "chunks_per_volume": CHUNKS_PER_VOLUME, "pairs": len(pairs),
        "steps": steps, "lr": params.filter_lr, "seed": seed, "starts": {},
    }
    for depth in DEPTHS:
        logger.info("training the %dx3x3 post-filter start on %d chunks", depth, len(pairs))
        net = postfilter.fit(pairs, depth, CHANNELS, steps, record["lr"], seed)
        name = postfilter.start_name(depth, CHANNELS)
        (out / name).write_bytes(net.to_bytes())
        record["starts"][name] = {"depth": depth, "channels": CHANNELS}
    logger.info("training the context model start (teacher %dx2, student %d)", TEACHER_HIDDEN, params.hidden)
    start = fit_context.train_start(stats, params.hidden, TEACHER_HIDDEN, steps, CONTEXT_LR, seed=seed)
    name = fit_context.start_name(params.hidden)
    (out / name).write_bytes(start.to_bytes())
    record["starts"][name] = {"hidden": params.hidden, "teacher_hidden": TEACHER_HIDDEN, "lr": CONTEXT_LR,
                              "context_rows": int(sum(len(s.inputs) for s in stats))}
    record["seconds"] = round(time.perf_counter() - began, 1)
    (out / "starts.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def _digest(src: str) -> str | None:
    """The file's sha256 when ``src`` is a local file (what the start was trained on, checkably)."""
    path = Path(src)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("volumes", nargs="+", help="volumes to train on (any source streamcomp reads)")
    p.add_argument("--out", required=True, help="folder for the starts (the start parameter takes it)")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = train(args.volumes, args.out, args.steps, args.seed)
    except ValueError as e:  # InputError included: a missing or unreadable volume, a constant one
        raise SystemExit(f"starts: {e}") from None
    print(f"{len(record['starts'])} starts from {record['pairs']} chunks in {record['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
