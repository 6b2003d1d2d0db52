"""Loading a ../shared/golden/<model> folder's config and official-format weights into our generator."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from models.checkpoint import load_weights
from models.networks.generator import FlowGenerator
from models.conversion.flows import added_keys, never_run_shapes
from models.networks.variants import VARIANTS


def golden_generator(folder: Path, variant: str) -> FlowGenerator:
    """The golden config's FlowGenerator of `variant` with the golden weights loaded strictly (every official tensor
    is used, except those of the declared never-run modules, which are dropped), in eval mode."""
    opt = yaml.safe_load((folder / "config.yml").read_text())
    model = FlowGenerator.from_options(opt, VARIANTS[variant])
    state = torch.load(folder / "weights.pth", map_location="cpu", weights_only=True)
    assert set(state) | added_keys(model) == set(model.state_dict()) | set(never_run_shapes(model))
    load_weights(model, state, strict=True, source=str(folder))
    return model.eval()


def demo_generator(family: str, overrides=()):
    """The family's confs/<family>/demo_tiny.yml generator (seed 0), in training mode with ActNorm marked
    initialised (so a gradient check sees the layers as they train, without data-dependent initialisation)."""
    from models.build import build_generator
    from options.options import load_options
    opt = load_options(Path(__file__).resolve().parents[1] / "confs" / family / "demo_tiny.yml", list(overrides),
                       is_train=True)
    torch.manual_seed(0)
    net, _ = build_generator(opt)
    net.train()
    for m in net.modules():
        if hasattr(m, "inited"):
            m.inited = True
    return opt, net
