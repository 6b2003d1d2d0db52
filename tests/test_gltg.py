"""GLTG-AFlow: encoder vs the official golden features, mask handling, the AFlow step/coupling, configs and keys."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from models.networks.encoders.gltg_restormer import (GLTGRestormer, auto_padding_amounts, crop_padding, mask_gram,
                                            official_auto_padding, pad4)
from models.networks.flow.couplings.aflow import (CSN, SAN, SCAN, AFlowCoupling, AFlowStep, aflow_head_parameter_names,
                                         init_aflow_heads)
from models.checkpoint import load_weights
from models.networks.generator import FlowGenerator
from models.conversion.flows import never_run_shapes, official_state_dict
from models.networks.variants import VARIANTS, resolve_variant
from tests.flow_checks import assert_invertible, assert_logdet_matches_jacobian
from utils.registry import COUPLING_REGISTRY, ENCODER_REGISTRY, FLOW_STEP_REGISTRY

ROOT = Path(__file__).resolve().parents[1]
CONFS = ROOT / "confs" / "GLTG-AFlow"
FEATURES = ("fea_up0", "fea_up1", "fea_up2", "cat_f")   # (feat_color_map: the colour head never runs, not built)
SMALL_KW = {"hidden_channels": 8}   # coupling keyword arguments of the layer tests




def perturb(module: torch.nn.Module, seed: int = 0, std: float = 0.05):
    """Move every parameter off its (often identity) initialisation, like the golden weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def tiny_opt() -> dict:
    with open(CONFS / "demo_tiny.yml") as f:
        return yaml.safe_load(f)


def tiny_model(seed: int = 0) -> FlowGenerator:
    torch.manual_seed(seed)
    return perturb(FlowGenerator.from_options(tiny_opt(), VARIANTS["gltg"]), seed).eval()


