"""ZMAR-SNFlow: chromaticity mask, ZMARRestormer encoder, SNFlowCoupling, and equivalence with the official code.

Golden targets (../shared/golden/ZMAR-SNFlow) were produced by running the official implementation; the tests that
need them skip when the folder is absent.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from data.image_io import read_rgb
from data.preprocess import aux_input, chroma_mask, log_low, to_tensor01
from models.networks.encoders.zmar_restormer import Mask, ZMARRestormer, downmask, restormer_config
from models.networks.flow.couplings.snflow import SNFlowCoupling
from models.networks.flow.step import FlowStep
from models.networks.generator import FlowGenerator
from models.conversion.flows import never_run_index, never_run_shapes, official_state_dict
from models.networks.variants import VARIANTS, resolve_variant
from tests.flow_checks import assert_invertible, assert_logdet_matches_jacobian, perturb_
from tests.golden_models import golden_generator

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "confs" / "ZMAR-SNFlow" / "LOLv2-pc.yml"
TOL = 1e-4

TINY_G = {"restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1, "heads": [1, 2, 4, 8]},
          "flow": {"K": 1, "L": 3, "conditionInFeaDim": 48, "CondAffineSeparatedAndCond": {"hidden_channels": 8},
                   "stackRRDB": {"blocks": [], "concat": True}}}


# ------------------------------------------------------------------------------------------------ the mask rule

def test_mask_rule_on_hand_made_pixels():
    # 1 = "zero-element / colour-unbalanced": some chromaticity share c / (R+G+B+1e-4) is <= 0.1 (black included).
    pixels = {
        (0.0, 0.0, 0.0): 1.0,      # black: every share is 0
        (1.0, 0.0, 0.0): 1.0,      # saturated red
        (0.0, 1.0, 0.0): 1.0,      # saturated green
        (0.0, 0.0, 1.0): 1.0,      # saturated blue
        (0.5, 0.5, 0.5): 0.0,      # grey: shares 1/3
        (0.01, 0.01, 0.01): 0.0,   # very dark but balanced grey
        (0.9, 0.9, 0.05): 1.0,     # blue share 0.027
        (0.6, 0.3, 0.2): 0.0,      # shares 0.55/0.27/0.18
        (0.7, 0.25, 0.08): 1.0,    # blue share 0.078
    }
    rgb = torch.tensor(list(pixels), dtype=torch.float32).T.reshape(1, 3, 1, -1)
    expected = torch.tensor(list(pixels.values())).reshape(1, 1, 1, -1)
    assert torch.equal(chroma_mask(rgb, "unbalanced_is_one"), expected)
    assert torch.equal(aux_input(rgb, ZMARRestormer.aux_input), expected)


def test_downmask_is_bilinear_threshold_per_sample():
    m = torch.zeros(2, 1, 8, 8)
    m[0, 0, 1, 1] = 1.0          # bilinear /2 puts 0.25 at (0, 0): above 0.2 -> 1
    m[1, 0, 4:6, 6] = 1.0        # averages to 0.5 at (2, 3)
    m[1, 0, 7, 0] = 1.0          # alone in its 2x2 cell -> 0.25 at (3, 0)
    d = downmask(m, 2)
    assert d.shape == (2, 1, 4, 4)
    exp = torch.zeros(2, 1, 4, 4)
    exp[0, 0, 0, 0] = 1
    exp[1, 0, 2, 3] = 1
    exp[1, 0, 3, 0] = 1
    assert torch.equal(d, exp)
    # k = 4: output (0, 0) samples the input at (1.5, 1.5), so pixel (1, 1) contributes 1/4 -> 1
    one = torch.zeros(1, 1, 8, 8)
    one[0, 0, 1, 1] = 1.0
    assert torch.equal(downmask(one, 4), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]]))
    # 0.5 * 1/4 = 0.125 <= 0.2 -> 0
    assert downmask(one * 0.5, 2).sum() == 0


# ------------------------------------------------------------------------------------------------ the encoder

def _reference_zma(mod: Mask, x: torch.Tensor, mask: torch.Tensor, n: int = 4) -> torch.Tensor:
    """Zero-element mask attention written directly from the spec (section 3.2), per head and unfused."""
    h0, w0 = x.shape[-2:]
    ph, pw = (-h0) % n, (-w0) % n
    x = F.pad(x, (0, pw, 0, ph), mode="reflect")
    mask = F.pad(mask, (0, pw, 0, ph), mode="reflect")
    b, c, h, w = x.shape
    v = mod.qkv_dwconv(mod.qkv(x)).chunk(3, dim=1)[2]
    heads = mod.num_heads
    v = v.reshape(b, heads, c // heads, n, h // n, n, w // n).permute(0, 1, 2, 3, 5, 4, 6)
    v = v.reshape(b, heads, c // heads, n * n, -1)
    q = mask.reshape(b, 1, n, h // n, n, w // n).permute(0, 1, 2, 4, 3, 5).reshape(b, 1, n * n, -1)
    q = F.normalize(q, dim=-1)
    attn = torch.softmax(q @ q.transpose(-2, -1) * 1.0, dim=-1)          # (b, 1, 16, 16), temperature 1
    out = attn.unsqueeze(1) @ v                                         # same map for every head and channel
    out = out.reshape(b, heads, c // heads, n, n, h // n, w // n).permute(0, 1, 2, 3, 5, 4, 6)
    out = mod.project_out(out.reshape(b, c, h, w))
    return out[:, :, :h0, :w0]


@pytest.mark.parametrize("size", [(8, 12), (6, 10)])   # (6, 10) needs the reflect padding to 8x12
def test_mask_attention_matches_spec_formula(size):
    from models.networks.encoders.zmar_restormer import mask_attention_map, pad_to_multiple
    torch.manual_seed(0)
    mod = Mask(8, 2).eval()
    x = torch.randn(2, 8, *size)
    mask = (torch.rand(2, 1, *size) > 0.6).float()
    mask[1, :, : size[0] // 2] = 0.0     # all-zero patches: zero similarity to everything
    with torch.no_grad():
        got = mod(x, mask_attention_map(pad_to_multiple(mask)))
        ref = _reference_zma(mod, x, mask)
    assert got.shape == x.shape
    assert (got - ref).abs().max().item() < 1e-5


def tiny_opt(**restormer):
    g = {**TINY_G, "restormer": {**TINY_G["restormer"], **restormer}}
    return {"network_G": g, "datasets": {"train": {"quant": 32}}}


def test_restormer_config_defaults_and_validation():
    cfg = restormer_config({"network_G": {}})
    assert (cfg["dim"], cfg["num_blocks"], cfg["num_refinement_blocks"], cfg["heads"]) == (48, [4, 4, 4, 4], 4,
                                                                                         [1, 2, 4, 8])
    assert (cfg["ffn_expansion_factor"], cfg["bias"], cfg["LayerNorm_type"]) == (2.66, False, "WithBias")
    # None means "not set" (the option loader fills every schema key with None)
    assert restormer_config({"network_G": {"restormer": {"dim": None}}})["dim"] == 48
    with pytest.raises(KeyError, match="num_block"):
        restormer_config({"network_G": {"restormer": {"num_block": [1, 1, 1, 1]}}})
    with pytest.raises(ValueError, match="heads"):
        restormer_config({"network_G": {"restormer": {"dim": 6, "heads": [4, 2, 4, 8]}}})
    with pytest.raises(ValueError, match="LayerNorm_type"):
        restormer_config({"network_G": {"restormer": {"LayerNorm_type": "Bias"}}})


def test_encoder_batch_independent_and_never_run_modules_not_built():
    torch.manual_seed(0)
    enc = perturb_(ZMARRestormer.from_options(tiny_opt())).eval()
    never = {base.rsplit(".", 1)[-1] for base, _ in never_run_index(enc).values()}
    assert never == {"output", "fine_tune_color_map", "reduce_chan1", "attn_share", "norm1"}
    assert not any(hasattr(enc, n) for n in ("output", "fine_tune_color_map", "reduce_chan1"))
    blk = enc.encoder_level1.layer_stack[0]
    assert not hasattr(blk, "attn_share") and not hasattr(blk.mask, "norm1")
    lq = torch.randn(2, 3, 24, 40)          # level 3 is 6x10: exercises the internal reflect padding
    mask = (torch.rand(2, 1, 24, 40) > 0.5).float()
    with torch.no_grad():
        both = enc(lq, mask)
        first = enc(lq[:1], mask[:1])
        second = enc(lq[1:], mask[1:])
    for k, c in (("fea_up0", 48), ("fea_up1", 48), ("fea_up2", 48), ("cat_f", 16)):
        assert both[k].shape[1] == c
        assert torch.allclose(both[k][:1], first[k], atol=1e-5)
        assert torch.allclose(both[k][1:], second[k], atol=1e-5)
    # the mask matters (each sample uses its own mask)
    with torch.no_grad():
        other = enc(lq[1:], 1.0 - mask[1:])
    assert (other["fea_up2"] - second["fea_up2"]).abs().max() > 1e-3


def test_encoder_input_errors():
    enc = ZMARRestormer.from_options(tiny_opt())
    with pytest.raises(ValueError, match="mask"):
        enc(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of 8"):
        enc(torch.zeros(1, 3, 20, 16), torch.zeros(1, 1, 20, 16))
    with pytest.raises(ValueError, match="mask must be"):
        enc(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))


# ------------------------------------------------------------------------------------------------ the coupling

def _coupling_opt(hidden=8):
    return {"hidden_channels": hidden}


def test_snflow_coupling_invertible_and_logdet():
    torch.manual_seed(0)
    layer = perturb_(SNFlowCoupling(12, 5, **_coupling_opt()), std=0.2).eval()
    assert {n.split(".")[0] for n, _ in layer.named_parameters()} == {"fAffine", "fAffine2", "fFeatures"}
    assert layer.fAffine2[0].in_channels == 6           # z1 only, no conditioning
    z, ft = torch.randn(2, 12, 4, 4), torch.randn(2, 5, 4, 4)
    y, ld = assert_invertible(layer, z, ft)
    assert (y - z).abs().max() > 1e-2 and ld.abs().min() > 1e-2   # not an identity
    assert_logdet_matches_jacobian(layer, z, ft)


def test_snflow_coupling_is_the_three_affine_maps():
    """Forward = injector, then z2 affine on [z1, ft], then z2 affine on z1 (spec 3.3), scales sigmoid(.+2)+eps."""
    torch.manual_seed(1)
    layer = perturb_(SNFlowCoupling(6, 4, **_coupling_opt()), std=0.2).eval()
    z, ft = torch.randn(1, 6, 3, 3), torch.randn(1, 4, 3, 3)
    eps = 1e-4

    def affine(h):
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0) + eps

    with torch.no_grad():
        t, s = affine(layer.fFeatures(ft))
        x = (z + t) * s
        ld = torch.log(s).sum()
        x1, x2 = x[:, :3], x[:, 3:]
        t, s = affine(layer.fAffine(torch.cat([x1, ft], 1)))
        x2 = (x2 + t) * s
        ld = ld + torch.log(s).sum()
        t, s = affine(layer.fAffine2(x1))
        x2 = (x2 + t) * s
        ld = ld + torch.log(s).sum()
        y, got_ld = layer(z, torch.zeros(1), ft)
    assert torch.allclose(y, torch.cat([x1, x2], 1), atol=1e-6)
    assert torch.allclose(got_ld[0], ld, rtol=1e-5)


def test_flowstep_with_snflow_coupling_invertible_and_logdet():
    torch.manual_seed(0)
    step = perturb_(FlowStep(12, 5, "SNFlowCoupling", _coupling_opt()), std=0.1).eval()
    z, ft = torch.randn(2, 12, 4, 4), torch.randn(2, 5, 4, 4)
    assert_invertible(step, z, ft)
    assert_logdet_matches_jacobian(step, z, ft)


def test_tiny_generator_nll_and_reverse_roundtrip():
    torch.manual_seed(0)
    net = perturb_(FlowGenerator.from_options(tiny_opt(), VARIANTS["zmar"]), std=0.02).eval()
    assert net.pad_multiple == 8 and net.aux_input == "zmar_mask"
    gt = torch.rand(1, 3, 32, 32)
    lq = log_low(gt * 0.1)
    mask = chroma_mask(gt * 0.1, "unbalanced_is_one")
    with torch.no_grad():
        out = net.nll(gt, lq, mask, add_gt_noise=False)
        x = net.reverse(lq, mask, z=out["z"])
    assert torch.isfinite(out["nll"]).all()
    assert (x - gt).abs().max().item() < 1e-4


# ------------------------------------------------------------------------------------------------ checkpoint keys

def test_official_config_builds_exact_official_keys(official_keys):
    opt = yaml.safe_load(CONF.read_text())
    with pytest.raises(ValueError, match="variant"):
        resolve_variant(opt)             # the official file cannot say which family it is
    net = FlowGenerator.from_options(opt, VARIANTS["zmar"])      # full size, CPU (about 1 s)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    never = {k: tuple(v) for k, v in never_run_shapes(net).items()}
    assert not set(got) & set(never)
    got.update(never)
    expected = official_keys("ZMAR-SNFlow")
    assert sorted(set(expected) - set(got)) == [] and sorted(set(got) - set(expected)) == []
    assert got == expected
    assert {k: tuple(v.shape) for k, v in official_state_dict(net).items()} == expected
    n_never = sum(v.numel() for v in never_run_shapes(net).values())
    assert n_never == 2_449_496                                          # spec §6.5
    assert sum(p.numel() for p in net.parameters()) == 57338836 - n_never


# ------------------------------------------------------------------------------------------------ golden equivalence

@pytest.fixture(scope="module")
def zmar_golden(golden):
    d = golden("ZMAR-SNFlow")
    net = golden_generator(d, "zmar")
    arr = {p.stem: torch.from_numpy(np.load(p)) for p in d.glob("*.npy")}
    meta = json.loads((d / "golden.json").read_text())
    low01 = to_tensor01(read_rgb(d / "low.png")).unsqueeze(0)
    return net, arr, meta, low01


def test_golden_preprocessing(zmar_golden):
    net, arr, _, low01 = zmar_golden
    mask = aux_input(low01, net.aux_input)
    assert torch.equal(mask, arr["mask"])
    assert (log_low(low01) - arr["cond_input"]).abs().max().item() < 1e-6


def test_golden_encoder_features(zmar_golden):
    net, arr, _, _ = zmar_golden
    with torch.no_grad():
        feats = net.RRDB(arr["cond_input"], arr["mask"])
    for name in ("fea_up0", "fea_up1", "fea_up2", "cat_f"):
        ref = arr[f"feat_{name}"]
        assert feats[name].shape == ref.shape, name
        assert (feats[name] - ref).abs().max().item() < TOL, name


def test_golden_reverse(zmar_golden):
    net, arr, _, _ = zmar_golden
    assert not arr["reverse_z_in"].any()
    with torch.no_grad():
        out = net.reverse(arr["cond_input"], arr["mask"], heat=0.0)
    assert (out - arr["enhanced"]).abs().max().item() < TOL


@pytest.mark.parametrize("case", ["nonoise", "noise"])
def test_golden_forward_nll(zmar_golden, case):
    net, arr, meta, _ = zmar_golden
    ref = meta["forward"][case]
    # noise_noise.npy is the tensor added to gt, U(-1/2, 1/2) / quant; nll() takes the U(-1/2, 1/2) draw.
    kwargs = {"add_gt_noise": False} if case == "nonoise" else \
        {"add_gt_noise": True, "noise": arr["noise_noise"] * net.quant}
    with torch.no_grad():
        out = net.nll(arr["gt_input"], arr["cond_input"], arr["mask"], **kwargs)
    assert (out["z"] - arr[f"z_{case}_level0"]).abs().max().item() < TOL
    assert math.isclose(out["logdet"].item(), ref["logdet"][0], rel_tol=TOL)
    assert abs(out["nll"].item() - ref["nll"][0]) < TOL
