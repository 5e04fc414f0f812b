"""The integer arithmetic a target runs, as far as calibration and error correction need to know it.

    TENSORRT          symmetric int8 activations (zero point 0, scale = amax / 127), per-channel symmetric weights
    tflite(per_ch)    asymmetric int8 activations (scale + zero point from the calibrated [lo, hi], 0 exactly
                      representable), symmetric int8 weights per output channel or per tensor (target.per_channel),
                      int32 bias (scale = input scale x weight scale)

Both backends write weights as symmetric int8 in [-127, 127] with scale = max|w| / 127 (per channel, or one scale
for the whole tensor); `quantize_weights` is that rule, the one implementation the corrections write back with.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scheme:
    name: str
    symmetric_activations: bool
    per_channel: bool

    def quantize_weights(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float weights [Cout, ...] -> (int8 weights, scale [Cout] per channel or [1] per tensor)."""
        w = np.asarray(w, np.float64)
        flat = w.reshape(w.shape[0], -1)
        amax = np.abs(flat).max(axis=1) if self.per_channel else np.abs(flat).max(keepdims=True)
        scale = np.maximum(amax, 1e-12) / 127
        per_row = scale[:, None] if self.per_channel else scale
        q = np.clip(np.round(flat / per_row), -127, 127).astype(np.int8).reshape(w.shape)
        return q, scale


TENSORRT = Scheme("tensorrt", symmetric_activations=True, per_channel=True)


def tflite(per_channel: bool) -> Scheme:
    return Scheme("tflite", symmetric_activations=False, per_channel=bool(per_channel))


def for_target(target) -> Scheme:
    """The scheme of a composed config's `target` node."""
    return TENSORRT if target.backend == "tensorrt" else tflite(target.per_channel)
