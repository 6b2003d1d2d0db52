"""Loading a ../shared/golden/<model> folder's config and official-format weights into our generator."""
from __future__ import annotations

from pathlib import Path

import torch
import yaml

from models.generator import FlowGenerator
from models.variants import VARIANTS


def golden_generator(folder: Path, variant: str) -> FlowGenerator:
    """The golden config's FlowGenerator of `variant` with the golden weights loaded strictly, in eval mode."""
    opt = yaml.safe_load((folder / "config.yml").read_text())
    model = FlowGenerator(opt, VARIANTS[variant])
    model.load_state_dict(torch.load(folder / "weights.pth", map_location="cpu", weights_only=True), strict=True)
    return model.eval()
