"""Read the operators and tensors of a .tflite flatbuffer, without TensorFlow (LiteRT's generated schema)."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from edgebuild.errors import EdgebuildError


def _schema():
    try:
        import ai_edge_litert.schema_py_generated as schema
    except ImportError:  # pragma: no cover - older installs: the same generated module ships with TensorFlow
        from tensorflow.lite.python import schema_py_generated as schema
    return schema


@lru_cache(maxsize=None)
def _enum_names(enum_name: str) -> dict[int, str]:
    enum = getattr(_schema(), enum_name)
    return {v: k for k, v in vars(enum).items() if not k.startswith("_") and isinstance(v, int)}


def builtin_op_names() -> set[str]:
    """Every TFLite builtin operator name this schema knows (CONV_2D, LOGISTIC, ...)."""
    return set(_enum_names("BuiltinOperator").values())


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str                      # FLOAT32, INT8, UINT8, INT32, ...
    shape: tuple[int, ...]
    scale: tuple[float, ...]        # empty when not quantized
    zero_point: tuple[int, ...]
    quantized_dimension: int
    constant: bool                  # has data in the flatbuffer (weights, biases, shapes)


@dataclass(frozen=True)
class Op:
    name: str                       # builtin name, or "CUSTOM:<custom code>"
    inputs: tuple[int, ...]         # tensor indices in its subgraph (-1 = optional input absent)
    outputs: tuple[int, ...]
    subgraph: int


@dataclass
class TfliteModel:
    ops: list[Op] = field(default_factory=list)
    tensors: list[list[Tensor]] = field(default_factory=list)   # per subgraph
    inputs: list[int] = field(default_factory=list)            # main subgraph
    outputs: list[int] = field(default_factory=list)

    def tensor(self, op: Op, index: int) -> Tensor | None:
        return None if index < 0 else self.tensors[op.subgraph][index]

    def op_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(op.name for op in self.ops).items()))


def read_model(path: Path) -> TfliteModel:
    """Parse `path`; EdgebuildError when it is not a TFLite flatbuffer."""
    data = Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise EdgebuildError(str(path), "is not a TFLite flatbuffer (no TFL3 identifier).",
                             "rebuild it with the tflite step (or pass a .tflite file).")
    schema = _schema()
    model = schema.Model.GetRootAsModel(data, 0)
    op_names, dtypes = _enum_names("BuiltinOperator"), _enum_names("TensorType")
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())  # schema v3a: the larger of the two is valid
        name = op_names.get(code, f"BUILTIN_{code}")
        if name == "CUSTOM":
            custom = oc.CustomCode()
            name = f"CUSTOM:{custom.decode() if custom else '?'}"
        codes.append(name)
    out = TfliteModel()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        tensors = []
        for t in range(sg.TensorsLength()):
            tensors.append(_tensor(model, sg.Tensors(t), dtypes))
        out.tensors.append(tensors)
        if s == 0:
            out.inputs = list(sg.InputsAsNumpy()) if sg.InputsLength() else []
            out.outputs = list(sg.OutputsAsNumpy()) if sg.OutputsLength() else []
        for o in range(sg.OperatorsLength()):
            op = sg.Operators(o)
            ins = tuple(int(x) for x in op.InputsAsNumpy()) if op.InputsLength() else ()
            outs = tuple(int(x) for x in op.OutputsAsNumpy()) if op.OutputsLength() else ()
            out.ops.append(Op(codes[op.OpcodeIndex()], ins, outs, s))
    return out


def _tensor(model, t, dtypes: dict[int, str]) -> Tensor:
    q = t.Quantization()
    scale = tuple(float(x) for x in q.ScaleAsNumpy()) if q is not None and q.ScaleLength() else ()
    zp = tuple(int(x) for x in q.ZeroPointAsNumpy()) if q is not None and q.ZeroPointLength() else ()
    qdim = q.QuantizedDimension() if q is not None else 0
    buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
    constant = bool(buf is not None and (buf.DataLength() > 0 or _offset(buf) > 1))  # offset: data past 2 GB
    shape = tuple(int(x) for x in t.ShapeAsNumpy()) if t.ShapeLength() else ()
    name = t.Name().decode(errors="replace") if t.Name() else ""
    return Tensor(name, dtypes.get(t.Type(), str(t.Type())), shape, scale, zp, qdim, constant)


def _offset(buf) -> int:
    return buf.Offset() if hasattr(buf, "Offset") else 0


def op_counts(path: Path) -> dict[str, int]:
    """{op name: count} over all subgraphs of the model at `path`."""
    return read_model(path).op_counts()


__all__ = ["Op", "Tensor", "TfliteModel", "builtin_op_names", "op_counts", "read_model"]
