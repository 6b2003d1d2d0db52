"""The folders are layers: an import that points upwards is a test failure, not a code-review comment.

    utils/   low-level helpers (registry, errors, atomic writes, logging, runtime, metrics, reports): import nothing
             from options/, data/, models/ or engine/ (thin CLI entry points listed below may import lazily);
    options/ the config tree: imports utils/ only;
    data/    datasets and preprocessing: never import models/ or engine/;
    models/  networks and trainable methods: never import engine/;
    engine/  training and evaluation loops: anything but the top-level scripts.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "options", "data", "models", "engine")
FORBIDDEN = {
    "utils": {"options", "data", "models", "engine"},
    "options": {"data", "models", "engine"},
    "data": {"models", "engine"},
    "models": {"engine"},
    "engine": set(),
}
# `python -m utils.X` / `python -m data.X` entry points the issues name, which sit on top of everything they import
# (inside main() only, never at module level).
CLI_ENTRY_POINTS = {"utils/export_onnx.py", "utils/retest.py", "data/synthesize.py"}


def _imports(path: Path):
    """(top-level package, at module level?) of every absolute import, and of relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    pkg = path.relative_to(ROOT).parts[0]
    module_level = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [pkg] if node.level else [node.module or ""]
        else:
            continue
        for n in names:
            yield n.split(".")[0], id(node) in module_level


def _files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    rel = str(path.relative_to(ROOT))
    pkg = rel.split("/")[0]
    bad = []
    for top, at_module_level in _imports(path):
        if top in FORBIDDEN[pkg] and not (rel in CLI_ENTRY_POINTS and not at_module_level):
            bad.append(top)
    assert not bad, f"{rel} imports {sorted(set(bad))}, above its layer ({pkg})"


def test_top_level_layout():
    for name in ("models", "data", "confs", "options", "utils", "engine", "train.py", "test.py",
                 "test_with_zeromaps.py", "test_with_tricks.py", "Measure.py", "requirements.txt", "README.md"):
        assert (ROOT / name).exists(), name


@pytest.mark.slow
def test_inference_does_not_import_torchvision():
    """torchvision's import costs about 170 MB of RSS and a second: importing the inference engine and every registered
    model must not pay for it; only building a layer that uses it (drop-path with a non-zero rate, VGG, LPIPS) does."""
    import subprocess
    import sys
    code = "import sys, engine.inference, models.build, models.tiling; print('torchvision' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
