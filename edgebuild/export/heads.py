"""Replacement forwards of Ultralytics' Detect / Segment heads, one per output layout.

`install_head(loaded, layout, imgsz) -> [output names]` rebinds the head's forward on that one (already
loaded, private) model instance; nothing in the ultralytics package is patched.

  split       boxes [1,N,4]  xyxy normalized to [0,1] INSIDE the DFL decode: the DFL distances and the anchor
                             centres are both scaled by stride/imgsz before dist2bbox, so no tensor carries pixel
                             range (DESIGN.md: this beats dividing the pixel boxes afterwards by ~55 mAP points)
              scores [1,N,C] sigmoid;  segment: mask_coefs [1,N,32], protos [1,H,W,32] (NHWC)
  split_ltrb  boxes [1,N,4]  raw DFL expectation l,t,r,b in grid units (anchors/strides added on the host by
                             edgebuild.layout), the rest as split
  split_dfl   boxes [1,N,64] raw DFL logits (16 bins x l,t,r,b): no softmax in the graph, so every op is a conv,
                             concat, reshape or transpose that an NPU runs in int8; the host does softmax + expectation
  fused       Ultralytics' own export forward: output0 [1,4+C(+32),N] pixel xywh (+ output1 protos [1,32,H,W])
"""
from __future__ import annotations

import types

SPLIT_NAMES = {"detect": ["boxes", "scores"], "segment": ["boxes", "scores", "mask_coefs", "protos"]}
FUSED_NAMES = {"detect": ["output0"], "segment": ["output0", "output1"]}


def output_names(task: str, layout: str) -> list[str]:
    return list(FUSED_NAMES[task] if layout == "fused" else SPLIT_NAMES[task])


def install_head(loaded, layout: str, imgsz: int) -> list[str]:
    """Prepare loaded.model for tracing at a fixed imgsz with the given layout; returns the ONNX output names."""
    from ultralytics.nn.modules.block import C2f

    head = loaded.head
    for m in loaded.model.modules():  # as Ultralytics' ONNX exporter: Split instead of chunk in C2f
        if isinstance(m, C2f):
            m.forward = m.forward_split
    head.export, head.format, head.dynamic, head.xyxy, head.shape = True, "onnx", False, False, None
    if layout != "fused":
        _bind_split(head, layout, imgsz, loaded.strides)
    return output_names(loaded.task, layout)


def _bind_split(head, layout: str, imgsz: int, strides: list[int]) -> None:
    import torch

    from edgebuild.layout import anchor_grid

    centres, stride = anchor_grid(imgsz, strides)                       # [N,2] grid units, [N,1]
    scale = torch.from_numpy(stride.T / float(imgsz)).unsqueeze(0)      # [1,1,N]  stride/imgsz
    anchors = torch.from_numpy(centres.T).unsqueeze(0) * scale          # [1,2,N]  normalized centres
    segment = hasattr(head, "proto")

    def forward(self, x):
        preds = self.forward_head(x, **self.one2many)                   # raw per-anchor terms, levels concatenated
        if layout == "split_dfl":
            dist = preds["boxes"]                                       # [1,64,N] DFL logits, decoded on the host
        else:
            dist = self.dfl(preds["boxes"])                             # [1,4,N] DFL expectation, grid units
        if layout == "split":
            lt, rb = (dist * scale).chunk(2, 1)                         # distances in [0,1] units
            dist = torch.cat((anchors - lt, anchors + rb), 1)           # xyxy normalized
        out = [dist.transpose(1, 2), preds["scores"].sigmoid().transpose(1, 2)]
        if segment:
            out += [preds["mask_coefficient"].transpose(1, 2), self.proto(x[0]).permute(0, 2, 3, 1)]
        return tuple(out)

    head.forward = types.MethodType(forward, head)
