"""Loading a ../shared/golden/<model> folder's config and official-format weights into our generator."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from models.checkpoint import load_weights
from models.generator import FlowGenerator
from models.never_run import added_keys, never_run_shapes
from models.variants import VARIANTS


def golden_generator(folder: Path, variant: str) -> FlowGenerator:
    """The golden config's FlowGenerator of `variant` with the golden weights loaded strictly (every official tensor
    is used, except those of the declared never-run modules, which are dropped), in eval mode."""
    opt = yaml.safe_load((folder / "config.yml").read_text())
    model = FlowGenerator(opt, VARIANTS[variant])
    state = torch.load(folder / "weights.pth", map_location="cpu", weights_only=True)
    assert set(state) | added_keys(model) == set(model.state_dict()) | set(never_run_shapes(model))
    load_weights(model, state, strict=True, source=str(folder))
    return model.eval()
