"""Seeded calibration sampling.

`candidate_order(n, seed, classes=None)` is a deterministic permutation of the split (samples sorted by
image path): plain seeded shuffle, or, stratified, a round-robin over classes (rarest class first, each
class's images shuffled) followed by the images without objects. The calibration set is the first
`sample_size(...)` usable images of that order, so a skipped corrupt image is replaced deterministically.

Size: calibration.count, or round(calibration.fraction * split size) (at least 1), or by default
min(DEFAULT_COUNT, split size). 300 is the order of magnitude PTQ guides recommend (TensorRT suggests
~500 for ImageNet-scale data; our measurements in DESIGN.md use 300) and keeps calibration a few minutes.
"""
from __future__ import annotations

import math

import numpy as np

from edgebuild.errors import EdgebuildError

DEFAULT_COUNT = 300


def sample_size(split_size: int, count: int | None, fraction: float | None, split: str = "train") -> int:
    if split_size < 1:
        raise EdgebuildError("calibration.split", f"split {split!r} has no usable images.",
                             "choose a split with images (calibration.split=train).")
    if count is not None:
        if count < 1:
            raise EdgebuildError("calibration.count", f"must be at least 1, got {count}.", "use a positive count.")
        if count > split_size:
            raise EdgebuildError("calibration.count",
                                 f"{count} is larger than split {split!r}, which has {split_size} usable images.",
                                 f"use calibration.count<={split_size}, or calibration.fraction=1.0 for all of them.")
        return count
    if fraction is not None:
        if not 0 < fraction <= 1:
            raise EdgebuildError("calibration.fraction", f"must be in (0, 1], got {fraction}.",
                                 "use e.g. calibration.fraction=0.25.")
        return max(1, math.floor(fraction * split_size + 0.5))
    return min(DEFAULT_COUNT, split_size)


def candidate_order(n: int, seed: int, classes: list[np.ndarray] | None = None) -> list[int]:
    """A seeded permutation of range(n); with `classes` (per-sample class arrays) class-balanced."""
    rng = np.random.default_rng(seed)
    if classes is None:
        return [int(i) for i in rng.permutation(n)]
    per_class: dict[int, list[int]] = {}
    for i, cls in enumerate(classes):
        for c in sorted(set(int(c) for c in cls)):
            per_class.setdefault(c, []).append(i)
    order_cls = sorted(per_class, key=lambda c: (len(per_class[c]), c))  # rarest first
    queues = {c: [per_class[c][j] for j in rng.permutation(len(per_class[c]))] for c in order_cls}
    chosen, seen = [], set()
    while any(queues.values()):
        for c in order_cls:
            q = queues[c]
            while q and q[0] in seen:
                q.pop(0)
            if q:
                i = q.pop(0)
                seen.add(i)
                chosen.append(i)
    rest = [i for i in range(n) if i not in seen]
    chosen += [rest[j] for j in rng.permutation(len(rest))]
    return chosen
