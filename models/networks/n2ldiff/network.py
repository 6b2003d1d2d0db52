"""N2LDiffNet: condition encoder + diffusion denoiser, the network checkpoints hold (official names ``model.*``,
``encoder.*``), with the enhance protocol of engine/inference.py (here: normal light in, low light out)."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from utils.errors import OptionError
from ...kwargs import section_kwargs
from .condition import histeq
from .diffusion import CenterDiffusion
from .unet import ConditionEncoder, Denoiser


def seed_for(seed: int, index: int = 0) -> int:
    """A 63-bit generator seed mixed from (seed, index) (numpy SeedSequence), so nearby pairs are unrelated."""
    a, b = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index)]).generate_state(2)
    return ((int(a) << 32) | int(b)) & 0x7FFFFFFFFFFFFFFF


class N2LDiffNet(nn.Module):
    """``encoder`` (official Unet_cond2) and ``model`` (official EnlightDiffusion with its ``unet``).

    Defaults: the official cfg/train/from_scratch.yaml (official names: dim <- unet_dim, out_dim <- unet_outdim,
    the rest as named). ``on_cond``: 'img_lr' or 'h(img_lr)' (its histeq). ``sample_seed`` and ``sample_steps``
    (None: T; fewer: respaced) are ours and set :meth:`enhance`. :meth:`from_options` reads ``network_G.n2ldiff``.

    enhance protocol: ``pad_multiple`` (32, as the official unpaired test pads), ``aux_input`` None,
    ``enhance(lq, aux=None, heat=0.0)`` = the sampler (``sample_steps`` steps, default T), seeded with
    ``sample_seed`` on every call, so the same input always gives the same output. ``heat`` has no meaning for
    this sampler and is ignored.
    """

    checkpoint_advice = "Check network_G.n2ldiff (dim, dim_mults, timesteps, ...) against the checkpoint."

    aux_input = None
    uses_heat = False

    def __init__(self, dim: int = 64, dim_mults=(1, 2, 2, 4, 4, 8), in_dim: int = 6, out_dim: int = 3,
                 cond_in_dim: int = 12, use_wn: bool = True, cond_use_wn: bool = True, use_instance_norm: bool = True,
                 weight_init: bool = True, stronger_cond: bool = True, timesteps: int = 100,
                 clip_denoised: bool = True, use_center: bool = True, use_center_sampler: bool = True,
                 on_cond: str = "img_lr", cond_on_res: bool = False, sample_seed: int = 0,
                 sample_steps: int | None = None):
        super().__init__()
        mults = tuple(int(m) for m in dim_mults)
        self.dim, self.dim_mults = int(dim), mults
        common = dict(dim=int(dim), dim_mults=mults, use_in=bool(use_instance_norm), weight_init=bool(weight_init))
        self.encoder = ConditionEncoder(in_dim=int(cond_in_dim), out_dim=3, wn=bool(cond_use_wn),
                                        on_res=bool(cond_on_res), **common)
        unet = Denoiser(in_dim=int(in_dim), out_dim=int(out_dim), wn=bool(use_wn),
                        stronger_cond=bool(stronger_cond), **common)
        self.model = CenterDiffusion(unet, int(timesteps), bool(use_center), bool(use_center_sampler),
                                     bool(clip_denoised))
        self.on_cond = on_cond
        self.sample_seed = int(sample_seed or 0)
        self.sample_steps = int(sample_steps) if sample_steps else None
        self.pad_multiple = max(32, 2 ** (len(mults) - 1))

    @classmethod
    def from_options(cls, opt: dict) -> "N2LDiffNet":
        """The network ``network_G.n2ldiff`` describes (null/missing keys: the constructor defaults)."""
        cfg = (opt.get("network_G") or {}).get("n2ldiff") or {}
        if cfg.get("use_attn"):
            raise OptionError("option 'network_G.n2ldiff.use_attn: true' is not supported (no official config uses "
                              "the mid-level attention)")
        if cfg.get("on_cond") not in (None, "img_lr", "h(img_lr)"):
            raise OptionError(f"option 'network_G.n2ldiff.on_cond' must be img_lr or h(img_lr), got "
                              f"'{cfg.get('on_cond')}'")
        cfg = {k: v for k, v in cfg.items() if k != "use_attn"}   # checked above: only false is built
        return cls(**section_kwargs(cfg, cls, "network_G.n2ldiff"))

    @property
    def num_timesteps(self) -> int:
        return self.model.num_timesteps

    def unet_condition(self, img_lr):
        """The image concatenated to x_t: the input itself (official on_cond 'img_lr') or its histeq."""
        return histeq(img_lr) if self.on_cond == "h(img_lr)" else img_lr

    def forward(self, img_lr, img_hr, t, eps, gt_center=None, train_encoder: bool = True):
        """The training pass: noise x0 = 2 img_hr - 1 at per-sample steps t with noise eps, run the denoiser.

        ``gt_center``: None, or a per-sample bool tensor choosing the target image itself as the centre (the
        official 'ref' branch). Returns dict: eps_pred, total_noise (eps + k1 (2c - 1), the denoiser's target),
        x_t, center (the encoder's), used_center.
        """
        with torch.set_grad_enabled(train_encoder and torch.is_grad_enabled()):
            center, feats = self.encoder(img_lr)
        # The centre is a fixed offset of the diffusion: through it, the loss could be lowered by driving both
        # LPIPS images into their [0, 1] clamp (observed when it was not detached: LPIPS -> 0, outputs saturate).
        # A trained encoder learns its centre from its own loss (models/methods/n2ldiff_model.py) and, here, its
        # features.
        used = center.detach()
        if gt_center is not None:
            used = torch.where(gt_center.view(-1, 1, 1, 1), img_hr, used)
        x0 = 2 * img_hr - 1
        total = self.model.total_noise(eps, t, used)
        x_t = self.model.x_t_from_noise(x0, t, total)
        eps_pred = self.model.unet(x_t, t, self.unet_condition(img_lr), feats)
        return {"eps_pred": eps_pred, "total_noise": total, "x_t": x_t, "center": center, "used_center": used}

    @torch.no_grad()
    def sample(self, img_lr, generator: torch.Generator | None = None, noise=None, steps: int | None = None,
               progress: bool = False):
        """Synthesise from ``img_lr`` (Bx3xHxW in [0, 1]; H and W multiples of 2^(len(dim_mults) - 1)).

        Noise of step k (t = T-1-k): ``noise[k]`` when ``noise`` (a tensor or array indexed by k) is given, else
        drawn from ``generator`` (on its own device, then moved), else from torch's global RNG (official).
        """
        center, feats = self.encoder(img_lr)
        cond = self.unet_condition(img_lr)
        shape, dev = img_lr.shape, img_lr.device

        def draw():
            if generator is None:
                return torch.randn(shape, device=dev, dtype=img_lr.dtype)
            return torch.randn(shape, generator=generator, device=generator.device).to(dev, img_lr.dtype)

        def source(k):
            if noise is not None:
                return torch.as_tensor(np.array(noise[k], dtype=np.float32)).to(dev, img_lr.dtype)
            return draw()

        x_T = None if self.model.use_center_sampler else draw()
        return self.model.sample_loop(cond, center, feats, source, steps, progress, x_T=x_T)

    def enhance(self, lq, aux=None, heat: float = 0.0):
        g = torch.Generator().manual_seed(seed_for(self.sample_seed))
        return self.sample(lq, generator=g, steps=self.sample_steps)
