"""The contract between a trainable method and the engine (engine/trainer.py, engine/evaluate.py).

A method is a subclass of :class:`BaseModel` registered with ``@MODEL_REGISTRY.register('Name')``; the config's
``model: Name`` selects it. The engine only ever calls what is defined here:

- ``build_network(opt, checkpoint)`` (classmethod): the network that enhances, for test scripts and export;
- ``networks()``: every network a checkpoint holds (``{'G': generator, 'D': discriminator, ...}``), saved as
  ``models/<step>_<key>.pth``; ``'G'`` is the enhancing network and follows the official state-dict layout;
- ``setup(batch)``: once, on the first batch of a fresh run (e.g. data-dependent initialisation);
- ``optimize(batch) -> logs``: one optimisation step (losses, optimisers, schedulers), returning floats;
- ``eval_network()``: the network validation and testing run (the generator unless a subclass says otherwise);
- ``training_state()`` / ``restore_training_state(state)``: everything besides the weights that resume needs.

An enhancing network exposes ``pad_multiple`` (int), ``aux_input`` (None or a data.preprocess aux kind),
optionally ``min_size`` (smallest input side it takes; smaller images are padded up to it) and ``uses_heat``
(False when the output does not depend on ``heat``: a non-zero heat is then refused), and
``enhance(lq, aux=None, heat=0.0) -> image tensor``; engine/inference.py drives it, whatever the method
(optionally ``compile_targets()``: the submodules that `inference.compile` compiles; default the whole network).
Optimisers and schedulers live in ``self.optimizers`` / ``self.schedulers`` (dicts keyed by name) so that their
states are saved and restored here, as are the RNG states, the non-finite-step counters and the GradScaler.

Mixed precision (``train.amp_dtype: bf16 | fp16``, models/precision.py) is set up here for every method: a subclass
runs its losses inside ``with self.autocast():`` and passes ``self.scaler`` to :meth:`step_optimizer` (the scaler is
enabled for fp16 only; bf16 has float32's exponent range and needs no loss scaling). fp16 needs CUDA. The legacy
``train.use_amp: true`` means fp16 on CUDA and is ignored on a CPU.
"""
from __future__ import annotations

import logging
import random

import numpy as np
import torch
import torch.nn as nn

from utils.errors import NonFiniteError, OptionError
from ..checkpoint import load_weights
from ..precision import autocast, resolve_dtype

log = logging.getLogger("lowlight_flow")


