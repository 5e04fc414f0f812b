"""TensorRT's text calibration cache: write it from calibrator ranges, parse it, retarget its version header.

Format (what IInt8Calibrator.write_calibration_cache produces and trtexec --calib reads):

    TRT-8602-EntropyCalibration2          <- TRT-<version code>-<algorithm>
    images: 3c010204                      <- tensor name ": " 8 hex digits = big-endian IEEE float32 scale
    /model.0/conv/Conv_output_0: 3d5a1b2c    scale = amax / 127 (symmetric int8)

The version code is major*1000 + minor*100 + patch before TensorRT 10 (8.6.2 -> 8602) and
major*10000 + minor*100 + patch from 10 on (10.3.0 -> 100300). TensorRT refuses a cache whose
algorithm differs from its calibrator's, and newer releases one from another version: `retarget`
rewrites the header on the device (the engine step and `calibrator` do it automatically).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from edgebuild.errors import EdgebuildError

# JetPack 6.0 (L4T 36.3) ships TensorRT 8.6.2; the header used when no tensorrt is importable here.
DEFAULT_TRT_VERSION = "8.6.2"
ALGORITHMS = {"minmax": "MinMaxCalibration", "entropy": "EntropyCalibration2", "percentile": "EntropyCalibration2"}
HEADER = re.compile(r"^TRT-(\d+)-([A-Za-z0-9]+)$")
LINE = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


@dataclass
class CalibrationCache:
    version: str                 # version code as written, e.g. "8602"
    algorithm: str               # e.g. "EntropyCalibration2"
    scales: dict[str, float]     # tensor name -> scale (amax / 127)

    def amax(self) -> dict[str, float]:
        return {k: v * 127.0 for k, v in self.scales.items()}


def version_code(version: str) -> str:
    """'8.6.2' -> '8602', '10.3.0' -> '100300'."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]] + [0, 0]
    major, minor, patch = parts[:3]
    return str(major * (10000 if major >= 10 else 1000) + minor * 100 + patch)


def scale_hex(scale: float) -> str:
    return struct.pack(">f", scale).hex()


def hex_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text))[0]


def format_cache(ranges: dict[str, tuple[float, float]], method: str, trt_version: str = DEFAULT_TRT_VERSION) -> str:
    """Cache text for symmetric int8: scale = max(|lo|, |hi|) / 127 (a tensor that is all zeros gets a tiny scale)."""
    if method not in ALGORITHMS:
        raise EdgebuildError("calibration.method", f"{method!r} has no TensorRT cache algorithm.",
                             f"use one of: {', '.join(ALGORITHMS)}.")
    lines = [f"TRT-{version_code(trt_version)}-{ALGORITHMS[method]}"]
    for name, (lo, hi) in ranges.items():
        if "\n" in name or ": " in name:
            raise EdgebuildError("model.onnx", f"tensor name {name!r} cannot be written to a TensorRT cache.",
                                 "rename the tensor in the export (no newlines or ': ').")
        amax = max(abs(float(lo)), abs(float(hi)))
        lines.append(f"{name}: {scale_hex(max(amax, 1e-30) / 127.0)}")
    return "\n".join(lines) + "\n"


def write_cache(path: Path, ranges: dict[str, tuple[float, float]], method: str,
                trt_version: str = DEFAULT_TRT_VERSION) -> Path:
    Path(path).write_text(format_cache(ranges, method, trt_version))
    return Path(path)


def parse_cache(text: str | bytes, where: str = "calibration.cache") -> CalibrationCache:
    """Parse a TensorRT calibration cache (ours or TensorRT's own)."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    lines = [ln.rstrip("\r") for ln in text.split("\n") if ln.strip()]
    m = HEADER.match(lines[0]) if lines else None
    if m is None:
        raise EdgebuildError(where, "is not a TensorRT calibration cache (first line must be TRT-<version>-<algorithm>).",
                             "rebuild it with the qdq step, or pass the cache TensorRT itself wrote.")
    scales = {}
    for i, ln in enumerate(lines[1:], 2):
        lm = LINE.match(ln)
        if lm is None:
            raise EdgebuildError(where, f"line {i} is not 'tensor_name: <8 hex digits>': {ln[:80]!r}.",
                                 "rebuild the cache with the qdq step.")
        scales[lm.group(1)] = hex_scale(lm.group(2))
    return CalibrationCache(m.group(1), m.group(2), scales)


def retarget(text: str | bytes, trt_version: str) -> bytes:
    """The same cache with its header's version code set to `trt_version` (the device's TensorRT)."""
    raw = text.encode() if isinstance(text, str) else text
    first, _, rest = raw.partition(b"\n")
    parsed = parse_cache(raw)
    return f"TRT-{version_code(trt_version)}-{parsed.algorithm}".encode() + b"\n" + rest
