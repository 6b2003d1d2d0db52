"""Shared pytest fixtures: the ../shared reference folder and small helpers."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLFLOW_SHARED", ROOT.parent / "shared"))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# One thread: most test tensors are tiny, where extra threads only add overhead (and contention on shared CPUs).
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA device: skipped with that reason elsewhere (bench/gpu_check.py runs them)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (marker cuda; bench/gpu_check.py runs these on a GPU)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only ../shared folder; tests that need it skip when it is absent (a user's machine)."""
    if not SHARED.is_dir():
        pytest.skip(f"reference folder {SHARED} not present (only CI and developers have ../shared)")
    return SHARED


@pytest.fixture(scope="session")
def golden(shared_dir):
    """Return a function mapping a model name to its golden folder, skipping if absent."""
    def get(name: str) -> Path:
        p = shared_dir / "golden" / name
        if not p.is_dir():
            pytest.skip(f"golden folder {p} not present")
        return p
    return get


@pytest.fixture(scope="session")
def official_keys(shared_dir):
    """Function: model name -> {state-dict key: shape} of the official full-size model (reference/keys/*.txt)."""
    def get(model: str) -> dict:
        path = shared_dir / "reference" / "keys" / f"{model}_keys.txt"
        if not path.is_file():
            pytest.skip(f"{path} not present")
        keys = {}
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, shape, _ = line.split("\t")
                keys[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
        return keys
    return get
