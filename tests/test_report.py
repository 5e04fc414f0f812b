"""Report: the gate, report.json from real evaluations, report.html in headless Chromium, sweep summary."""
from __future__ import annotations

import csv
import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from omegaconf import OmegaConf

from edgebuild.metrics import coco
from edgebuild.report.build import build_report
from edgebuild.report.gate import gate
from edgebuild.report.html import render

# ---------------------------------------------------------------- gate (pure function)


def _m(bbox, segm=None):
    out = {"bbox": {"map50_95": bbox}}
    if segm is not None:
        out["segm"] = {"map50_95": segm}
    return out


def test_gate_passes_within_and_fails_beyond_the_allowed_drop():
    g = gate(_m(0.750), _m(0.740), 1.5)
    assert g["passed"] and g["drop"] == pytest.approx(1.0) and g["metric"] == "bbox.map50_95"
    g = gate(_m(0.750), _m(0.730), 1.5)
    assert not g["passed"] and g["drop"] == pytest.approx(2.0) and "exceeds" in g["message"]
    assert gate(_m(0.750), _m(0.760), 0.0)["passed"]            # a gain passes a zero budget


def test_gate_uses_the_worse_of_bbox_and_segm():
    g = gate(_m(0.75, 0.65), _m(0.745, 0.62), 1.5)
    assert g["metric"] == "segm.map50_95" and g["drop"] == pytest.approx(3.0) and not g["passed"]


def test_gate_fails_when_the_quantized_metric_is_missing():
    g = gate(_m(0.75, 0.65), _m(0.75), 1.5)
    assert not g["passed"] and g["metric"] == "segm.map50_95"


# ---------------------------------------------------------------- report.json from real evaluations


def _evaluated(samples, names, noise, seed, kind, size, ms):
    """Metrics of noisy ground-truth 'predictions' through the real COCO evaluator, shaped like metrics.json."""
    rng = np.random.default_rng(seed)
    gt = coco.ground_truth(samples, names)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        j = rng.normal(0, noise, 4) * [w, h, w, h]
        dets.append({"image_id": a["image_id"], "category_id": a["category_id"], "score": float(rng.uniform(0.1, 1)),
                     "bbox": [x + j[0], y + j[1], max(1.0, w + j[2]), max(1.0, h + j[3])]})
    return {"task": "detect", "images": len(samples), "split": "val", "settings": {"conf": 0.001, "iou": 0.7},
            "artifact": {"kind": kind, "file": "m", "size_bytes": size, "sha256": f"{seed:064x}"},
            "latency": {"median_ms": ms, "p90_ms": ms * 1.2, "runs": 5, "threads": 1, "runtime": "test"},
            "bbox": coco.evaluate(gt, dets, "bbox")}


CONFIG = {"recipe": "test_recipe", "target.name": "imx95", "target.backend": "tflite", "calibration.method": "minmax",
          "calibration.count": 100, "decoder.layout": "split_ltrb", "precision.mode": "int8",
          "precision.float_layers": [], "validation.max_map_drop": 1.5}


@pytest.fixture(scope="module")
def metrics_pair(shared_data):
    from edgebuild.data.yolo import YoloDataset

    ds = YoloDataset(shared_data / "shapes-hard" / "data.yaml")
    samples = ds.samples("val")[:40]
    return (_evaluated(samples, ds.names, 0.02, 1, "onnx-float", 12_000_000, 9.0),
            _evaluated(samples, ds.names, 0.08, 2, "tflite", 3_200_000, 6.0), samples, ds.names)


def test_report_json_deltas_and_gate(metrics_pair):
    f, q, _, names = metrics_pair
    rep = build_report(CONFIG, f, q, 1.5, export_meta={"task": "detect", "names": names},
                       artifact_meta={"quantization": {"mode": "int8"}, "float_ops": [{"op": "LOGISTIC", "node": 7}]})
    assert rep["schema_version"] == 1
    d = rep["deltas"]["bbox"]
    assert d["map50_95"] == pytest.approx((q["bbox"]["map50_95"] - f["bbox"]["map50_95"]) * 100, abs=1e-3)
    assert d["map50_95"] < 0                                    # more box noise costs accuracy
    name = names[0]
    assert d["per_class"][name]["ap50_95"] == pytest.approx(
        (q["bbox"]["per_class"][name]["ap50_95"] - f["bbox"]["per_class"][name]["ap50_95"]) * 100, abs=1e-3)
    assert rep["gate"]["drop"] == pytest.approx(-d["map50_95"], abs=1e-2)
    assert rep["gate"]["passed"] == (rep["gate"]["drop"] <= 1.5)
    assert rep["size"]["ratio"] == pytest.approx(3_200_000 / 12_000_000, abs=1e-4)
    assert rep["latency"]["speedup"] == pytest.approx(1.5)
    assert rep["mixed_precision"]["float_ops"] == [{"op": "LOGISTIC", "node": 7}]
    json.dumps(rep)  # serializable


