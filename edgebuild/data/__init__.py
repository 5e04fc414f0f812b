"""Dataset readers (YOLO, COCO), the one preprocessing path, seeded calibration sampling, streaming.

Modules: dataset (Sample, Dataset, open_dataset, builtin:demo), yolo, coco, preprocess (letterbox,
preprocess, LetterboxInfo), sampler (sample_size, candidate_order), stream (iter_calibration).
Import the submodules directly; this package imports nothing heavy.
"""
