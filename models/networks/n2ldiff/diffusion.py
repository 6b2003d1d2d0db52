"""N2LDiff's diffusion: cosine schedule, epsilon prediction with a mean-shifting centre, centre-started sampler.

With d = 2c - 1 (c = the centre image in [0, 1]) the forward process is
    x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps + (1 - sqrt(ab_t)) d,
i.e. an ordinary DDPM on z = x - d. The network predicts the total deviation eps + k1_t d (k1 = extra_term_coef1 =
(1 - sqrt(ab)) / sqrt(1 - ab)), which is what ``predict_x0`` inverts; the posterior mean gains
extra_term_coef2 * d (= (1 - coef1 - coef2) d). Sampling starts from x_T = d without noise (``use_center_sampler``).

The schedule is computed once in float64 and stored as float32 buffers with the official names (official
checkpoints hold them and overwrite the recomputed ones on load). ``steps < T`` samples on an evenly spaced
subset of the T timesteps (``respaced_timesteps``) with the schedule re-derived from alpha-bar at those steps,
the usual DDPM respacing; it is built once per step count and cached.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from utils.errors import OptionError

SCHEDULE_BUFFERS = ("betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
                    "sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
                    "sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
                    "posterior_mean_coef1", "posterior_mean_coef2", "extra_term_coef1", "extra_term_coef2")


def cosine_betas(timesteps: int, s: float = 0.008) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule (float64), betas clipped to 0.999 (the last one of T = 100 is)."""
    steps = timesteps + 1
    x = np.linspace(0, steps, steps)
    ab = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    ab = ab / ab[0]
    return np.clip(1 - ab[1:] / ab[:-1], 0, 0.999)


def schedule_from_betas(betas: np.ndarray) -> dict[str, np.ndarray]:
    """Every schedule buffer (float64) from the betas, by the official formulas."""
    alphas = 1.0 - betas
    ab = np.cumprod(alphas)
    ab_prev = np.append(1.0, ab[:-1])
    var = betas * (1.0 - ab_prev) / (1.0 - ab)
    return {
        "betas": betas, "alphas_cumprod": ab, "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": np.sqrt(ab), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ab),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ab), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ab),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ab - 1), "posterior_variance": var,
        "posterior_log_variance_clipped": np.log(np.maximum(var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ab_prev) / (1.0 - ab),
        "posterior_mean_coef2": (1.0 - ab_prev) * np.sqrt(alphas) / (1.0 - ab),
        "extra_term_coef1": (1 - np.sqrt(ab)) / np.sqrt(1 - ab),
        "extra_term_coef2": ((1 - np.sqrt(ab_prev)) * (1 - alphas)
                             - np.sqrt(alphas) * (1 - np.sqrt(alphas)) * (1 - ab_prev)) / (1 - ab),
    }


def respaced_timesteps(timesteps: int, steps: int) -> np.ndarray:
    """``steps`` timesteps evenly spaced over [0, T-1], both ends included (distinct for steps <= T)."""
    if not 1 <= steps <= timesteps:
        raise OptionError(f"sampling steps must be between 1 and T={timesteps}, got {steps}")
    if steps == 1:
        return np.array([timesteps - 1])
    return np.round(np.linspace(0, timesteps - 1, steps)).astype(np.int64)


def _coef(buf: torch.Tensor, t, ndim: int) -> torch.Tensor:
    """buf[t] shaped to broadcast over a batch: t an int (the sampler) or a LongTensor of per-sample steps."""
    if isinstance(t, int):
        return buf[t]
    return buf.gather(0, t).reshape(-1, *((1,) * (ndim - 1)))


