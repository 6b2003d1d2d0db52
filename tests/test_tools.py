"""tools/: every tool answers --help, runs as a script from the repository root, and every command that moved there
from a library module leaves a one-line message at its old ``python -m`` path."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLS = sorted(p.stem for p in (ROOT / "tools").glob("*.py") if p.stem != "__init__")
# old `python -m` path -> the tool that replaced it
MOVED = {"data.synthesize": "synthesize", "data.synthesis.fit_physics": "fit_physics",
         "utils.export_onnx": "export_onnx", "utils.retest": "retest", "engine.grid": "grid",
         "engine.export_official": "export_official", "models.build": "list_registries",
         "models.checkpoint": "convert_checkpoint"}


def test_every_moved_command_is_a_tool():
    assert set(MOVED.values()) <= set(TOOLS) and "__init__" not in TOOLS


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_answers_help(name, capsys):
    main = importlib.import_module(f"tools.{name}").main
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ") and "--help" in out


@pytest.mark.slow
def test_every_tool_runs_as_a_script_from_the_repository_root():
    """`python tools/NAME.py` (the tools folder first on sys.path, not the root) imports the library."""
    for name in TOOLS:
        r = subprocess.run([sys.executable, f"tools/{name}.py", "--help"], capture_output=True, text=True, cwd=ROOT,
                           timeout=300)
        assert r.returncode == 0 and r.stdout.startswith("usage: "), (name, r.stderr[-2000:])


@pytest.mark.slow
@pytest.mark.parametrize("old, tool", sorted(MOVED.items()))
def test_old_module_path_names_its_replacement(old, tool):
    r = subprocess.run([sys.executable, "-m", old, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [f"error: 'python -m {old}' moved: run 'python tools/{tool}.py ...'"]
    assert (ROOT / "tools" / f"{tool}.py").is_file()


@pytest.mark.slow
def test_output_piped_into_head_ends_quietly():
    """A reader that closes the pipe early (`| head -2`) ends the listing without a BrokenPipeError traceback."""
    r = subprocess.run(f"{sys.executable} tools/list_registries.py | head -2", shell=True, capture_output=True,
                       text=True, cwd=ROOT, timeout=300)
    assert len(r.stdout.splitlines()) == 2 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr, r.stderr
