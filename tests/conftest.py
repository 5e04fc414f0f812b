"""Shared fixtures. ../shared/data (beside the project) holds the test datasets and weights."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # torch's stack before TensorFlow's: importing torchvision / onnx2torch (torch._dynamo -> triton) into a process
    import torchvision  # noqa: F401   that already loaded TensorFlow segfaults (edgebuild/steps/correct.py does the same)
except ImportError:
    pass


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests need ../shared/data beside the project (see README)")
    return SHARED


@pytest.fixture()
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A private step cache for one test."""
    d = tmp_path / "cache"
    monkeypatch.setenv("EDGEBUILD_CACHE", str(d))
    return d
