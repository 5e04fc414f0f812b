"""Draw a Result onto its image (OpenCV) and save it: boxes, "name score" labels, masks tinted."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgebuild.errors import EdgebuildError


def color(cls: int) -> tuple[int, int, int]:
    h = (int(cls) * 47) % 180
    bgr = cv2.cvtColor(np.uint8([[[h, 200, 255]]]), cv2.COLOR_HSV2BGR)[0, 0]
    return int(bgr[0]), int(bgr[1]), int(bgr[2])


def draw(img_bgr: np.ndarray, r) -> np.ndarray:
    out = img_bgr.copy()
    for i in range(len(r)):
        c = color(r.classes[i])
        if r.masks is not None:
            m = r.masks[:, :, i].astype(bool)
            out[m] = (0.5 * out[m] + 0.5 * np.array(c)).astype(np.uint8)
        x1, y1, x2, y2 = (int(round(float(v))) for v in r.boxes[i])
        cv2.rectangle(out, (x1, y1), (x2, y2), c, 1)
        cv2.putText(out, f"{r.names[i]} {r.scores[i]:.2f}", (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, 0.35, c, 1,
                    cv2.LINE_AA)
    return out


def save(image, r, dest: Path) -> None:
    from edgebuild.data.preprocess import read_image

    img = image if isinstance(image, np.ndarray) else read_image(image)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dest), draw(img, r)):
        raise EdgebuildError(str(dest), "the drawn image could not be written.",
                             "use a writable path ending in .jpg or .png for --save.")