# ---------------------------------------------------------------- per-layer error table


def _layer_error(n=20):
    """A layer_error.json as the layer_error step writes it (rows worst first), one name that needs escaping."""
    rows = [{"tensor": f"model/conv_{i}" if i else "model/<b>&amp", "op": "CONV_2D", "sqnr_db": 10.0 + i,
             "rel_rmse": round(10 ** (-(10.0 + i) / 20), 4), "lost_db": None if i == 0 else 1.5} for i in range(n)]
    return {"backend": "tflite", "images": 4, "tensors": n, "rows": rows}


def test_layer_error_table_in_report_json_and_html(metrics_pair):
    f, q, _, names = metrics_pair
    rep = build_report(CONFIG, f, q, 1.5, export_meta={"names": names}, layer_error=_layer_error())
    le = rep["layer_error"]
    assert le["images"] == 4 and le["tensors"] == 20 and len(le["worst"]) == 15
    assert le["worst"][0]["tensor"] == "model/<b>&amp" and le["worst"][-1]["tensor"] == "model/conv_14"
    page = render(rep)
    assert "Where accuracy goes (per-layer INT8 error)" in page and "precision.float_layers" in page
    table = page[page.index('<table id="layer-error">'):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 1 + 15                     # header + the 15 worst
    assert "model/&lt;b&gt;&amp;amp" in table and "<b>" not in table
    assert "10.00" in table and "24.00" in table and "model/conv_15" not in table
    assert build_report(CONFIG, f, q, 1.5)["layer_error"] is None
    assert 'id="layer-error"' not in render(build_report(CONFIG, f, q, 1.5))


def _search(layers):
    """A search.json as the precision_search step writes it."""
    curve = [{"layers": [], "drop": 1.2}] + [{"layers": layers[:k], "drop": 1.2 - 0.4 * k} for k in range(1, len(layers) + 1)]
    cost = {"size_bytes": 1000, "float_layers": 0, "latency_ms": 10.0}
    return {"backend": "tflite", "float_layers": layers, "drop": curve[-1]["drop"], "budget": 0.7,
            "budget_met": curve[-1]["drop"] <= 0.7, "evaluations": 4, "curve": curve, "images": 200, "split": "train",
            "singles": [{"layer": x, "label": f"CONV_2D {x}", "score": 1.0, "drop": 0.9} for x in layers],
            "cost": {"int8": cost, "auto": {**cost, "float_layers": len(layers), "latency_ms": 12.5}}}


def test_precision_search_section(metrics_pair):
    f, q, _, names = metrics_pair
    page = render(build_report(CONFIG, f, q, 1.5, export_meta={"names": names},
                               precision_search=_search(["model/a<1>", "model/b"])))
    assert "Automatic precision" in page and "2 layer(s) kept float" in page and "model/a&lt;1&gt;" in page
    curve = page[page.index('<table id="precision-curve">'):]
    assert curve[:curve.index("</table>")].count("<tr>") == 1 + 3      # header + 0, 1, 2 float layers
    cost = page[page.index('<table id="precision-cost">'):]
    assert "12.50" in cost[:cost.index("</table>")] and "Budget not met" not in page
    zero = render(build_report(CONFIG, f, q, 1.5, precision_search={**_search([]), "drop": 0.5, "budget_met": True,
                                                                      "curve": [{"layers": [], "drop": 0.5}]}))
    assert "zero layers kept float: the all-int8 model meets the budget" in zero
    assert 'id="precision-singles"' not in zero
    assert "Budget not met" in render(build_report(CONFIG, f, q, 1.5, precision_search={
        **_search(["x"]), "budget_met": False}))
    assert "Automatic precision" not in render(build_report(CONFIG, f, q, 1.5))


# ---------------------------------------------------------------- report step + HTML in headless Chromium


def _run_report_step(tmp_path, f, q, samples, names):
    from edgebuild import schema
    from edgebuild.engine import StepContext, registry
    from edgebuild.resolve import slice_config

    dirs = {}
    for name in ("validate_float", "validate", "export", "tflite", "compile", "layer_error"):
        dirs[name] = tmp_path / "in" / name
        dirs[name].mkdir(parents=True)
    for name, m in (("validate_float", f), ("validate", q)):
        (dirs[name] / "metrics.json").write_text(json.dumps(m))
        imgs = [{"image": str(s.image_path), "width": s.width, "height": s.height,
                 "boxes": s.boxes.tolist(), "scores": [0.9] * len(s.classes), "classes": s.classes.tolist()}
                for s in samples[:3]]
        (dirs[name] / "predictions.json").write_text(json.dumps({"names": names, "images": imgs}))
    meta = {"task": "detect", "names": names, "layout": "split_ltrb", "imgsz": 320}
    (dirs["export"] / "meta.json").write_text(json.dumps(meta))
    (dirs["tflite"] / "meta.json").write_text(json.dumps({**meta, "quantization": {"mode": "int8"}, "float_ops": []}))
    (dirs["compile"] / "compile.json").write_text(json.dumps({"compiler": "vela", "ok": True, "npu_ops": 120}))
    (dirs["layer_error"] / "layer_error.json").write_text(json.dumps(_layer_error()))
    kind = registry()["report"]
    cfg = schema.validate(OmegaConf.create({"validation": {"max_map_drop": 0.5}}))
    out = tmp_path / "out"
    out.mkdir()
    kind.run(StepContext("report", slice_config(cfg, kind.config), out, dirs))
    return out


def test_report_step_writes_json_and_self_contained_html(tmp_path, metrics_pair):
    f, q, samples, names = metrics_pair
    out = _run_report_step(tmp_path, f, q, samples, names)
    rep = json.loads((out / "report.json").read_text())
    assert rep["gate"]["max_map_drop"] == 0.5 and rep["compile"]["compiler"] == "vela"
    assert len(rep["layer_error"]["worst"]) == 15
    page = (out / "report.html").read_text()
    assert "<script" not in page.lower() and "http://" not in page and "https://" not in page
    assert page.count("data:image/png;base64,") == 1 + 3        # per-class bars + 3 side-by-side images
    assert ("FAILED" in page) == (not rep["gate"]["passed"])


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_html_renders_in_headless_chromium(tmp_path, metrics_pair):
    exe = _chromium()
    if exe is None:
        pytest.skip("no chromium binary on PATH (apt-get install -y chromium)")
    f, q, samples, names = metrics_pair
    out = _run_report_step(tmp_path, f, q, samples, names)
    shot = tmp_path / "shot.png"
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,1600",
                    f"--screenshot={shot}", (out / "report.html").as_uri()],
                   check=True, timeout=120, capture_output=True, cwd=tmp_path)
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1600, 1200)
    non_white = (img < 240).any(axis=2).mean()
    assert non_white > 0.03, non_white                          # text, tables and the bar chart drew something
    assert img.reshape(-1, 3).std(axis=0).max() > 20            # not a single flat colour
    # the per-layer error table is laid out and visible: measure it in the rendered page (a probe script is added
    # to a copy only; the report itself has no scripts)
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", """<script>
      const t = document.getElementById("layer-error"), s = getComputedStyle(t), b = t.getBoundingClientRect();
      document.body.setAttribute("data-probe", JSON.stringify({w: b.width, h: b.height, rows: t.rows.length,
        visible: s.display !== "none" && s.visibility === "visible"}));</script></body>"""), encoding="utf-8")
    dom = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", probe.as_uri()],
                         check=True, timeout=120, capture_output=True, text=True, cwd=tmp_path).stdout
    got = json.loads(html.unescape(re.search(r'data-probe="([^"]*)"', dom).group(1)))
    assert got["visible"] and got["rows"] == 1 + 15 and got["w"] > 300 and got["h"] > 15 * 15, got


# ---------------------------------------------------------------- sweep summary


def test_sweep_summary_one_row_per_job(tmp_path, metrics_pair):
    from edgebuild.sweep import SweepSummary

    f, q, _, names = metrics_pair
    sweep = tmp_path / "multirun"
    for i, target in enumerate(("imx8mp", "imx95", "orin_nano")):
        job = sweep / f"{i}_target={target}"
        (job / ".hydra").mkdir(parents=True)
        rep = build_report({**CONFIG, "target.name": target}, f, q, 1.5, export_meta={"names": names})
        (job / "report.json").write_text(json.dumps(rep))
    (sweep / "3_target=broken" / ".hydra").mkdir(parents=True)      # a job that failed before its report
    SweepSummary().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["target"] for r in rows] == ["imx8mp", "imx95", "orin_nano", ""]
    assert rows[3]["status"].startswith("no report.json")
    assert float(rows[0]["delta_map50_95"]) == pytest.approx(rep["deltas"]["bbox"]["map50_95"])
    assert rows[0]["calibration"] == "minmax (100)" and rows[0]["decoder"] == "split_ltrb"
    assert rows[0]["gate"] == ("pass" if rep["gate"]["passed"] else "FAIL")
    page = (sweep / "summary.html").read_text()
    assert page.count("<tr>") == 1 + 4 and "0_target=imx8mp/report.html" in page
