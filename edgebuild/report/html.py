"""report.html: one self-contained page (inline CSS, images as data URIs; no scripts, no CDN)."""
from __future__ import annotations

import html
import json

from edgebuild.report.build import WORST_LAYERS
from edgebuild.report.figures import per_class_bars, png_data_uri, side_by_side

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.pass{color:#0a7d28;font-weight:bold}.fail{color:#b00020;font-weight:bold}
.neg{color:#b00020}.gate{padding:10px;border-radius:4px;margin:10px 0}.gate.pass{background:#e6f4ea}.gate.fail{background:#fce8e6}
img{max-width:100%;border:1px solid #ddd;margin:4px 0}code{background:#f5f5f5;padding:1px 3px}.muted{color:#777}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _num(v, digits=4) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pts(v) -> str:
    if v is None:
        return "–"
    return f'<span class="{"neg" if v < 0 else ""}">{v:+.2f}</span>'


def _table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    th = "".join(f'<th class="{"l" if i == 0 else ""}">{h}</th>' for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(f'<td class="{"l" if i == 0 else ""}">{c}</td>' for i, c in enumerate(r)) + "</tr>"
                   for r in rows)
    attr = f' id="{table_id}"' if table_id else ""
    return f"<table{attr}><tr>{th}</tr>{body}</table>"


def _summary(r: dict) -> str:
    rows = []
    for t in ("bbox", "segm"):
        f, q, d = r["float"].get(t), r["quantized"].get(t), r["deltas"].get(t, {})
        if not f:
            continue
        for k, label in (("map50", "mAP50"), ("map50_95", "mAP50-95"), ("recall", "AR@100")):
            rows.append([f"{t} {label}", _num(f.get(k)), _num((q or {}).get(k)), _pts(d.get(k))])
    qkind = _e(r["quantized"].get("artifact", {}).get("kind", "quantized"))
    return _table(["metric", "float (onnxruntime)", f"{qkind}", "Δ points"], rows)


def _gate(g: dict) -> str:
    cls = "pass" if g.get("passed") else "fail"
    return f'<div class="gate {cls}"><span class="{cls}">{"PASSED" if g.get("passed") else "FAILED"}</span> — {_e(g.get("message", ""))}</div>'


def _per_class(r: dict, t: str) -> str:
    f = (r["float"].get(t) or {}).get("per_class") or {}
    q = (r["quantized"].get(t) or {}).get("per_class") or {}
    d = (r["deltas"].get(t) or {}).get("per_class") or {}
    rows = []
    for n, fc in f.items():
        qc, dc = q.get(n) or {}, d.get(n) or {}
        rows.append([_e(n), _num((fc or {}).get("ap50")), _num(qc.get("ap50")), _pts(dc.get("ap50")),
                     _num((fc or {}).get("ap50_95")), _num(qc.get("ap50_95")), _pts(dc.get("ap50_95"))])
    table = _table(["class", "AP50 float", "AP50 quant", "Δ", "AP50-95 float", "AP50-95 quant", "Δ"], rows)
    png = per_class_bars(r, t)
    img = f'<img alt="per-class {t} AP50-95 float vs quantized" src="{png_data_uri(png)}">' if png else ""
    return f"<h2>Per-class {t} AP</h2>{img}{table}"


def _cost(r: dict) -> str:
    lf, lq = r["latency"].get("float") or {}, r["latency"].get("quantized") or {}
    s = r["size"]
    rows = [["model file", _e(r["float"].get("artifact", {}).get("file", "")), _e(r["quantized"].get("artifact", {}).get("file", ""))],
            ["size (bytes)", _e(s.get("float_bytes")), _e(s.get("quantized_bytes"))],
            ["runtime", _e(lf.get("runtime", "")), _e(lq.get("runtime", ""))],
            ["latency median (ms)", _num(lf.get("median_ms"), 2), _num(lq.get("median_ms"), 2)],
            ["latency p90 (ms)", _num(lf.get("p90_ms"), 2), _num(lq.get("p90_ms"), 2)],
            ["threads / runs", f"{lf.get('threads')} / {lf.get('runs')}", f"{lq.get('threads')} / {lq.get('runs')}"],
            ["sha256", f"<code>{_e((r['digests'].get('float') or '')[:16])}</code>",
             f"<code>{_e((r['digests'].get('quantized') or '')[:16])}</code>"]]
    note = _e(lq.get("device", "")) + (" — " + _e(lq.get("includes", "")) if lq.get("includes") else "")
    return f'<h2>Latency and size</h2>{_table(["", "float", "quantized"], rows)}<p class="muted">Host measurement: {note}. Board latency differs.</p>'


def _mixed(r: dict) -> str:
    mp = r.get("mixed_precision") or {}
    ops = mp.get("float_ops") or []
    if isinstance(ops, str):
        return f"<h2>Mixed precision</h2><p>mode: {_e(mp.get('mode'))}; ops in float: {_e(ops)}</p>"
    items = "".join(f"<li><code>{_e(o if isinstance(o, str) else json.dumps(o))}</code></li>" for o in ops)
    body = f"<ul>{items}</ul>" if ops else '<p class="muted">No ops kept in float.</p>'
    fix = mp.get("correction")
    if fix:
        body += (f"<p>Correction ({_e(fix['kind'])}): {_e(fix['convs'])} int8 convs corrected on "
                 f"{_e(fix['images'])} calibration images.</p>")
    return f"<h2>Mixed precision</h2><p>mode: {_e(mp.get('mode'))}; float_layers: {_e(mp.get('float_layers'))}</p>{body}"


def _layer_error(r: dict) -> str:
    le = r.get("layer_error")
    if not le:
        return ""
    rows = [[f"<code>{_e(w['tensor'])}</code>", _e(w["op"]), _num(w["sqnr_db"], 2),
             "–" if w["rel_rmse"] is None else f"{w['rel_rmse']:.4g}", _num(w.get("lost_db"), 2)]
            for w in le["worst"][:WORST_LAYERS]]
    note = (f"SQNR of each quantized tensor vs the float model on {_e(le['images'])} calibration images, lowest "
            f"first ({len(rows)} of {_e(le['tensors'])} tensors); “lost here” is what the op itself cost (its worst "
            "quantized input's SQNR minus its own). List a tensor or op in <code>precision.float_layers</code> "
            "to keep it float.")
    table = _table(["tensor", "op", "SQNR dB", "rel. RMSE", "lost here dB"], rows, "layer-error")
    return f'<h2>Where accuracy goes (per-layer INT8 error)</h2><p class="muted">{note}</p>{table}'


def _precision_search(r: dict) -> str:
    ps = r.get("precision_search")
    if not ps:
        return ""
    layers = ps["float_layers"]
    verdict = (f"{len(layers)} layer(s) kept {'FP16' if ps['backend'] == 'tensorrt' else 'float'}" if layers
               else "zero layers kept float: the all-int8 model meets the budget")
    met = "" if ps["budget_met"] else " <strong>Budget not met</strong> within precision.auto.max_float_layers; the best point found is used."
    head = (f"<p>{_e(verdict)}: drop {_num(ps['drop'], 2)} pt on {_e(ps['images'])} search images of split "
            f"{_e(ps['split'])} held back from calibration (budget {_num(ps['budget'], 2)} pt; the val split is "
            f"not read by the search).{met}</p>")
    chosen = "".join(f"<li><code>{_e(x)}</code></li>" for x in layers)
    curve = _table(["float layers", "search-set drop (pt)", "layers"],
                   [[_e(len(p["layers"])), _num(p["drop"], 2), "<br>".join(f"<code>{_e(x)}</code>" for x in p["layers"])]
                    for p in ps["curve"]], "precision-curve")
    singles = _table(["candidate", "sensitivity", "drop alone (pt)"],
                     [[f"<code>{_e(c['label'])}</code>", _num(c["score"], 2), _num(c["drop"], 2)] for c in ps["singles"]],
                     "precision-singles") if ps["singles"] else ""
    c = ps["cost"]
    cost = _table(["", "all-int8", "auto"], [
        ["float / FP16 layers", _e(c["int8"]["float_layers"]), _e(c["auto"]["float_layers"])],
        ["size (bytes)", _e(c["int8"]["size_bytes"]), _e(c["auto"]["size_bytes"])],
        ["host latency median (ms)", _num(c["int8"]["latency_ms"], 2), _num(c["auto"]["latency_ms"], 2)]],
        "precision-cost")
    return (f"<h2>Automatic precision (precision=auto)</h2>{head}"
            f"{'<ul>' + chosen + '</ul>' if chosen else ''}<h3>Search curve</h3>{curve}{singles}<h3>Cost</h3>{cost}"
            '<p class="muted">NPU/CPU op split of the chosen model: see Target compile below.</p>')


def _json_block(title: str, obj) -> str:
    if not obj:
        return f'<h2>{title}</h2><p class="muted">Not part of this build.</p>'
    return f"<h2>{title}</h2><pre>{_e(json.dumps(obj, indent=1))}</pre>"


def _images(r: dict, float_preds: dict | None, quant_preds: dict | None) -> str:
    if not float_preds or not quant_preds:
        return ""
    names = float_preds.get("names") or r["model"].get("names")
    label = r["quantized"].get("artifact", {}).get("kind", "quantized")
    figs = []
    for fp, qp in zip(float_preds.get("images", []), quant_preds.get("images", [])):
        png = side_by_side(fp, qp, names, label)
        if png:
            figs.append(f'<figure><img alt="{_e(fp["image"])}" src="{png_data_uri(png)}">'
                        f'<figcaption class="muted">{_e(fp["image"])}</figcaption></figure>')
    return "<h2>Validation images (float | quantized, score ≥ 0.25)</h2>" + "".join(figs) if figs else ""


def render(report: dict, float_preds: dict | None = None, quant_preds: dict | None = None) -> str:
    cfg = report.get("config", {})
    title = f"edgebuild report — {report.get('recipe') or cfg.get('model.name', '')}"
    conf_rows = [[_e(k), _e(v)] for k, v in cfg.items()]
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="muted">{_e(report["float"].get("images"))} {_e(report["float"].get("split"))} images, '
        f'COCO protocol (faster-coco-eval), NMS conf {_e(report["float"].get("settings", {}).get("conf"))} '
        f'iou {_e(report["float"].get("settings", {}).get("iou"))}</p>',
        _gate(report["gate"]),
        "<h2>Summary</h2>", _summary(report),
    ]
    for t in ("bbox", "segm"):
        if report["float"].get(t):
            parts.append(_per_class(report, t))
    parts += [_images(report, float_preds, quant_preds), _cost(report), _layer_error(report), _precision_search(report), _mixed(report),
              _json_block("Target compile", report.get("compile")), _json_block("TensorRT engine", report.get("engine")),
              "<h2>Configuration</h2>", _table(["key", "value"], conf_rows)]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>" + "".join(parts) + "</body></html>")
