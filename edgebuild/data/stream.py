"""Stream calibration images from a calibset manifest, one decoded image at a time.

Each file's bytes are hashed and compared with the manifest before decoding, so a dataset that
changed after the calibration set was chosen is an error, not a silent different calibration.
Memory stays flat in the number of images: nothing is accumulated.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterator

import numpy as np

from edgebuild.data.preprocess import decode_image, letterbox, to_tensor
from edgebuild.errors import EdgebuildError


def read_manifest(manifest_path: str | Path) -> dict:
    p = Path(manifest_path)
    if p.is_dir():
        p = p / "manifest.json"
    try:
        m = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise EdgebuildError(str(p), f"cannot read the calibration manifest ({e}).",
                             "rebuild the calibset step (delete its cache entry or change calibration.seed).") from None
    if not isinstance(m.get("items"), list):
        raise EdgebuildError(str(p), "is not a calibset manifest (no items list).", "rebuild the calibset step.")
    return m


def manifest_size(manifest_path: str | Path) -> int:
    return len(read_manifest(manifest_path)["items"])


def iter_calibration(manifest_path: str | Path, imgsz: int, dtype: str = "float32",
                     layout: str = "NCHW", order: str = "rgb") -> Iterator[np.ndarray]:
    """Yield preprocess() output (batch of 1, channels in `order`) for every manifest item, in manifest order."""
    for item in read_manifest(manifest_path)["items"]:
        path = item["path"]
        try:
            data = Path(path).read_bytes()
        except OSError as e:
            raise EdgebuildError(path, f"a calibration image is gone ({e.strerror}); the dataset changed after "
                                       "the calibration set was chosen.",
                                 "restore the file, or rebuild: the calibset step re-runs when the dataset "
                                 "files change (run the build again).") from None
        if hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise EdgebuildError(path, "a calibration image changed after the calibration set was chosen "
                                       "(sha256 differs from the manifest).",
                                 "rebuild so calibset re-samples the changed dataset (run the build again), "
                                 "or restore the original file.")
        rgb, _ = letterbox(decode_image(data, path), imgsz, order)
        del data
        yield to_tensor(rgb, dtype, layout)
