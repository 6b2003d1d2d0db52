"""The folders are layers: an import that points upwards is a test failure, not a code-review comment.

    utils/   low-level helpers (registry, errors, atomic writes, logging, runtime, metrics, reports): import nothing
             from options/, data/, models/ or engine/;
    options/ the config tree: imports utils/ only;
    data/    datasets and preprocessing: never import models/ or engine/;
    models/  networks and trainable methods: never import engine/;
    engine/  training and evaluation loops: anything below;
    tools/   the command-line tools beside the top-level scripts: anything; nothing but the tests imports them.
No exceptions: a command sits in tools/ (or is a top-level script), never inside a lower layer, not even lazily.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("utils", "options", "data", "models", "engine", "tools")
FORBIDDEN = {
    "utils": {"options", "data", "models", "engine", "tools"},
    "options": {"data", "models", "engine", "tools"},
    "data": {"models", "engine", "tools"},
    "models": {"engine", "tools"},
    "engine": {"tools"},
    "tools": set(),
}


def _imports(source: str, pkg: str):
    """Top-level package of every absolute import (at any depth, lazy ones included), relative ones resolved."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [pkg] if node.level else [node.module or ""]
        else:
            continue
        for n in names:
            yield n.split(".")[0]


def _upward(rel: str, source: str) -> list[str]:
    """The packages above its layer that the file `rel` (a path inside the repository) imports."""
    pkg = rel.split("/")[0]
    return sorted({top for top in _imports(source, pkg) if top in FORBIDDEN[pkg]})


def _files():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


@pytest.mark.parametrize("path", list(_files()), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_point_down(path):
    rel = str(path.relative_to(ROOT))
    bad = _upward(rel, path.read_text(encoding="utf-8"))
    assert not bad, f"{rel} imports {bad}, above its layer ({rel.split('/')[0]})"


@pytest.mark.parametrize("rel, source, bad", [
    ("utils/x.py", "def main():\n    from engine.retest import retest\n", ["engine"]),  # lazy imports count too
    ("data/x.py", "import models.build\n", ["models"]),
    ("models/x.py", "if __name__ == '__main__':\n    import tools.grid\n", ["tools"]),
    ("engine/x.py", "from tools import synthesize\n", ["tools"]),
    ("engine/x.py", "from models.build import build_network\nfrom . import grid\n", []),
    ("tools/x.py", "import engine.retest, models.build, data, options, utils\n", []),
])
def test_the_layer_check_sees_an_upward_import(rel, source, bad):
    assert _upward(rel, source) == bad


def test_top_level_layout():
    for name in ("models", "data", "confs", "options", "utils", "engine", "tools", "train.py", "test.py",
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
