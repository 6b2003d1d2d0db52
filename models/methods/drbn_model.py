"""DRBN as trainable methods on the engine contract (models/methods/base_model.py).

- ``model: DRBN`` (stage 1): loss = sum over scales s in {1, 2, 4} of -SSIM(res_s, gt[::s, ::s]) (strided GT, as the
  official trainer); Adam. The official StepLR(200 epochs, gamma 0.5) is ``train.lr_steps`` in iterations.
- ``model: DRBNRecompose`` (stage 2): the stage-1 DRBN is frozen (eval mode, no gradients, run under no_grad); the
  recomposition net learns from VGG16 perceptual - SSIM + ``weight_gan`` * LSGAN, where the discriminator
  (``networks()['D']``, Adam ``train.lr_D``) tells paired GT and high-quality photos from recomposed *unpaired*
  low-light photos (data/semi_dataset.py supplies ``LQ_unpaired`` and ``HQ``).
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

from utils.errors import CheckpointError, OptionError
from utils.registry import ARCH_REGISTRY, MODEL_REGISTRY
from .base_model import BaseModel
from ..checkpoint import load_weights, read_state_dict
from ..conversion import drbn as drbn_files
from ..networks.drbn import BandDiscriminator, DRBN, DRBNRecompose  # noqa: F401  (registers the architectures)
from ..losses import SSIM, VGGPerceptualLoss, load_vgg16_features, lsgan_d_loss, lsgan_g_loss
from ..lr_schedule import make_scheduler

log = logging.getLogger("lowlight_flow")

SCALES = (1, 2, 4)


def _arch(opt: dict, expected: str) -> nn.Module:
    name = opt["network_G"].get("which_model_G")
    if name != expected:
        raise OptionError(f"option 'network_G.which_model_G' must be {expected} for model: {opt.get('model')} "
                          f"(got {name!r})")
    return ARCH_REGISTRY.get(name).from_options(opt)


def _adam(params, lr, train: dict) -> torch.optim.Adam:
    betas = (float(train.get("beta1", 0.9)), float(train.get("beta2", 0.999)))
    return torch.optim.Adam(params, lr=float(lr), betas=betas, weight_decay=float(train.get("weight_decay_G") or 0))


def _check_size(x: torch.Tensor):
    if x.shape[-2] % 4 or x.shape[-1] % 4:
        raise OptionError(f"DRBN training crops must be multiples of 4, got {x.shape[-2]}x{x.shape[-1]} "
                          f"(datasets.train.GT_size)")


def load_stage1(net: DRBN, path: str, source: str) -> list[str]:
    """Strictly load a stage-1 DRBN file (official model_s1.pt or ours) into `net`; one-line CheckpointError else."""
    return load_weights(net, read_state_dict(path), strict=True, source=source)


@MODEL_REGISTRY.register("DRBN")
class DRBNModel(BaseModel):
    """Stage 1: the DRBN trained with multi-scale SSIM."""

    progress_keys = ("loss",)

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        super().__init__(opt, device, rank, world_size)
        train = opt["train"]
        self.generator, notes = self.build_network(opt, opt["path"].get("pretrain_model_G"))
        for n in notes:
            log.info(n)
        self.generator.to(device)
        self.ssim = SSIM().to(device)
        self.ddp = None
        self.optimizers["G"] = _adam(self.generator.parameters(), train["lr_G"], train)
        self.schedulers["G"] = make_scheduler(self.optimizers["G"], train)

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        net = _arch(opt, "DRBN")
        notes = []
        if checkpoint:
            state = read_state_dict(checkpoint)
            what = drbn_files.describe_state(state.keys())
            if what and not drbn_files.is_stage1(state):
                raise CheckpointError(f"checkpoint '{checkpoint}' is {what}")
            notes += load_weights(net, state, strict=True, source=f"checkpoint '{checkpoint}'")
        return net, notes

    def networks(self):
        return {"G": self.generator}

    def wrap_ddp(self):
        if self.world_size > 1 and self.ddp is None:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DDP(self.generator, device_ids=ids)

    def optimize(self, batch) -> dict:
        self.generator.train()
        lq = batch["LQ"].to(self.device, non_blocking=True)
        gt = batch["GT"].to(self.device, non_blocking=True)
        _check_size(lq)
        net = self.ddp if self.ddp is not None else self.generator
        with self.autocast():                 # train.amp_dtype (models/methods/base_model.py); a no-op in float32
            bands = net(lq)
        # SSIM subtracts local means from local second moments: float32 whatever the network ran in
        sims = [self.ssim(res.float(), gt[..., ::s, ::s]) for res, s in zip(bands, SCALES)]
        loss = -sum(sims)
        opt = self.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        logs = {"loss": loss.detach(), **{f"ssim_s{s}": v.detach() for s, v in zip(SCALES, sims)}}
        logs.update(self.step_optimizer(loss, "G", self.generator.parameters()))
        self.schedulers["G"].step()
        logs["lr"] = opt.param_groups[0]["lr"]
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in logs.items()}


@MODEL_REGISTRY.register("DRBNRecompose")
class DRBNRecomposeModel(BaseModel):
    """Stage 2: band recomposition + discriminator; the DRBN stays frozen bit for bit."""

    progress_keys = ("loss", "d_loss")

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        super().__init__(opt, device, rank, world_size)
        if world_size > 1:
            raise OptionError("model: DRBNRecompose trains in one process (--launcher none): its networks are tiny")
        from data.semi_dataset import check_unpaired_sources
        check_unpaired_sources(opt)
        train, path = opt["train"], opt["path"]
        if not path.get("pretrain_model_G") and not path.get("pretrain_stage1"):
            raise OptionError("option 'path.pretrain_stage1' is not set: stage 2 starts from a trained stage-1 DRBN "
                              "(e.g. the official model_s1.pt or our stage-1 run's best_psnr_G.pth)")
        self.generator, notes = self.build_network(opt, path.get("pretrain_model_G"))
        for n in notes:
            log.info(n)
        self.generator.to(device)
        freeze(self.generator.drbn)
        self.discriminator = BandDiscriminator().to(device)
        self.perceptual = VGGPerceptualLoss(load_vgg16_features(path.get("vgg16_features"))).to(device)
        self.ssim = SSIM().to(device)
        self.weight_gan = float(1.0 if train.get("weight_gan") is None else train["weight_gan"])
        self.optimizers["G"] = _adam(self.generator.recompose.parameters(), train["lr_G"], train)
        self.optimizers["D"] = _adam(self.discriminator.parameters(), train.get("lr_D") or 1e-6, train)
        self.schedulers["G"] = make_scheduler(self.optimizers["G"], train)
        # the official trainer never steps the discriminator's scheduler: its rate stays lr_D for the whole run
        self.schedulers["D"] = make_scheduler(self.optimizers["D"], dict(train, lr_steps=[], warmup_iter=-1))

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        """Our combined file (drbn.* + recompose.*), or the official recompose-only file with the DRBN read from
        ``path.pretrain_stage1``; without a checkpoint, the DRBN from ``path.pretrain_stage1`` (if set)."""
        net = _arch(opt, "DRBNRecompose")
        stage1 = opt["path"].get("pretrain_stage1")
        notes = []
        state = read_state_dict(checkpoint) if checkpoint else None
        if state is not None and drbn_files.is_combined(state):
            notes += load_weights(net, state, strict=True, source=f"checkpoint '{checkpoint}'")
            if stage1:
                notes.append(f"path.pretrain_stage1 ignored: checkpoint '{checkpoint}' holds its own DRBN")
            return net, notes
        if state is not None:
            if drbn_files.is_stage1(state):
                raise CheckpointError(f"checkpoint '{checkpoint}' is a stage-1 DRBN: give it as path.pretrain_stage1 "
                                      f"and the recomposition weights (model_R_*.pt) as the checkpoint")
            notes += load_weights(net.recompose, state, strict=True, source=f"checkpoint '{checkpoint}'")
            if not stage1:
                raise OptionError(f"option 'path.pretrain_stage1' is not set: checkpoint '{checkpoint}' holds only "
                                  f"the recomposition net, the stage-1 DRBN (e.g. model_s1.pt) must come from there")
        if stage1:
            notes += load_stage1(net.drbn, stage1, source=f"path.pretrain_stage1 '{stage1}'")
        return net, notes

    def networks(self):
        return {"G": self.generator, "D": self.discriminator}

    def optimize(self, batch) -> dict:
        keys = ("LQ", "GT", "LQ_unpaired", "HQ")
        missing = [k for k in keys if k not in batch]
        if missing:
            raise OptionError(f"model: DRBNRecompose needs {', '.join(missing)} in each batch: use "
                              f"datasets.train.dataset: SemiSupervised")
        lq, gt, lq_u, hq = (batch[k].to(self.device, non_blocking=True) for k in keys)
        _check_size(lq)
        net, disc = self.generator, self.discriminator
        net.drbn.eval()
        net.recompose.train()
        disc.train()
        with torch.no_grad():
            bands, bands_u = net.bands(lq), net.bands(lq_u)
        with self.autocast():                 # train.amp_dtype (models/methods/base_model.py); a no-op in float32
            out = net.recompose(lq, *bands).output.float()
            out_u = net.recompose(lq_u, *bands_u).output.float()

        # discriminator: paired GT and high-quality photos are real, recomposed unpaired photos are fake
        d_loss = lsgan_d_loss(disc(torch.cat((gt, hq), 0)), disc(out_u.detach()))
        self.optimizers["D"].zero_grad(set_to_none=True)
        logs = {"d_loss": d_loss.detach()}
        logs.update({f"d_{k}": v for k, v in self.step_optimizer(d_loss, "D", disc.parameters()).items()})

        # recomposition net: fidelity on the paired data, realism on the unpaired data
        disc.requires_grad_(False)
        try:
            perceptual = self.perceptual(out, gt)
            ssim = self.ssim(out, gt)
            adv = lsgan_g_loss(disc(out_u))
        finally:
            disc.requires_grad_(True)
        loss = perceptual - ssim + self.weight_gan * adv
        self.optimizers["G"].zero_grad(set_to_none=True)
        logs.update({"loss": loss.detach(), "perceptual": perceptual.detach(), "ssim": ssim.detach(),
                     "adv": adv.detach()})
        logs.update(self.step_optimizer(loss, "G", net.recompose.parameters()))
        for s in self.schedulers.values():
            s.step()
        logs["lr"] = self.optimizers["G"].param_groups[0]["lr"]
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in logs.items()}


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients (optimize() also runs it under no_grad and puts it back in eval mode)."""
    module.eval()
    module.requires_grad_(False)
    return module
