"""bench/gpu_check.py: without CUDA it says so in one line and exits 0; its CPU dry run (--device cpu --tiny) goes
through every stage and writes the JSON; a failing stage is recorded and the later stages still run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench/gpu_check.py"


def _run(args, tmp_path, timeout=900):
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")
def test_without_cuda_one_line_and_exit_0(tmp_path):
    r = _run([], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0], r.stdout
    assert not list(tmp_path.iterdir()), "nothing is written when there is nothing to check"


@pytest.mark.slow
def test_cpu_dry_run_goes_through_every_stage(tmp_path):
    out = tmp_path / "report.json"
    r = _run(["--device", "cpu", "--tiny", "--compile-backend", "eager", "--steps", "6", "--repeat", "1",
              "--pytest-paths", "tests/test_cuda.py", "--json", str(out)], ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["ok"] and list(rep["stages"]) == ["pytest", "infer", "infer4k", "train", "ddp", "compile"]
    st = {k: v["result"] for k, v in rep["stages"].items()}
    assert st["pytest"]["skipped"] > 0 and st["pytest"]["failed"] == 0 and st["pytest"]["passed"] == 0
    for fam in ("llflow", "gltg", "zmar", "upt", "drbn"):
        inf = st["infer"][fam]
        assert inf["fp32"]["finite"] and inf["bf16"]["finite"] and "fp16" not in inf   # fp16 needs CUDA
        # bf16 really ran in bf16: a rounding difference, and only that
        assert 0 < inf["bf16"]["max_diff_vs_fp32"] < 0.1, inf
        assert st["infer4k"][fam]["size"] == [128, 192] and st["infer4k"][fam]["bf16"]["finite"]
        tr = st["train"][fam]
        assert tr["steps"] == 6 and tr["finite"] and tr["falling"] and tr["amp_dtype"] == "bf16", tr
    assert st["ddp"]["finished"] and st["ddp"]["ranks_in_sync"] and st["ddp"]["backend"] == "gloo"
    assert st["compile"]["max_diff_vs_eager"] < 1e-5 and st["compile"]["finite"]
    assert "stages ok" in r.stdout and str(out) in r.stdout


@pytest.mark.slow
def test_a_failing_stage_is_recorded_and_the_next_runs(tmp_path):
    out = tmp_path / "report.json"
    r = _run(["--device", "cpu", "--tiny", "--stages", "compile,train", "--families", "drbn", "--compile-backend",
              "no_such_backend", "--steps", "100000", "--budget", "40", "--json", str(out)], ROOT)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(out.read_text())
    comp, train = rep["stages"]["compile"], rep["stages"]["train"]
    assert not comp["ok"] and "no_such_backend" in comp["error"]
    tr = train["result"]["drbn"]   # time-boxed: stopped by its box, what it did is still reported
    assert 0 < tr["steps"] < 100000 and tr["finite"] and not train["ok"]
    assert "FAIL" in r.stdout
    # an existing report is never overwritten
    again = _run(["--device", "cpu", "--tiny", "--stages", "train", "--json", str(out)], ROOT)
    assert again.returncode != 0 and "already exists" in again.stderr
