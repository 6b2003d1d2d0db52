"""GLTG-AFlow's "attention flow" (AFlow): the flow step with SAN and CSN, and the SCAN-based affine coupling.

Per step (spec 2.3), forward:  ActNorm -> invertible 1x1 conv -> SAN -> CSN -> [AFlowCoupling]   (reverse: inverse
order). With C channels, z1 = z[:, :C//2] and z2 = z[:, C//2:]:

- SAN (spatial attention, module ``sp_att``): h = head(cat[z1, ft_proj(ft)]);
  a = sigmoid(conv5x5(cat[max_c h, mean_c h]) + 2) + 1e-4 (one map, B x 1 x H x W); z2 <- z2 * a;
  log-det += C2 * sum_hw log a.
- CSN (row x column map, module ``csn``): h = head(cat[z1, ft_proj(ft)]); r = fc_row(mean_W h) (B, k, H);
  c = fc_col(mean_H h) (B, k, W); A = sigmoid(r^T c + 2) + 1e-4 (B x 1 x H x W, a rank-k bilinear form);
  z2 <- z2 * A; log-det += C2 * sum_hw log A.
- AFlowCoupling: [t, s~] = NN_F(cat[z1, ft]) with the "cross" split; s = sigmoid(s~ + 2) + eps; z2 <- (z2 + t) * s.
  NN_F = ActNormConv1x1 -> GELU -> ActNormConv1x1 -> GELU -> SCAN -> Conv2dZeros1x1 (``fAffine.model.{0,2,4,5}``).

The official code is broken here (spec 0 fact 10, 9 GLTG 2-3); the design decisions of this implementation:

1. Every layer the official ``FlowStep.forward`` built randomly *inside each call* (the 1x1 ft projection cast to fp16,
   the two-conv ActNorm "head", fc1/fc2) is a registered, trained, saved submodule here, created once in
   ``__init__``. The official code drew fresh random layers per call, so forward != reverse; here the step is exactly
   invertible and its log-det is exact.
2. What the heads see: only z1 (the half SAN/CSN/coupling never modify) and the conditioning ft. Since z1 passes
   SAN, CSN and the coupling unchanged, the reverse pass recomputes the same maps from the same inputs.
3. SAN and CSN each get their own ft projection and head (as in the official code, where each drew its own).
   The head width is the coupling's ``hidden_channels`` (default 64 = the official hard-coded width); the CSN
   bottleneck is width // 8 (official). ft projection width: C // 2 (official).
4. The official invertible 1x1 conv also computed a random "self-attention" map and discarded it; that is omitted.
5. SCAN's first gate pooled the mean and max over the *batch* (cross-sample leakage). Here each sample is its own
   batch of one: mean and max of a single sample are the sample itself, so the gate is 2 * sigmoid(conv(x)). This
   is exactly the official result at batch size 1 (every inference) and keeps samples independent in training.
6. New (non-official) tensors: ``sp_att.ft_proj``, ``sp_att.head``, ``csn.*`` in every step. They are initialised
   deterministically from a fixed torch generator (``AFLOW_HEAD_SEED``), independent of the global RNG, so one
   official checkpoint (which lacks them) always gives one image. ``init_aflow_heads(module)`` re-draws them with a
   distinct seed per step (call it once after building the flow); ``AFlowStep.optional_checkpoint_keys()`` and
   :func:`aflow_head_parameter_names` list them for the checkpoint loader.
7. Official modules that never run: ``affine.fFeatures`` (the conditional injector, never applied by the official
   coupling) and ``affine.sp_att`` (a 7x7 spatial map): declared, not built (models/never_run.py).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from utils.errors import OptionError
from utils.registry import COUPLING_REGISTRY, FLOW_STEP_REGISTRY
from ....never_run import declare_never_run
from ....precision import at_least_fp32, cat_for_conv, keep_fp32
from ....tiling.core import FRAME, IN_TILED, LOCAL, TILED, TilePlan, conv_reach, empty_map, nan_logdet
from ..invconv import InvertibleConv1x1
from ..ops import ActNorm2d, ActNormConv2d, affine_subnet, split_half, sum_chw
from .llflow import affine_params, tiled_local_coupling

AFLOW_HEAD_SEED = 20241211   # fixed seed of the non-official head initialisation (GLTG-AFlow's release date)
MAP_EPS = 1e-4               # official: sigmoid(x + 2) + 0.0001 for the SAN and CSN maps


# ------------------------------------------------------------------------------------------------ shared pieces

class BasicConv(nn.Module):
    """Official ``BasicConv`` without ReLU: a bias-free conv named ``conv``."""

    tiling = LOCAL

    def __init__(self, in_planes: int, out_planes: int, kernel_size: int):
        super().__init__()
        self.conv = nn.Conv2d(in_planes, out_planes, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x):
        return self.conv(x)


def channel_pool(x: torch.Tensor) -> torch.Tensor:
    """cat[max over channels, mean over channels] (official ``ChannelPool``)."""
    return torch.cat([x.amax(1, keepdim=True), x.mean(1, keepdim=True)], dim=1)


class SpatialMap(nn.Module):
    """Official ``Spatialmap``: sigmoid(conv_k(cat[max_c x, mean_c x]) + 2) + 1e-4 (``spatial.conv.weight``)."""

    tiling = LOCAL

    def __init__(self, kernel_size: int):
        super().__init__()
        self.spatial = BasicConv(2, 1, kernel_size)

    def forward(self, x):
        return torch.sigmoid(self.spatial(channel_pool(x)) + 2.0) + MAP_EPS


def _attention_head(in_ch: int, width: int) -> nn.Sequential:
    """ActNormConv1x1 -> GELU -> ActNormConv1x1 -> GELU (the official per-call "head")."""
    return nn.Sequential(ActNormConv2d(in_ch, width, 1), nn.GELU(), ActNormConv2d(width, width, 1), nn.GELU())


@torch.no_grad()
def _reset_head(head: nn.Sequential, g: torch.Generator):
    for m in head:
        if isinstance(m, ActNormConv2d):
            nn.init.normal_(m.weight, 0.0, 0.05, generator=g)  # official flow.Conv2d init, N(0, 0.05)
            m.actnorm.bias.zero_()
            m.actnorm.logs.zero_()
            m.actnorm.inited = False


class _HalfMap(nn.Module):
    """A map a(z1, ft) > 0 (B x 1 x H x W) that scales z2; invertible with an exact log-det."""

    def attention_map(self, z1: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z, logdet, ft, reverse: bool = False):
        return self.apply_map(z, logdet, self.attention_map(split_half(z)[0], ft), reverse)

    @staticmethod
    def apply_map(z, logdet, a, reverse: bool = False):
        """z2 scaled by the map a (or divided, reverse), with its log-det."""
        z1, z2 = split_half(z)
        dlogdet = z2.shape[1] * sum_chw(torch.log(a))
        if not reverse:
            return torch.cat([z1, z2 * a], 1), logdet + dlogdet
        return torch.cat([z1, z2 / a], 1), logdet - dlogdet


class SAN(_HalfMap):
    """Spatial attention normalisation. Module name ``sp_att`` in a step; ``spatial.conv`` (5x5) is official."""

    tiling = TILED   # local: tiled_forward runs forward on haloed crops

    def __init__(self, in_channels: int, cond_channels: int, width: int = 64, kernel_size: int = 5):
        super().__init__()
        c1 = in_channels // 2
        self.spatial = BasicConv(2, 1, kernel_size)
        self.ft_proj = nn.Conv2d(cond_channels, c1, 1, bias=False)
        self.head = _attention_head(2 * c1, width)

    def tiled_forward(self, plan: TilePlan, z, logdet, ft, reverse: bool = False):
        return tiled_local_coupling(self, plan, z, logdet, ft, reverse, halo=conv_reach(self))

    def attention_map(self, z1, ft):
        h = self.head(cat_for_conv([z1, self.ft_proj(ft)]))
        # z2 is divided by this map on the reverse pass and its log enters the log-det: float32 (models/precision.py)
        return torch.sigmoid(at_least_fp32(self.spatial(channel_pool(h))) + 2.0) + MAP_EPS

    @torch.no_grad()
    def reset_heads(self, g: torch.Generator):
        nn.init.kaiming_uniform_(self.ft_proj.weight, a=math.sqrt(5), generator=g)
        _reset_head(self.head, g)


class CSN(_HalfMap):
    """Row x column "self-attention" normalisation: A = sigmoid(fc_row(mean_W h)^T fc_col(mean_H h) + 2) + 1e-4."""

    tiling = TILED

    def __init__(self, in_channels: int, cond_channels: int, width: int = 64):
        super().__init__()
        c1 = in_channels // 2
        red = max(1, width // 8)
        self.ft_proj = nn.Conv2d(cond_channels, c1, 1, bias=False)
        self.head = _attention_head(2 * c1, width)
        self.fc_row = nn.Sequential(nn.Conv2d(width, red, 1, bias=False), nn.ReLU(),
                                    nn.Conv2d(red, width, 1, bias=False))
        self.fc_col = nn.Sequential(nn.Conv2d(width, red, 1, bias=False), nn.ReLU(),
                                    nn.Conv2d(red, width, 1, bias=False))

    def features(self, z1, ft):
        """The per-pixel head features h whose row and column means make the map."""
        return self.head(cat_for_conv([z1, self.ft_proj(ft)]))

    def map_from_means(self, row_mean, col_mean):
        """The map from h's mean over W (B, width, H, 1) and over H (B, width, 1, W)."""
        rows = self.fc_row(row_mean).squeeze(3)                     # (B, k, H)
        cols = self.fc_col(col_mean).squeeze(2)                     # (B, k, W)
        a = at_least_fp32(rows.transpose(1, 2) @ cols)              # (B, H, W); float32 as in SAN
        return (torch.sigmoid(a + 2.0) + MAP_EPS).unsqueeze(1)

    def attention_map(self, z1, ft):
        h = self.features(z1, ft)
        return self.map_from_means(h.mean(3, keepdim=True), h.mean(2, keepdim=True))

    def tiled_forward(self, plan: TilePlan, z, logdet, ft, reverse: bool = False):
        """forward with the row and column means of the (per-pixel) features gathered from the tiles."""
        b, _, h, w = z.shape
        if plan.fits(h, w):
            return CSN.forward(self, z, logdet, ft, reverse)
        z1 = split_half(z)[0]
        rows = cols = None
        for win in plan.windows(h, w):
            f = self.features(z1[win.core], ft[win.core]).float()
            if rows is None:
                rows = f.new_zeros(b, f.shape[1], h, 1)
                cols = f.new_zeros(b, f.shape[1], 1, w)
            rows[:, :, win.y0:win.y1] += f.sum(3, keepdim=True)
            cols[..., win.x0:win.x1] += f.sum(2, keepdim=True)
            del f
        dtype = self.head[0].weight.dtype
        return self.apply_map(z, logdet, self.map_from_means((rows / w).to(dtype), (cols / h).to(dtype)), reverse)

    @torch.no_grad()
    def reset_heads(self, g: torch.Generator):
        nn.init.kaiming_uniform_(self.ft_proj.weight, a=math.sqrt(5), generator=g)
        _reset_head(self.head, g)
        for fc in (self.fc_row, self.fc_col):
            nn.init.kaiming_uniform_(fc[0].weight, a=math.sqrt(5), generator=g)
            nn.init.kaiming_uniform_(fc[2].weight, a=math.sqrt(5), generator=g)


