"""Calibrators: streaming range estimators shared by the TFLite and QDQ backends (fast, numpy only)."""
from __future__ import annotations

import numpy as np
import pytest

from edgebuild.quant.calibrators import make_calibrator
from edgebuild.errors import EdgebuildError


def _batches(seed=0, n=20, size=5000, growing=True):
    """Heavy-tailed (Student t, df=2) activations whose range grows as the stream goes on."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        scale = 1.0 + (i if growing else 0)
        yield (rng.standard_t(2, size=size) * scale).astype(np.float32).reshape(5, -1)


def _feed(cal, batches):
    seen = []
    for b in batches:
        cal.collect("x", b)
        cal.collect("relu", np.maximum(b, 0))
        seen.append(b)
    return np.concatenate([s.ravel() for s in seen])


def test_minmax_equals_numpy():
    cal = make_calibrator("minmax")
    data = _feed(cal, _batches())
    r = cal.compute_ranges()
    assert r["x"] == (float(data.min()), float(data.max()))
    assert r["relu"] == (0.0, float(data.max()))


@pytest.mark.parametrize("pct", [99.0, 99.9, 99.99])
def test_percentile_equals_numpy_within_one_bin(pct):
    num_bins = 2048
    cal = make_calibrator("percentile", percentile=pct, num_bins=num_bins)
    data = _feed(cal, _batches())  # range grows 20x over the stream: exercises re-binning
    lo, hi = cal.compute_ranges()["x"]
    expected = float(np.percentile(np.abs(data), pct))
    # final histogram range is max|x| rounded up to a power-of-two multiple of the first range
    bin_width = cal.hists["x"].width
    assert bin_width <= 2 * np.abs(data).max() / num_bins * 1.01
    assert abs(hi - expected) <= bin_width
    assert abs(lo + expected) <= bin_width
    assert cal.compute_ranges()["relu"][0] == 0.0  # one-sided stays one-sided


def test_histogram_keeps_only_counts():
    cal = make_calibrator("entropy", num_bins=512)
    _feed(cal, _batches(n=5))
    h = cal.hists["x"]
    assert h.counts.shape == (512,) and h.counts.sum() == 5 * 5000


def test_methods_differ_on_heavy_tail():
    ranges = {}
    for method in ("minmax", "entropy", "percentile"):
        cal = make_calibrator(method, percentile=99.9)
        _feed(cal, _batches(growing=False))
        ranges[method] = cal.compute_ranges()["x"]
    mm, ent, pct = (ranges[m][1] for m in ("minmax", "entropy", "percentile"))
    assert len({round(v, 3) for v in (mm, ent, pct)}) == 3, ranges
    assert ent < mm and pct < mm  # both clip the tail


def test_entropy_keeps_full_range_of_uniform_data():
    rng = np.random.default_rng(1)
    cal = make_calibrator("entropy")
    for _ in range(10):
        cal.collect("u", rng.uniform(-3, 3, 10000))
    lo, hi = cal.compute_ranges()["u"]
    assert hi > 2.7 and lo < -2.7  # nothing to clip on a uniform distribution


def test_all_zero_tensor_and_errors():
    cal = make_calibrator("percentile")
    cal.collect("z", np.zeros(10))
    assert cal.compute_ranges()["z"] == (0.0, 0.0)
    with pytest.raises(EdgebuildError, match="no activations"):
        make_calibrator("entropy").compute_ranges()
    with pytest.raises(EdgebuildError, match="calibration.method"):
        make_calibrator("kl")
    with pytest.raises(EdgebuildError, match="NaN"):
        make_calibrator("minmax").collect("n", np.array([1.0, np.nan]))
