"""edgebuild metadata inside the .tflite (a flatbuffer `metadata` entry named "edgebuild", JSON) and in meta.json.

Readers: `read_metadata(path_or_bytes)`; a board-side reader needs only a flatbuffer parser: find the metadata
entry named "edgebuild" and decode its buffer as UTF-8 JSON.
"""
from __future__ import annotations

import json
from pathlib import Path

NAME = "edgebuild"


def io_details(flatbuffer: bytes, meta: dict) -> dict:
    """Input quantization and one entry per output role (signature name, dtype, scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=flatbuffer)
    sig = it.get_signature_runner(next(iter(it.get_signature_list())))
    (in_name, d), = sig.get_input_details().items()
    roles = {o["name"]: o["role"] for o in meta.get("outputs", [])}

    def q(detail):
        scale, zp = detail["quantization"]
        return {"dtype": detail["dtype"].__name__, "scale": float(scale), "zero_point": int(zp),
                "shape": [int(s) for s in detail["shape"]]}

    outputs = [{"name": n, "role": roles.get(n, n), **q(o)} for n, o in sig.get_output_details().items()]
    return {"input": {"name": in_name, "layout": "NHWC", **q(d)}, "outputs": outputs}


def embed(flatbuffer: bytes, meta: dict) -> bytes:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    buf = schema.BufferT()
    buf.data = list(json.dumps(meta, sort_keys=True).encode())
    model.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = NAME, len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (NAME, NAME.encode())] + [entry]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def read_metadata(model: bytes | str | Path) -> dict | None:
    from tensorflow.lite.python import schema_py_generated as schema

    data = model if isinstance(model, (bytes, bytearray)) else Path(model).read_bytes()
    m = schema.Model.GetRootAsModel(data, 0)
    for i in range(m.MetadataLength()):
        entry = m.Metadata(i)
        if entry.Name() == NAME.encode():
            return json.loads(m.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode())
    return None