# ------------------------------------------------------------------------------------------------ SCAN / NN_F

class GateConv(nn.Module):
    """Official ``ChannelGate_conv_wh``: x * (sigmoid(conv(pool_a x)) + sigmoid(conv(pool_b x))), conv shared.

    ``conv`` = Conv1x1 C->2C -> depthwise 3x3 -> Conv1x1 2C->C, all with bias. ``pools``:
    'self' (SCAN gate 1, per-sample replacement of the official batch pooling: both pools are the sample itself),
    'hmean_wmax' (gate 2: mean over H, max over W), 'hmax_wmean' (gate 3: max over H, mean over W).
    """

    tiling = IN_TILED   # NN_F.tiled gathers the pools and applies pooled_gates()

    def __init__(self, channels: int, pools: str):
        super().__init__()
        self.pools = pools
        self.conv = nn.Sequential(
            nn.Conv2d(channels, channels * 2, 1, bias=True),
            nn.Conv2d(channels * 2, channels * 2, 3, padding=1, groups=channels * 2, bias=True),
            nn.Conv2d(channels * 2, channels, 1, bias=True))

    def pooled_gates(self, over_h, over_w):
        """sigmoid(conv(.)) of the pool over H (B, C, 1, W) and of the pool over W (B, C, H, 1)."""
        return torch.sigmoid(self.conv(over_h)), torch.sigmoid(self.conv(over_w))

    def forward(self, x):
        if self.pools == "self":
            return x * (2.0 * torch.sigmoid(self.conv(x)))
        if self.pools == "hmean_wmax":
            a, b = x.mean(2, keepdim=True), x.amax(3, keepdim=True)
        else:
            a, b = x.amax(2, keepdim=True), x.mean(3, keepdim=True)
        return self.apply_gates(x, *self.pooled_gates(a, b))

    @staticmethod
    def apply_gates(x, over_h, over_w):
        """The apply step: x scaled by the sum of the two pooled gates (broadcast over rows and columns)."""
        return x * (over_h + over_w)


