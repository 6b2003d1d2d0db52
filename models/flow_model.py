"""Training wrapper around the generator: optimiser, schedule, AMP, NaN guard, checkpoints and resume state."""
from __future__ import annotations

import logging
import random

import numpy as np
import torch
import torch.nn.functional as F

from utils.registry import MODEL_REGISTRY
from .activation_checkpointing import enable_activation_checkpointing
from .build import build_generator
from .checkpoint import load_weights, read_state_dict
from .lr_schedule import make_scheduler

log = logging.getLogger("lowlight_flow")


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite losses or gradients."""


@MODEL_REGISTRY.register("LLFlow", "UPTFlow")
class FlowModel:
    """Owns the generator (possibly DDP-wrapped), its optimiser, scheduler and GradScaler."""

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        self.opt, self.device, self.rank, self.world_size = opt, device, rank, world_size
        train = opt["train"]
        self.net, notes = build_generator(opt)
        for n in notes:
            log.info(n)
        pre = opt["path"].get("pretrain_model_G")
        if pre:
            self.load_pretrained(pre, opt["path"].get("load_submodule"), bool(opt["path"].get("strict_load", True)))
        if train.get("activation_checkpointing"):
            n = enable_activation_checkpointing(self.net.RRDB)
            log.info("activation checkpointing on %d encoder blocks", n)
        self.net.to(device)
        self.ddp = None
        self.variant = self.net.variant
        self.train_gt_ratio = float(opt.get("train_gt_ratio") or 0.0)
        add_noise = train.get("add_gt_noise")
        self.add_gt_noise = self.variant.add_gt_noise if add_noise is None else bool(add_noise)
        self.weight_fl = float(train.get("weight_fl", 1) or 0)
        self.weight_l1 = float(train.get("weight_l1", 0) or 0)
        self.grad_clip = train.get("grad_clip")
        self.max_nonfinite = int(train.get("max_nonfinite") or 20)
        self.nonfinite_run = 0
        self.skipped_steps = 0
        self.use_amp = bool(train.get("use_amp")) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.optimizer = self._make_optimizer(train)
        self.scheduler = make_scheduler(self.optimizer, train)

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
        # The official code stored beta1/beta2 as unknown param-group keys, so Adam ran with (0.9, 0.999);
        # here the configured betas are used.
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

    def init_actnorm(self, batch):
        """Data-initialise every ActNorm with one training-mode forward; rank 0's values are broadcast."""
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
            self.ddp = DDP(self.net, device_ids=ids, find_unused_parameters=True)

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
        logs = {"nll": nll.detach()}
        if self.weight_l1 > 0:
            sr = self.net.reverse(lq, aux, heat=0.0, cond=out["cond"])
            l1 = F.l1_loss(sr.clamp(0, 1), gt)
            loss = loss + self.weight_l1 * l1
            logs["l1"] = l1.detach()
        return loss, logs

    def optimize(self, batch) -> dict:
        """One optimisation step. Non-finite loss or gradients skip the step (logged); too many in a row raise."""
        self.net.train()
        gt, lq, aux = self._unpack(batch)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            loss, logs = self._forward_loss(gt, lq, aux)
        finite = bool(torch.isfinite(loss))
        if finite:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            grads = [p.grad for p in self.net.parameters() if p.grad is not None]
            gnorm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) \
                if grads else torch.zeros(())
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.grad_clip))
            finite = bool(torch.isfinite(gnorm)) or self.use_amp  # with AMP the scaler handles inf gradients
            logs["grad_norm"] = gnorm.detach()
        if finite:
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.nonfinite_run = 0
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.nonfinite_run += 1
            self.skipped_steps += 1
            log.warning("non-finite %s: step skipped (%d in a row)",
                        "loss" if not torch.isfinite(loss) else "gradient", self.nonfinite_run)
            if self.nonfinite_run > self.max_nonfinite:
                raise NonFiniteError(f"{self.nonfinite_run} consecutive non-finite steps (train.max_nonfinite="
                                     f"{self.max_nonfinite}): lower train.lr_G or check the data")
        self.scheduler.step()
        logs["skipped"] = not finite
        logs["lr"] = self.optimizer.param_groups[0]["lr"]
        return {k: (v.item() if torch.is_tensor(v) else v) for k, v in logs.items()}

    # -- state ---------------------------------------------------------------------------------------------------
    def training_state(self, step: int, epoch: int, batches_in_epoch: int) -> dict:
        state = {"step": step, "epoch": epoch, "batches_in_epoch": batches_in_epoch,
                 "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "scaler": self.scaler.state_dict(), "skipped_steps": self.skipped_steps,
                 "rng_torch": torch.get_rng_state(), "rng_numpy": _np_state_to_tensors(np.random.get_state()),
                 "rng_python": _py_state_to_tensors(random.getstate())}
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def restore_training_state(self, state: dict):
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        torch.set_rng_state(state["rng_torch"])
        np.random.set_state(_tensors_to_np_state(state["rng_numpy"]))
        random.setstate(_tensors_to_py_state(state["rng_python"]))
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])


# RNG states are stored as tensors/lists only, so `torch.load(weights_only=True)` can read the training state back.
def _np_state_to_tensors(st):
    return {"name": st[0], "keys": torch.from_numpy(st[1].astype(np.int64)), "pos": int(st[2]),
            "has_gauss": int(st[3]), "cached": float(st[4])}


def _tensors_to_np_state(d):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def _py_state_to_tensors(st):
    return {"version": st[0], "state": torch.tensor(st[1], dtype=torch.int64), "gauss": st[2]}


def _tensors_to_py_state(d):
    return (d["version"], tuple(int(x) for x in d["state"].tolist()), d["gauss"])
