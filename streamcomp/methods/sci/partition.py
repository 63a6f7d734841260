"""SCI adaptive partitioning: spectrum concentration D(x) and the octree integer program.

- :func:`spectrum_concentration` is SCI's eq. 9: the sum of the top ``M`` FFT magnitudes of a block
  over the sum of all of them (1 for a constant block, ~M/size for white noise), optionally
  counting only the magnitude above a noise floor set by :func:`noise_sigma`.
- :func:`build_tree` lays an octree over a block: every node halves each axis that is long enough
  (all ``ndim`` axes at once, as in eq. 7), down to ``levels`` levels. Flat nodes (value range
  below ``flat_tol``) are pruned: they get no children, as the reference implementation skips
  empty blocks, and they decode as a constant.
- :func:`solve_partition` is eq. 8 + 10-12 as a 0/1 integer program solved by HiGHS through
  ``scipy.optimize.milp``: choose active nodes ``a`` to maximize sum a_i * D(x_i) * |x_i| / |x|
  (volume-weighted within-block concentration), with exactly one active node on every
  root-to-terminal path, at most ``a_max`` active non-flat nodes, and none of them smaller than
  ``min_leaf_size`` voxels (eq. 11's minimum network size, applied to each block: see
  :meth:`streamcomp.methods.sci.method.SciMethod.partition`).
- :func:`equidistant_partition` / :func:`no_partition` are the EP / NP ablations of the paper.

A partition is stored compactly as one split bit per splittable node in pre-order
(:func:`encode_splits` / :func:`decode_splits`); the decoder rebuilds the geometry from the chunk
shape and the same splitting rule, so no coordinates are stored. Node lists are in pre-order, so
sorted leaf indices list the leaves in the same order the decoder finds them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from streamcomp.errors import ChunkFormatError

Box = tuple[tuple[int, int], ...]  # per axis [start, stop)


def noise_sigma(block: np.ndarray) -> float:
    """Robust white-noise std of ``block``: the MAD of its finest-scale Haar detail along every
    axis (Donoho's estimator); smooth content and sparse edges barely reach that subband's median."""
    d = np.asarray(block, dtype=np.float64)
    for a in range(d.ndim):
        n = d.shape[a] - d.shape[a] % 2
        if n < 2:
            continue
        d = (np.take(d, np.arange(1, n, 2), axis=a) - np.take(d, np.arange(0, n, 2), axis=a)) / math.sqrt(2)
    return float(np.median(np.abs(d)) / 0.6745) if d.size else 0.0


def spectrum_concentration(block: np.ndarray, m: int = 1, noise_sigma: float = 0.0) -> float:
    """SCI's D(x): top-``m`` FFT magnitudes over the total FFT magnitude (eq. 9).

    With ``noise_sigma`` > 0 only the magnitude above the noise floor
    ``noise_sigma * sqrt(N ln N)`` counts (about the largest of the N magnitudes that white noise of
    that std gives): noise then does not read as spectrum spread, which made near-flat noisy
    blocks look complex, and a block that is only noise around its mean gets D = 1.
    """
    x = np.asarray(block, dtype=np.float64)
    if x.size == 0:
        return 1.0
    mag = np.abs(np.fft.fftn(x)).reshape(-1)
    if noise_sigma > 0:
        mag = np.maximum(mag - noise_sigma * math.sqrt(x.size * math.log(max(x.size, 2))), 0.0)
    total = float(mag.sum())
    if total <= 0:
        return 1.0
    m = min(max(int(m), 1), mag.size)
    top = np.partition(mag, mag.size - m)[mag.size - m :]
    return float(top.sum() / total)


def _split_axes(box: Box, min_side: int) -> list[int]:
    return [a for a, (lo, hi) in enumerate(box) if hi - lo >= 2 * min_side]


def _children(box: Box, min_side: int) -> list[Box]:
    axes = _split_axes(box, min_side)
    if not axes:
        return []
    halves = []
    for a, (lo, hi) in enumerate(box):
        if a in axes:
            mid = lo + (hi - lo) // 2
            halves.append(((lo, mid), (mid, hi)))
        else:
            halves.append(((lo, hi),))
    out: list[Box] = [()]
    for options in halves:
        out = [(*b, o) for b in out for o in options]
    return out


@dataclass
class Node:
    box: Box
    level: int
    parent: int | None
    children: list[int] = field(default_factory=list)
    d: float = 1.0
    flat: bool = False

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(hi - lo for lo, hi in self.box)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(lo, hi) for lo, hi in self.box)


def tree_geometry(shape: tuple[int, ...], levels: int, min_side: int) -> list[Node]:
    """The full octree (no data), nodes in pre-order; node 0 is the root."""
    nodes: list[Node] = []

    def add(box: Box, level: int, parent: int | None) -> None:
        idx = len(nodes)
        nodes.append(Node(box, level, parent))
        if parent is not None:
            nodes[parent].children.append(idx)
        if level < levels:
            for child in _children(box, min_side):
                add(child, level + 1, idx)

    add(tuple((0, n) for n in shape), 1, None)
    return nodes


def build_tree(
    block: np.ndarray,
    levels: int = 3,
    min_side: int = 4,
    m: int = 1,
    flat_tol: float = 1e-3,
    noise_sigma: float = 0.0,
) -> list[Node]:
    """Octree over ``block`` with D(x) on every node (above the noise floor of ``noise_sigma``,
    see :func:`spectrum_concentration`); flat nodes are pruned (no children)."""
    nodes: list[Node] = []

    def add(box: Box, level: int, parent: int | None) -> None:
        idx = len(nodes)
        node = Node(box, level, parent)
        nodes.append(node)
        if parent is not None:
            nodes[parent].children.append(idx)
        sub = block[node.slices]
        node.flat = bool(float(sub.max()) - float(sub.min()) <= flat_tol)
        node.d = 1.0 if node.flat else spectrum_concentration(sub, m, noise_sigma)
        if level < levels and not node.flat:
            for child in _children(box, min_side):
                add(child, level + 1, idx)

    add(tuple((0, n) for n in block.shape), 1, None)
    return nodes


def terminal_paths(nodes: list[Node]) -> list[list[int]]:
    """For every node without children, the node indices from it up to the root."""
    paths = []
    for i, node in enumerate(nodes):
        if node.children:
            continue
        path, j = [], i
        while j is not None:
            path.append(j)
            j = nodes[j].parent
        paths.append(path)
    return paths


def solve_partition(nodes: list[Node], a_max: int, min_leaf_size: int = 0) -> list[int]:
    """Optimal leaf set (indices into ``nodes``, pre-order) by the SCI integer program, with no
    network leaf (the root aside) smaller than ``min_leaf_size`` voxels."""
    n = len(nodes)
    if n == 1:
        return [0]
    total = nodes[0].size
    c = -np.array([node.d * node.size / total for node in nodes])
    paths = terminal_paths(nodes)
    a_paths = np.zeros((len(paths), n))
    for r, path in enumerate(paths):
        a_paths[r, path] = 1.0
    count = np.array([[0.0 if node.flat else 1.0 for node in nodes]])
    # Flat nodes cost a constant each and do not count against a_max; one leaf is always feasible.
    a_max = max(int(a_max), 1)
    constraints = [
        LinearConstraint(a_paths, np.ones(len(paths)), np.ones(len(paths))),
        LinearConstraint(count, -np.inf, float(a_max)),
    ]
    small = [i > 0 and not node.flat and node.size < min_leaf_size for i, node in enumerate(nodes)]
    upper = np.where(small, 0.0, 1.0)
    res = milp(c, constraints=constraints, integrality=np.ones(n), bounds=Bounds(0, upper),
               options={"disp": False, "time_limit": 30.0})
    if res.x is None:  # cannot happen (the root alone is feasible), but never fail an encode on it
        return [0]
    return sorted(int(i) for i in np.flatnonzero(res.x > 0.5))


def equidistant_partition(nodes: list[Node], a_max: int, min_leaf_size: int = 0) -> list[int]:
    """EP: the deepest uniform level whose node count fits ``a_max`` and whose network leaves hold
    ``min_leaf_size`` voxels (flat nodes stop early)."""
    best = [0]
    depth = max(node.level for node in nodes)
    for level in range(1, depth + 1):
        leaves = [i for i, node in enumerate(nodes) if node.level == level
                  or (node.level < level and not node.children)]
        net = [nodes[i] for i in leaves if not nodes[i].flat]
        if len(net) <= max(a_max, 1) and all(node.size >= min_leaf_size for node in net):
            best = sorted(leaves)
    return best


def no_partition(nodes: list[Node], a_max: int, min_leaf_size: int = 0) -> list[int]:
    return [0]


PARTITIONERS = {"adaptive": solve_partition, "equal": equidistant_partition, "none": no_partition}


def encode_splits(shape: tuple[int, ...], levels: int, min_side: int, leaf_boxes: list[Box]) -> bytes:
    """One bit per geometric node with children, pre-order, 1 = split; the leaves are the rest.

    ``leaf_boxes`` must tile the block along the octree (as every partitioner here produces).
    """
    geometry = tree_geometry(shape, levels, min_side)
    wanted = set(leaf_boxes)
    bits: list[int] = []

    def walk(i: int) -> None:
        node = geometry[i]
        if node.box in wanted:
            if node.children:
                bits.append(0)
            return
        if not node.children:
            raise ValueError(f"leaf set does not cover the node {node.box}")
        bits.append(1)
        for ch in node.children:
            walk(ch)

    walk(0)
    return np.packbits(np.array(bits, np.uint8)).tobytes() if bits else b""


def decode_splits(data: bytes, shape: tuple[int, ...], levels: int, min_side: int) -> tuple[list[Box], int]:
    """Inverse of :func:`encode_splits`: (leaf boxes in pre-order, bytes consumed)."""
    nodes = tree_geometry(shape, levels, min_side)
    bits = np.unpackbits(np.frombuffer(data, np.uint8)) if data else np.zeros(0, np.uint8)
    pos = 0
    leaves: list[int] = []

    def walk(i: int) -> None:
        nonlocal pos
        node = nodes[i]
        if not node.children:
            leaves.append(i)
            return
        if pos >= bits.size:
            raise ChunkFormatError("partition section is shorter than its split flags")
        split = bool(bits[pos])
        pos += 1
        if split:
            for ch in node.children:
                walk(ch)
        else:
            leaves.append(i)

    walk(0)
    return [nodes[i].box for i in leaves], (pos + 7) // 8
