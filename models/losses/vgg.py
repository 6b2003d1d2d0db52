"""The VGG16 convolutional trunk (torchvision `vgg16().features`), read from local weights only.

Shared by the VGG perceptual loss (DRBN stage 2) and LPIPS-VGG. The weights come from a path option or the
environment variable LOWLIGHT_VGG16; they are never downloaded. Keys may be `features.N.*` (torchvision naming,
e.g. ../shared/weights/vgg16_features.pth), bare `N.*`, or a whole vgg16 state dict (the classifier is ignored).
"""
from __future__ import annotations

import os

import torch.nn as nn

from utils.errors import OptionError
from ..checkpoint import load_weights, read_state_dict

VGG16_ENV = "LOWLIGHT_VGG16"


def load_vgg16_features(path: str | None, option: str = "path.vgg16_features") -> nn.Sequential:
    """The frozen (eval, requires_grad False) torchvision VGG16 `features` trunk with the weights at `path`.

    `path` None falls back to $LOWLIGHT_VGG16; with neither, a one-line OptionError names `option`.
    """
    path = path or os.environ.get(VGG16_ENV)
    if not path:
        raise OptionError(f"option '{option}' is not set (nor ${VGG16_ENV}): point it at VGG16 weights in torchvision "
                          f"naming (features.*); they are never downloaded")
    if not os.path.isfile(path):
        raise OptionError(f"option '{option}' (or ${VGG16_ENV}): '{path}' does not exist")
    # only the trunk: building all of vgg16() would also allocate its 120 M-parameter classifier
    from torchvision.models.vgg import cfgs, make_layers
    trunk = make_layers(cfgs["D"], batch_norm=False)
    state = read_state_dict(path)
    state = {k[len("features."):] if k.startswith("features.") else k: v for k, v in state.items()
             if not k.startswith("classifier.")}
    load_weights(trunk, state, strict=True, source=f"VGG16 weights '{path}'",
                 advice="It must hold torchvision's VGG16 features.* (13 convolutions), not another network.")
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk
