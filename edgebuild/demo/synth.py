"""Deterministic synthetic YOLO dataset: OpenCV-drawn shapes on textured backgrounds.

`generate(out_dir, seed=0, n_train=240, n_val=60, imgsz=256)` writes an Ultralytics YOLO layout
(data.yaml, images/<split>/*.jpg, labels/<split>/*.txt with normalized polygon labels
`cls x1 y1 x2 y2 ...`). Every image is drawn from its own RNG seeded with (seed, split, index), so
the same arguments give byte-identical files and a larger draw extends a smaller one.

Used for the built-in demo dataset (`dataset.path=builtin:demo`, seed 0) and, with a different
seed, for the training draw of the demo weights (edgebuild/demo/train.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

NAMES = ("circle", "square", "triangle", "star")
SPLIT_IDS = {"train": 0, "val": 1}
JPEG_QUALITY = 92
# the built-in demo dataset (dataset.path=builtin:demo); changing these needs a new DEMO_VERSION in data/dataset.py
DEMO_SEED, DEMO_TRAIN, DEMO_VAL, DEMO_IMGSZ = 0, 240, 60, 256


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour gradient plus low-frequency noise texture and a few clutter lines."""
    base = rng.integers(40, 215, size=(2, 3)).astype(np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)
    horizontal = bool(rng.integers(0, 2))
    ramp = (t[None, :] if horizontal else t[:, None]) * np.ones((size, size), np.float32)
    img = base[0][None, None, :] * (1 - ramp[..., None]) + base[1][None, None, :] * ramp[..., None]
    coarse = rng.normal(0.0, 18.0, size=(size // 16, size // 16, 3)).astype(np.float32)
    img += cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0.0, 5.0, size=(size, size, 3)).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        p1 = tuple(int(v) for v in rng.integers(0, size, 2))
        p2 = tuple(int(v) for v in rng.integers(0, size, 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, color, 1, cv2.LINE_AA)
    return img


def _polygon(cls: int, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    if cls == 0:  # circle
        k = np.arange(24) * (2 * np.pi / 24)
        return np.stack([cx + r * np.cos(k), cy + r * np.sin(k)], 1)
    if cls == 1:  # square
        k = angle + np.pi / 4 + np.arange(4) * (np.pi / 2)
    elif cls == 2:  # triangle
        k = angle - np.pi / 2 + np.arange(3) * (2 * np.pi / 3)
    else:  # star: 5 outer + 5 inner points
        k = angle - np.pi / 2 + np.arange(10) * (np.pi / 5)
        radius = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return np.stack([cx + radius * np.cos(k), cy + radius * np.sin(k)], 1)
    return np.stack([cx + r * np.cos(k), cy + r * np.sin(k)], 1)


def draw_image(seed: int, split: str, index: int, imgsz: int = 256) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One BGR image and its objects [(class, polygon Nx2 in pixels)]."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    img = _background(rng, imgsz)
    objects: list[tuple[int, np.ndarray]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, 5))):
        for _attempt in range(10):
            r = float(rng.uniform(0.06, 0.17) * imgsz)
            cx, cy = (float(v) for v in rng.uniform(r + 2, imgsz - r - 2, 2))
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 4) ** 2 for x, y, q in placed):
                break
        else:
            continue
        cls = int(rng.integers(0, len(NAMES)))
        poly = _polygon(cls, cx, cy, r, float(rng.uniform(0, 2 * np.pi)))
        bg = img[int(cy), int(cx)].astype(int)
        color = np.array([(int(c) + int(rng.integers(90, 166))) % 256 for c in bg])  # contrast with background
        cv2.fillPoly(img, [np.round(poly).astype(np.int32)], tuple(int(c) for c in color), cv2.LINE_AA)
        placed.append((cx, cy, r))
        objects.append((cls, poly))
    return img, objects


def _label_line(cls: int, poly: np.ndarray, imgsz: int) -> str:
    pts = np.clip(poly / imgsz, 0.0, 1.0).reshape(-1)
    return f"{cls} " + " ".join(f"{v:.5f}" for v in pts)


def generate(out_dir: Path, seed: int = 0, n_train: int = 240, n_val: int = 60, imgsz: int = 256) -> Path:
    """Write the dataset into out_dir (created); returns the path of its data.yaml."""
    out_dir = Path(out_dir)
    for split, n in (("train", n_train), ("val", n_val)):
        (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, objects = draw_image(seed, split, i, imgsz)
            ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            assert ok, "cv2.imencode failed"
            stem = f"{split}_{i:05d}"
            (out_dir / "images" / split / f"{stem}.jpg").write_bytes(buf.tobytes())
            lines = [_label_line(c, p, imgsz) for c, p in objects]
            (out_dir / "labels" / split / f"{stem}.txt").write_text("".join(line + "\n" for line in lines))
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(NAMES))
    yaml_path = out_dir / "data.yaml"
    yaml_path.write_text(f"# edgebuild synthetic shapes, seed {seed}, {imgsz}x{imgsz}\n"
                         f"path: .\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return yaml_path


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=240)
    ap.add_argument("--val", type=int, default=60)
    ap.add_argument("--imgsz", type=int, default=256)
    a = ap.parse_args(argv)
    print(generate(a.out, a.seed, a.train, a.val, a.imgsz))


if __name__ == "__main__":
    main()
