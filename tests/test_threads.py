"""Threads and the OpenMP wait policy: every CLI sets OMP_WAIT_POLICY before torch is imported (GNU OpenMP reads it
only then), an explicit policy in the environment wins, and --threads / train.threads set torch's thread count."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from options.options import load_options
from utils.errors import OptionError
from utils.threads import set_threads

ROOT = Path(__file__).resolve().parents[1]
CLIS = ["train", "test", "test_with_tricks", "test_with_zeromaps", "Measure"]

# Imports a CLI module and prints OMP_WAIT_POLICY as it is at the moment `torch` is first imported.
PROBE = """
import importlib, os, sys
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            print("POLICY_AT_TORCH_IMPORT", os.environ.get("OMP_WAIT_POLICY"))
            sys.meta_path.remove(self)
        return None
sys.meta_path.insert(0, Probe())
importlib.import_module(sys.argv[1])
import torch   # where the CLI imports torch only later (in main), the policy must already be set
"""


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    return dict(env, OMP_NUM_THREADS="1", **extra)


@pytest.mark.parametrize("cli", CLIS)
def test_cli_sets_the_wait_policy_before_torch_loads(cli):
    r = subprocess.run([sys.executable, "-c", PROBE, cli], capture_output=True, text=True, cwd=ROOT, env=_env(),
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "POLICY_AT_TORCH_IMPORT PASSIVE" in r.stdout.splitlines(), r.stdout


def test_an_explicit_wait_policy_wins():
    r = subprocess.run([sys.executable, "-c", PROBE, "test"], capture_output=True, text=True, cwd=ROOT,
                       env=_env(OMP_WAIT_POLICY="ACTIVE"), timeout=120)
    assert "POLICY_AT_TORCH_IMPORT ACTIVE" in r.stdout.splitlines(), r.stdout


def test_set_threads_and_its_errors():
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == 2 and torch.get_num_threads() == 2
        assert set_threads(None) == 2            # None leaves the count alone
    finally:
        torch.set_num_threads(before)
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(OptionError, match="train.threads: .* is not a thread count"):
            set_threads(bad, "train.threads")


def test_train_threads_setting_is_validated():
    conf = ROOT / "confs/LLFlow/demo_tiny.yml"
    assert load_options(conf, ["train.threads=3"], is_train=True)["train"]["threads"] == 3
    with pytest.raises(OptionError, match="train.threads"):
        load_options(conf, ["train.threads=0"], is_train=True)


@pytest.mark.parametrize("cli", ["train.py", "test.py", "Measure.py"])
def test_bad_threads_flag_is_one_error_line(cli, tmp_path):
    r = subprocess.run([sys.executable, cli, "--opt", "x.yml", "--gt", "g", "--pred", "p", "--threads", "0"]
                       if cli == "Measure.py" else [sys.executable, cli, "--opt", "x.yml", "--threads", "0"],
                       capture_output=True, text=True, cwd=ROOT, env=_env(), timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].endswith("argument --threads: '0' is not a thread count (a whole "
                                                      "number, at least 1)"), r.stderr
