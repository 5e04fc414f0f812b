"""Step `precision_search` (precision=auto): the fewest layers kept float (TFLite) / FP16 (TensorRT) that meet the
accuracy budget, and the deployable artifact built with them.

Starts from the all-int8, corrected artifact of the `tflite` or `qdq` step (precision=auto builds those as int8).
Search images: precision.auto.images labelled images of the calibration split that calibration did not use
(calibset.holdout_samples); the val split is never read, so the gate stays an honest test. Candidates come from
the per-layer error of the int8 artifact on the first precision.auto.rank_images calibration images; every
candidate is made from the same calibration ranges and corrections (no re-calibration), scored float vs candidate
in the validation evaluator (edgebuild.metrics.evaluate) and searched by edgebuild.quant.auto.
Outputs the artifact under the same names as tflite/qdq (downstream steps take it from here) and search.json:
budget, chosen layers, curve, single-layer drops, and the cost vs all-int8 (float ops, size, host latency).
"""
from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

from edgebuild.engine import StepContext, step
from edgebuild.steps.calibset import _files as calibset_files, holdout_samples

MARGIN = 0.3  # points: precision.auto.max_drop=null searches for validation.max_map_drop - MARGIN
LATENCY_RUNS = 20
POOL = 3  # TFLite: layers with the largest per-layer error, per candidate, re-ranked by their effect on the outputs


def budget(cfg) -> float:
    a = cfg.precision.auto
    return float(a.max_drop) if a.max_drop is not None else float(cfg.validation.max_map_drop) - MARGIN


def _files(cfg) -> dict:
    from edgebuild.data.dataset import open_dataset

    files = calibset_files(cfg)
    files["labels"] = open_dataset(cfg).label_files(cfg.calibration.split, "calibration.split")
    return files


def _precheck(cfg) -> None:
    from edgebuild.errors import EdgebuildError

    if cfg.calibration.split == cfg.validation.split:
        raise EdgebuildError("calibration.split", f"precision=auto searches on images of calibration.split "
                             f"({cfg.calibration.split!r}), which is also validation.split: the gate would no longer "
                             "be an honest test.", "calibrate on another split (calibration.split=train).")


@step("precision_search", version=1,
      config=("precision.mode", "precision.auto.images", "precision.auto.max_drop", "precision.auto.max_float_layers",
              "precision.auto.candidates", "precision.auto.rank_images", "validation.max_map_drop", "validation.conf",
              "validation.iou", "validation.max_det", "model.imgsz", "target.per_channel", "target.input_dtype",
              "calibration.split", "calibration.seed", "dataset.path", "dataset.format", "dataset.images",
              "dataset.on_corrupt"),
      upstream=("export", "calibset", "?calibrate", "?correct", "?tflite", "?qdq"), files=_files,
      applies=lambda cfg: cfg.precision.mode == "auto", precheck=_precheck,
      artifacts=("search.json", "meta.json", "model.tflite", "model_qdq.onnx", "calibration.cache"), isolate=True)
def precision_search(ctx: StepContext) -> None:
    from edgebuild.data.preprocess import channel_order
    from edgebuild.metrics.evaluate import Settings, evaluate_model
    from edgebuild.quant.auto import search
    from edgebuild.report.gate import gate
    from edgebuild.runtime import load_runner

    cfg, inp, a = ctx.cfg, ctx.inputs, ctx.cfg.precision.auto
    export_meta = json.loads((inp["export"] / "meta.json").read_text())
    order = channel_order(export_meta)
    backend = (_Tflite if "tflite" in inp else _TensorRT)(ctx, order)
    manifest = json.loads((inp["calibset"] / "manifest.json").read_text())
    samples = holdout_samples(cfg, manifest, int(a.images), ctx.files)
    names = list(export_meta.get("names") or manifest["dataset"]["names"])
    v = cfg.validation
    s = Settings(imgsz=int(cfg.model.imgsz), conf=v.conf, iou=v.iou, max_det=v.max_det, report_images=0,
                 on_corrupt=cfg.dataset.on_corrupt, order=order)

    def metrics(model: Path, meta: dict) -> dict:
        return evaluate_model(load_runner(model, meta), meta, samples, names, s)[0]

    reference = metrics(inp["export"] / "model.onnx", export_meta)
    limit = budget(cfg)
    ctx.log.info("precision_search: %d search images held back from %r, budget %.2f pt", len(samples),
                 cfg.calibration.split, limit)

    def drop(layers: list[str]) -> float:
        model, meta = backend.build(layers, ctx.out / "candidate")
        return gate(reference, metrics(model, meta), limit)["drop"]

    def candidates() -> list:
        from edgebuild.quant.auto import output_noise, rank_by_output

        xs = backend.rank_inputs(int(a.rank_images))
        ref = [load_runner(inp["export"] / "model.onnx", export_meta).predict(x) for x in xs]

        def noise(layers: list[str]) -> float:
            model, meta = backend.build(layers, ctx.out / "candidate")
            runner = load_runner(model, meta)
            return output_noise((runner.predict(x) for x in xs), ref)

        pool = backend.candidates(POOL * int(a.candidates), int(a.rank_images))
        return rank_by_output(pool, noise, int(a.candidates), ctx.progress)

    result = search(candidates, drop, limit, int(a.max_float_layers), progress=ctx.progress)
    for f in ctx.out.glob("candidate*"):
        f.unlink()
    int8_cost = backend.cost(*backend.int8())
    if result["float_layers"]:
        model, meta = backend.build(result["float_layers"], ctx.out / "model")
        auto_cost = backend.cost(model, meta)
    else:  # all-int8 meets the budget: the artifact is the tflite/qdq step's, byte for byte
        meta, auto_cost = backend.copy_int8(ctx.out), int8_cost
    result.update(backend=backend.name, images=len(samples), split=cfg.calibration.split,
                  rank_images=int(a.rank_images), float_reference=reference["bbox"]["map50_95"],
                  cost={"int8": int8_cost, "auto": auto_cost})
    meta["quantization"]["auto"] = {k: result[k] for k in ("float_layers", "drop", "budget", "budget_met")}
    (ctx.out / "meta.json").write_text(json.dumps(meta, indent=1))
    (ctx.out / "search.json").write_text(json.dumps(result, indent=1))
    ctx.log.info("precision_search: %s kept %s: search-set drop %.2f pt (budget %.2f%s), %d candidates evaluated",
                 backend.name, f"{len(result['float_layers'])} layer(s) float" if result["float_layers"]
                 else "zero layers float (all-int8 meets the budget)", result["drop"], limit,
                 "" if result["budget_met"] else ", NOT met", result["evaluations"])


