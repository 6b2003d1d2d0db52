"""Each error type has one home: utils/errors.py. Importing one through another module (a re-export) is refused."""
from __future__ import annotations

import ast
import functools
import inspect
from pathlib import Path

import utils.errors

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "experiments", "results", ".cache", "__pycache__"}
ERROR_TYPES = {name for name, obj in vars(utils.errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == "utils.errors"}


def _module_of(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name an import reads from (relative imports resolved against the file's package)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=None)
def _project_trees():
    """(path, syntax tree) of every Python file of the project (the virtual environment and run folders left out)."""
    out = []
    for top in sorted(ROOT.iterdir()):
        if top.name in SKIP:
            continue
        paths = sorted(top.rglob("*.py")) if top.is_dir() else [top] if top.suffix == ".py" else []
        out += [(path, ast.parse(path.read_text(encoding="utf-8"))) for path in paths]
    return tuple(out)


def test_error_types_are_found():
    assert {"UserError", "OptionError", "CheckpointError", "ImageError"} <= ERROR_TYPES


def test_every_error_type_is_imported_from_utils_errors():
    wrong = []
    for path, tree in _project_trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and _module_of(path, node) != "utils.errors":
                for alias in node.names:
                    if alias.name in ERROR_TYPES:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name} from "
                                     f"{_module_of(path, node)}")
    assert not wrong, "import these from utils.errors:\n" + "\n".join(wrong)


def test_no_error_type_is_defined_twice():
    """A class named like one of the error types anywhere else would be a second home."""
    twins = []
    for path, tree in _project_trees():
        if path == ROOT / "utils" / "errors.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name in ERROR_TYPES:
                twins.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
    assert not twins, "\n".join(twins)
