"""Device, dtype, tiles, compile and memory layout are resolved once (engine/settings.py) and only applied after."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.devices
from data.image_io import write_rgb
from engine.inference import Enhancer
from engine.settings import GB, resolve_settings
from models.build import build_network
from models.checkpoint import save_generator
from models.precision import resolve_dtype
from options.options import load_options
from tests.cli_scripts import load_script
from utils.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs/LLFlow/demo_tiny.yml"
TINY_FLOW = ["network_G.nf=8", "network_G.nb=1", "network_G.flow.K=1", "network_G.flow.stackRRDB.blocks=[0]",
             "network_G.flow.conditionInFeaDim=16", "network_G.flow.CondAffineSeparatedAndCond.hidden_channels=16"]


def _count_calls(monkeypatch, original) -> list:
    """Count calls of `original` from every project module that imported it by name."""
    calls = []

    def counted(*a, **kw):
        calls.append(a)
        return original(*a, **kw)

    for name, mod in list(sys.modules.items()):
        if name.split(".")[0] in ("engine", "models", "utils", "data", "options") or name.startswith("lowlight"):
            for attr, value in list(vars(mod).items()):
                if value is original:
                    monkeypatch.setattr(mod, attr, counted)
    return calls


def test_flags_override_the_config_and_bad_values_name_their_key():
    opt = {"inference": {"tile": 64, "max_memory": 2, "channels_last": False, "compile": True, "dtype": "bf16",
                         "self_ensemble": True}}
    s = resolve_settings(opt, device="cpu")
    assert (s.device, s.dtype, s.cast, s.tile, s.max_memory) == (torch.device("cpu"), torch.bfloat16, "weights", 64,
                                                                  2 * GB)
    assert s.compile and s.self_ensemble and s.memory_format == torch.contiguous_format and s.dtype_name == "bf16"
    s = resolve_settings(opt, device="cpu", dtype="fp32", tile=0, self_ensemble=False, compile_encoder=False)
    assert (s.dtype, s.tile, s.self_ensemble, s.compile) == (torch.float32, 0, False, False)
    default = resolve_settings({})
    assert default.tile is None and default.max_memory is None and default.memory_format == torch.channels_last
    with pytest.raises(dataclasses.FrozenInstanceError):
        default.tile = 32
    with pytest.raises(OptionError, match=r"inference\.tile / --tile: 8 is too small"):
        resolve_settings(opt, device="cpu", tile=8)
    with pytest.raises(OptionError, match=r"^inference\.device: 'gpu7' is not a device name"):
        resolve_settings({"inference": {"device": "gpu7"}})
    with pytest.raises(OptionError, match=r"^--device: 'gpu7'"):
        resolve_settings({"inference": {"device": "cpu"}}, device="gpu7")
    with pytest.raises(OptionError, match=r"--dtype / inference\.dtype: fp16 needs a CUDA device"):
        resolve_settings(opt, device="cpu", dtype="fp16")
    with pytest.raises(OptionError, match=r"inference\.max_memory"):
        resolve_settings({"inference": {"max_memory": 0}}, device="cpu")


def test_enhancer_given_settings_equals_enhancer_given_arguments():
    opt = load_options(CONF, TINY_FLOW)
    torch.manual_seed(0)
    net = build_network(opt)[0]
    low = np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8)
    by_args = Enhancer(net, opt, device="cpu", tile=16)
    by_settings = Enhancer(net, opt, settings=resolve_settings(opt, device="cpu", tile=16))
    assert by_settings.describe(0.0) == by_args.describe(0.0)
    assert np.array_equal(by_settings(low), by_args(low))


def test_test_py_resolves_device_and_dtype_once(tmp_path, monkeypatch):
    """test.py used to check the device three times (run, make_enhancer, Enhancer) and the dtype twice."""
    opt = load_options(CONF, TINY_FLOW)
    torch.manual_seed(0)
    save_generator(build_network(opt)[0], tmp_path / "g.pth")
    write_rgb(tmp_path / "in" / "a.png", np.full((16, 24, 3), 40, np.uint8))
    test_cli = load_script("test.py")
    devices = _count_calls(monkeypatch, utils.devices.pick_device)
    dtypes = _count_calls(monkeypatch, resolve_dtype)
    test_cli.main(["--opt", str(CONF), *sum((["--set", s] for s in TINY_FLOW), []), "--model_path",
                   str(tmp_path / "g.pth"), "--input", str(tmp_path / "in"), "--out", str(tmp_path / "out"),
                   "--device", "cpu"])
    assert (tmp_path / "out" / "a.png").is_file()
    assert len(devices) == 1 and len(dtypes) == 1, (devices, dtypes)


def test_training_resolves_validation_settings_once_per_run(tmp_path, monkeypatch):
    """Three validations (at the start, at steps 2 and 4), one resolution; before, each validation resolved its own."""
    from engine.trainer import train
    from tests.test_engine import _pairs, _toy_opt
    _pairs(tmp_path / "data", 6, 16, 16)
    opt = _toy_opt(tmp_path, 4, ["train.val_freq=2"])
    devices = _count_calls(monkeypatch, utils.devices.pick_device)
    hist = train(opt, argv=["test"])
    assert [step for step, _ in hist["val"]] == [0, 2, 4]
    # one for the training process (init_distributed), one for validation
    assert len(devices) == 2, devices