def random_mask(b: int, h: int, w: int, seed: int, p: float = 0.3) -> torch.Tensor:
    """Blobby binary masks (B, 3, H, W) in {0, 1}: a thresholded smooth random field per sample."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(b, 1, h // 4, w // 4, generator=g)
    m = (torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False) < p).float()
    return m.expand(b, 3, h, w).contiguous()


def golden_encoder(gdir: Path, official_compat: bool) -> GLTGRestormer:
    with open(gdir / "config.yml") as f:
        opt = yaml.safe_load(f)
    opt["network_G"]["restormer"]["official_compat"] = official_compat
    enc = GLTGRestormer.from_options(opt).eval()
    state = torch.load(gdir / "weights.pth", map_location="cpu", weights_only=True)
    load_weights(enc, {k[len("RRDB."):]: v for k, v in state.items() if k.startswith("RRDB.")}, strict=True)
    return enc


def load_npy(gdir: Path, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(gdir / name))


# ------------------------------------------------------------------------------------------------ golden encoder

def test_golden_encoder_features_official_compat(golden):
    gdir = golden("GLTG-AFlow")
    enc = golden_encoder(gdir, official_compat=True)
    with torch.no_grad():
        out = enc(load_npy(gdir, "cond_input.npy"), load_npy(gdir, "mask.npy"))
    for name in FEATURES:
        ref = load_npy(gdir, f"feat_{name}.npy")
        assert out[name].shape == ref.shape, name
        err = (out[name] - ref).abs().max().item()
        assert err < 1e-4, f"{name}: max abs error {err:.3g}"


def test_cond_input_from_low_png(golden):
    gdir = golden("GLTG-AFlow")
    low = cv2.imread(str(gdir / "low.png"), cv2.IMREAD_COLOR)[:, :, ::-1]
    x = torch.from_numpy(np.ascontiguousarray(low.transpose(2, 0, 1))).float()[None]
    padded, pads = official_auto_padding(x, 16)
    assert pads == (8, 8, 8, 8)                      # 64x96 is divisible by 16, yet 16 rows/cols are added
    lq = torch.log(torch.clamp(padded / 255.0 + 1e-3, min=1e-3))
    ref = load_npy(gdir, "cond_input.npy")
    assert lq.shape == ref.shape
    assert (lq - ref).abs().max().item() < 1e-6
    assert torch.equal(crop_padding(padded, pads), x)


def test_auto_padding_matches_cv2_border_reflect():
    assert auto_padding_amounts(400, 600) == (8, 8, 4, 4)      # 400 % 16 == 0 still gets 16 rows
    assert auto_padding_amounts(37, 50) == (5, 6, 7, 7)
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (37, 50, 3), dtype=np.uint8)
    top, bottom, left, right = auto_padding_amounts(37, 50)
    ref = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT)
    ours, _ = official_auto_padding(torch.from_numpy(img.transpose(2, 0, 1).copy()))
    assert np.array_equal(ours.numpy().transpose(1, 2, 0), ref)


# ------------------------------------------------------------------------------------------------ masks

def _cv2_gram(m2d: np.ndarray, dsize) -> torch.Tensor:
    r = cv2.resize(m2d, dsize, interpolation=cv2.INTER_LINEAR)
    r = (r > 0.2).astype(np.float32)
    return mask_gram(pad4(torch.from_numpy(r)[None, None]))


def test_mask_pyramid_orientation_against_cv2():
    """Default: level-k mask = cv2.resize to (W/k, H/k) (correct order); official_compat: the swapped (H/k, W/k)."""
    h, w = 32, 48
    m = random_mask(1, h, w, seed=3)
    lq = torch.zeros(1, 3, h, w)
    m2d = m[0, 0].numpy()
    default = GLTGRestormer.from_options({"network_G": {"restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1]}}})
    compat = GLTGRestormer.from_options({"network_G": {"restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1],
                                                        "official_compat": True}}})
    g_def, g_off = default.mask_grams(m, lq), compat.mask_grams(m, lq)
    for level, k in ((1, 2), (2, 4)):
        assert torch.allclose(g_def[level][0], _cv2_gram(m2d, (w // k, h // k))[0], atol=1e-4)
        assert torch.allclose(g_off[level][0], _cv2_gram(m2d, (h // k, w // k))[0], atol=1e-4)
        assert not torch.allclose(g_def[level], g_off[level])


def test_default_and_compat_differ_only_through_the_mask(golden):
    gdir = golden("GLTG-AFlow")
    lq = load_npy(gdir, "cond_input.npy")
    compat, default = golden_encoder(gdir, True), golden_encoder(gdir, False)
    with torch.no_grad():
        zero = torch.zeros(1, 3, *lq.shape[-2:])
        a, b = compat(lq, zero), default(lq, zero)
        for name in ("fea_up0", "fea_up1", "fea_up2", "cat_f"):
            assert torch.allclose(a[name], b[name], atol=1e-6), name
        # The official test mask is {0, 1/255}: the default mode binarises every level, so it acts as no mask;
        # official_compat keeps the raw level-1 mask and differs.
        mask255, _ = official_auto_padding(load_npy(gdir, "mask.npy"))
        d = default(lq, mask255)
        c = compat(lq, load_npy(gdir, "mask.npy"))
        assert torch.allclose(d["fea_up2"], b["fea_up2"], atol=1e-6)
        assert (c["fea_up2"] - d["fea_up2"]).abs().max() > 1e-3
        # With a padded official mask of the right size the default mode rejects nothing; a wrong size is an error.
        with pytest.raises(ValueError, match="pad the"):
            default(lq, load_npy(gdir, "mask.npy"))


def test_default_masks_are_per_sample_compat_shares_sample_0():
    torch.manual_seed(0)
    opt = {"network_G": {"restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1}}}
    enc = perturb(GLTGRestormer.from_options(opt), 1).eval()
    compat_opt = {"network_G": {"restormer": {**opt["network_G"]["restormer"], "official_compat": True}}}
    compat = GLTGRestormer.from_options(compat_opt).eval()
    compat.load_state_dict(enc.state_dict())
    lq = torch.randn(2, 3, 32, 48)
    m = random_mask(2, 32, 48, seed=5)
    m_other = m.clone()
    m_other[0] = random_mask(1, 32, 48, seed=9)[0]
    with torch.no_grad():
        y, y_alone = enc(lq, m)["fea_up1"], enc(lq[1:], m[1:])["fea_up1"]
        assert torch.allclose(y[1:], y_alone, atol=1e-5)
        assert torch.allclose(enc(lq, m_other)["fea_up1"][1], y[1], atol=1e-6)
        # official behaviour: sample 1's deeper levels use sample 0's mask
        assert not torch.allclose(compat(lq, m_other)["fea_up1"][1], compat(lq, m)["fea_up1"][1], atol=1e-5)


def test_restormer_options_validated():
    with pytest.raises(KeyError, match="num_block"):
        GLTGRestormer.from_options({"network_G": {"restormer": {"num_block": [1, 1, 1, 1]}}})
    with pytest.raises(ValueError, match="official_compat"):
        GLTGRestormer.from_options({"network_G": {"restormer": {"official_compat": "yes"}}})
    enc = GLTGRestormer.from_options({"network_G": {"restormer": {"dim": 8, "num_blocks": [1, 1, 1, 1],
                                                                  "heads": None}}})
    assert enc.config["heads"] == [1, 2, 4, 8] and enc.out_channels == 48
    assert ENCODER_REGISTRY.get("GLTGRestormer") is GLTGRestormer
    assert GLTGRestormer.aux_input == "gltg_mask" and GLTGRestormer.pad_multiple == 16
    with pytest.raises(ValueError, match="zero-element mask"):
        enc(torch.zeros(1, 3, 16, 16))


# ------------------------------------------------------------------------------------------------ AFlow layers

def _layer_inputs(seed=0, b=2, c=4, h=4, w=6, cond=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, h, w, generator=g), torch.randn(b, cond, h, w, generator=g)


@pytest.mark.parametrize("kind", ["SAN", "CSN", "AFlowCoupling", "AFlowStep", "AFlowStep-noCoupling"])
def test_aflow_layers_invertible_with_exact_logdet(kind):
    torch.manual_seed(0)
    if kind == "SAN":
        layer = SAN(4, 6, width=8)
    elif kind == "CSN":
        layer = CSN(4, 6, width=8)
    elif kind == "AFlowCoupling":
        layer = AFlowCoupling(4, 6, **SMALL_KW)
    else:
        coupling = None if kind.endswith("noCoupling") else "AFlowCoupling"
        layer = AFlowStep(4, 6, coupling, SMALL_KW, torch.Generator().manual_seed(0), width=8)
    perturb(layer, 1, std=0.2).eval()
    z, ft = _layer_inputs()
    y, ld = assert_invertible(layer, z, ft)
    assert (y - z).abs().max() > 1e-2 and ld.abs().min() > 1e-3       # not an identity
    assert_logdet_matches_jacobian(layer, z, ft)


def test_aflow_reverse_is_deterministic_and_registered():
    assert FLOW_STEP_REGISTRY.get("AFlowStep") is AFlowStep
    assert COUPLING_REGISTRY.get("AFlowCoupling") is AFlowCoupling
    model = tiny_model()
    lq = torch.randn(1, 3, 32, 48) - 3
    m = random_mask(1, 32, 48, seed=1)
    with torch.no_grad():
        assert torch.equal(model.reverse(lq, m), model.reverse(lq, m))


def test_scan_is_per_sample():
    scan = perturb(SCAN(8), 2, std=0.2)
    x = torch.randn(3, 8, 5, 7)
    with torch.no_grad():
        assert torch.allclose(scan(x)[:1], scan(x[:1]), atol=1e-6)


def test_batch_independence_of_the_whole_model():
    model = tiny_model(3)
    g = torch.Generator().manual_seed(4)
    lq = torch.randn(2, 3, 32, 48, generator=g) - 3
    gt = torch.rand(2, 3, 32, 48, generator=g)
    m = random_mask(2, 32, 48, seed=6)
    with torch.no_grad():
        alone, both = model.reverse(lq[:1], m[:1]), model.reverse(lq, m)
        assert torch.allclose(alone, both[:1], atol=1e-5)
        n1 = model.nll(gt[:1], lq[:1], m[:1], add_gt_noise=False)["nll"]
        n2 = model.nll(gt, lq, m, add_gt_noise=False)["nll"]
        assert torch.allclose(n1, n2[:1], rtol=1e-5)


def test_same_checkpoint_gives_same_image_and_heads_are_trained():
    torch.manual_seed(10)
    src = perturb(FlowGenerator.from_options(tiny_opt(), VARIANTS["gltg"]), 10)
    heads = set(aflow_head_parameter_names(src))
    assert heads and all((".sp_att." in k and ".spatial." not in k) or ".csn." in k for k in heads)
    official_like = {k: v for k, v in src.state_dict().items() if k not in heads}
    outs = []
    for seed in (1, 2):                      # different global RNG state while building
        torch.manual_seed(seed)
        np.random.seed(seed)
        model = FlowGenerator.from_options(tiny_opt(), VARIANTS["gltg"]).eval()
        res = model.load_state_dict(official_like, strict=False)
        assert set(res.missing_keys) == heads and not res.unexpected_keys
        with torch.no_grad():
            outs.append(model.reverse(torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) - 3,
                                      random_mask(1, 32, 32, seed=2)))
    assert torch.equal(outs[0], outs[1])
    # the heads are ordinary parameters: they receive gradients from the NLL
    model.train()
    out = model.nll(torch.rand(2, 3, 32, 32), torch.randn(2, 3, 32, 32) - 3, random_mask(2, 32, 32, seed=3))
    out["nll"].mean().backward()
    named = dict(model.named_parameters())
    for k in heads:
        if k.endswith("head.0.weight") or k.endswith("fc_row.0.weight") or k.endswith("ft_proj.weight"):
            assert named[k].grad is not None and named[k].grad.abs().sum() > 0, k


def test_init_aflow_heads_is_deterministic_and_distinct_per_step():
    a = FlowGenerator.from_options(tiny_opt(), VARIANTS["gltg"])
    b = FlowGenerator.from_options(tiny_opt(), VARIANTS["gltg"])
    assert init_aflow_heads(a.flowUpsamplerNet) == init_aflow_heads(b.flowUpsamplerNet) == 9
    sa, sb = a.state_dict(), b.state_dict()
    for k in aflow_head_parameter_names(a):
        assert torch.equal(sa[k], sb[k]), k
    w1 = sa["flowUpsamplerNet.layers.1.sp_att.head.0.weight"]
    w2 = sa["flowUpsamplerNet.layers.2.sp_att.head.0.weight"]
    assert w1.shape == w2.shape and not torch.equal(w1, w2)


# ------------------------------------------------------------------------------------------------ configs and keys

def test_official_config_builds_the_official_key_set(official_keys):
    ref = official_keys("GLTG-AFlow")
    with open(CONFS / "LOLv2-pc.yml") as f:
        opt = yaml.safe_load(f)
    variant = resolve_variant(opt, ref.keys())          # the official YAML is ambiguous; checkpoint keys decide
    assert variant.name == "gltg"
    torch.manual_seed(0)
    model = FlowGenerator.from_options(opt, variant)
    own = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    never = {k: tuple(v) for k, v in never_run_shapes(model).items()}
    assert not set(own) & set(never)
    own_and_never = {**own, **never}
    missing = [k for k in ref if k not in own_and_never]
    wrong = [f"{k} {own_and_never[k]} vs {ref[k]}" for k in ref if k in own_and_never and own_and_never[k] != ref[k]]
    assert not missing and not wrong, (missing[:5], wrong[:5])
    extra = {k for k in own if k not in ref}
    assert extra == set(aflow_head_parameter_names(model))
    assert len(extra) == 30 * 18                         # 30 flow steps x (SAN 7 + CSN 11) head tensors
    # never-run: Mask 22.33 M, conv_cat 9.46 M, fFeatures 2.10 M, f 1.11 M, colour head 0.30 M, fc 0.22 M ... (spec)
    assert 35.3e6 < sum(v.numel() for v in never_run_shapes(model).values()) < 35.6e6
    # the export writes exactly the official layout (our SAN/CSN heads left out)
    assert {k: tuple(v.shape) for k, v in official_state_dict(model).items()} == ref


def test_training_configs():
    files = sorted(CONFS.glob("train_*.yml"))
    sets = ("LOL-v2-real", "LOL-v2-synthetic", "SDSD-indoor", "SDSD-outdoor", "SID", "SMID")
    assert {f.stem for f in files} == {f"train_{s}{z}" for s in sets for z in ("", "_zeromap")}
    for f in files:
        with open(f) as fh:
            opt = yaml.safe_load(fh)
        assert opt["network_G"]["variant"] == "gltg", f.name
        assert opt["datasets"]["train"]["batch_size"] == 4 and opt["datasets"]["train"]["GT_size"] == 160
        assert opt["train"]["lr_G"] == 5e-4 and opt["train"]["niter"] == 40000
        for phase in ("train", "val"):
            zm = opt["datasets"][phase].get("zero_map")
            assert (zm is not None) == f.stem.endswith("_zeromap"), (f.name, phase)
            if zm is not None:
                assert zm["rule"] == "gltg" and zm["folder"]


def test_demo_tiny_runs():
    model = FlowGenerator.from_options(tiny_opt(), resolve_variant(tiny_opt())).eval()
    assert isinstance(model.RRDB, GLTGRestormer)
    lq, m = torch.randn(1, 3, 64, 64) - 3, random_mask(1, 64, 64, seed=0)
    with torch.no_grad():
        out = model.nll(torch.rand(1, 3, 64, 64), lq, m)
        assert torch.isfinite(out["nll"]).all()
        assert model.reverse(lq, m).shape == (1, 3, 64, 64)
