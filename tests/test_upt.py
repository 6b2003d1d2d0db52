"""UPT-Flow: unbalanced-point map, MSFormer encoder (LeWin window attention), CrossCoupling, configs, and equivalence
with the official code.

Golden targets (../shared/golden/UPT-Flow) were produced by running the official implementation; the tests that
need them skip when the folder is absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from data.image_io import read_rgb
from data.preprocess import aux_input, chroma_mask, to_tensor01
from models.networks.encoders.lewin import WindowAttention, relative_position_index, shift_region_mask, window_order
from models.networks.encoders.msformer import (MSFormer, checkpoint_win_size, msformer_options, win_size_mismatch_message)
from models.networks.flow.couplings.cross import CBAM, CrossCoupling
from models.networks.flow.step import FlowStep
from models.networks.generator import FlowGenerator
from models.networks.variants import resolve_variant
from tests.flow_checks import assert_invertible, assert_logdet_matches_jacobian, perturb_
from models.conversion.flows import never_run_shapes
from tests.golden_models import golden_generator

ROOT = Path(__file__).resolve().parents[1]
CONFS = ROOT / "confs" / "UPT-Flow"
TOL = 1e-4

TINY_MS = {"dim": 8, "num_refinement_blocks": 1, "heads": [1, 1, 2, 2], "depths": [2, 1, 1, 1, 1, 1, 1],
           "num_heads": [1, 1, 2, 2, 2, 1, 1], "win_size": 5}




def tiny_opt(**ms):
    return {"network_G": {"msformer": {**TINY_MS, **ms}}}


# ------------------------------------------------------------------------------------------------ the map rule

def test_zero_map_rule_on_hand_made_pixels():
    # UPT's zc: 1 = balanced, i.e. every share c / (R+G+B+1e-4) is > 0.1; 0 = unbalanced point (black included).
    pixels = {
        (0.0, 0.0, 0.0): 0.0,      # black: every share is 0
        (1.0, 0.0, 0.0): 0.0,      # saturated red
        (0.5, 0.5, 0.5): 1.0,      # grey: shares 1/3
        (0.01, 0.01, 0.01): 1.0,   # dark grey: shares 0.03 / 0.0301 = 0.33
        (1e-5, 1e-5, 1e-5): 0.0,   # near-black grey: the 1e-4 in the sum pushes each share to 0.077
        (0.9, 0.9, 0.05): 0.0,     # blue share 0.027
        (0.6, 0.3, 0.2): 1.0,      # shares 0.55 / 0.27 / 0.18
        (0.2, 0.4, 0.4): 1.0,      # smallest share 0.2
        (0.7, 0.25, 0.08): 0.0,    # blue share 0.078
    }
    rgb = torch.tensor(list(pixels), dtype=torch.float32).T.reshape(1, 3, 1, -1)
    expected = torch.tensor(list(pixels.values())).reshape(1, 1, 1, -1)
    assert torch.equal(chroma_mask(rgb, "balanced_is_one"), expected)
    assert MSFormer.aux_input == "upt_zero_map"
    assert torch.equal(aux_input(rgb, MSFormer.aux_input), expected)


# ------------------------------------------------------------------------------------------------ window attention

def test_relative_position_index_by_hand():
    idx = relative_position_index(2)            # tokens (0,0) (0,1) (1,0) (1,1); table has 3x3 = 9 rows
    assert idx.tolist() == [[4, 3, 1, 0], [5, 4, 2, 1], [7, 6, 4, 3], [8, 7, 5, 4]]
    assert relative_position_index(5).shape == (25, 25) and int(relative_position_index(5).max()) == 80


def test_shift_region_mask_by_hand():
    m = shift_region_mask(4, 4, win=2, shift=1)  # bands per axis: [0, 0 | 1 | 2]
    assert m.shape == (4, 1, 4, 4)
    assert (m[0] == 0).all()                     # top-left window lies in one region
    tl_tr = torch.tensor([[0, -100, 0, -100], [-100, 0, -100, 0]] * 2, dtype=torch.float32)
    assert torch.equal(m[1, 0], tl_tr)           # top-right: columns 2 and 3 are different regions
    last = torch.full((4, 4), -100.0).fill_diagonal_(0)
    assert torch.equal(m[3, 0], last)            # bottom-right: four regions


@pytest.mark.parametrize("shifted", [False, True])
def test_window_attention_matches_explicit_softmax(shifted):
    torch.manual_seed(0)
    dim, heads, win, b, nw = 8, 2, 3, 2, 4
    n, d = win * win, dim // heads
    attn = perturb_(WindowAttention(dim, win, heads), std=0.3)
    x = torch.randn(b * nw, n, dim)               # window tokens, row-major inside each window
    zm = torch.randn(b * nw, n, dim)
    mask = shift_region_mask(6, 6, win, 1) if shifted else None      # (nW = 4, 1, 9, 9)
    out = attn(x, zm, b, mask)
    grad_sdpa = torch.autograd.grad(out.square().sum(), attn.relative_position_bias_table)[0]
    # explicit reference: windows as (C, w, w) images; q, k from the map, v from x; head = block of channels
    img = lambda t: t.transpose(1, 2).reshape(b * nw, dim, win, win)              # noqa: E731
    heads_of = lambda t: t.reshape(b * nw, heads, d, n).transpose(-1, -2)         # noqa: E731
    q, k, v = heads_of(attn.qkv.to_q(img(zm))), heads_of(attn.qkv.to_k(img(zm))), heads_of(attn.qkv.to_v(img(x)))
    logits = (q * d ** -0.5) @ k.transpose(-1, -2) * attn.temperature
    table = attn.relative_position_bias_table
    bias = torch.stack([table[attn.relative_position_index[i, j]] for i in range(n) for j in range(n)])
    logits = logits + bias.T.reshape(heads, n, n)
    if shifted:
        logits = logits + mask.repeat(b, 1, 1, 1)
    ref = attn.proj((logits.softmax(-1) @ v).transpose(1, 2).reshape(b * nw, n, dim))
    grad_ref = torch.autograd.grad(ref.square().sum(), table)[0]
    assert (out - ref).abs().max().item() < 1e-5
    assert grad_ref.abs().max().item() > 1e-2
    assert (grad_sdpa - grad_ref).abs().max().item() < 1e-4


def test_window_order_is_shift_then_partition():
    assert window_order(4, 6, 2)[4:8].tolist() == [2, 3, 8, 9]           # second window of the first row
    assert window_order(4, 6, 2, shift=1)[:4].tolist() == [7, 8, 13, 14]  # shifted by -1: starts at (1, 1)
    x = torch.randn(2, 4, 6, 3)                                         # (B, H, W, C)
    rolled = torch.roll(x, shifts=(-1, -1), dims=(1, 2))
    windows = rolled.reshape(2, 2, 2, 3, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(2, 24, 3)
    assert torch.equal(x.reshape(2, 24, 3).index_select(1, window_order(4, 6, 2, 1)), windows)


# ------------------------------------------------------------------------------------------------ encoder

def test_pad_multiple_and_outputs():
    assert MSFormer.pad_multiple == 8 and MSFormer.from_options(tiny_opt(win_size=8)).pad_multiple == 8
    assert MSFormer.from_options(tiny_opt()).window_multiple == 40
    assert MSFormer.from_options(tiny_opt(win_size=8)).window_multiple == 64
    enc = MSFormer.from_options(tiny_opt(win_size=4)).eval()
    assert enc.window_multiple == 32
    lq = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        out = enc(lq, chroma_mask(lq, "balanced_is_one"))
    assert out["fea_up0"].shape == (1, 48, 4, 8)
    assert out["fea_up1"].shape == (1, 48, 8, 16)
    assert out["fea_up2"].shape == (1, 48, 16, 32)
    assert out["cat_f"].shape == (1, 16, 32, 64)
    with pytest.raises(ValueError, match="unbalanced-point map"):
        enc(lq)
    odd = torch.rand(1, 3, 36, 64)
    with pytest.raises(ValueError, match="multiple of 8"):
        enc(odd, chroma_mask(odd, "balanced_is_one"))


def test_unknown_msformer_key_is_named():
    with pytest.raises(KeyError, match="win_sise"):
        MSFormer.from_options(tiny_opt(win_sise=8))
    with pytest.raises(ValueError, match="depths"):
        msformer_options(tiny_opt(depths=[2, 2]))
    cfg = msformer_options({"network_G": {"msformer": {"win_size": None, "dim": None}}})   # null = official default
    assert cfg["win_size"] == 5 and cfg["dim"] == 48


def test_window_size_mismatch_message():
    sd8 = {f"RRDB.{k}": v for k, v in MSFormer.from_options(tiny_opt(win_size=8)).state_dict().items()}
    assert checkpoint_win_size(sd8) == 8
    msg = "checkpoint was trained with win_size 8, config says 5: set network_G.msformer.win_size: 8"
    assert win_size_mismatch_message(sd8, 5) == msg
    assert win_size_mismatch_message(sd8, 8) is None
    enc5 = MSFormer.from_options(tiny_opt())
    assert enc5.explain_checkpoint_mismatch(sd8, "RRDB.") == msg
    from models.checkpoint import load_weights
    from utils.errors import CheckpointError
    gen = torch.nn.Module()
    gen.RRDB = enc5
    with pytest.raises(CheckpointError, match="win_size 8, config says 5"):
        load_weights(gen, sd8)


def test_drop_path_only_in_training():
    enc = MSFormer.from_options(tiny_opt(drop_path_rate=0.5))
    lq = torch.rand(2, 3, 40, 40)
    zm = chroma_mask(lq, "balanced_is_one")
    with torch.no_grad():
        enc.eval()
        a, b = enc(lq, zm)["cat_f"], enc(lq, zm)["cat_f"]
        assert torch.equal(a, b)
        enc.train()
        torch.manual_seed(1)
        c = enc(lq, zm)["cat_f"]
        torch.manual_seed(2)
        d = enc(lq, zm)["cat_f"]
        assert (c - d).abs().max().item() > 1e-3
        no_drop = MSFormer.from_options(tiny_opt(drop_path_rate=0.0)).train()
        torch.manual_seed(1)
        e = no_drop(lq, zm)["cat_f"]
        torch.manual_seed(2)
        assert torch.equal(e, no_drop(lq, zm)["cat_f"])


# ------------------------------------------------------------------------------------------------ cross coupling

def _coupling(c=4, cond=5, seed=0):
    layer = CrossCoupling(c, cond, hidden_channels=16)
    return perturb_(layer, std=0.2, seed=seed).eval()


def test_cross_coupling_invertible_and_logdet():
    torch.manual_seed(0)
    layer = _coupling(12, 6)
    assert layer.eps == pytest.approx(3e-4)
    z, ft = torch.randn(2, 12, 5, 6), torch.randn(2, 6, 5, 6)
    y, ld = assert_invertible(layer, z, ft)      # also: reverse log-det == -forward (the official one is not)
    assert (y - z).abs().max().item() > 1e-2      # not an identity
    small = _coupling(4, 5, seed=1)
    assert_logdet_matches_jacobian(small, torch.randn(1, 4, 3, 3), torch.randn(1, 5, 3, 3))


def test_flowstep_with_cross_coupling():
    torch.manual_seed(0)
    step = perturb_(FlowStep(4, 5, "CrossCoupling", {"hidden_channels": 16}, torch.Generator().manual_seed(0)),
                    std=0.2).eval()
    z, ft = torch.randn(2, 4, 3, 3), torch.randn(2, 5, 3, 3)
    assert_invertible(step, z, ft)
    assert_logdet_matches_jacobian(step, z, ft)


def test_cbam_shapes_and_width_check():
    cbam = perturb_(CBAM(16), std=0.3)
    x = torch.randn(2, 16, 4, 5)
    assert cbam(x).shape == x.shape
    assert cbam.ChannelGate.mlp[1].weight.shape == (1, 16)
    with pytest.raises(ValueError, match="hidden_channels"):
        CrossCoupling(4, 5, hidden_channels=8)


# ------------------------------------------------------------------------------------------------ configs

def test_official_yaml_builds_exact_official_keys(shared_dir):
    keys_file = shared_dir / "reference" / "keys" / "UPT-Flow_keys.txt"
    if not keys_file.is_file():
        pytest.skip(f"{keys_file} not present")
    expected = {}
    for line in keys_file.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name, shape, dtype = line.split("\t")
        expected[name] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype)
    opt = yaml.safe_load((CONFS / "UPT-Flow.yml").read_text())
    variant = resolve_variant(opt)
    assert variant.name == "upt"
    model = FlowGenerator.from_options(opt, variant)
    got = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in model.state_dict().items()}
    assert sorted(set(got) - set(expected)) == [] and sorted(set(expected) - set(got)) == []
    assert {k: v for k, v in got.items() if expected[k] != v} == {}
    assert sum(p.numel() for p in model.parameters()) == 23_437_502
    assert never_run_shapes(model) == {}                     # UPT-Flow: every official tensor runs (spec §6.5)
    assert sum(1 for k in got if k.endswith("relative_position_index")) == 14
    assert model.pad_multiple == 8 and model.RRDB.window_multiple == 40


def test_training_confs_state_the_upt_hyper_parameters():
    expected = {"LOL-v1": ("LoL", 5, None), "LOL-v2-real": ("LoL_v2", 5, "real"),
                "LOL-v2-synthetic": ("LoL_v2", 5, "synthetic"), "SDSD-indoor": ("SDSD", 8, None),
                "SDSD-outdoor": ("SDSD", 8, None), "SID": ("SID", 8, None), "SMID": ("SMID", 8, None)}
    for name, (dataset, win, subset) in expected.items():
        opt = yaml.safe_load((CONFS / f"train_{name}.yml").read_text())
        tr, ds = opt["train"], opt["datasets"]["train"]
        assert opt["dataset"] == dataset and ds.get("subset") == subset, name
        assert opt["network_G"]["variant"] == "upt" and opt["network_G"]["msformer"]["win_size"] == win, name
        assert (tr["lr_G"], tr["warmup_iter"], tr["niter"]) == (2e-4, 800, 50000), name
        assert tr["lr_steps_rel"] == [0.4, 0.6, 0.8, 0.9] and tr["lr_gamma"] == 0.5, name
        assert (ds["batch_size"], ds["GT_size"], ds["quant"], ds["log_low"]) == (8, 160, 32, False), name
        assert opt["datasets"]["val"]["log_low"] is False, name
        assert opt["network_G"]["flow"]["K"] == 8, name


def test_demo_tiny_config_runs_both_directions():
    from options.options import load_options
    opt = load_options(CONFS / "demo_tiny.yml", is_train=True)
    assert opt["datasets"]["train"]["dataset"] == "Demo"
    torch.manual_seed(0)
    model = FlowGenerator.from_options(opt, resolve_variant(opt))
    assert model.pad_multiple == 8 and model.RRDB.window_multiple == 32
    gt, lq = torch.rand(2, 3, 64, 64), torch.rand(2, 3, 64, 64) * 0.2
    aux = chroma_mask(lq, "balanced_is_one")
    model.train()
    out = model.nll(gt, lq, aux)                  # first training call also data-initialises ActNorm
    assert torch.isfinite(out["nll"]).all() and out["z"].shape == (2, 192, 8, 8)
    model.eval()
    with torch.no_grad():
        x = model.reverse(lq, aux)
        z = model.nll(x, lq, aux, add_gt_noise=False)["z"]
    assert x.shape == gt.shape and z.abs().max().item() < 1e-3   # decode(0) encodes back to 0


# ------------------------------------------------------------------------------------------------ golden

@pytest.fixture(scope="module")
def gold(golden):
    d = golden("UPT-Flow")
    model = golden_generator(d, "upt")
    lq = torch.from_numpy(np.load(d / "cond_input.npy"))
    zm = torch.from_numpy(np.load(d / "zero_map.npy"))
    with torch.no_grad():
        feats = model.RRDB(lq, zm)
    return {"dir": d, "model": model, "lq": lq, "zm": zm, "feats": feats}


def test_golden_inputs_from_low_png(gold):
    d = gold["dir"]
    low = to_tensor01(read_rgb(d / "low.png")).unsqueeze(0)
    assert torch.equal(low, gold["lq"])           # 64x96 is a multiple of 8: test.py does not pad; RGB / 255
    assert torch.equal(chroma_mask(low, "balanced_is_one"), gold["zm"])


@pytest.mark.parametrize("name", ["fea_up0", "fea_up1", "fea_up2", "cat_f"])
def test_golden_features(gold, name):
    ref = np.load(gold["dir"] / f"feat_{name}.npy")
    got = gold["feats"][name].numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < TOL


def test_golden_reverse(gold):
    with torch.no_grad():
        x = gold["model"].reverse(gold["lq"], gold["zm"], cond=gold["feats"])
    ref = np.load(gold["dir"] / "enhanced.npy")
    assert np.abs(x.numpy() - ref).max() < TOL


def test_golden_forward_nll(gold):
    d = gold["dir"]
    fwd = json.loads((d / "golden.json").read_text())["forward"]["encode_nonoise"]
    gt = torch.from_numpy(np.load(d / "gt_input.npy"))
    with torch.no_grad():
        out = gold["model"].nll(gt, gold["lq"], gold["zm"], add_gt_noise=False)
    assert np.abs(out["z"].numpy() - np.load(d / "z_encode_nonoise_level0.npy")).max() < TOL
    assert math.isclose(out["logdet"].item(), fwd["logdet"][0], rel_tol=TOL)
    assert abs(out["nll"].item() - fwd["nll"][0]) < TOL
