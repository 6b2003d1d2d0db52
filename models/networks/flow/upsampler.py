"""The multi-level conditional flow (official name `flowUpsamplerNet`)."""
from __future__ import annotations

import torch
import torch.nn as nn

from utils.errors import OptionError
from utils.registry import FLOW_STEP_REGISTRY
from ...never_run import declare_never_run
from ...precision import at_least_fp32
from .invertible_backprop import run_step
from ...tiling.core import FRAME
from .ops import SqueezeLayer

# Conditioning tensor per level at scale 1: level 1 (H/2) <- fea_up2, level 2 (H/4) <- fea_up1, level 3 (H/8) <- fea_up0.
LEVEL_TO_NAME = {1: "fea_up2", 2: "fea_up1", 3: "fea_up0"}


class FlowUpsamplerNet(nn.Module):
    """L levels of squeeze -> `n_noaffine` ActNorm+invconv steps -> K coupling steps; no split.

    `step` (FLOW_STEP_REGISTRY name) is built as ``step(c, cond_channels, coupling_or_None, coupling_kwargs, rng,
    **step_kwargs)``. `unused_f_in`: when not None, the official checkpoints hold a never-run `f` conv with that many
    input channels (declared, not built: models/never_run.py). `seed`: of the invertible 1x1 convs (None: drawn).
    """

    tiling = FRAME

    def __init__(self, in_channels: int = 3, cond_channels: int = 320, K: int = 12, L: int = 3, n_noaffine: int = 2,
                 coupling: str = "CondAffineSeparatedAndCond", step: str = "FlowStep",
                 coupling_kwargs: dict | None = None, step_kwargs: dict | None = None,
                 unused_f_in: int | None = None, seed: int | None = None):
        super().__init__()
        if L > len(LEVEL_TO_NAME):
            raise OptionError(f"network_G.flow.L={L}: only L <= {len(LEVEL_TO_NAME)} levels have conditioning features")
        step_cls = FLOW_STEP_REGISTRY.get(step)
        rng = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,), device="cpu")))
        self.layers = nn.ModuleList()
        self.level_of = []
        c = in_channels
        for level in range(1, L + 1):
            c *= 4
            self.layers.append(SqueezeLayer(2))
            self.level_of.append(level)
            for _ in range(n_noaffine):
                self.layers.append(step_cls(c, cond_channels, None, coupling_kwargs, rng, **(step_kwargs or {})))
                self.level_of.append(level)
            for _ in range(K):
                self.layers.append(step_cls(c, cond_channels, coupling, coupling_kwargs, rng, **(step_kwargs or {})))
                self.level_of.append(level)
        # Steps with parameters that official checkpoints lack initialise them from their position: fixed per layer.
        for i, layer in enumerate(self.layers):
            if hasattr(layer, "init_by_position"):
                layer.init_by_position(i)
        self.out_channels = c
        self.L = L
        # train.invertible_backprop (models/networks/flow/invertible_backprop.py): steps store their outputs only
        self.invertible_backprop = False
        if unused_f_in is not None:
            declare_never_run(self, "f", lambda: nn.Sequential(nn.Conv2d(unused_f_in, 384, 3, padding=1)))

    def encode(self, x, cond: dict, logdet):
        """Image -> latent (training direction)."""
        z, logdet = at_least_fp32(x), at_least_fp32(logdet)   # the flow's state stays float32 (models/precision.py)
        invertible = self.invertible_backprop and torch.is_grad_enabled()
        for layer, level in zip(self.layers, self.level_of):
            if isinstance(layer, SqueezeLayer):
                z, logdet = layer(z, logdet)
            elif invertible:
                z, logdet = run_step(layer, z, logdet, cond[LEVEL_TO_NAME[level]])
            else:
                z, logdet = layer(z, logdet, cond[LEVEL_TO_NAME[level]])
        return z, logdet

    def decode(self, z, cond: dict, logdet):
        """Latent -> image (inference direction)."""
        z, logdet = at_least_fp32(z), at_least_fp32(logdet)   # the flow's state stays float32 (models/precision.py)
        for layer, level in zip(reversed(self.layers), reversed(self.level_of)):
            if isinstance(layer, SqueezeLayer):
                z, logdet = layer(z, logdet, reverse=True)
            else:
                z, logdet = layer(z, logdet, cond[LEVEL_TO_NAME[level]], reverse=True)
        return z, logdet