class SCAN(nn.Module):
    """SCAN(x) = G3(G2(G1(x))) + x (``ChannelGate_wh0``, ``ChannelGate_wh``, ``ChannelGate_wh1``)."""

    tiling = IN_TILED   # NN_F.tiled

    def __init__(self, gate_channels: int):
        super().__init__()
        self.ChannelGate_wh0 = GateConv(gate_channels, "self")
        self.ChannelGate_wh = GateConv(gate_channels, "hmean_wmax")
        self.ChannelGate_wh1 = GateConv(gate_channels, "hmax_wmean")

    def forward(self, x):
        return self.ChannelGate_wh1(self.ChannelGate_wh(self.ChannelGate_wh0(x))) + x


class NN_F(nn.Module):  # noqa: N801 (official name)
    """Coupling subnet ``model`` = ActNormConv1x1 -> GELU -> ActNormConv1x1 -> GELU -> SCAN -> Conv2dZeros1x1."""

    tiling = IN_TILED   # AFlowCoupling.tiled_forward runs tiled()

    def __init__(self, in_channels: int, out_channels: int, hidden: int):
        super().__init__()
        self.model = affine_subnet(in_channels, out_channels, hidden, k_first=1, k_hidden=1, k_last=1, act=nn.GELU,
                                   extra=SCAN(hidden))

    def forward(self, x):
        return self.model(x)

    def tiled(self, inputs: list[torch.Tensor], plan: TilePlan) -> torch.Tensor:
        """self(cat(inputs)) for same-size maps, with SCAN's row and column pools gathered from the tiles. Gate 1 is
        local; gate 2 pools gate 1's output over H (mean) and W (max), gate 3 pools gate 2's over H (max) and W
        (mean): pass 1 keeps gate 1's output and pools it, pass 2 applies gate 2 in place and pools again, pass 3
        applies gate 3, SCAN's residual and the output conv (all per pixel)."""
        b = inputs[0].shape[0]
        h, w = inputs[0].shape[-2:]
        layers = list(self.model)
        scan, last = layers[4], layers[5]
        g1, g2, g3 = scan.ChannelGate_wh0, scan.ChannelGate_wh, scan.ChannelGate_wh1

        def head(*ts):
            t = torch.cat(ts, 1)
            for layer in layers[:4]:
                t = layer(t)
            return t

        x1 = col_sum = row_max = None
        for win in plan.windows(h, w, conv_reach(layers[0], layers[2], g1)):
            t = g1(head(*[x[win.crop] for x in inputs]))[win.core_in_crop]
            if x1 is None:
                x1 = empty_map(t, t.shape[1], h, w)
                col_sum = t.new_zeros(b, t.shape[1], 1, w, dtype=torch.float32)
                row_max = t.new_full((b, t.shape[1], h, 1), float("-inf"))
            x1[win.core] = t
            col_sum[..., win.x0:win.x1] += t.float().sum(2, keepdim=True)
            rm = row_max[:, :, win.y0:win.y1]
            rm.copy_(torch.maximum(rm, t.amax(3, keepdim=True)))
            del t
        ga, gb = g2.pooled_gates((col_sum / h).to(x1.dtype), row_max)
        c = x1.shape[1]
        col_max = x1.new_full((b, c, 1, w), float("-inf"))
        row_sum = x1.new_zeros(b, c, h, 1, dtype=torch.float32)
        for win in plan.windows(h, w):
            t = g2.apply_gates(x1[win.core], ga[..., win.x0:win.x1], gb[:, :, win.y0:win.y1])
            x1[win.core] = t
            cm = col_max[..., win.x0:win.x1]
            cm.copy_(torch.maximum(cm, t.amax(2, keepdim=True)))
            row_sum[:, :, win.y0:win.y1] += t.float().sum(3, keepdim=True)
            del t
        ga, gb = g3.pooled_gates(col_max, (row_sum / w).to(x1.dtype))
        out = None
        for win in plan.windows(h, w):
            t = g3.apply_gates(x1[win.core], ga[..., win.x0:win.x1], gb[:, :, win.y0:win.y1])
            t = last(t + head(*[x[win.core] for x in inputs]))     # SCAN's residual, then the output conv
            if out is None:
                out = empty_map(t, t.shape[1], h, w)
            out[win.core] = t
            del t
        return out


