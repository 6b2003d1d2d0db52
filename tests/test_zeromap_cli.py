"""test_with_zeromaps.py: deterministic i mod N compositing, composited inputs written, size mismatch handling."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.image_io import read_rgb, write_rgb
from data.zeromap import inject_zero_map

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test here runs the script in a subprocess


def _setup(tmp_path, golden, zsize=(64, 96)):
    g = golden("LLFlow")
    low = read_rgb(g / "low.png")
    rng = np.random.default_rng(0)
    for i in range(3):
        write_rgb(tmp_path / "in" / f"img{i}.png", np.roll(low, 7 * i, axis=1))
        write_rgb(tmp_path / "gt" / f"img{i}.png", read_rgb(g / "gt.png"))
    for i in range(2):
        z = np.zeros(zsize + (3,), np.uint8)
        z[rng.integers(0, zsize[0], 200), rng.integers(0, zsize[1], 200)] = 255
        z[: 10 * (i + 1), :20, 0] = 255
        write_rgb(tmp_path / "zm" / f"z{i}.png", z)
    return g


def _run(tmp_path, g, out, *extra):
    return subprocess.run([sys.executable, str(ROOT / "test_with_zeromaps.py"), "--opt", str(g / "config.yml"),
                           "--model_path", str(g / "weights.pth"), "--input", str(tmp_path / "in"),
                           "--zeromaps", str(tmp_path / "zm"), "--out", str(tmp_path / out), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_composites_deterministically_and_measures(tmp_path, golden):
    g = _setup(tmp_path, golden)
    r = _run(tmp_path, g, "o1", "--gt", str(tmp_path / "gt"))
    assert r.returncode == 0, r.stderr[-2000:]
    for i in range(3):  # image i gets zero-map i mod 2
        expected, _ = inject_zero_map(read_rgb(tmp_path / f"in/img{i}.png"), read_rgb(tmp_path / f"zm/z{i % 2}.png"))
        assert np.array_equal(read_rgb(tmp_path / f"o1/inputs/img{i}.png"), expected)
    assert (tmp_path / "o1/metrics.csv").read_text().count("img") == 3
    r2 = _run(tmp_path, g, "o2")
    assert r2.returncode == 0
    for i in range(3):
        assert np.array_equal(read_rgb(tmp_path / f"o1/img{i}.png"), read_rgb(tmp_path / f"o2/img{i}.png"))


def test_zero_map_size_mismatch(tmp_path, golden):
    g = _setup(tmp_path, golden, zsize=(32, 48))
    r = _run(tmp_path, g, "o")
    assert r.returncode == 2 and "z0.png" in r.stderr and "img0.png" in r.stderr
    r = _run(tmp_path, g, "o", "--size-mismatch", "resize")
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_rgb(tmp_path / "o/inputs/img0.png").shape == (64, 96, 3)
