"""LLFlow's conditional encoder `ConEncoder1`: hand-made colour/noise priors + an RRDB trunk at H/2."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import OptionError
from utils.registry import ENCODER_REGISTRY
from ...kwargs import given
from ...never_run import declare_never_run
from ...inplace import add_to, mul_into
from ...precision import at_least_fp32, fp32_region, keep_fp32
from ...tiling.core import FRAME, LOCAL, TILED, tiled_local


class ResidualDenseBlock(nn.Module):
    """Five densely connected 3x3 convs; output = x + 0.2 * conv5(...)."""

    # Local, but tiled so that its dense concatenations exist one tile at a time.
    tiling = TILED
    tiled_forward = tiled_local

    def __init__(self, nf: int = 64, gc: int = 32):
        super().__init__()
        self.conv1 = nn.Conv2d(nf, gc, 3, padding=1)
        self.conv2 = nn.Conv2d(nf + gc, gc, 3, padding=1)
        self.conv3 = nn.Conv2d(nf + 2 * gc, gc, 3, padding=1)
        self.conv4 = nn.Conv2d(nf + 3 * gc, gc, 3, padding=1)
        self.conv5 = nn.Conv2d(nf + 4 * gc, nf, 3, padding=1)
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_in")
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        feats = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            feats.append(F.leaky_relu(conv(torch.cat(feats, 1)), 0.2, inplace=not torch.is_grad_enabled()))
        return add_to(mul_into(self.conv5(torch.cat(feats, 1)), 0.2), x)


class RRDB(nn.Module):
    """Residual-in-residual dense block: three dense blocks, output = x + 0.2 * body(x)."""

    activation_checkpoint = True  # unit of train.activation_checkpointing
    tiling = LOCAL

    def __init__(self, nf: int, gc: int = 32):
        super().__init__()
        self.RDB1 = ResidualDenseBlock(nf, gc)
        self.RDB2 = ResidualDenseBlock(nf, gc)
        self.RDB3 = ResidualDenseBlock(nf, gc)

    def forward(self, x):
        return add_to(mul_into(self.RDB3(self.RDB2(self.RDB1(x))), 0.2), x)


def central_gradients(x: torch.Tensor):
    """0.5 * (x[i+1] - x[i-1]) along H and along W, neighbours outside the image taken as 0."""
    ph = F.pad(x, (0, 0, 1, 1))
    pw = F.pad(x, (1, 1, 0, 0))
    return 0.5 * (ph[:, :, 2:] - ph[:, :, :-2]), 0.5 * (pw[:, :, :, 2:] - pw[:, :, :, :-2])


@ENCODER_REGISTRY.register("ConEncoder1")
class ConEncoder1(nn.Module):
    """LLFlow encoder. Expects `lq` = [log(low + 1e-3) (3 ch), histeq(low) (3 ch, if concat_histeq)].

    Conditioning per flow level = own features + nearest-resized RRDB trunk taps (`stack_blocks`, concatenated when
    `stack_concat`): `out_channels` wide. Input channels: in_nc + 3 with `concat_histeq` + 1 with `gray_map`. The
    official `downconv3`, `HRconv`, `conv_last` and `awb_para` never run: declared, not built (models/never_run.py).
    """

    aux_input = None
    pad_multiple = 8
    tiling = FRAME

    def __init__(self, in_nc: int = 3, out_nc: int = 3, nf: int = 64, nb: int = 24, gc: int = 32,
                 concat_histeq: bool = False, gray_map: bool = False, stack_blocks=(), stack_concat: bool = True):
        super().__init__()
        nf, nb, gc = int(nf), int(nb), int(gc)
        in_nc = int(in_nc) + (3 if concat_histeq else 0) + (1 if gray_map else 0)
        self.gray_map = bool(gray_map)
        self.taps = [int(b) for b in (stack_blocks or [])]
        self.concat_taps = bool(stack_concat) and bool(self.taps)
        self.out_channels = nf * (len(self.taps) + 1) if self.concat_taps else nf   # conditioning width per level
        if any(b >= nb or b < 0 for b in self.taps):
            raise OptionError(f"network_G.flow.stackRRDB.blocks {self.taps} must index RRDB blocks 0..{nb - 1}")
        self.conv_first = nn.Conv2d(in_nc + 6, nf, 3, padding=1)
        self.conv_second = nn.Conv2d(nf, nf, 3, padding=1)
        self.RRDB_trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.downconv1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.downconv2 = nn.Conv2d(nf, nf, 3, padding=1)
        out_nc = int(out_nc)
        declare_never_run(self, "downconv3", lambda: nn.Conv2d(nf, nf, 3, padding=1))
        declare_never_run(self, "HRconv", lambda: nn.Conv2d(nf, nf, 3, padding=1))
        declare_never_run(self, "conv_last", lambda: nn.Conv2d(nf, out_nc, 3, padding=1))
        declare_never_run(self, "awb_para", lambda: nn.Linear(nf, 3))
        # The colour map is the prior mean, i.e. the latent z itself at heat 0: float32 under bf16/fp16 too
        # (models/precision.py); a 1x1 conv to 3 channels, so this costs next to nothing.
        self.fine_tune_color_map = keep_fp32(nn.Sequential(nn.Conv2d(nf, 3, 1), nn.Sigmoid()))

    @classmethod
    def kwargs_from_options(cls, opt: dict) -> dict:
        """Keyword arguments from `network_G` (in_nc, out_nc, nf, nb, gc, flow.stackRRDB) and the top-level
        concat_histeq, gray_map; unset or null keys are left to the constructor defaults."""
        if opt.get("concat_color_map"):
            raise OptionError("concat_color_map: true is not supported (the official channel count is wrong "
                              "whenever concat_histeq is on); set it to false")
        net = opt.get("network_G") or {}
        stack = ((net.get("flow") or {}).get("stackRRDB") or {})
        kw = given(net, ("in_nc", "out_nc", "nf", "nb", "gc"))
        kw.update(given(opt, ("concat_histeq", "gray_map")))
        kw.update(given(stack, ("blocks", "concat"), rename={"blocks": "stack_blocks", "concat": "stack_concat"}))
        return kw

    @classmethod
    def from_options(cls, opt: dict) -> "ConEncoder1":
        """The encoder a config describes (see :meth:`kwargs_from_options`)."""
        return cls(**cls.kwargs_from_options(opt))

    def forward(self, lq: torch.Tensor, aux=None) -> dict:
        x = lq
        if self.gray_map:
            x = torch.cat([x, 1 - x.mean(1, keepdim=True)], 1)
        raw = lq[:, :3].exp()  # the dataset stored log(low + 1e-3)
        color = raw / (raw.sum(1, keepdim=True) + 1e-4)
        gh, gw = central_gradients(color)
        noise = torch.maximum(gh.abs(), gw.abs())
        fea = self.conv_second(F.leaky_relu(self.conv_first(torch.cat([x, color, noise], 1)), 0.2))
        fea_head = F.max_pool2d(fea, 2)
        out = {}
        fea = fea_head
        for idx, block in enumerate(self.RRDB_trunk):
            fea = block(fea)
            if idx in self.taps:
                out[f"block_{idx}"] = fea
        fea_down2 = fea_head + self.trunk_conv(fea)
        fea_down4 = self.downconv1(F.interpolate(fea_down2, scale_factor=0.5, mode="bilinear",
                                                 align_corners=False, recompute_scale_factor=True))
        # The official in-place LeakyReLU also rewrites the stored H/4 feature, so the flow sees the activated one.
        fea_down4 = F.leaky_relu(fea_down4, 0.2)
        fea_down8 = self.downconv2(F.interpolate(fea_down4, scale_factor=0.5, mode="bilinear",
                                                 align_corners=False, recompute_scale_factor=True))
        with fp32_region(fea_down2):
            out["color_map"] = self.fine_tune_color_map(F.interpolate(at_least_fp32(fea_down2), scale_factor=2,
                                                                       mode="nearest"))
        feats = {"fea_up0": fea_down8, "fea_up1": fea_down4, "fea_up2": fea_down2, "fea_up4": fea_head,
                 "last_lr_fea": fea_down4}
        if self.concat_taps:
            taps = torch.cat([out[f"block_{b}"] for b in self.taps], 1)
            for k, f in feats.items():
                feats[k] = torch.cat([f, F.interpolate(taps, size=f.shape[2:], mode="nearest")], 1)
        out.update(feats)
        return out
