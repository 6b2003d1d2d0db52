"""LPIPS-VGG (v0.1) as a training loss: the ``lpips`` package's network and linear heads, the VGG16 trunk read
offline through :func:`models.losses.vgg.load_vgg16_features`. Frozen and always in eval mode (no dropout).

The forward is lpips' own maths with one change that only matters for gradients: lpips divides each feature
vector by sqrt(sum of squares) + 1e-10, whose backward is 0 * inf = NaN wherever a layer's whole feature vector
is zero (dead ReLUs: black regions, which clamped low-light images have). Here the square root is taken of the
sum + 1e-20: the same values in float32, finite gradients (ReLU's backward then zeroes them). Both images go
through the trunk as one batch.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn as nn

from utils.errors import CheckpointError
from .vgg import load_vgg16_features


class LPIPSVGG(nn.Module):
    """``forward(pred, target)`` with both images in [0, 1] (mapped to [-1, 1], like torchmetrics'
    ``normalize=True``): the per-sample LPIPS distance averaged over the batch."""

    def __init__(self, vgg16_path=None):
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # torchvision's `pretrained=` deprecation; pnet_rand => nothing downloaded
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(pretrained=False, net="vgg", version="0.1", pnet_rand=True, verbose=False)
        trunk = load_vgg16_features(vgg16_path)
        for name, slice_ in net.net.named_children():  # slices keep torchvision's layer indices as names
            for idx, layer in slice_.named_children():
                layer.load_state_dict(trunk[int(idx)].state_dict())
        heads = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "vgg.pth"
        try:
            head_sd = torch.load(heads, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"cannot read the lpips package's VGG heads '{heads}': {e}") from e
        for i in range(5):
            net.lins[i].model[1].weight.data.copy_(head_sd[f"lin{i}.model.1.weight"])
        for p in net.parameters():
            p.requires_grad_(False)
        self.net = net.eval()

    def train(self, mode: bool = True):
        return self  # a fixed metric: never switch its dropout on

    def forward(self, pred, target):
        net = self.net
        feats = net.net(net.scaling_layer(torch.cat([pred, target]) * 2 - 1))
        b = pred.shape[0]
        total = 0.0
        for lin, f in zip(net.lins, feats):
            f = f / (torch.sqrt((f * f).sum(dim=1, keepdim=True) + 1e-20) + 1e-10)
            total = total + lin((f[:b] - f[b:]) ** 2).mean(dim=(2, 3))
        return total.mean()
