"""Each error type has one home: utils/errors.py. Importing one through another module (a re-export) is refused."""
from __future__ import annotations

import ast
import inspect
from pathlib import Path

import utils.errors

ROOT = Path(__file__).resolve().parents[1]
SKIP = {".venv", ".git", "experiments", "results", ".cache"}
ERROR_TYPES = {name for name, obj in vars(utils.errors).items()
               if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == "utils.errors"}


def _module_of(path: Path, node: ast.ImportFrom) -> str:
    """The absolute module name an import reads from (relative imports resolved against the file's package)."""
    if not node.level:
        return node.module or ""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    package = package[:len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def _project_files():
    for path in sorted(ROOT.rglob("*.py")):
        if not SKIP.intersection(path.relative_to(ROOT).parts):
            yield path


def test_error_types_are_found():
    assert {"UserError", "OptionError", "CheckpointError", "ImageError"} <= ERROR_TYPES


def test_every_error_type_is_imported_from_utils_errors():
    wrong = []
    for path in _project_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and _module_of(path, node) != "utils.errors":
                for alias in node.names:
                    if alias.name in ERROR_TYPES:
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name} from "
                                     f"{_module_of(path, node)}")
    assert not wrong, "import these from utils.errors:\n" + "\n".join(wrong)


def test_no_error_type_is_defined_twice():
    """A class named like one of the error types anywhere else would be a second home."""
    twins = []
    for path in _project_files():
        if path == ROOT / "utils" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef) and node.name in ERROR_TYPES:
                twins.append(f"{path.relative_to(ROOT)}:{node.lineno}: class {node.name}")
    assert not twins, "\n".join(twins)
