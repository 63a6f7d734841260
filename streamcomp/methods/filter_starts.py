"""Train the post-filter's starting points: the filters a fit fine-tunes instead of starting from zeros.

Why: within a fit's budget a filter trained from zeros is far from converged, and how far it gets
depends on its seed. Started from a filter trained on other volumes, a fit gets as far in half the
steps (within the filter's noise on the shared volumes: the README's post-filter section). A start
is a starting point, never the stored filter, so every array still carries the filter its decode
runs.

    python -m streamcomp.methods.filter_starts --out DIR VOLUME [VOLUME ...]

samples each volume's chunks (the ``wavelet`` default chunk shape, non-constant ones), codes them
at :data:`RATIOS` with the hand-set coder's steps, and trains one start per kernel depth on all of
them (in-plane starts learn from CT as well as EM: every volume's sections are images). The
folder it writes (a file per filter shape and ``starts.json``, what they were trained on) is what
``filter_start`` takes; ``streamcomp/models/starts/`` holds the shipped ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from streamcomp.format.chunk import method_target
from streamcomp.methods.wavelet import WaveletMethod
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
SEED = 0


def volume_pairs(src: str, ratios: tuple[float, ...] = RATIOS, count: int = CHUNKS_PER_VOLUME,
                 seed: int = SEED) -> list[postfilter.Pair]:
    """Up to ``count`` non-constant chunks of the volume at ``src``, each decoded at every ratio."""
    source = open_source(src)
    method = WaveletMethod()
    chunks = method.default_chunks.get(len(source.shape))
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
        raise ValueError(f"{src}: every chunk is constant, nothing to train a filter on")
    samples = [normalize(b) for b in blocks]
    pairs = []
    for ratio in ratios:
        targets = [
            method_target(b.dtype, b.ndim, lo, hi, int(b.nbytes / ratio), None, method)
            for b, (_, lo, hi) in zip(blocks, samples, strict=True)
        ]
        pairs += method.filter_pairs([norm for norm, _, _ in samples], targets)[0]
    return pairs


def train(volumes: list[str], out: str | Path, steps: int = STEPS, seed: int = SEED) -> dict:
    """Write a start per kernel depth trained on ``volumes``' chunks to ``out``; returns the record
    also written there as ``starts.json``."""
    if not volumes:
        raise ValueError("starts need at least one volume to train on")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    pairs = []
    for src in volumes:
        logger.info("sampling %s", src)
        pairs += volume_pairs(src, seed=seed)
    record = {
        "volumes": [{"source": src, "sha256": _digest(src)} for src in volumes],
        "ratios": list(RATIOS), "chunks_per_volume": CHUNKS_PER_VOLUME, "pairs": len(pairs),
        "steps": steps, "lr": WaveletMethod.Params().filter_lr, "seed": seed, "starts": {},
    }
    for depth in DEPTHS:
        logger.info("training the %dx3x3 start on %d chunks", depth, len(pairs))
        net = postfilter.fit(pairs, depth, CHANNELS, steps, record["lr"], seed)
        name = postfilter.start_name(depth, CHANNELS)
        (out / name).write_bytes(net.to_bytes())
        record["starts"][name] = {"depth": depth, "channels": CHANNELS}
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
    p.add_argument("--out", required=True, help="folder for the starts (filter_start takes it)")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--seed", type=int, default=SEED)
    args = p.parse_args(argv)
    if args.steps < 1:
        p.error(f"--steps must be at least 1, got {args.steps}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        record = train(args.volumes, args.out, args.steps, args.seed)
    except ValueError as e:  # InputError included: a missing or unreadable volume, a constant one
        raise SystemExit(f"filter_starts: {e}") from None
    print(f"{len(record['starts'])} starts from {record['pairs']} chunks in {record['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
