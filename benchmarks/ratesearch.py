"""Find the knob setting at which a codec reaches a target compression ratio.

Codecs are compared at matching ratios, but each has its own quality knob (distance, PSNR target,
CRF, error bound...). Ratio is monotone in the knob for all of them, so a bracketed root search
on ``log(ratio) - log(target)`` over the knob's range finds the setting: the two ends are tried
first (telling at once whether the target is reachable at all), then Illinois false position,
which converges in a handful of encodes where plain bisection needs ~10. Integer knobs stop when
the bracket closes to adjacent values. The evaluation closest to the target (in log ratio) wins,
and ``hit`` says whether it is within ``hit_tol`` of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks.codec_api import CodecFn, CodecResult, Knob
from benchmarks.memory import PeakMemory


@dataclass
class Evaluation:
    """One encode/decode at one knob value."""

    knob: float
    result: CodecResult
    ratio: float
    memory: dict[str, Any]


@dataclass
class SearchOutcome:
    best: Evaluation
    target: float
    hit: bool
    trace: list[tuple[float, float]] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        return len(self.trace)


def evaluate(run: CodecFn, volume: np.ndarray, knob: float) -> Evaluation:
    """Run the codec once at ``knob``, measuring peak memory around the call."""
    with PeakMemory() as mem:
        result = run(volume, knob)
    ratio = volume.nbytes / max(result.stored_bytes, 1)
    return Evaluation(knob=knob, result=result, ratio=ratio, memory=mem.as_dict())


def search_ratio(
    run: CodecFn,
    knob: Knob,
    volume: np.ndarray,
    target: float,
    *,
    max_evals: int = 8,
    rtol: float = 0.02,
    hit_tol: float = 0.10,
    evaluator: Callable[[CodecFn, np.ndarray, float], Evaluation] = evaluate,
) -> SearchOutcome:
    """Search ``knob`` so that ``run`` compresses ``volume`` by ``target`` (see module docstring)."""
    cache: dict[float, Evaluation] = {}
    trace: list[tuple[float, float]] = []
    goal = math.log(target)

    def f(u: float) -> float:
        value = knob.value(u)
        if value not in cache:
            cache[value] = evaluator(run, volume, value)
            trace.append((value, cache[value].ratio))
        return math.log(cache[value].ratio) - goal

    def outcome() -> SearchOutcome:
        best = min(cache.values(), key=lambda e: abs(math.log(e.ratio) - goal))
        hit = abs(math.log(best.ratio) - goal) <= math.log1p(hit_tol)
        return SearchOutcome(best=best, target=target, hit=hit, trace=trace)

    ua, ub = 0.0, 1.0
    fa, fb = f(ua), f(ub)
    if fa * fb > 0 or max_evals <= 2:
        return outcome()  # target outside what the knob range reaches: report the nearest end
    side = 0
    close = math.log1p(rtol)
    while len(trace) < max_evals and min(abs(fa), abs(fb)) > close:
        u = (ua * fb - ub * fa) / (fb - fa)
        if knob.value(u) in cache:  # integer knobs: rounding landed on a value already tried
            u = 0.5 * (ua + ub)
            if knob.value(u) in cache:
                break  # the bracket has closed to adjacent values
        fu = f(u)
        if fu * fb > 0:
            ub, fb = u, fu
            if side == -1:
                fa /= 2  # Illinois: the same end kept twice in a row, so halve its weight
            side = -1
        else:
            ua, fa = u, fu
            if side == 1:
                fb /= 2
            side = 1
    return outcome()
