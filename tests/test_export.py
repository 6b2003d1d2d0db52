"""Weights and graphs for other tools: .safetensors checkpoints (models/checkpoint.py) and ONNX export of the
enhance path (engine/export_onnx.py, python tools/export_onnx.py) checked against PyTorch and the goldens."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.image_io import read_rgb, write_rgb
from models.build import build_network
from models.checkpoint import atomic_save, read_state_dict, save_generator
from options.options import load_options
from utils.errors import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"LLFlow": "llflow", "UPT-Flow": "upt", "ZMAR-SNFlow": "zmar", "GLTG-AFlow": "gltg"}


# ------------------------------------------------------------------------------------------ safetensors
def _same(a: dict, b: dict):
    assert sorted(a) == sorted(b)  # safetensors stores the names sorted; loading does not depend on order
    for k in a:
        assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), k


def test_safetensors_round_trip_official_layout(golden, tmp_path):
    """The official LLFlow checkpoint (plain keys), also wrapped DataParallel-style, converts losslessly."""
    g = golden("LLFlow")
    official = torch.load(g / "weights.pth", map_location="cpu", weights_only=True)
    atomic_save(official, tmp_path / "w.safetensors")
    _same(read_state_dict(tmp_path / "w.safetensors"), official)
    # `module.` prefixes are removed on reading, whatever the format
    atomic_save({f"module.{k}": v for k, v in official.items()}, tmp_path / "dp.SafeTensors")
    _same(read_state_dict(tmp_path / "dp.SafeTensors"), official)
    # the file is plain safetensors: readable without this project
    from safetensors.torch import load_file
    _same(load_file(str(tmp_path / "w.safetensors")), official)


def test_safetensors_round_trip_our_layout(golden, tmp_path):
    """Our GLTG-AFlow generator holds 540 tensors the official checkpoints lack: saved and loaded strictly."""
    g = golden("GLTG-AFlow")
    opt = load_options(g / "config.yml")
    model, _ = build_network(opt, str(g / "weights.pth"))
    ours = model.state_dict()
    official = torch.load(g / "weights.pth", map_location="cpu", weights_only=True)
    assert len(ours) > len(official)
    save_generator(model, tmp_path / "G.safetensors")
    save_generator(model, tmp_path / "G.pth")
    st, pth = read_state_dict(tmp_path / "G.safetensors"), read_state_dict(tmp_path / "G.pth")
    _same(st, pth)
    _same(st, {k: v.cpu() for k, v in ours.items()})
    again, _ = build_network(opt, str(tmp_path / "G.safetensors"))  # strict load, no missing-head note needed
    _same(again.state_dict(), model.state_dict())


def test_safetensors_refuses_non_tensor_content_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="flat name -> tensor"):
        atomic_save({"step": 3, "w": torch.zeros(2)}, tmp_path / "state.safetensors")
    assert not (tmp_path / "state.safetensors").exists()
    (tmp_path / "bad.safetensors").write_bytes(b"\x00\x01not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "bad.safetensors")


def _load_script(name):
    spec = importlib.util.spec_from_file_location(f"_cli_{name}", ROOT / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_converted_golden_gives_identical_test_py_output(golden, tmp_path):
    """python tools/convert_checkpoint.py converts the golden LLFlow weights; test.py gives the same image from both."""
    from tools.convert_checkpoint import main as convert_main
    g = golden("LLFlow")
    convert_main([str(g / "weights.pth"), str(tmp_path / "w.safetensors")])
    write_rgb(tmp_path / "in/img.png", read_rgb(g / "low.png"))
    test_py = _load_script("test")
    outs = {}
    for fmt, w in (("pth", g / "weights.pth"), ("st", tmp_path / "w.safetensors")):
        test_py.main(["--opt", str(g / "config.yml"), "--model_path", str(w), "--input", str(tmp_path / "in"),
                      "--out", str(tmp_path / fmt)])
        outs[fmt] = read_rgb(tmp_path / fmt / "img.png")
    assert np.array_equal(outs["pth"], outs["st"])
    assert np.abs(outs["st"].astype(int) - read_rgb(g / "enhanced_plain.png").astype(int)).max() <= 1


# ------------------------------------------------------------------------------------------ ONNX
def _onnx_modules():
    pytest.importorskip("onnx", reason="onnx not installed (optional: pip install -r requirements-onnx.txt)")
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (optional: requirements-onnx.txt)")
    from engine import export_onnx as ex
    from engine.inference import Enhancer
    return ex, Enhancer


def _prepared(model, opt, img, Enhancer):
    o = dict(opt)
    o["inference"] = {**(opt.get("inference") or {}), "channels_last": False}
    return Enhancer(model, o, device="cpu").prepare(img)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_onnx_matches_pytorch_at_another_size(golden, tmp_path, family):
    """Exported at the golden size (64x96); run by onnxruntime on a crop of the golden image of another size
    (not a multiple of 16: the padding inside the Restormer encoders is in the graph) within 1e-4 of PyTorch."""
    ex, Enhancer = _onnx_modules()
    g = golden(family)
    opt = load_options(g / "config.yml")
    model, _ = build_network(opt, str(g / "weights.pth"))
    model.eval()
    info = ex.export_onnx(opt, None, tmp_path / "m.onnx", size=(64, 96), check=False, model=model)
    assert info["family"] == FAMILIES[family] and info["size"] == [64, 96]
    sess = ex.onnx_session(tmp_path / "m.onnx")
    low = read_rgb(g / "low.png")
    crop = low[:48, :80] if model.pad_multiple == 16 else low[:40, :72]
    lq, aux = _prepared(model, opt, crop, Enhancer)
    assert lq.shape[-2:] != (64, 96)
    with torch.no_grad():
        ref = model.enhance(lq, aux, heat=0.0).numpy()
    got = ex.run_onnx(sess, lq.numpy(), None if aux is None else aux.numpy())
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-4
    if family != "GLTG-AFlow":  # at the export size against the official code's output (GLTG has none: README)
        lq0, aux0 = _prepared(model, opt, low, Enhancer)
        got0 = ex.run_onnx(sess, lq0.numpy(), None if aux0 is None else aux0.numpy())
        assert np.abs(got0 - np.load(g / "enhanced.npy")).max() < 1e-4


def test_export_cli_writes_metadata_and_checks(golden, tmp_path, capsys):
    _onnx_modules()
    import onnx
    from tools.export_onnx import main
    g = golden("LLFlow")
    info = main(["--opt", str(g / "config.yml"), "--model_path", str(g / "weights.pth"), "--out",
                 str(tmp_path / "llflow.onnx"), "--size", "60", "90"])
    out = capsys.readouterr().out
    assert info["size"] == [64, 96] and info["check"]["size"] == [72, 112]  # rounded up; checked one step larger
    assert info["check"]["max_abs_diff"] < 1e-4 and "max abs diff" in out
    m = onnx.load(str(tmp_path / "llflow.onnx"))
    meta = {p.key: json.loads(p.value) for p in m.metadata_props}
    assert meta["lowlight_flow.pad_multiple"] == 8 and meta["lowlight_flow.aux_input"] is None
    assert meta["lowlight_flow.log_low"] is True and meta["lowlight_flow.concat_histeq"] is True
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input]
    assert dims == [[1, 6, "height", "width"]]
    assert [o.name for o in m.graph.output] == ["enhanced"]


def test_export_tool_imports_models_only_when_it_runs():
    """The export tool's --help and argument errors stay fast: it imports the engine and models/ only when it runs."""
    code = ("import sys; import tools.export_onnx; "
            "print(any(m == 'models' or m.startswith(('models.', 'engine.')) for m in sys.modules))")
    import subprocess
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"