@COUPLING_REGISTRY.register("AFlowCoupling")
class AFlowCoupling(nn.Module):
    """Self-conditional affine coupling z2 <- (z2 + t) * s, [t, s~] = NN_F(cat[z1, ft]) (official GLTG coupling).

    The official ``fFeatures`` and ``sp_att`` never run: declared, not built (models/never_run.py).
    """

    tiling = TILED

    def __init__(self, in_channels: int, cond_channels: int, hidden_channels: int = 64, eps: float = 1e-4):
        super().__init__()
        hidden, self.eps = int(hidden_channels), float(eps)
        c1 = in_channels // 2
        c2 = in_channels - c1
        declare_never_run(self, "sp_att", lambda: SpatialMap(7))
        self.fAffine = NN_F(c1 + cond_channels, 2 * c2, hidden)
        declare_never_run(self, "fFeatures", lambda: NN_F(cond_channels, 2 * in_channels, hidden))

    def forward(self, z, logdet, ft, reverse: bool = False):
        z1, z2 = split_half(z)
        shift, scale = affine_params(self.fAffine(cat_for_conv([z1, ft])), self.eps)
        dlogdet = sum_chw(torch.log(scale))
        if not reverse:
            return torch.cat([z1, (z2 + shift) * scale], 1), logdet + dlogdet
        return torch.cat([z1, z2 / scale - shift], 1), logdet - dlogdet

    def tiled_forward(self, plan: TilePlan, z, logdet, ft, reverse: bool = False):
        """forward with the subnet tiled (NN_F.tiled); the log-det comes back NaN."""
        if plan.fits(*z.shape[-2:]):
            return AFlowCoupling.forward(self, z, logdet, ft, reverse)
        z1, z2 = split_half(z)
        shift, scale = affine_params(self.fAffine.tiled([z1, ft], plan), self.eps)
        return torch.cat([z1, z2 / scale - shift if reverse else (z2 + shift) * scale], 1), nan_logdet(logdet)


