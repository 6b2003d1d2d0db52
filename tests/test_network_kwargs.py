"""Networks say what they take: every registered network is built from keyword arguments alone (no options dict)
and runs; no nn.Module constructor in models/ takes an options dict; a config reaches a network only through its
builder (`from_options`)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import models
from data.preprocess import aux_input
from models.build import build_network, model_class
from models.networks.drbn.drbn import DRBN
from models.networks.drbn.recompose import DRBNRecompose
from models.networks.generator import FlowGenerator
from models.networks.n2ldiff.network import N2LDiffNet
from models.networks.variants import VARIANTS
from utils.registry import ARCH_REGISTRY, COUPLING_REGISTRY, ENCODER_REGISTRY, FLOW_STEP_REGISTRY

model_class(None)  # imports every model module: the registries are complete

# Tiny keyword arguments per registered encoder: the only sizes these tests choose.
TINY_ENCODERS = {
    "ConEncoder1": {"nf": 8, "nb": 2, "gc": 4, "stack_blocks": [0, 1]},
    "GLTGRestormer": {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1},
    "ZMARRestormer": {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1},
    "MSFormer": {"dim": 8, "depths": (1,) * 7, "num_refinement_blocks": 1, "win_size": 4},
}
COUPLING_KW = {"hidden_channels": 16}   # CrossCoupling's CBAM needs at least 16
ARCH_VARIANT = {"LLFlow": "llflow", "UPTFlow": "upt"}   # the family a flow architecture name builds by default
FORBIDDEN = {"opt", "cfg", "options", "config", "conf"}
ROOT = Path(__file__).resolve().parents[1]


def _inputs(enc, b: int = 1, h: int = 32, w: int = 32):
    g = torch.Generator().manual_seed(0)
    low = torch.rand(b, 3, h, w, generator=g) * 0.3
    return torch.log(low + 1e-3), aux_input(low, enc.aux_input)


@pytest.mark.parametrize("name", ENCODER_REGISTRY.keys())
def test_every_encoder_builds_from_keywords_and_runs(name):
    assert set(TINY_ENCODERS) == set(ENCODER_REGISTRY.keys()), "give a new encoder its tiny keyword arguments here"
    enc = ENCODER_REGISTRY.get(name)(**TINY_ENCODERS[name]).eval()
    lq, aux = _inputs(enc)
    with torch.no_grad():
        out = enc(lq, aux)
    for level, key in ((2, "fea_up2"), (4, "fea_up1"), (8, "fea_up0")):
        assert out[key].shape == (1, enc.out_channels, 32 // level, 32 // level), (key, out[key].shape)
        assert torch.isfinite(out[key]).all()


def _step_cases():
    return [(s, c) for s in FLOW_STEP_REGISTRY.keys() for c in COUPLING_REGISTRY.keys()]


@pytest.mark.parametrize("coupling", COUPLING_REGISTRY.keys())
def test_every_coupling_builds_from_keywords_and_inverts(coupling):
    torch.manual_seed(0)
    layer = COUPLING_REGISTRY.get(coupling)(4, 6, **COUPLING_KW).eval()
    for p in layer.parameters():   # away from the identity the zero-initialised output layers start at
        p.data.add_(0.1 * torch.randn_like(p))
    z, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        y, ld = layer(z, torch.zeros(2), ft)
        back, ld_back = layer(y, ld, ft, reverse=True)
    assert (y - z).abs().max() > 1e-3
    assert torch.allclose(back, z, atol=1e-5) and torch.allclose(ld_back, torch.zeros(2), atol=1e-4)


@pytest.mark.parametrize("step,coupling", _step_cases())
def test_every_step_builds_from_keywords_with_every_coupling(step, coupling):
    torch.manual_seed(0)
    layer = FLOW_STEP_REGISTRY.get(step)(4, 6, coupling, COUPLING_KW, torch.Generator().manual_seed(0)).eval()
    assert type(layer.affine) is COUPLING_REGISTRY.get(coupling)
    z, ft = torch.randn(2, 4, 8, 8), torch.randn(2, 6, 8, 8)
    with torch.no_grad():
        y, ld = layer(z, torch.zeros(2), ft)
        back, _ = layer(y, ld, ft, reverse=True)
    assert torch.allclose(back, z, atol=1e-4)


def _tiny_generator(variant: str) -> FlowGenerator:
    v = VARIANTS[variant]
    return FlowGenerator(variant, K=1, L=3, n_noaffine=1, encoder_kwargs=TINY_ENCODERS[v.encoder],
                         coupling_kwargs=COUPLING_KW, step_kwargs={"width": 16} if v.step == "AFlowStep" else None)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_flow_family_builds_from_keywords_and_enhances(variant):
    torch.manual_seed(0)
    net = _tiny_generator(variant).eval()
    assert net.variant is VARIANTS[variant]
    lq, aux = _inputs(net.RRDB)
    with torch.no_grad():
        out = net.enhance(lq, aux)
        nll = net.nll(torch.rand(1, 3, 32, 32), lq, aux)["nll"]
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all() and torch.isfinite(nll).all()


def _tiny_arch(name: str) -> nn.Module:
    cls = ARCH_REGISTRY.get(name)
    if cls is FlowGenerator:
        return _tiny_generator(ARCH_VARIANT[name])
    if cls is DRBN:
        return DRBN(width=4, growth=2, n_layers=1, recurrences=1)
    if cls is DRBNRecompose:
        return DRBNRecompose(drbn=DRBN(width=4, growth=2, n_layers=1, recurrences=1))
    raise AssertionError(f"give the new architecture '{name}' its tiny keyword arguments here")


@pytest.mark.parametrize("name", ARCH_REGISTRY.keys())
def test_every_architecture_builds_from_keywords_and_enhances(name):
    torch.manual_seed(0)
    net = _tiny_arch(name).eval()
    g = torch.Generator().manual_seed(1)
    low = torch.rand(1, 3, 32, 32, generator=g) * 0.3
    aux = aux_input(low, getattr(net, "aux_input", None))
    lq = torch.log(low + 1e-3) if isinstance(net, FlowGenerator) else low
    with torch.no_grad():
        out = net.enhance(lq, aux)
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()


def test_n2ldiff_network_builds_from_keywords_and_samples():
    torch.manual_seed(0)
    net = N2LDiffNet(dim=8, dim_mults=(1, 2), timesteps=4).eval()
    img = torch.rand(1, 3, 32, 32)
    a, b = net.enhance(img), net.enhance(img)
    assert a.shape == (1, 3, 32, 32) and torch.isfinite(a).all() and torch.equal(a, b)   # sample_seed: repeatable
    assert N2LDiffNet(dim=8, dim_mults=(1, 2), timesteps=4, sample_steps=2).sample_steps == 2


def _module_classes():
    """Every nn.Module subclass defined in the models package."""
    for info in pkgutil.walk_packages(models.__path__, "models."):
        importlib.import_module(info.name)
    seen = {}
    todo = [nn.Module]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("models.") and sub not in seen.values():
                seen[f"{sub.__module__}.{sub.__qualname__}"] = sub
    return seen


def test_no_network_constructor_takes_an_options_dict():
    classes = _module_classes()
    assert len(classes) > 50 and "models.networks.generator.FlowGenerator" in classes
    bad = sorted(name for name, cls in classes.items() if "__init__" in cls.__dict__
                 and FORBIDDEN & set(inspect.signature(cls.__init__).parameters))
    assert not bad, f"constructors taking an options dict (take keyword arguments; translate in from_options): {bad}"


def test_builders_pass_only_what_the_config_sets():
    # a config that names no sizes builds the constructor defaults: the schema holds none of its own
    opt = {"network_G": {"n2ldiff": {k: None for k in ("dim", "timesteps", "on_cond")}}}
    net = N2LDiffNet.from_options(opt)
    assert net.dim == inspect.signature(N2LDiffNet).parameters["dim"].default == 64 and net.num_timesteps == 100
    assert DRBN.from_options({"network_G": {"drbn": {"width": None}}}).sizes() == DRBN().sizes()
    with pytest.raises(KeyError, match="network_G.n2ldiff: unknown key 'unet_dim'"):
        N2LDiffNet.from_options({"network_G": {"n2ldiff": {"unet_dim": 8}}})
    enc = ENCODER_REGISTRY.get("ConEncoder1").from_options(
        {"network_G": {"nf": 8, "nb": 2, "gc": None, "flow": {"stackRRDB": {"blocks": [1]}}}, "concat_histeq": True})
    assert (enc.conv_first.in_channels, enc.out_channels, enc.taps) == (3 + 3 + 6, 16, [1])


def test_a_config_builds_the_network_its_keywords_build():
    # confs/GLTG-AFlow/demo_tiny.yml written out as keyword arguments by hand: the builder's translation, checked
    from options.options import load_options
    opt = load_options(ROOT / "confs/GLTG-AFlow/demo_tiny.yml")
    torch.manual_seed(0)
    built, _ = build_network(opt)
    torch.manual_seed(0)
    direct = FlowGenerator("gltg", K=1, L=3, n_noaffine=2, cond_channels=48,
                           encoder_kwargs={"dim": 8, "num_blocks": [1, 1, 1, 1], "num_refinement_blocks": 1},
                           coupling_kwargs={"hidden_channels": 16}, step_kwargs={"width": 16}, unused_f_in=64)
    a, b = built.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
