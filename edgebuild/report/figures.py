"""Figures embedded in report.html as base64 PNG: per-class AP bars and images with detections."""
from __future__ import annotations

import base64
import colorsys
import io

import cv2
import numpy as np


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def per_class_bars(report: dict, iou_type: str = "bbox", metric: str = "ap50_95") -> bytes | None:
    """Grouped bars: float vs quantized AP per class. None when there is nothing to plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = (report["float"].get(iou_type) or {}).get("per_class") or {}
    q = (report["quantized"].get(iou_type) or {}).get("per_class") or {}
    names = [n for n in f if f[n] is not None]
    if not names:
        return None
    fv = [f[n][metric] for n in names]
    qv = [(q.get(n) or {}).get(metric, 0.0) for n in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(names) + 2), 3.4), dpi=100)
    ax.bar(x - 0.2, fv, 0.4, label="float", color="#4c72b0")
    ax.bar(x + 0.2, qv, 0.4, label=report["quantized"].get("artifact", {}).get("kind", "quantized"), color="#dd8452")
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"{iou_type} {metric.replace('ap', 'AP')}")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _color(cls: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((cls * 0.61803) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def draw(pred: dict, names: list[str] | None, title: str) -> np.ndarray | None:
    """BGR image with the prediction's boxes and labels drawn, or None if the image cannot be read."""
    img = cv2.imread(pred["image"], cv2.IMREAD_COLOR)
    if img is None:
        return None
    for box, score, cls in zip(pred["boxes"], pred["scores"], pred["classes"]):
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        c = _color(int(cls))
        cv2.rectangle(img, (x1, y1), (x2, y2), c, 1)
        label = f"{names[int(cls)] if names and int(cls) < len(names) else cls} {score:.2f}"
        cv2.putText(img, label, (x1, max(9, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.3, c, 1, cv2.LINE_AA)
    bar = np.full((16, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, title, (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, img])


def side_by_side(float_pred: dict, quant_pred: dict, names: list[str] | None, quant_label: str) -> bytes | None:
    a = draw(float_pred, names, f"float: {len(float_pred['boxes'])} det >= 0.25")
    b = draw(quant_pred, names, f"{quant_label}: {len(quant_pred['boxes'])} det >= 0.25")
    if a is None or b is None:
        return None
    h = max(a.shape[0], b.shape[0])
    pad = lambda im: np.vstack([im, np.full((h - im.shape[0], im.shape[1], 3), 255, np.uint8)])
    gap = np.full((h, 6, 3), 255, np.uint8)
    ok, png = cv2.imencode(".png", np.hstack([pad(a), gap, pad(b)]))
    return png.tobytes() if ok else None
