"""Model export: Ultralytics checkpoint (or an existing YOLO ONNX) -> model.onnx + meta.json.

load.py         find the weights, plan-time checks, load the checkpoint (pickle: trusted files only)
heads.py        replacement forwards of the Detect / Segment head, one per decoder layout
onnx_export.py  trace, simplify, check, embed meta; deterministic bytes
onnx_input.py   check an existing YOLO ONNX against the declared layout
meta.py         the meta.json document
The decode of every layout lives in edgebuild/layout.py.
"""
