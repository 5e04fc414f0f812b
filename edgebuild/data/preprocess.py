"""The ONE preprocessing path (export checks, calibration, validation).

letterbox() reproduces Ultralytics' LetterBox(auto=False, center=True, scaleup=True, padding_value=114,
interpolation=cv2.INTER_LINEAR) bit for bit, then converts BGR -> RGB (or keeps BGR: the model's input
channel order, meta.json input.order, see channel_order()). preprocess() adds the dtype
(float32 in [0, 1] or raw uint8) and layout (NCHW or NHWC) with a leading batch dimension of 1.
LetterboxInfo undoes the geometry (Ultralytics' scale_boxes convention).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgebuild.errors import EdgebuildError

PAD_VALUE = 114
DTYPES = ("float32", "uint8")
LAYOUTS = ("NCHW", "NHWC")
ORDERS = ("rgb", "bgr")


def channel_order(meta: dict) -> str:
    """The channel order a built model consumes (meta.json input.order; rgb when absent, as Ultralytics)."""
    return (meta.get("input") or {}).get("order", "rgb")


class CorruptImage(EdgebuildError):
    """An image file that cannot be decoded (never a crash deep inside cv2)."""

    def __init__(self, path, reason: str, where: str | None = None, fix: str | None = None):
        super().__init__(where or str(path), f"the image cannot be decoded ({reason}).",
                         fix or "replace or delete the file, or set dataset.on_corrupt=skip to skip such images.")
        self.path = str(path)

    def __reduce__(self):
        return (_rebuild_corrupt, (self.path, self.where, self.problem, self.fix))


def _rebuild_corrupt(path, where, problem, fix):
    e = CorruptImage(path, "", where, fix)
    e.problem = problem
    e.args = (e.paragraph(),)
    return e


@dataclass(frozen=True)
class LetterboxInfo:
    scale: float
    pad_x: int  # left padding in pixels
    pad_y: int  # top padding in pixels
    orig_w: int
    orig_h: int

    def unletterbox_boxes(self, xyxy: np.ndarray) -> np.ndarray:
        """Boxes in letterboxed input pixels -> boxes in original image pixels (clipped to the image)."""
        b = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4).copy()
        b[:, [0, 2]] = ((b[:, [0, 2]] - self.pad_x) / self.scale).clip(0, self.orig_w)
        b[:, [1, 3]] = ((b[:, [1, 3]] - self.pad_y) / self.scale).clip(0, self.orig_h)
        return b

    def unletterbox_points(self, xy: np.ndarray) -> np.ndarray:
        """Points [N, 2] in letterboxed input pixels -> original image pixels (not clipped)."""
        p = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
        return (p - np.array([self.pad_x, self.pad_y], np.float32)) / self.scale

    def letterbox_boxes(self, xyxy: np.ndarray) -> np.ndarray:
        """Original image pixels -> letterboxed input pixels."""
        b = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4) * self.scale
        return b + np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)


def decode_image(data: bytes, path: str | Path = "<bytes>") -> np.ndarray:
    """Encoded bytes -> BGR uint8 HxWx3; CorruptImage if it cannot be decoded or a JPEG is truncated."""
    if len(data) == 0:
        raise CorruptImage(path, "the file is empty")
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-4096:]:
        raise CorruptImage(path, "truncated JPEG: no end-of-image marker")
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as e:
        raise CorruptImage(path, f"OpenCV: {str(e).strip().splitlines()[-1]}") from None
    if img is None or img.size == 0:
        raise CorruptImage(path, "not a readable image format")
    return img


def read_image(path: str | Path) -> np.ndarray:
    """Image file -> BGR uint8 HxWx3."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise CorruptImage(path, e.strerror or "unreadable") from None
    return decode_image(data, path)


def letterbox_params(h: int, w: int, imgsz: int) -> tuple[tuple[int, int], LetterboxInfo, tuple[int, int, int, int]]:
    """((new_w, new_h), info, (top, bottom, left, right)) exactly as Ultralytics' LetterBox.get_params."""
    r = min(imgsz / h, imgsz / w)
    new_w, new_h = max(round(w * r), 1), max(round(h * r), 1)
    dw, dh = (imgsz - new_w) / 2, (imgsz - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return (new_w, new_h), LetterboxInfo(r, left, top, w, h), (top, bottom, left, right)


def letterbox(img_bgr: np.ndarray, imgsz: int, order: str = "rgb") -> tuple[np.ndarray, LetterboxInfo]:
    """BGR uint8 HxWx3 -> (uint8 imgsz x imgsz x 3 in `order` (rgb or bgr), LetterboxInfo)."""
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    h, w = img_bgr.shape[:2]
    (new_w, new_h), info, (top, bottom, left, right) = letterbox_params(h, w, imgsz)
    img = img_bgr
    if (w, h) != (new_w, new_h):
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return np.ascontiguousarray(img[..., ::-1] if order == "rgb" else img), info


def to_tensor(rgb: np.ndarray, dtype: str = "float32", layout: str = "NCHW") -> np.ndarray:
    """RGB uint8 HxWx3 -> batch of 1 in the asked dtype/layout (float32 is divided by 255)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    x = rgb.transpose(2, 0, 1) if layout == "NCHW" else rgb
    x = np.ascontiguousarray(x[None])
    return x.astype(np.float32) / np.float32(255.0) if dtype == "float32" else x


def preprocess(image: str | Path | np.ndarray, imgsz: int, dtype: str = "float32",
               layout: str = "NCHW", order: str = "rgb") -> tuple[np.ndarray, LetterboxInfo]:
    """Path or BGR array -> (batch array [1,...] in channel `order`, LetterboxInfo)."""
    bgr = image if isinstance(image, np.ndarray) else read_image(image)
    rgb, info = letterbox(bgr, imgsz, order)
    return to_tensor(rgb, dtype, layout), info
