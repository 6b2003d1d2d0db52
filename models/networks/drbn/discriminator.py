"""The stage-2 discriminator: a strided conv / batch-norm stack scoring an image in (0, 1).

It sees the image next to its channel-sorted copy (6 channels), which makes colour casts easy to spot. The layout
follows the official DRBN discriminator; its weights were never published, so names are our own.
"""
from __future__ import annotations

import torch
import torch.nn as nn

# (out channels, stride) of the conv + BN + ReLU layers after the first conv
_LAYERS = ((64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2))


def with_sorted_channels(img: torch.Tensor) -> torch.Tensor:
    """cat(img, img sorted along the channel axis): the discriminator's 6-channel input."""
    return torch.cat((img, img.sort(dim=1).values), 1)


class BandDiscriminator(nn.Module):
    """Score per image (N x 1, after a sigmoid) of `with_sorted_channels(img)`."""

    def __init__(self, colors: int = 3, width: int = 64):
        super().__init__()
        layers = [nn.Conv2d(2 * colors, width, 3, padding=1), nn.ReLU()]
        cin = width
        for cout, stride in _LAYERS:
            cout = cout * width // 64
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
            cin = cout
        self.body = nn.Sequential(*layers)
        # padding 1 on a 1x1 conv, as the official conv9: the score map gains a border of bias-only values that the
        # global average includes (tests/test_training_equivalence_drbn_stage2.py)
        self.head = nn.Conv2d(cin, 1, 1, padding=1)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """`img`: N x colors x H x W; returns N x 1 probabilities."""
        score = self.head(self.body(with_sorted_channels(img)))
        return torch.sigmoid(score.mean(dim=(2, 3)))
