"""N2LDiff (normal light -> low light diffusion synthesiser) as a trainable model (spec 8).

Batches: ``LQ`` is the network input, the normally exposed image, and ``GT`` the low-light target (datasets with
``swap_roles: true``; see docs/methods.md). One step: t ~ U{0..T-1} and eps ~ N(0, I) per sample, the centre (the
encoder's, or with ``center_gt_prob`` the target itself), x_t, the denoiser, and the loss
0.9 LPIPS-VGG + 0.1 SmoothL1 (``loss_type: combined``), Lion, gradient clipping (``train.grad_clip``).

``train.n2ldiff.official_compat`` (default false) reproduces the official training exactly:
- the loss as the official code computes it: its ``q_sample`` adds k1 (2c - 1) to the noise tensor it is given,
  in place, once in the forward and again in the LPIPS term. So the LPIPS target image is built from
  eps + 2 k1 (2c - 1) and SmoothL1 compares eps_pred + k1 (2c - 1) with eps + 2 k1 (2c - 1) (spec 8.1);
- the condition encoder is never optimised (only the denoiser is handed to the optimiser);
- the centre is the GT low image for a whole batch with probability 0.5 (python ``random``), else the encoder's;
- weight norm and Mish computed with the official operations (layers.set_official_numerics): the same values up to
  float32 rounding, but Lion's sign update turns gradient rounding into whole-step differences.
The default instead: SmoothL1(eps_pred, eps + k1 (2c - 1)) (the same value and gradient as the official term),
LPIPS between the image of the true x_t and the image of the x_t that eps_pred implies,
sqrt(ab) x0 + sqrt(1 - ab) eps_pred (the official target image is shifted by (1 - sqrt(ab)) (2c - 1) a second
time); the centre is always the encoder's, the one sampling starts from, and the encoder is trained: its features
through the denoising loss, its centre by ``center_weight`` x L1(centre, GT low image). The centre is a constant
of the diffusion terms: letting their gradient reach it lets the encoder push both LPIPS images into the [0, 1]
clamp, where LPIPS is 0 (the demo run then synthesised saturated images, val PSNR 6.6 -> 4.9 dB).
"""
from __future__ import annotations

import logging
import random

import torch
import torch.nn.functional as F

from utils.errors import OptionError
from utils.registry import MODEL_REGISTRY
from .base_model import BaseModel
from ..checkpoint import load_weights, read_state_dict
from ..lr_schedule import make_scheduler
from ..networks.n2ldiff.layers import set_official_numerics
from ..networks.n2ldiff.network import N2LDiffNet
from ..optimizers import Lion

log = logging.getLogger("lowlight_flow")

LOSS_TYPES = ("combined", "l1", "l2", "lpips")
LPIPS_WEIGHT, SMOOTH_L1_WEIGHT = 0.9, 0.1  # the official 'combined' weights


def to_image(x):
    """[-1, 1] -> [0, 1] with the official clamp (img_unnormalize)."""
    return (x.clamp(-1, 1) + 1) * 0.5


