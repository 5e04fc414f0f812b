"""precision=auto for TFLite (edgebuild.quant.auto has the search): candidates are ops of the all-int8 .tflite,
ranked by `lost_db` (the dB the op itself loses vs its quantized inputs, edgebuild.tflite.layer_error); a layer is
kept float by the quantizer's denylist (edgebuild.tflite.mixed), so every candidate is re-quantized from the same
calibrated flatbuffer and the same corrected weights (edgebuild.tflite.artifact.build)."""
from __future__ import annotations

import glob

from edgebuild.quant.auto import Candidate

SKIP_OPS = ("QUANTIZE", "DEQUANTIZE")


def candidates(rows: list[dict], count: int | None) -> list[Candidate]:
    """The `count` ops losing the most dB; a layer is its output tensor name as a precision.float_layers pattern."""
    ranked = sorted((r for r in rows if r["lost_db"] is not None and r["op"] not in SKIP_OPS),
                    key=lambda r: (-r["lost_db"], r["tensor"]))
    return [Candidate(glob.escape(r["tensor"]), f"{r['op']} {r['tensor']}", r["lost_db"]) for r in ranked[:count]]
