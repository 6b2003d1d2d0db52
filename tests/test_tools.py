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


def _pngs(folder: Path, stems, seed=0):
    import cv2
    import numpy as np
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for s in stems:
        cv2.imwrite(str(folder / f"{s}.png"), rng.integers(0, 120, (6, 5, 3), dtype=np.uint8))


def test_split_holdout_holds_out_the_last_pairs_in_natural_order(tmp_path):
    from tools.split_holdout import main
    from utils.errors import OptionError
    _pngs(tmp_path / "low", ["1", "2", "10", "3"])
    _pngs(tmp_path / "high", ["1", "2", "10", "3"], seed=1)
    out = tmp_path / "split"
    main(["--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--n", "2", "--out", str(out)])
    names = {p: sorted(f.name for f in (out / p).iterdir()) for p in ("train/low", "train/high", "holdout/low")}
    assert names == {"train/low": ["1.png", "2.png"], "train/high": ["1.png", "2.png"],
                     "holdout/low": ["10.png", "3.png"]}
    assert (out / "holdout/high/10.png").resolve() == (tmp_path / "high/10.png").resolve()
    with pytest.raises(OptionError, match="already exists"):
        main(["--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--n", "2", "--out", str(out)])
    with pytest.raises(OptionError, match="leaves no training pairs"):
        main(["--low", str(tmp_path / "low"), "--high", str(tmp_path / "high"), "--n", "4", "--out",
              str(tmp_path / "x")])


def test_histeq_baseline_equalises_each_channel(tmp_path):
    import cv2
    import numpy as np
    from tools.histeq import main
    from utils.errors import OptionError
    _pngs(tmp_path / "low", ["a"])
    main(["--input", str(tmp_path / "low"), "--out", str(tmp_path / "he")])
    src = cv2.imread(str(tmp_path / "low/a.png"))           # BGR; equalisation is per channel, so order is moot
    want = np.stack([cv2.equalizeHist(src[:, :, c]) for c in range(3)], axis=2)
    assert np.array_equal(cv2.imread(str(tmp_path / "he/a.png")), want) and want.max() == 255
    with pytest.raises(OptionError, match="--overwrite"):
        main(["--input", str(tmp_path / "low"), "--out", str(tmp_path / "he")])