class BaseModel:
    """Base class of every trainable method; see the module docstring for the contract."""

    #: log keys shown on the tqdm bar, in order (the first one present is also recorded in the history)
    progress_keys: tuple = ("loss",)
    #: whether optimize() needs reference images (batch['GT']); unpaired training data is refused when it does
    needs_pairs: bool = True

    def __init__(self, opt: dict, device: torch.device, rank: int = 0, world_size: int = 1):
        self.opt, self.device, self.rank, self.world_size = opt, device, rank, world_size
        train = opt.get("train") or {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, object] = {}
        self.grad_clip = train.get("grad_clip")
        self.max_nonfinite = int(train.get("max_nonfinite") or 20)
        self.nonfinite_run = 0
        self.skipped_steps = 0
        self.ema = None  # torch.optim.swa_utils.AveragedModel of networks()['G'] when train.ema_decay is set
        amp = train.get("amp_dtype")
        if amp in (None, "", "fp32") and train.get("use_amp") and device.type == "cuda":
            amp = "fp16"
        self.amp_dtype = resolve_dtype(amp, device, "train.amp_dtype")
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

    def autocast(self):
        """The training forward's autocast context for `train.amp_dtype` (a no-op for float32)."""
        return autocast(self.device.type, self.amp_dtype)

    # -- to implement --------------------------------------------------------------------------------------------
    @classmethod
    def build_network(cls, opt: dict, checkpoint: str | None = None) -> tuple[nn.Module, list[str]]:
        """(enhancing network, notes) built from `opt`, with `checkpoint`'s weights when given."""
        raise NotImplementedError

    def networks(self) -> dict[str, nn.Module]:
        raise NotImplementedError

    def optimize(self, batch: dict) -> dict:
        raise NotImplementedError

    # -- optional hooks ------------------------------------------------------------------------------------------
    def setup(self, batch: dict) -> None:
        """Called once with the first batch of a fresh (not resumed, not pretrained) run."""

    def wrap_ddp(self) -> None:
        """Wrap trainable networks for DistributedDataParallel (called before every step; must be idempotent)."""

    def eval_network(self) -> nn.Module:
        """What validation and export run: the EMA weights when EMA is on (overrides must keep that rule)."""
        return self.ema.module if self.ema is not None else self.networks()["G"]

    # -- EMA of the generator's weights --------------------------------------------------------------------------
    def enable_ema(self, decay: float) -> None:
        """Keep an exponential moving average of networks()['G'] (parameters and buffers), updated after each step."""
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
        if not 0.0 < float(decay) < 1.0:
            raise OptionError(f"train.ema_decay must be in (0, 1), got {decay}")
        self.ema = AveragedModel(self.networks()["G"], multi_avg_fn=get_ema_multi_avg_fn(float(decay)),
                                 use_buffers=True)
        self.ema.eval().requires_grad_(False)

    def update_ema(self) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.networks()["G"])

    def all_networks(self) -> dict[str, nn.Module]:
        """networks() plus the EMA copy as 'G_ema': everything a checkpoint saves and a resume loads."""
        nets = dict(self.networks())
        if self.ema is not None:
            nets["G_ema"] = self.ema.module
        return nets

    @property
    def net(self) -> nn.Module:
        return self.networks()["G"]

    def describe(self) -> str:
        parts = [f"{k} {sum(p.numel() for p in n.parameters()) / 1e6:.3f} M" for k, n in self.networks().items()]
        return f"{type(self).__name__}: " + ", ".join(parts) + " parameters"

    def load_network_state(self, key: str, state: dict, source: str) -> None:
        """Strictly load `state` into network `key` of all_networks() (resume)."""
        for n in load_weights(self.all_networks()[key], state, strict=True, source=source):
            log.info(n)

    # -- shared step machinery -----------------------------------------------------------------------------------
    def step_optimizer(self, loss: torch.Tensor, name: str, params, scaler="default") -> dict:
        """backward + clip + step for optimiser `name`, guarded against non-finite losses and gradients.

        `scaler`: a GradScaler, None for none, or by default ``self.scaler`` when it is enabled (fp16).

        A non-finite loss or gradient norm skips the step (logged); more than `train.max_nonfinite` in a row raise
        :class:`NonFiniteError`. Returns logs with `grad_norm` and `skipped`.
        """
        opt = self.optimizers[name]
        if isinstance(scaler, str):
            scaler = self.scaler if self.scaler.is_enabled() else None
        params = [p for p in params if p.requires_grad]
        finite = bool(torch.isfinite(loss))
        logs = {}
        if finite:
            (scaler.scale(loss) if scaler is not None else loss).backward()
            if scaler is not None:
                scaler.unscale_(opt)
            grads = [p.grad for p in params if p.grad is not None]
            gnorm = nn.utils.get_total_norm(grads) if grads else torch.zeros(())
            if self.grad_clip:
                nn.utils.clip_grads_with_norm_(params, float(self.grad_clip), gnorm)
            # with a GradScaler, inf gradients are the scaler's to handle
            finite = bool(torch.isfinite(gnorm)) or (scaler is not None and scaler.is_enabled())
            logs["grad_norm"] = float(gnorm)
        if finite:
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            self.nonfinite_run = 0
        else:
            opt.zero_grad(set_to_none=True)
            self.nonfinite_run += 1
            self.skipped_steps += 1
            log.warning("non-finite %s (%s): step skipped (%d in a row)",
                        "loss" if not torch.isfinite(loss) else "gradient", name, self.nonfinite_run)
            if self.nonfinite_run > self.max_nonfinite:
                raise NonFiniteError(f"{self.nonfinite_run} consecutive non-finite steps (train.max_nonfinite="
                                     f"{self.max_nonfinite}): lower the learning rate or check the data")
        logs["skipped"] = not finite
        return logs

    # -- state ---------------------------------------------------------------------------------------------------
    def training_state(self, step: int, epoch: int, batches_in_epoch: int) -> dict:
        state = {"step": step, "epoch": epoch, "batches_in_epoch": batches_in_epoch,
                 "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                 "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                 "skipped_steps": self.skipped_steps, "nonfinite_run": self.nonfinite_run,
                 "scaler": self.scaler.state_dict(),
                 "rng_torch": torch.get_rng_state(), "rng_numpy": _np_state_to_tensors(np.random.get_state()),
                 "rng_python": _py_state_to_tensors(random.getstate())}
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema_n_averaged"] = self.ema.n_averaged.detach().cpu()
        return state

    def restore_training_state(self, state: dict) -> None:
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, s in self.schedulers.items():
            s.load_state_dict(state["schedulers"][k])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.nonfinite_run = int(state.get("nonfinite_run", 0))
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng_torch"])
        np.random.set_state(_tensors_to_np_state(state["rng_numpy"]))
        random.setstate(_tensors_to_py_state(state["rng_python"]))
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        if self.ema is not None:
            if "ema_n_averaged" not in state:
                raise OptionError("train.ema_decay is set but the training state has no EMA: it was saved by a run "
                                  "without EMA; resume without train.ema_decay or start a new run")
            self.ema.n_averaged.copy_(state["ema_n_averaged"])


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
