"""The conditional flow generator: encoder (`RRDB`) + multi-level flow (`flowUpsamplerNet`) + prior.

One class serves every family; the family (variants.py) chooses the registered encoder, flow step, coupling
and prior. Attribute names match the official checkpoints (`RRDB.*`, `flowUpsamplerNet.*`).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

import models.networks.encoders  # noqa: F401  (registers encoders)
import models.networks.flow.couplings  # noqa: F401  (registers couplings)
from utils.errors import OptionError
from utils.registry import ARCH_REGISTRY, ENCODER_REGISTRY
from .flow.ops import gaussian_logp, squeeze2d
from .flow.upsampler import LEVEL_TO_NAME, FlowUpsamplerNet
from ..kwargs import given
from ..tiling.core import FRAME
from .variants import VARIANTS, Variant

FLOW_INPUTS = (*LEVEL_TO_NAME.values(), "color_map")   # the encoder outputs that the flow and the prior read

# Official switches that change the network but are broken or dead in every released code base (spec §1.3, §9).
UNSUPPORTED_TRUE_KEYS = ("to_yuv", "encode_color_map", "le_curve", "sigmoid_output", "align_condition_feature",
                         "avg_color_map")


def chromaticity(x: torch.Tensor) -> torch.Tensor:
    """Per-pixel colour map x / (sum_c x + 1e-4) (LLFlow's GT prior mean)."""
    return x / (x.sum(1, keepdim=True) + 1e-4)


@ARCH_REGISTRY.register("LLFlow", "UPTFlow")
class FlowGenerator(nn.Module):
    """Encoder + conditional flow. `nll()` is the training direction, `reverse()` the enhancement.

    `variant`: the family preset (variants.py: encoder, step, coupling, prior), or its name. The encoder is
    built with `encoder_kwargs`, every coupling with `coupling_kwargs`, every step with `step_kwargs`; `K` coupling
    steps and `n_noaffine` plain steps per level, `L` levels. `cond_channels`: the conditioning width (None: the
    encoder's `out_channels`). `unused_f_in`: input width of the official never-run
    `flowUpsamplerNet.f` (None: not declared). `quant`: dequantisation levels of the training noise.
    :meth:`from_options` translates a config (ours or an official YAML) into these arguments.
    """

    tiling = FRAME

    checkpoint_advice = "Check network_G (variant, nf/nb, flow.K, encoder sizes) against the checkpoint."

    def __init__(self, variant: Variant | str = "llflow", K: int = 12, L: int = 3, n_noaffine: int = 2,
                 cond_channels: int | None = None, encoder_kwargs: dict | None = None,
                 coupling_kwargs: dict | None = None, step_kwargs: dict | None = None,
                 unused_f_in: int | None = None, quant: float = 32):
        super().__init__()
        variant = VARIANTS[variant] if isinstance(variant, str) else variant
        self.variant = variant
        self.RRDB = ENCODER_REGISTRY.get(variant.encoder)(**(encoder_kwargs or {}))
        # Every encoder knows its conditioning width (Restormer families: 6 * dim; LLFlow's: nf * (taps + 1)).
        cond_channels = int(cond_channels or self.RRDB.out_channels)
        self.L = int(L)
        self.flowUpsamplerNet = FlowUpsamplerNet(
            3, cond_channels, K=int(K), L=self.L, n_noaffine=int(n_noaffine), coupling=variant.coupling,
            step=variant.step, coupling_kwargs=coupling_kwargs, step_kwargs=step_kwargs, unused_f_in=unused_f_in)
        self.quant = float(quant)
        self.aux_input = getattr(self.RRDB, "aux_input", None)
        self.pad_multiple = max(int(getattr(self.RRDB, "pad_multiple", 1)), 2 ** self.L)
        self.min_size = int(getattr(self.RRDB, "min_size", 1))

    @classmethod
    def from_options(cls, opt: dict, variant: Variant) -> "FlowGenerator":
        """The generator a config describes (ours or an official YAML), for the resolved family `variant`.

        The one place where `network_G`, `network_G.flow`, the top-level switches and `datasets.train.quant` become
        constructor arguments; unset or null keys are left to the constructor defaults.
        """
        for key in UNSUPPORTED_TRUE_KEYS:
            if opt.get(key):
                raise OptionError(f"option '{key}: true' is not supported (it is dead or broken in the "
                                  f"official code, see docs/methods.md); set it to false")
        flow = (opt.get("network_G") or {}).get("flow") or {}
        if (flow.get("split") or {}).get("enable"):
            raise OptionError("network_G.flow.split.enable: true is not supported (no released model uses it)")
        if flow.get("K") is None:
            raise OptionError("option 'network_G.flow.K' is required")
        kw = given(flow, ("K", "L", "additionalFlowNoAffine", "conditionInFeaDim"),
                   rename={"additionalFlowNoAffine": "n_noaffine", "conditionInFeaDim": "cond_channels"})
        # The official couplings (and GLTG's SAN/CSN width) all read this one section, whatever the coupling.
        coupling_kwargs = given(flow.get("CondAffineSeparatedAndCond"), ("hidden_channels", "eps"))
        if variant.step == "AFlowStep" and "hidden_channels" in coupling_kwargs:
            kw["step_kwargs"] = {"width": coupling_kwargs["hidden_channels"]}
        blocks = ((flow.get("stackRRDB") or {}).get("blocks")) or []
        quant = ((opt.get("datasets") or {}).get("train") or {}).get("quant")
        if quant:
            kw["quant"] = quant
        encoder_kwargs = ENCODER_REGISTRY.get(variant.encoder).kwargs_from_options(opt)
        return cls(variant, encoder_kwargs=encoder_kwargs, coupling_kwargs=coupling_kwargs,
                   unused_f_in=64 * (len(blocks) + 1) if variant.unused_f else None, **kw)

    # -- helpers -------------------------------------------------------------------------------------------------
    def prior_mean(self, cond: dict, gt: torch.Tensor | None = None):
        """Mean of the Gaussian prior at the latent resolution: LLFlow's colour map, or None for N(0, I)."""
        if self.variant.prior != "colormap":
            return None
        cmap = chromaticity(gt) if gt is not None else cond["color_map"]
        return squeeze2d(cmap, 2 ** self.L)

    # -- directions ----------------------------------------------------------------------------------------------
    def forward(self, gt=None, lq=None, aux=None, reverse: bool = False, **kwargs):
        """`reverse=False`: NLL dict (training; what DDP wraps); `reverse=True`: the enhanced image."""
        if reverse:
            return self.reverse(lq, aux, **kwargs)
        return self.nll(gt, lq, aux, **kwargs)

    def nll(self, gt, lq, aux=None, add_gt_noise: bool | None = None, prior_from_gt: bool = False, noise=None):
        """Negative log-likelihood of `gt` given `lq`, in bits per pixel summed over the 3 channels (official units).

        `add_gt_noise` defaults to the family's official training behaviour; `noise` (U(-1/2, 1/2)-shaped) can be
        passed for reproducibility. The dequantisation constant is the official -ln(quant)*H*W (it omits C; it is a
        constant and does not change gradients).
        """
        if add_gt_noise is None:
            add_gt_noise = self.variant.add_gt_noise
        b, _, h, w = gt.shape
        logdet = gt.new_zeros(b)
        z = gt
        if add_gt_noise:
            if noise is None:
                noise = torch.rand_like(gt) - 0.5
            z = z + noise / self.quant
            logdet = logdet - math.log(self.quant) * h * w
        cond = self.RRDB(lq, aux)
        z, logdet = self.flowUpsamplerNet.encode(z, cond, logdet)
        mean = self.prior_mean(cond, gt if prior_from_gt else None)
        objective = logdet + gaussian_logp(z, mean)
        nll = -objective / (math.log(2.0) * h * w)
        return {"z": z, "logdet": logdet, "nll": nll, "cond": cond}

    def reverse(self, lq, aux=None, heat: float = 0.0, z: torch.Tensor | None = None, cond: dict | None = None):
        """Enhance `lq`: decode z = prior mean + heat * N(0, I) (or the given z). No clamping."""
        if cond is None:
            # only what the flow reads: the encoder's other maps (cat_f, the RRDB taps) are freed before decoding
            cond = {k: v for k, v in self.RRDB(lq, aux).items() if k in FLOW_INPUTS}
        b, _, h, w = lq.shape
        f = 2 ** self.L
        if z is None:
            mean = self.prior_mean(cond)
            shape = (b, self.flowUpsamplerNet.out_channels, h // f, w // f)
            z = lq.new_zeros(shape) if mean is None else mean
            if heat:
                z = z + heat * torch.randn(shape, device=lq.device, dtype=lq.dtype)
        x, _ = self.flowUpsamplerNet.decode(z, cond, lq.new_zeros(b))
        return x

    def compile_targets(self) -> list[nn.Module]:
        """What `inference.compile` compiles: the encoder (full-resolution element-wise work; the flow's Python
        loops over steps and its cached inverses would break the graph)."""
        return [self.RRDB]

    def enhance(self, lq, aux=None, heat: float = 0.0):
        """The engine's enhance call (models/methods/base_model.py): the reverse pass at `heat`."""
        return self.reverse(lq, aux, heat=heat)
