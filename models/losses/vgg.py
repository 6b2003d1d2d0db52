"""The ImageNet VGG16 convolutional trunk, read offline (never downloaded).

Where the weights come from, in order: the explicit path, ``$LOWLIGHT_VGG16``, torchvision's own checkpoint if it
is already in the torch hub cache. The file holds torchvision-named ``features.<i>.weight/bias`` tensors (a full
torchvision VGG16 checkpoint works too; its classifier is ignored); bare ``<i>.weight`` keys are accepted as well.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..checkpoint import CheckpointError

ENV_VAR = "LOWLIGHT_VGG16"
_TORCHVISION_VGG16 = "vgg16-397923af.pth"


def resolve_vgg16_path(path: str | os.PathLike | None = None) -> Path:
    """The VGG16 weights file to use; CheckpointError (saying how to provide one) when there is none."""
    for p, what in ((path, "VGG16 weights"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if p:
            p = Path(p).expanduser()
            if not p.is_file():
                raise CheckpointError(f"{what} file '{p}' not found")
            return p
    hub = Path(torch.hub.get_dir()) / "checkpoints" / _TORCHVISION_VGG16
    if hub.is_file():
        return hub
    raise CheckpointError(f"no VGG16 weights: give a path (e.g. train.n2ldiff.vgg16_path) or set ${ENV_VAR} to a file "
                          f"of torchvision-named VGG16 'features.*' weights (nothing is downloaded)")


def load_vgg16_features(path: str | os.PathLike | None = None) -> nn.Sequential:
    """torchvision's ``vgg16().features`` (31 layers, ReLUs not in place) with ImageNet weights from a file."""
    from torchvision.models import vgg16

    p = resolve_vgg16_path(path)
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"cannot read VGG16 weights '{p}': {type(e).__name__}: {str(e).splitlines()[0]}") from e
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    feats = vgg16(weights=None).features
    own = feats.state_dict()
    picked = {}
    for k in own:
        src = next((c for c in (f"features.{k}", k) if c in sd), None)
        if src is None:
            raise CheckpointError(f"VGG16 weights '{p}' lack 'features.{k}' (not a torchvision-style VGG16 file)")
        if tuple(sd[src].shape) != tuple(own[k].shape):
            raise CheckpointError(f"VGG16 weights '{p}': 'features.{k}' is {tuple(sd[src].shape)}, "
                                  f"expected {tuple(own[k].shape)}")
        picked[k] = sd[src]
    feats.load_state_dict(picked)
    for m in feats:
        if isinstance(m, nn.ReLU):
            m.inplace = False  # in-place ReLUs would overwrite tensors autograd keeps for a loss's backward
    return feats
