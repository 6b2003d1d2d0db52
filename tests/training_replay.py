"""Replaying the official LLFlow trainer's goldens (tests/golden_training/llflow, bench/official_training_golden.py)
on our side: the batches rebuilt from their uint8 crops, and our FlowModel stepped as engine/trainer.py steps it."""
from __future__ import annotations

import random
from pathlib import Path

import torch

GOLDEN = Path(__file__).resolve().parent / "golden_training" / "llflow"
SEED = 0


def rebuild_batch(crops: dict, log_low: bool = True) -> dict:
    """The LoL_Dataset tensors of uint8 crops {'hr', 'lr', 'his'} (N, H, W, 3): ToTensor, log input, histeq concat."""
    def to_tensor(a):   # torchvision ToTensor on uint8 HWC arrays
        return a.permute(0, 3, 1, 2).contiguous().to(torch.float32).div(255)
    lr = to_tensor(crops["lr"])
    if log_low:
        lr = torch.log(torch.clamp(lr + 1e-3, min=1e-3))
    return {"LQ": torch.cat([lr, to_tensor(crops["his"])], dim=1), "GT": to_tensor(crops["hr"])}


def lr_digest(lrs) -> str:
    """sha256 of a learning-rate sequence [[lr of each group] per step], as float64 bytes: exact equality, small."""
    import hashlib
    import struct
    h = hashlib.sha256()
    for row in lrs:
        h.update(struct.pack(f"<{len(row)}d", *row))
    return h.hexdigest()


def batch_at(batches: list, step: int) -> dict:
    """The batch of (1-based) training step `step`: the recorded batches in order, cycled."""
    return batches[(step - 1) % len(batches)]


def replay(overrides=(), steps: int = 40, golden: Path = GOLDEN) -> dict:
    """Our FlowModel on the golden config (+ `overrides`), weights and batches, for `steps` steps, called as the
    trainer calls it (setup with the first batch of a fresh run, then optimize per batch). Per step: the loss (None
    when no update), {name: (lr, weight_decay, betas)} before the step, the names with a gradient; and the
    gradients of the first update."""
    from models.build import model_class
    from options.options import load_options
    opt = load_options(golden / "config.yml", list(overrides), is_train=True)
    model = model_class(opt["model"])(opt, torch.device("cpu"))
    state = torch.load(golden / "weights.pt", weights_only=True)
    model.net.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    batches = [rebuild_batch(b) for b in torch.load(golden / "batches.pt", weights_only=True)]
    names = {id(p): n for n, p in model.net.named_parameters()}
    random.seed(SEED)
    out = {"loss": [], "hyper": [], "grad": [], "first_grads": None}
    for step in range(1, steps + 1):
        batch = batch_at(batches, step)
        if step == 1:
            model.setup(batch)
        hyper = {}
        for g in model.optimizers["G"].param_groups:
            for p in g["params"]:
                hyper[names[id(p)]] = (g["lr"], g["weight_decay"], tuple(g["betas"]))
        logs = model.optimize(batch)
        with_grad = {n for n, p in model.net.named_parameters() if p.grad is not None}
        out["loss"].append(logs.get("nll"))
        out["hyper"].append(hyper)
        out["grad"].append(with_grad)
        if with_grad and out["first_grads"] is None:
            out["first_grads"] = {n: p.grad.detach().clone() for n, p in model.net.named_parameters()
                                  if p.grad is not None}
    return out
