"""calibset: dataset + seeded sampler -> manifest.json of the chosen calibration images (paths + sha256).

Depends on the sampling keys and the dataset, never on calibration.method: switching minmax/entropy/
percentile reuses the same calibration set. The split's image files (and label files when stratified)
are declared inputs, so editing the dataset re-samples.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from edgebuild.data.dataset import open_dataset
from edgebuild.data.preprocess import CorruptImage, decode_image
from edgebuild.data.sampler import candidate_order, sample_size
from edgebuild.digest import canonical_json
from edgebuild.engine import StepContext, step
from edgebuild.errors import EdgebuildError

log = logging.getLogger("edgebuild")
SPLIT_KEY = "calibration.split"


def _files(cfg) -> dict[str, list[Path]]:
    ds = open_dataset(cfg)
    split = cfg.calibration.split
    files = {"dataset": ds.definition_files(split), "images": ds.image_files(split, SPLIT_KEY)}
    if cfg.calibration.stratified:
        files["labels"] = ds.label_files(split, SPLIT_KEY)
    return files


def precheck(cfg) -> None:
    cal = cfg.calibration
    ds = open_dataset(cfg)
    n = len(ds.image_files(cal.split, SPLIT_KEY))
    sample_size(n, cal.count, cal.fraction, cal.split)
    if "validation" in cfg and cfg.validation.split == cal.split:
        log.warning("calibration.split and validation.split are both %r: calibration images leak into the "
                    "accuracy measurement", cal.split)


@step("calibset", version=1,
      config=("calibration.count", "calibration.fraction", "calibration.seed", "calibration.split",
              "calibration.stratified", "dataset.path", "dataset.format", "dataset.images", "dataset.on_corrupt"),
      files=_files, precheck=precheck, artifacts=("manifest.json",))
def calibset(ctx: StepContext) -> None:
    manifest = build_manifest(ctx.cfg, ctx.progress, ctx.files)
    (ctx.out / "manifest.json").write_text(canonical_json(manifest) + "\n")
    log.info("calibset: %d images of split %r (seed %d)%s", len(manifest["items"]), manifest["split"],
             manifest["seed"], f", {len(manifest['skipped'])} unreadable skipped" if manifest["skipped"] else "")


def _open(cfg, files: dict | None):
    """The dataset; in the step, builtin:demo is the copy resolved at plan time (ctx.cfg has no build.cache_dir)."""
    if files and str(cfg.dataset.path).startswith("builtin:"):
        from edgebuild.data.yolo import YoloDataset

        return YoloDataset(files["dataset"][0], cfg.dataset.on_corrupt)
    return open_dataset(cfg)


def build_manifest(cfg, progress=lambda done, total, what="": None, files: dict | None = None) -> dict:
    """The manifest for cfg.calibration over cfg.dataset (`files`: the step's declared files, when run as a step)."""
    cal, on_corrupt = cfg.calibration, cfg.dataset.on_corrupt
    ds = _open(cfg, files)
    if cal.stratified:
        samples = ds.samples(cal.split, SPLIT_KEY)
        paths = [s.image_path for s in samples]
        order = candidate_order(len(paths), cal.seed, [s.classes for s in samples])
        classes = [sorted({int(c) for c in s.classes}) for s in samples]
        skipped = [{"path": p, "reason": r} for p, r in ds.skipped.get(cal.split, [])]
    else:
        paths = ds.image_files(cal.split, SPLIT_KEY)
        order = candidate_order(len(paths), cal.seed)
        classes, skipped = None, []
    want = sample_size(len(paths), cal.count, cal.fraction, cal.split)
    items = []
    for i in order:
        if len(items) == want:
            break
        try:
            data = paths[i].read_bytes()
            decode_image(data, paths[i])
        except (OSError, CorruptImage) as e:
            reason = e.problem if isinstance(e, CorruptImage) else (e.strerror or str(e))
            if on_corrupt == "error":
                raise EdgebuildError(str(paths[i]), f"a calibration image cannot be read: {reason}",
                                     "replace or delete the file, or set dataset.on_corrupt=skip.") from None
            log.warning("calibset: skipping unreadable %s: %s", paths[i], reason)
            skipped.append({"path": str(paths[i]), "reason": reason})
            continue
        item = {"path": str(paths[i]), "sha256": hashlib.sha256(data).hexdigest()}
        if classes is not None:
            item["classes"] = classes[i]
        items.append(item)
        progress(len(items), want, "images checked")
    if len(items) < want and cal.count is None:  # fraction/default: of the readable images
        log.warning("calibset: %d of the %d images asked for by calibration.fraction are readable; using %d",
                    len(items), want, len(items))
        want = len(items)
    if len(items) < want or not items:
        raise EdgebuildError("calibration.count",
                             f"only {len(items)} of the {want} requested images of split {cal.split!r} are readable "
                             f"({len(skipped)} skipped as unreadable).",
                             f"ask for at most {len(items)} images, or repair the unreadable files.")
    return {"split": cal.split, "seed": cal.seed, "method_independent": True, "count": want,
            "requested": {"count": cal.count, "fraction": cal.fraction, "stratified": bool(cal.stratified)},
            "split_size": len(paths), "dataset": {"source": str(ds.source), "format": ds.format, "names": ds.names},
            "skipped": skipped, "items": items}


def holdout_samples(cfg, manifest: dict, count: int, files: dict | None = None, key: str = "precision.auto.images"):
    """`count` labelled images of the calibration split that the calibration manifest does not hold, in a seeded
    order (calibration.seed): images for a search that must see neither the calibration set nor the val split."""
    cal = cfg.calibration
    samples = _open(cfg, files).samples(cal.split, SPLIT_KEY)
    used = {item["path"] for item in manifest["items"]}
    free = [samples[i] for i in candidate_order(len(samples), cal.seed) if str(samples[i].image_path) not in used]
    if len(free) < count:
        raise EdgebuildError(key, f"{count} search images were asked for, but split {cal.split!r} has only "
                             f"{len(free)} labelled images that calibration does not use.",
                             f"use {key}<={len(free)}, or lower calibration.count to hold more images back.")
    return free[:count]
