"""Conditional normalizing flows (LLFlow, GLTG-AFlow, ZMAR-SNFlow, UPT-Flow) as a trainable model: NLL (+ optional
L1 on the reverse pass), ActNorm data-init on the first batch, Adam with warm-up + multi-step decay, mixed precision
(train.amp_dtype, models/methods/base_model.py) and memory-saving backward passes (train.invertible_backprop,
train.activation_checkpointing)."""
from __future__ import annotations

import logging
import random

import torch
import torch.nn.functional as F

from utils.errors import NonFiniteError, OptionError
from utils.registry import MODEL_REGISTRY
from ..activation_checkpointing import checkpoint_mode, enable_activation_checkpointing
from .base_model import BaseModel
from ..build import build_generator
from ..networks.flow.invertible_backprop import enable_invertible_backprop
from ..checkpoint import load_weights, read_state_dict
from ..lr_schedule import make_scheduler

log = logging.getLogger("lowlight_flow")


@MODEL_REGISTRY.register("LLFlow", "UPTFlow")
class FlowModel(BaseModel):
    """Owns the generator (possibly DDP-wrapped), its optimiser, scheduler and GradScaler."""

    progress_keys = ("nll", "l1")

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        super().__init__(opt, device, rank, world_size)
        train = opt["train"]
        self.generator, notes = self.build_network(opt)
        for n in notes:
            log.info(n)
        pre = opt["path"].get("pretrain_model_G")
        if pre:
            self.load_pretrained(pre, opt["path"].get("load_submodule"), bool(opt["path"].get("strict_load", True)))
        mode = checkpoint_mode(train.get("activation_checkpointing"))
        if mode:
            n = enable_activation_checkpointing(self.net.RRDB, mode)
            log.info("activation checkpointing (%s) on %d encoder blocks", mode, n)
        if train.get("invertible_backprop"):
            enable_invertible_backprop(self.net)
            log.info("invertible backprop: flow steps store their outputs only (inputs recomputed in the backward)")
        self.generator.to(device)
        self.ddp = None
        self.variant = self.net.variant
        self.train_gt_ratio = float(opt.get("train_gt_ratio") or 0.0)
        add_noise = train.get("add_gt_noise")
        self.add_gt_noise = self.variant.add_gt_noise if add_noise is None else bool(add_noise)
        self.weight_fl = float(train.get("weight_fl", 1) or 0)
        self.weight_l1 = float(train.get("weight_l1", 0) or 0)
        # the official LLFlow loop (docs/training-equivalence.md): no update at step 1, its lr per step
        self.official_loop = bool(train.get("official_loop", True))
        delay = train.get("encoder_delay")
        if delay and world_size > 1:   # DDP fixes the set of trainable parameters when it wraps the network
            raise OptionError("train.encoder_delay cannot be used with several processes (DDP); leave it unset")
        self.encoder_frozen_until = int(float(delay) * int(train.get("niter") or 0)) if delay else 0
        self._deferred_setup = None
        self.optimizers["G"] = self._make_optimizer(train)
        self.schedulers["G"] = make_scheduler(self.optimizers["G"], train, official=self.official_loop)

    @classmethod
    def build_network(cls, opt, checkpoint=None):
        return build_generator(opt, checkpoint)

    def networks(self):
        return {"G": self.generator}

    # -- setup ---------------------------------------------------------------------------------------------------
    def _make_optimizer(self, train):
        enc, flow = [], []
        for name, p in self.net.named_parameters():
            if p.requires_grad:
                (enc if name.startswith("RRDB.") else flow).append(p)
        lr = float(train["lr_G"])
        wd = float(train.get("weight_decay_G") or 0.0)
        wd_enc = train.get("weight_decay_encoder")
        groups = [{"params": flow, "lr": lr, "weight_decay": wd},
                  {"params": enc, "lr": float(train.get("lr_RRDB") or lr),
                   "weight_decay": float(wd if wd_enc is None else wd_enc)}]
        # The official code stored beta1/beta2 as unknown param-group keys, so Adam ran with (0.9, 0.999) whatever
        # the YAML says; train.use_config_betas takes beta1/beta2 instead.
        betas = (0.9, 0.999)
        if train.get("use_config_betas"):
            betas = (float(train.get("beta1", 0.9)), float(train.get("beta2", 0.999)))
        return torch.optim.Adam([g for g in groups if g["params"]], betas=betas)

    def load_pretrained(self, path, submodule=None, strict=True):
        state = read_state_dict(path)
        target = self.net
        if submodule:
            prefix = f"{submodule}."
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            target = getattr(self.net, submodule)
        for n in load_weights(target, state, strict=strict, source=f"pretrain_model_G '{path}'"):
            log.info(n)

    def setup(self, batch):
        """Data-initialise every ActNorm with one training-mode forward; rank 0's values are broadcast.

        With the official loop, step 1 makes no update and the ActNorms initialise on the batch of the first update,
        as the official trainer does: in that update's own forward (one process), or by this forward on that batch
        before it (DDP: so that rank 0's values can be broadcast first)."""
        if self.official_loop and self.schedulers["G"].last_epoch == 0 and self._deferred_setup is None:
            self._deferred_setup = self.world_size > 1
            return
        self._init_actnorm(batch)

    def _init_actnorm(self, batch):
        self.net.train()
        with torch.no_grad():
            gt, lq, aux = self._unpack(batch)
            self.net.nll(gt, lq, aux, add_gt_noise=self.add_gt_noise)
        if self.world_size > 1:
            import torch.distributed as dist
            for p in self.net.parameters():
                dist.broadcast(p.data, src=0)

    def wrap_ddp(self):
        if self.world_size > 1 and self.ddp is None:
            from torch.nn.parallel import DistributedDataParallel as DDP
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Only what runs is built (models/never_run.py), so every parameter gets a gradient in every step.
            self.ddp = DDP(self.net, device_ids=ids, find_unused_parameters=False)

    # -- one step ------------------------------------------------------------------------------------------------
    def _unpack(self, batch):
        gt = batch["GT"].to(self.device, non_blocking=True)
        lq = batch["LQ"].to(self.device, non_blocking=True)
        aux = batch.get("AUX")
        return gt, lq, (aux.to(self.device, non_blocking=True) if aux is not None else None)

    def _forward_loss(self, gt, lq, aux):
        prior_from_gt = self.variant.prior == "colormap" and random.random() < self.train_gt_ratio
        net = self.ddp if self.ddp is not None else self.net
        if self.ddp is not None:
            out = self.ddp(gt=gt, lq=lq, aux=aux, add_gt_noise=self.add_gt_noise, prior_from_gt=prior_from_gt)
        else:
            out = net.nll(gt, lq, aux, add_gt_noise=self.add_gt_noise, prior_from_gt=prior_from_gt)
        nll = out["nll"].mean()
        loss = self.weight_fl * nll
        if prior_from_gt and "color_map" in out["cond"] and self.ddp is not None:
            # LLFlow's colour head is not used when the prior mean comes from the GT; under DDP a zero-weighted term
            # keeps it in the graph (zero gradient), so DDP runs without find_unused_parameters. In one process it
            # gets no gradient, so Adam leaves it alone in that step, as in the official trainer.
            loss = loss + 0.0 * out["cond"]["color_map"].sum()
        logs = {"nll": nll.detach()}
        if self.weight_l1 > 0:
            sr = self.net.reverse(lq, aux, heat=0.0, cond=out["cond"])
            l1 = F.l1_loss(sr.clamp(0, 1), gt)
            loss = loss + self.weight_l1 * l1
            logs["l1"] = l1.detach()
        return loss, logs

    def optimize(self, batch) -> dict:
        """One optimisation step. Non-finite loss or gradients skip the step (logged); too many in a row raise."""
        sched = self.schedulers["G"]
        if self.official_loop and sched.last_epoch == 0:
            # The official train.py consumes the first batch without an update (`if current_step < 2`).
            sched.step()
            return {"lr": self.optimizers["G"].param_groups[0]["lr"]}
        if self._deferred_setup:
            self._init_actnorm(batch)
        self._deferred_setup = False
        self._set_encoder_trainable(sched.last_epoch + 1)
        self.net.train()
        gt, lq, aux = self._unpack(batch)
        opt = self.optimizers["G"]
        opt.zero_grad(set_to_none=True)
        with self.autocast():
            loss, logs = self._forward_loss(gt, lq, aux)
        logs.update(self.step_optimizer(loss, "G", self.net.parameters()))
        self.schedulers["G"].step()
        logs["lr"] = opt.param_groups[0]["lr"]
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in logs.items()}

    def _set_encoder_trainable(self, step: int):
        """train.encoder_delay: the encoder is frozen while step <= int(delay * niter), what the official
        train_RRDB_delay was meant to do (there it never takes effect)."""
        if not self.encoder_frozen_until:
            return
        trainable = step > self.encoder_frozen_until
        for name, p in self.net.named_parameters():
            if name.startswith("RRDB."):
                p.requires_grad_(trainable)

    # -- state ---------------------------------------------------------------------------------------------------
    def restore_training_state(self, state: dict):
        super().restore_training_state(state)
        for a in self.net.modules():  # loaded ActNorms must not re-initialise
            if hasattr(a, "inited"):
                a.inited = True
