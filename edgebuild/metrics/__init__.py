"""Host-side post-processing and accuracy: NMS, mask assembly, COCO-protocol mAP.

Decoding a model's raw outputs lives in one place, `edgebuild.layout.decode`; this package starts
from its `Decoded` result (boxes in letterboxed input pixels, per-class scores, optional masks).
"""