@MODEL_REGISTRY.register("N2LDiff")
class N2LDiffModel(BaseModel):
    """Owns N2LDiffNet ('G': encoder + denoiser + schedule), the LPIPS-VGG loss and the optimiser."""

    progress_keys = ("loss", "lpips", "smooth_l1", "center_l1")

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        super().__init__(opt, device, rank, world_size)
        train = opt["train"]
        cfg = train.get("n2ldiff") or {}
        self.official = bool(cfg.get("official_compat"))
        te = cfg.get("train_encoder")
        self.train_encoder = (not self.official) if te is None else bool(te)
        p = cfg.get("center_gt_prob")
        self.center_gt_prob = (0.5 if self.official else 0.0) if p is None else float(p)
        self.loss_type = cfg.get("loss_type") or "combined"
        self.center_weight = float(cfg.get("center_weight") or 0.0) if self.train_encoder else 0.0
        if self.loss_type not in LOSS_TYPES:
            raise OptionError(f"option 'train.n2ldiff.loss_type' must be one of {', '.join(LOSS_TYPES)}, "
                              f"got '{self.loss_type}'")
        self.generator, notes = self.build_network(opt)
        for n in notes:
            log.info(n)
        pre = opt["path"].get("pretrain_model_G")
        if pre:
            for n in load_weights(self.generator, read_state_dict(pre), source=f"pretrain_model_G '{pre}'"):
                log.info(n)
        self.generator.to(device)
        if self.official:
            set_official_numerics(self.generator)
        self.generator.encoder.requires_grad_(self.train_encoder)
        self.lpips = None
        if self.loss_type in ("combined", "lpips"):
            from ..losses.lpips_vgg import LPIPSVGG
            self.lpips = LPIPSVGG(opt["path"].get("vgg16_features")).to(device)
        self.ddp = None
        self.optimizers["G"] = self._make_optimizer(train, cfg.get("optimizer") or "Lion")
        self.schedulers["G"] = make_scheduler(self.optimizers["G"], train)

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        net = N2LDiffNet.from_options(opt)
        notes = [f"N2LDiff: dim {net.dim}, dim_mults {list(net.dim_mults)}, T = {net.num_timesteps}"]
        if checkpoint:
            notes += load_weights(net, read_state_dict(checkpoint), source=f"checkpoint '{checkpoint}'")
        return net, notes

    def networks(self):
        return {"G": self.generator}

    def _make_optimizer(self, train, name):
        params = [p for p in self.generator.model.parameters() if p.requires_grad]
        if self.train_encoder:
            params += [p for p in self.generator.encoder.parameters() if p.requires_grad]
        lr, wd = float(train["lr_G"]), float(train.get("weight_decay_G") or 0.0)
        betas = (float(train.get("beta1", 0.9)), float(train.get("beta2", 0.99)))
        if name == "Lion":
            return Lion(params, lr=lr, betas=betas, weight_decay=wd)
        if name == "AdamW":
            return torch.optim.AdamW(params, lr=lr, betas=betas, weight_decay=wd)
        raise OptionError(f"option 'train.n2ldiff.optimizer' must be Lion or AdamW, got '{name}'")

    def wrap_ddp(self):
        if self.world_size > 1 and self.ddp is None:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.generator, device_ids=ids, find_unused_parameters=True)

    # -- one step ------------------------------------------------------------------------------------------------
    def loss_terms(self, img_lr, img_hr, t, eps, gt_center=None) -> dict:
        """Every loss term for given draws (t: per-sample steps, eps, gt_center: per-sample bools or None).

        Returns the loss and its parts, plus the tensors the golden tests compare: x_t, eps_pred, and the two
        [0, 1] images the LPIPS term sees (``lpips_in_pred``, ``lpips_in_target``).
        """
        net = self.ddp if self.ddp is not None else self.generator
        x0 = 2 * img_hr - 1
        with self.autocast():                 # train.amp_dtype (models/methods/base_model.py); a no-op in float32
            out = net(img_lr, img_hr, t, eps, gt_center, self.train_encoder)
        eps_pred, total = out["eps_pred"].float(), out["total_noise"]
        pred_arg, target_arg = eps_pred, total
        if self.official and self.loss_type in ("combined", "lpips"):
            # The official LPIPS term calls q_sample on both tensors, adding k1 (2c - 1) to each in place; its
            # SmoothL1 then sees the mutated tensors (spec 8.1). Reproduced out of place.
            shift = total - eps
            pred_arg, target_arg = eps_pred + shift, total + shift
        sched = self.generator.model
        x_t_target = out["x_t"] if target_arg is total else sched.x_t_from_noise(x0, t, target_arg)
        terms = {"x_t": out["x_t"], "eps_pred": eps_pred, "center": out["center"]}
        loss = 0.0
        if self.loss_type in ("combined", "lpips"):
            terms["lpips_in_pred"] = to_image(sched.x_t_from_noise(x0, t, pred_arg))
            terms["lpips_in_target"] = to_image(x_t_target)
            terms["lpips"] = self.lpips(terms["lpips_in_pred"], terms["lpips_in_target"])
            loss = terms["lpips"] * (LPIPS_WEIGHT if self.loss_type == "combined" else 1.0)
        if self.loss_type in ("combined", "l1"):
            terms["smooth_l1"] = F.smooth_l1_loss(pred_arg, target_arg)
            loss = loss + terms["smooth_l1"] * (SMOOTH_L1_WEIGHT if self.loss_type == "combined" else 1.0)
        if self.loss_type == "l2":
            terms["l2"] = F.mse_loss(pred_arg, target_arg)
            loss = terms["l2"]
        if self.center_weight > 0:
            terms["center_l1"] = F.l1_loss(out["center"], img_hr)
            loss = loss + self.center_weight * terms["center_l1"]
        terms["loss"] = loss
        return terms

    def _draw_gt_center(self, b: int):
        if self.center_gt_prob <= 0:
            return None
        if self.official:  # one python random draw per batch, as the official random.choice(['pred', 'ref'])
            return torch.full((b,), random.random() < self.center_gt_prob, device=self.device)
        return torch.rand(b, device=self.device) < self.center_gt_prob

    def draw(self, img_hr):
        """The random draws of one step (t ~ U{0..T-1} per sample, eps like ``img_hr``, the GT-centre choice), in
        this order; the one place a test replays another trainer's recorded draws."""
        t = torch.randint(0, self.generator.num_timesteps, (img_hr.shape[0],), device=self.device)
        eps = torch.randn_like(img_hr)
        return t, eps, self._draw_gt_center(img_hr.shape[0])

    def optimize(self, batch) -> dict:
        self.generator.train()
        img_lr = batch["LQ"].to(self.device, non_blocking=True)
        img_hr = batch["GT"].to(self.device, non_blocking=True)
        t, eps, gt_center = self.draw(img_hr)
        opt = self.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        terms = self.loss_terms(img_lr, img_hr, t, eps, gt_center)
        logs = {k: terms[k].detach() for k in ("loss", "lpips", "smooth_l1", "l2", "center_l1") if k in terms}
        logs.update(self.step_optimizer(terms["loss"], "G", opt.param_groups[0]["params"]))
        self.schedulers["G"].step()
        logs["lr"] = opt.param_groups[0]["lr"]
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in logs.items()}
