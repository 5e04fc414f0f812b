"""Target knowledge for the `compile` step: read a .tflite op list, lint it against a target, run its compiler.

tflite_ops  - flatbuffer reader (op names and counts, tensor types and quantization parameters)
oplint      - fallback ops against target.supported_ops, quantization checks against the target's demands
vela        - Arm Ethos-U compiler (i.MX 93): run it, parse its summary, read its supported-ops report
neutron     - NXP eIQ Neutron converter (i.MX 95): run it when installed, otherwise say why not
"""