# ------------------------------------------------------------------------------------------------ step

def _step_seed(in_channels: int, cond_channels: int, has_coupling: bool) -> int:
    """Constructor seed of a step's heads: fixed, from the step's shape only (see init_aflow_heads)."""
    return AFLOW_HEAD_SEED + 1_000_003 * in_channels + 1009 * cond_channels + int(has_coupling)


@FLOW_STEP_REGISTRY.register("AFlowStep")
class AFlowStep(nn.Module):
    """ActNorm -> invconv -> SAN (``sp_att``) -> CSN (``csn``) -> optional coupling (``affine``).

    ``width``: hidden width of SAN and CSN (the official step reads the coupling's ``hidden_channels`` for it; the
    GLTG builder passes the same value).
    """

    tiling = FRAME

    def __init__(self, in_channels: int, cond_channels: int, coupling: str | None = None,
                 coupling_kwargs: dict | None = None, rng: torch.Generator | None = None, width: int = 64):
        super().__init__()
        if in_channels % 2:
            raise OptionError(f"AFlowStep needs an even channel count, got {in_channels}")
        width = int(width)
        self.actnorm = keep_fp32(ActNorm2d(in_channels))   # acts on the flow's state z: float32 (models/precision.py)
        self.invconv = InvertibleConv1x1(in_channels, rng)
        self.sp_att = SAN(in_channels, cond_channels, width)
        self.csn = CSN(in_channels, cond_channels, width)
        self.affine = (COUPLING_REGISTRY.get(coupling)(in_channels, cond_channels, **(coupling_kwargs or {}))
                       if coupling else None)
        self.reset_heads(torch.Generator().manual_seed(_step_seed(in_channels, cond_channels, coupling is not None)))

    @torch.no_grad()
    def reset_heads(self, g: torch.Generator):
        """(Re)draw the non-official head tensors from generator g (deterministic)."""
        self.sp_att.reset_heads(g)
        self.csn.reset_heads(g)

    def init_by_position(self, index: int, seed: int = AFLOW_HEAD_SEED):
        """Fixed, per-layer initialisation of the heads that official checkpoints lack."""
        self.reset_heads(torch.Generator().manual_seed(seed + 7919 * (index + 1)))

    def optional_checkpoint_keys(self) -> list[str]:
        """State-dict keys (relative to this step) that official checkpoints lack: the SAN/CSN heads."""
        keys = [f"sp_att.{k}" for k in self.sp_att.state_dict() if not k.startswith("spatial.")]
        return keys + [f"csn.{k}" for k in self.csn.state_dict()]

    def forward(self, z, logdet, ft=None, reverse: bool = False):
        if not reverse:
            z, logdet = self.actnorm(z, logdet)
            z, logdet = self.invconv(z, logdet)
            z, logdet = self.sp_att(z, logdet, ft)
            z, logdet = self.csn(z, logdet, ft)
            if self.affine is not None:
                z, logdet = self.affine(z, logdet, ft)
            return z, logdet
        if self.affine is not None:
            z, logdet = self.affine(z, logdet, ft, reverse=True)
        z, logdet = self.csn(z, logdet, ft, reverse=True)
        z, logdet = self.sp_att(z, logdet, ft, reverse=True)
        z, logdet = self.invconv(z, logdet, reverse=True)
        z, logdet = self.actnorm(z, logdet, reverse=True)
        return z, logdet


def aflow_head_parameter_names(module: nn.Module, prefix: str = "") -> list[str]:
    """Full state-dict names of every non-official AFlow head tensor under ``module`` (for loader messages)."""
    names = []
    for name, m in module.named_modules():
        if isinstance(m, AFlowStep):
            base = f"{prefix}{name}." if name else prefix
            names += [base + k for k in m.optional_checkpoint_keys()]
    return names


@torch.no_grad()
def init_aflow_heads(module: nn.Module, seed: int = AFLOW_HEAD_SEED) -> int:
    """Re-draw every AFlowStep's heads under ``module`` with a distinct, fixed seed per step (in module order).

    Deterministic: the same architecture always gets the same head tensors. Returns the number of steps.
    """
    steps = [m for m in module.modules() if isinstance(m, AFlowStep)]
    for i, step in enumerate(steps):
        step.reset_heads(torch.Generator().manual_seed(seed + 7919 * (i + 1)))
    return len(steps)