class CenterDiffusion(nn.Module):
    """The denoiser (``unet``) plus the schedule buffers: official ``EnlightDiffusion`` names (``model.*``)."""

    def __init__(self, unet: nn.Module, timesteps: int = 100, use_center: bool = True,
                 use_center_sampler: bool = True, clip_denoised: bool = True):
        super().__init__()
        self.unet = unet
        self.num_timesteps = int(timesteps)
        self.use_center, self.use_center_sampler, self.clip_denoised = use_center, use_center_sampler, clip_denoised
        for k, v in schedule_from_betas(cosine_betas(self.num_timesteps)).items():
            self.register_buffer(k, torch.tensor(v, dtype=torch.float32))
        self._respaced: dict = {}

    # -- forward process -----------------------------------------------------------------------------------------
    def total_noise(self, eps, t, center):
        """The deviation the network is trained to predict: eps + k1_t (2c - 1) (eps when use_center is off)."""
        if not self.use_center:
            return eps
        return eps + _coef(self.extra_term_coef1, t, eps.ndim) * (2 * center - 1)

    def q_sample(self, x0, t, center, eps):
        """x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) (eps + k1_t (2c - 1)). Nothing is modified in place (the official
        q_sample adds the centre term to its ``noise`` argument; see models/methods/n2ldiff_model.py,
        official_compat)."""
        return self.x_t_from_noise(x0, t, self.total_noise(eps, t, center))

    def x_t_from_noise(self, x0, t, total_noise):
        return (_coef(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
                + _coef(self.sqrt_one_minus_alphas_cumprod, t, x0.ndim) * total_noise)

    # -- reverse process -----------------------------------------------------------------------------------------
    def schedule(self, steps: int | None = None):
        """(timesteps the unet sees, coefficient tensors) for ``steps`` sampling steps (None or T: the buffers)."""
        if steps is None or steps == self.num_timesteps:
            return list(range(self.num_timesteps)), {k: getattr(self, k) for k in SCHEDULE_BUFFERS}
        key = (int(steps), self.betas.device)
        if key not in self._respaced:
            ts = respaced_timesteps(self.num_timesteps, int(steps))
            ab = self.alphas_cumprod.double().cpu().numpy()[ts]
            betas = 1.0 - ab / np.append(1.0, ab[:-1])
            sched = {k: torch.tensor(v, dtype=torch.float32, device=self.betas.device)
                     for k, v in schedule_from_betas(betas).items()}
            self._respaced[key] = (ts.tolist(), sched)
        return self._respaced[key]

    def predict_x0(self, x_t, t, eps_pred, sched=None):
        s = sched or {k: getattr(self, k) for k in ("sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod")}
        return (_coef(s["sqrt_recip_alphas_cumprod"], t, x_t.ndim) * x_t
                - _coef(s["sqrt_recipm1_alphas_cumprod"], t, x_t.ndim) * eps_pred)

    def p_sample(self, x_t, i, cond, center, feats, noise, sched=None, unet_t=None):
        """One ancestral step at schedule index i (an int). Returns (x_{t-1}, clamped x0 prediction).

        ``unet_t``: the timestep the unet sees (differs from i on a respaced schedule). At i = 0 no noise is added.
        """
        s = sched or {k: getattr(self, k) for k in SCHEDULE_BUFFERS}
        t = torch.full((x_t.shape[0],), i if unet_t is None else unet_t, device=x_t.device, dtype=torch.long)
        eps = self.unet(x_t, t, cond, feats)
        x0 = self.predict_x0(x_t, i, eps, s)
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        mean = s["posterior_mean_coef1"][i] * x0 + s["posterior_mean_coef2"][i] * x_t
        if self.use_center_sampler:
            mean = mean + s["extra_term_coef2"][i] * (2 * center - 1)
        if i == 0:
            return mean, x0
        return mean + torch.exp(0.5 * s["posterior_log_variance_clipped"][i]) * noise, x0

    def sample_loop(self, cond, center, feats, noise_source, steps: int | None = None, progress: bool = False,
                    x_T=None):
        """Run the reverse chain; ``noise_source(k)`` gives the noise of the k-th step (step t = T-1-k).

        Returns the final clamped x0 prediction mapped to [0, 1] (the official output).
        """
        ts, sched = self.schedule(steps)
        x = (2 * center - 1) if self.use_center_sampler else x_T
        x0 = None
        it = range(len(ts) - 1, -1, -1)
        for k, i in enumerate(tqdm(it, desc="sampling", leave=False) if progress else it):
            x, x0 = self.p_sample(x, i, cond, center, feats, noise_source(k), sched, unet_t=ts[i])
        return (x0.clamp(-1, 1) + 1) * 0.5
