"""VGG16 perceptual loss: weighted MSE between trunk activations of output and target (DRBN stage 2 recipe)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

# torchvision vgg16.features indices of relu1_1, relu1_2, relu2_1, relu2_2
RELU_INDEX = {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29}


class VGGPerceptualLoss(nn.Module):
    """sum_l weight_l * MSE(phi_l(x), phi_l(y)) on raw [0, 1] RGB (no ImageNet normalisation, as the official loss).

    `trunk` comes from models.losses.vgg.load_vgg16_features; it is truncated after the deepest layer used and
    stays frozen (its train()/eval() mode never matters: VGG16 has no batch norm or dropout in `features`).
    """

    def __init__(self, trunk: nn.Sequential, layers=("relu1_1", "relu1_2", "relu2_1", "relu2_2"),
                 weights=(1.0, 0.6, 0.4, 0.2)):
        super().__init__()
        if len(layers) != len(weights):
            raise ValueError("VGGPerceptualLoss: one weight per layer")
        idx = [RELU_INDEX[name] for name in layers]
        self.trunk = trunk[: max(idx) + 1]
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self.taps = dict(zip(idx, weights))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # target features need no graph; the output's do (their gradient reaches x)
        with torch.no_grad():
            fy = self._features(y)
        fx = self._features(x)
        return sum(w * F.mse_loss(fx[i], fy[i]) for i, w in self.taps.items())

    def _features(self, x):
        out = {}
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.taps:
                out[i] = x
        return out