class _Backend:
    name = ""

    def __init__(self, ctx: StepContext, order: str):
        self.ctx, self.cfg, self.inp, self.order = ctx, ctx.cfg, ctx.inputs, order

    def copy_int8(self, out: Path) -> dict:
        """The int8 artifact's files into `out`; returns its meta with quantization.mode auto."""
        path, meta = self.int8()
        for name in self.files:
            shutil.copyfile(path.parent / name, out / name)
        meta["quantization"]["mode"] = "auto"
        return meta

    def rank_inputs(self, n: int) -> list:
        """The first n calibration images, preprocessed as validation does (runner inputs)."""
        from edgebuild.data.preprocess import preprocess

        manifest = json.loads((self.inp["calibset"] / "manifest.json").read_text())
        return [preprocess(Path(item["path"]), int(self.cfg.model.imgsz), order=self.order)[0]
                for item in manifest["items"][:n]]

    def rank_images(self, n: int, layout: str):
        from edgebuild.data.stream import iter_calibration

        return itertools.islice(iter_calibration(self.inp["calibset"] / "manifest.json", int(self.cfg.model.imgsz),
                                                 "float32", layout, self.order), n)

    def cost(self, model: Path, meta: dict) -> dict:
        from edgebuild.metrics.evaluate import measure_latency
        from edgebuild.runtime import load_runner

        latency = measure_latency(load_runner(model, meta), self.rank_inputs(1)[0], LATENCY_RUNS)
        return {"size_bytes": model.stat().st_size, "float_layers": self.float_count(meta),
                "latency_ms": latency["median_ms"]}


class _Tflite(_Backend):
    name = "tflite"
    files = ("model.tflite", "meta.json")

    def int8(self) -> tuple[Path, dict]:
        return self.inp["tflite"] / "model.tflite", json.loads((self.inp["tflite"] / "meta.json").read_text())

    def candidates(self, count: int, images: int):
        """Hundreds of ops, ~1 s to re-quantize each: only the `count` largest lost_db go to the output ranking."""
        from edgebuild.tflite import auto
        from edgebuild.tflite.layer_error import collect

        rows = collect((self.inp["calibrate"] / "calibrated.tflite").read_bytes(), self.int8()[0].read_bytes(),
                       self.rank_images(images, "NHWC"))
        return auto.candidates(rows, count)

    def build(self, layers: list[str], stem: Path) -> tuple[Path, dict]:
        from edgebuild.tflite import artifact

        t = self.cfg.target
        model, info = artifact.build(self.inp["calibrate"], self.inp.get("correct"), per_channel=bool(t.per_channel),
                                     input_dtype=t.input_dtype, float_layers=layers)
        meta = json.loads((self.inp["export"] / "meta.json").read_text())
        model, meta = artifact.finish(model, meta, {"mode": "auto", **info}, int(self.cfg.model.imgsz))
        path = stem.with_suffix(".tflite")
        path.write_bytes(model)
        return path, meta

    @staticmethod
    def float_count(meta: dict) -> int:
        return len(meta["float_ops"])


class _TensorRT(_Backend):
    name = "tensorrt"
    files = ("model_qdq.onnx", "calibration.cache", "meta.json")

    def int8(self) -> tuple[Path, dict]:
        return self.inp["qdq"] / "model_qdq.onnx", json.loads((self.inp["qdq"] / "meta.json").read_text())

    def models(self):
        """(int8 QDQ, float) ONNX models, loaded once for every candidate (keep_float copies)."""
        import onnx

        if not hasattr(self, "_models"):
            self._models = (onnx.load(str(self.int8()[0])), onnx.load(str(self.inp["export"] / "model.onnx")))
        return self._models

    def candidates(self, count: int, images: int):
        """All int8 convs (~60; Q/DQ removal is cheap): every one goes to the output ranking."""
        from edgebuild.tensorrt import auto

        return auto.candidates(self.models()[0])

    def build(self, layers: list[str], stem: Path) -> tuple[Path, dict]:
        import onnx

        from edgebuild.tensorrt.auto import keep_float

        _, meta = self.int8()
        if stem.name == "model":
            path_out = self.ctx.out / "model_qdq.onnx"
            shutil.copyfile(self.inp["qdq"] / "calibration.cache", self.ctx.out / "calibration.cache")
        else:
            path_out = stem.with_suffix(".onnx")
        model = keep_float(*self.models(), layers)
        onnx.save(model, str(path_out))
        meta["quantization"].update(mode="auto", float_nodes=list(layers))
        return path_out, meta

    @staticmethod
    def float_count(meta: dict) -> int:
        return len(meta["quantization"].get("float_nodes", []))
