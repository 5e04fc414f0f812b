"""Activation range estimators shared by the TFLite and TensorRT-QDQ backends.

One class per method behind one interface (modeled on onnxruntime's quantization/calibrate.py):

    cal = make_calibrator("entropy", percentile=99.99, num_bins=2048)
    for image in stream:
        for name, array in activations(image).items():
            cal.collect(name, array)          # streaming: only running stats are kept
    ranges = cal.compute_ranges()             # {name: (lo, hi)}

- minmax:     running min / max of each tensor.
- percentile: the `percentile` of |x| read from a streaming histogram of |x| (symmetric threshold t),
              range = (max(min, -t), min(max, t)) so one-sided tensors stay one-sided.
- entropy:    TensorRT-style KL-divergence threshold search on the same |x| histogram
              (reference distribution P = histogram clipped at t with outliers folded into the last bin,
              candidate Q = P quantized to `num_quantized_bins` levels and expanded back; t minimizes KL(P||Q)).

Histograms start at the first batch's max|x| and double their range (merging bin pairs) whenever a later
batch exceeds it, so bins stay aligned and nothing but `num_bins` counts per tensor is stored.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgebuild.errors import EdgebuildError

METHODS = ("minmax", "entropy", "percentile")


class Calibrator:
    """Interface: collect(name, array) per tensor per image; compute_ranges() -> {name: (lo, hi)}."""

    method = ""

    def __init__(self) -> None:
        self._min: dict[str, float] = {}
        self._max: dict[str, float] = {}
        self.order: list[str] = []  # names in first-seen order (stable output order)

    def collect(self, name: str, array) -> None:
        a = np.asarray(array)
        if a.size == 0:
            return
        a = a.astype(np.float32, copy=False).ravel()
        lo, hi = float(a.min()), float(a.max())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise EdgebuildError("calibration", f"tensor {name!r} has NaN or infinite values on a calibration image.",
                                 "check the float model on that image (export step) and the calibration images.")
        if name not in self._min:
            self.order.append(name)
            self._min[name], self._max[name] = lo, hi
        else:
            self._min[name] = min(self._min[name], lo)
            self._max[name] = max(self._max[name], hi)
        self._update(name, a)

    def _update(self, name: str, a: np.ndarray) -> None:  # histogram calibrators override
        pass

    def compute_ranges(self) -> dict[str, tuple[float, float]]:
        if not self.order:
            raise EdgebuildError("calibration", "no activations were collected (empty calibration set?).",
                                 "check calibration.count / calibration.fraction and the dataset's calibration split.")
        return {n: self._range(n) for n in self.order}

    def _range(self, name: str) -> tuple[float, float]:
        return self._min[name], self._max[name]


class MinMaxCalibrator(Calibrator):
    method = "minmax"


class _AbsHistogram:
    """Histogram of |x| on [0, width * num_bins); the range doubles (bin pairs merge) as data grows."""

    def __init__(self, num_bins: int):
        self.num_bins = num_bins
        self.counts = np.zeros(num_bins, dtype=np.int64)
        self.width = 0.0  # 0 until a non-zero value has been seen
        self.zeros = 0    # exact zeros seen before the range was known

    @property
    def top(self) -> float:
        return self.width * self.num_bins

    def add(self, absx: np.ndarray) -> None:
        m = float(absx.max())
        if m == 0.0:
            if self.width == 0.0:
                self.zeros += absx.size
            else:
                self.counts[0] += absx.size
            return
        if self.width == 0.0:
            self.width = m / self.num_bins * (1 + 1e-6)
            self.counts[0] += self.zeros
            self.zeros = 0
        while m >= self.top:
            self.counts = self.counts.reshape(-1, 2).sum(axis=1)
            self.counts = np.concatenate([self.counts, np.zeros(self.num_bins // 2, dtype=np.int64)])
            self.width *= 2
        idx = np.minimum((absx * (1.0 / self.width)).astype(np.int64), self.num_bins - 1)
        self.counts += np.bincount(idx, minlength=self.num_bins)

    def edges(self) -> np.ndarray:
        return np.arange(self.num_bins + 1) * self.width


class _HistogramCalibrator(Calibrator):
    def __init__(self, num_bins: int = 2048):
        super().__init__()
        if num_bins < 256 or num_bins % 2:
            raise EdgebuildError("calibration.num_bins", f"must be an even number >= 256, got {num_bins}.",
                                 "use e.g. calibration.num_bins=2048.")
        self.num_bins = num_bins
        self.hists: dict[str, _AbsHistogram] = {}

    def _update(self, name: str, a: np.ndarray) -> None:
        h = self.hists.get(name)
        if h is None:
            h = self.hists[name] = _AbsHistogram(self.num_bins)
        h.add(np.abs(a))

    def _threshold(self, h: _AbsHistogram) -> float:
        raise NotImplementedError

    def _range(self, name: str) -> tuple[float, float]:
        h = self.hists[name]
        lo, hi = self._min[name], self._max[name]
        if h.width == 0.0:  # tensor was all zeros
            return lo, hi
        t = self._threshold(h)
        return max(lo, -t), min(hi, t)


class PercentileCalibrator(_HistogramCalibrator):
    method = "percentile"

    def __init__(self, percentile: float = 99.99, num_bins: int = 2048):
        super().__init__(num_bins)
        if not 0 < percentile <= 100:
            raise EdgebuildError("calibration.percentile", f"must be in (0, 100], got {percentile}.",
                                 "use e.g. calibration.percentile=99.99.")
        self.percentile = percentile

    def _threshold(self, h: _AbsHistogram) -> float:
        cdf = np.cumsum(h.counts)
        target = cdf[-1] * self.percentile / 100.0
        i = int(np.searchsorted(cdf, target, side="left"))
        i = min(i, h.num_bins - 1)
        # linear interpolation inside bin i
        below = cdf[i - 1] if i > 0 else 0
        frac = (target - below) / max(h.counts[i], 1)
        return float((i + min(max(frac, 0.0), 1.0)) * h.width)


class EntropyCalibrator(_HistogramCalibrator):
    """TensorRT-style KL threshold. `stride` candidate thresholds are tried every `stride` bins."""

    method = "entropy"

    def __init__(self, num_bins: int = 2048, num_quantized_bins: int = 128, stride: int = 0):
        super().__init__(num_bins)
        self.num_quantized_bins = num_quantized_bins
        self.stride = stride or max(1, num_bins // 256)

    def _threshold(self, h: _AbsHistogram) -> float:
        counts = h.counts.astype(np.float64)
        nz = np.nonzero(counts)[0]
        last = int(nz[-1]) + 1  # no candidate beyond the last occupied bin
        q_bins = self.num_quantized_bins
        if last <= q_bins:
            return last * h.width
        best_kl, best_i = math.inf, last
        candidates = list(range(q_bins, last + 1, self.stride))
        if candidates[-1] != last:
            candidates.append(last)
        for i in candidates:
            kl = _kl_for_threshold(counts, i, q_bins)
            if kl < best_kl:
                best_kl, best_i = kl, i
        return best_i * h.width


def _kl_for_threshold(counts: np.ndarray, i: int, q_bins: int) -> float:
    sliced = counts[:i]
    p = sliced.copy()
    p[-1] += counts[i:].sum()
    nonzero = p != 0
    group = (np.arange(i) * q_bins) // i  # which quantized level each of the i bins falls into
    q_sum = np.bincount(group, weights=sliced, minlength=q_bins)
    q_norm = np.bincount(group, weights=nonzero, minlength=q_bins)
    per_bin = np.divide(q_sum, q_norm, out=np.zeros_like(q_sum), where=q_norm > 0)
    q = np.where(nonzero, per_bin[group], 0.0)
    p, q = _smooth(p), _smooth(q)
    if p is None or q is None:
        return math.inf
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


def _smooth(d: np.ndarray, eps: float = 1e-4):
    """Move eps of mass into zero bins (as TensorRT / onnxruntime do) so KL stays finite."""
    zero = d == 0
    n_zero, n_nonzero = int(zero.sum()), int(d.size - zero.sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    out = d + np.where(zero, eps, -eps1)  # on raw counts, as onnxruntime's smooth_distribution
    return out if (out > 0).all() else None


class ActivationStats(_HistogramCalibrator):
    """What every method needs, from one pass over the calibration set: each tensor's min/max and |x| histogram.

    Collected once per float model, calibration set and num_bins (the `calibstats` step); minmax, percentile and
    entropy ranges are then computed from it by ranges_from_stats(), without running the model again. Stored as
    stats.json (names, min, max, bin widths) + counts.npy: both byte-identical for the same inputs."""

    method = "stats"

    def _threshold(self, h: _AbsHistogram) -> float:  # not a method: ranges come from ranges_from_stats()
        return h.top

    def save(self, out_dir: Path, images: int) -> None:
        import json

        doc = {"num_bins": self.num_bins, "images": images, "names": self.order,
               "min": [self._min[n] for n in self.order], "max": [self._max[n] for n in self.order],
               "width": [self.hists[n].width for n in self.order], "zeros": [self.hists[n].zeros for n in self.order]}
        (out_dir / "stats.json").write_text(json.dumps(doc))
        counts = np.stack([self.hists[n].counts for n in self.order]) if self.order else \
            np.zeros((0, self.num_bins), np.int64)
        with open(out_dir / "counts.npy", "wb") as f:
            np.save(f, counts.astype(np.int64), allow_pickle=False)

    @classmethod
    def load(cls, out_dir: Path) -> "ActivationStats":
        import json

        doc = json.loads((out_dir / "stats.json").read_text())
        counts = np.load(out_dir / "counts.npy", allow_pickle=False)
        stats = cls(int(doc["num_bins"]))
        stats.images = int(doc["images"])
        stats.order = list(doc["names"])
        for i, n in enumerate(stats.order):
            stats._min[n], stats._max[n] = float(doc["min"][i]), float(doc["max"][i])
            h = stats.hists[n] = _AbsHistogram(stats.num_bins)
            h.counts, h.width, h.zeros = counts[i].copy(), float(doc["width"][i]), int(doc["zeros"][i])
        return stats


def ranges_from_stats(stats: ActivationStats, method: str, percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """`method`'s ranges from collected statistics: exactly what make_calibrator(method) collecting the same
    stream would give."""
    cal = make_calibrator(method, percentile=percentile, num_bins=stats.num_bins)
    cal.order, cal._min, cal._max = list(stats.order), dict(stats._min), dict(stats._max)
    if isinstance(cal, _HistogramCalibrator):
        cal.hists = stats.hists
    return cal.compute_ranges()


def make_calibrator(method: str, percentile: float = 99.99, num_bins: int = 2048, **kwargs) -> Calibrator:
    """The calibrator for `calibration.method`."""
    if method == "minmax":
        return MinMaxCalibrator()
    if method == "percentile":
        return PercentileCalibrator(percentile=percentile, num_bins=num_bins)
    if method == "entropy":
        return EntropyCalibrator(num_bins=num_bins, **kwargs)
    raise EdgebuildError("calibration.method", f"{method!r} is not a calibration method.",
                         f"use one of: {', '.join(METHODS)}.")
