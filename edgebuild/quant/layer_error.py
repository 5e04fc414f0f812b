"""Per-layer quantization error ("where accuracy goes"), backend-neutral.

The backend collectors (edgebuild.tflite.layer_error, edgebuild.tensorrt.layer_error) run the float model and the
quantized artifact in their own runtimes on the same images and hand every quantized activation to `SQNR` as a
pair (float tensor, dequantized tensor). Per tensor it sums the signal energy S = sum(f^2) and the noise energy
N = sum((f - q)^2) over all images (float64), and reports

    sqnr_db  = 10 log10(S / N)      signal-to-quantization-noise ratio; low = much error (capped at +-99)
    rel_rmse = sqrt(N / S)          the same as an RMS error relative to the float tensor's RMS
    lost_db  = min SQNR of the producing op's quantized inputs - this SQNR: the dB this op itself lost
               (None when the collector does not know the inputs)

Rows come sorted worst first. The error is cumulative (a tensor inherits its inputs' noise); `lost_db` separates
what an op adds from what it inherits.
"""
from __future__ import annotations

import math

import numpy as np

CAP_DB = 99.0


class SQNR:
    """Accumulates signal and noise energy per tensor. `ops`: tensor -> producing op (or consuming node) for the
    table; `inputs`: tensor -> the quantized tensors its op reads (for lost_db)."""

    def __init__(self, ops: dict[str, str] | None = None, inputs: dict[str, list[str]] | None = None):
        self.ops, self.inputs = ops or {}, inputs or {}
        self.signal: dict[str, float] = {}
        self.noise: dict[str, float] = {}

    def add(self, name: str, ref: np.ndarray, quant: np.ndarray) -> None:
        f = np.asarray(ref, np.float64)
        e = f - np.asarray(quant, np.float64)
        self.signal[name] = self.signal.get(name, 0.0) + float(np.vdot(f, f))
        self.noise[name] = self.noise.get(name, 0.0) + float(np.vdot(e, e))

    def db(self, name: str) -> float:
        s, n = self.signal[name], self.noise[name]
        if n == 0:
            return CAP_DB
        return -CAP_DB if s == 0 else round(max(-CAP_DB, min(CAP_DB, 10 * math.log10(s / n))), 2)

    def rows(self) -> list[dict]:
        """The table, worst (lowest SQNR) first."""
        rows = []
        for name in self.signal:
            s, n = self.signal[name], self.noise[name]
            ins = [self.db(i) for i in self.inputs.get(name, ()) if i in self.signal and i != name]
            rows.append({"tensor": name, "op": self.ops.get(name, ""), "sqnr_db": self.db(name),
                         "rel_rmse": float(f"{math.sqrt(n / s):.4g}") if s > 0 else None,
                         "lost_db": round(min(ins) - self.db(name), 2) if ins else None})
        return sorted(rows, key=lambda r: (r["sqnr_db"], r["tensor"]))
