"""The context model an error-bounded array's levels are coded under: fitted once per array on a
bounded sample of its chunks, quantized as :func:`streamcomp.format.bounded.encode_bounded` quantizes
them. Apart from the chunk format, and importing the trainer (torch) only when it fits, so that
decoding a bounded array, the command line and a lossless run never import torch.
"""

from __future__ import annotations

import itertools
import math
from typing import TYPE_CHECKING

import numpy as np

from streamcomp.coding.bands import lattices, levels_for, parents, transform_axes
from streamcomp.coding.context_model import ContextModel
from streamcomp.coding.exact import ExactPlan
from streamcomp.format.bounded import planned_sections, step_for

if TYPE_CHECKING:
    from streamcomp.coding.fit_context import ContextStats

FIT_VOXELS = 1 << 19  # voxels of one crop the model is fitted or judged on
FIT_CROPS, JUDGE_CROPS = 2, 1
BOUNDED_SAMPLE = FIT_CROPS + JUDGE_CROPS  # sample chunks read for the fit, whose tiles the crops are drawn from
FIT_STEPS = 100  # EM at E = 4: -2.9 % after 600 steps on 4 crops, -2.5 % after 100 on 2; at 60 head CT's did not pay
# Rows a sampled step of that fit takes: a quarter of the lossy coder's (its model has a teacher to
# distill and more steps) saved the same bytes on EM at E = 1, 2, 4 and head CT at E = 1, 2, 8, 16
# (within 0.1 point; 4096 the same) and head CT's fit at E = 1 took 1.0 s instead of 1.7.
FIT_BATCH_ROWS = 2048
# An array under four times the fit's crops is not worth the fit, whose cost (0.5-1 s here) does not
# shrink with the array: the hand-set classes code it. Thorax CT (2.5 Mvoxels) at E = 8 saved 1.1 %
# of its bytes for half its encode time; fewer steps saved less (0.45 % after 25; the 4D MRI's
# model, 2.1 Mvoxels, did not pay at 33).
FIT_MIN_VOXELS = 4 * BOUNDED_SAMPLE * FIT_VOXELS
# Smallest share of the held-out crops' bytes the model must save: below it the hand-set classes,
# whose decode is faster, code the array.
MIN_GAIN = 0.01


def _tiles(shape: tuple[int, ...]) -> list[tuple[slice, ...]]:
    """A block of ``shape`` tiled into crops of at most FIT_VOXELS (the longest axis halved until
    they fit), as slices."""
    size = list(shape)
    while int(np.prod(size)) > FIT_VOXELS:
        longest = int(np.argmax(size))
        size[longest] = (size[longest] + 1) // 2
    starts = itertools.product(*(range(0, n - s + 1, s) for n, s in zip(shape, size, strict=True)))
    return [tuple(slice(o, o + s) for o, s in zip(at, size, strict=True)) for at in starts]


def _level_crops(blocks: list[np.ndarray], max_error: float, count: int, rng: np.random.Generator) -> list[ExactPlan]:
    """``count`` crops drawn at random from the tiles of the ``blocks``, as the levels
    :func:`streamcomp.format.bounded.encode_bounded` codes for them, planned: the values' levels,
    or where a lossy layer codes shorter its residual's (whose statistics differ: a model fitted
    on the values' levels saved nothing on head CT's layered chunks at E = 8, one fitted on the
    residual's levels ~9 % of their bytes)."""
    tiles = []
    for block in blocks:
        finite = np.isfinite(block) if block.dtype.kind == "f" else np.ones(block.shape, bool)
        tiles += [(block, finite, tile) for tile in _tiles(block.shape) if finite[tile].any()]
    crops = []
    for i in rng.choice(len(tiles), min(len(tiles), count), replace=False):
        block, finite, tile = tiles[i]
        crop = block[tile]
        vmin, vmax = float(crop[finite[tile]].min()), float(crop[finite[tile]].max())
        filled = np.where(finite[tile], crop, vmin)
        sections = planned_sections(crop, filled, vmin, vmax, step_for(block.dtype, max_error), max_error)
        if vmax > vmin and sections:
            crops.append(min(sections, key=lambda section: section.estimate).levels)
    return crops


def _levels_stats(crops: list[ExactPlan]) -> ContextStats:
    """Context statistics of the planned crops' coefficients."""
    from streamcomp.coding.fit_context import StatsCollector  # torch: imported by a fit only

    collector = StatsCollector()
    for crop in crops:
        depth = levels_for(crop.shape, crop.planar)
        band_lattices = lattices([b.shape for b in crop.bands], transform_axes(crop.shape, crop.planar))
        collector.add(band_lattices, parents(len(crop.bands), depth), depth, crop.bands)
    return collector.stats()


def fit_bounded_model(
    blocks: list[np.ndarray], max_error: float, data_voxels: int, seed: int = 0
) -> tuple[ContextModel | None, str]:
    """The context model an error-bounded array's levels are coded under, and a note saying why.

    A one-layer student and its sign model fitted from scratch on crops of the sample ``blocks``
    quantized as :func:`streamcomp.format.bounded.encode_bounded` quantizes them (a start trained
    on CT and MRI levels, used as it is, saved nothing on EM), judged on other crops: kept when it
    saves at least MIN_GAIN of their bytes and, over the array's ``data_voxels``, more than its
    own. None, unfitted, for an array too small to pay for the fit (FIT_MIN_VOXELS)."""
    if data_voxels < FIT_MIN_VOXELS:
        return None, (f"no context model: {data_voxels} voxels are too few to pay for its fit "
                      f"(from {FIT_MIN_VOXELS})")
    picked = _level_crops(blocks, max_error, FIT_CROPS + JUDGE_CROPS, np.random.default_rng(seed))
    if len(picked) < 2:
        return None, "no context model: the sample holds too few coded voxels to fit and judge one"
    judged = picked[-max(1, len(picked) * JUDGE_CROPS // (FIT_CROPS + JUDGE_CROPS)) :]
    stats = _levels_stats(picked[: len(picked) - len(judged)])
    from streamcomp.coding.fit_context import fit_context_model  # torch: imported by a fit only

    model = fit_context_model(
        stats, teacher_steps=0, student_steps=FIT_STEPS, distill=0.0, seed=seed, batch_rows=FIT_BATCH_ROWS
    ).student
    plain = sum(len(c.code()) for c in judged)
    saved = plain - sum(len(c.code(model)) for c in judged)
    size = len(model.to_bytes())
    gain = saved / max(plain, 1)
    voxels = sum(math.prod(c.shape) for c in judged)
    verdict = "kept" if gain >= MIN_GAIN and saved * data_voxels / voxels > size else "dropped"
    note = (f"context model for the levels ({size} stored bytes) fitted on {len(picked) - len(judged)} sample "
            f"crops: {-100 * gain:+.1f} % bytes on "
            f"{len(judged)} held-out crops (kept from {100 * MIN_GAIN:.0f} %): {verdict}")
    return (model if verdict == "kept" else None), note
