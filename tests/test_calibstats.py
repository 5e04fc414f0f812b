"""Calibration statistics collected once give every method exactly the ranges its own calibrator would."""
from __future__ import annotations

import numpy as np
import pytest

from edgebuild.quant.calibrators import ActivationStats, make_calibrator, ranges_from_stats


def stream(seed: int = 0, n: int = 24):
    """Per image {tensor: activation}: a widening heavy-tailed tensor, a one-sided one, and an all-zero one."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        yield {"conv": rng.standard_t(3, size=(1, 8, 16, 16)).astype(np.float32) * (1 + i / 4),
               "relu": np.maximum(rng.normal(size=(1, 4, 8, 8)), 0).astype(np.float32),
               "dead": np.zeros((1, 2, 4, 4), np.float32)}


@pytest.mark.parametrize("method, percentile", [("minmax", 99.99), ("entropy", 99.99), ("percentile", 99.9),
                                                ("percentile", 99.999)])
def test_ranges_from_saved_stats_equal_the_methods_own_calibrator(tmp_path, method, percentile):
    own = make_calibrator(method, percentile=percentile, num_bins=512)
    stats = ActivationStats(512)
    for acts in stream():
        for name, a in acts.items():
            own.collect(name, a)
            stats.collect(name, a)
    stats.save(tmp_path, images=24)
    loaded = ActivationStats.load(tmp_path)
    assert loaded.images == 24 and loaded.order == ["conv", "relu", "dead"]
    assert ranges_from_stats(loaded, method, percentile) == own.compute_ranges()


def test_saved_stats_are_byte_identical(tmp_path):
    for d in ("a", "b"):
        stats = ActivationStats(256)
        for acts in stream(seed=1, n=6):
            for name, a in acts.items():
                stats.collect(name, a)
        (tmp_path / d).mkdir()
        stats.save(tmp_path / d, images=6)
    for f in ("stats.json", "counts.npy"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()
