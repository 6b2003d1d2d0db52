"""Typed checks of option values, so a wrong value is an error naming its key instead of a Python conversion error.

A key's rule is the explicit one in :data:`RULES` (dotted key, `*` for a dataset phase), else it is inferred from the
schema default: a bool default wants a bool, a str default a str, a number default a finite number. Keys without
either (default None and no rule) are not checked here. Integral floats (`!!float 5e3`, as the official files write
step counts) are accepted where an integer is wanted and converted.
"""
from __future__ import annotations

import math

from utils.errors import OptionError
from utils.metrics import PSNR_MODES, SSIM_PROTOCOLS


def _describe(value) -> str:
    text = repr(value)
    return f"{text[:60]}{'...' if len(text) > 60 else ''} ({type(value).__name__})"


class Num:
    """An int (`integer=True`) or a finite real number, optionally bounded; `None` allowed unless `required`."""

    def __init__(self, integer: bool = False, min=None, max=None, min_open: bool = False, max_open: bool = False):
        self.integer, self.min, self.max, self.min_open, self.max_open = integer, min, max, min_open, max_open

    def what(self) -> str:
        kind = "an integer" if self.integer else "a number"
        lo = None if self.min is None else f"{'>' if self.min_open else '>='} {self.min}"
        hi = None if self.max is None else f"{'<' if self.max_open else '<='} {self.max}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        return f"{kind} {bounds}".strip()

    def __call__(self, key: str, value):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok and self.integer:
            ok = float(value).is_integer()
            value = int(value) if ok else value
        if ok and self.min is not None:
            ok = value > self.min if self.min_open else value >= self.min
        if ok and self.max is not None:
            ok = value < self.max if self.max_open else value <= self.max
        if not ok:
            raise OptionError(f"option '{key}' must be {self.what()}, got {_describe(value)}")
        return value


class Bool:
    def __call__(self, key: str, value):
        if not isinstance(value, bool):
            raise OptionError(f"option '{key}' must be true or false, got {_describe(value)}")
        return value


class Str:
    def __init__(self, choices=None):
        self.choices = tuple(choices) if choices else None

    def __call__(self, key: str, value):
        if not isinstance(value, str) or (self.choices and value not in self.choices):
            want = f"one of {', '.join(self.choices)}" if self.choices else "a string"
            raise OptionError(f"option '{key}' must be {want}, got {_describe(value)}")
        return value


class ListOf:
    """A list whose items pass `item`; `length` fixes its size."""

    def __init__(self, item, length: int | None = None):
        self.item, self.length = item, length

    def __call__(self, key: str, value):
        if not isinstance(value, (list, tuple)) or (self.length is not None and len(value) != self.length):
            size = f"of {self.length} " if self.length is not None else "of "
            want = self.item.what() if hasattr(self.item, "what") else "values"
            raise OptionError(f"option '{key}' must be a list {size}items ({want}), got {_describe(value)}")
        return [self.item(f"{key}[{i}]", v) for i, v in enumerate(value)]


class Either:
    """The first rule that accepts the value (e.g. a bool or a path string)."""

    def __init__(self, *rules, what: str):
        self.rules, self.text = rules, what

    def __call__(self, key: str, value):
        for r in self.rules:
            try:
                return r(key, value)
            except OptionError:
                pass
        raise OptionError(f"option '{key}' must be {self.text}, got {_describe(value)}")


POS_INT = Num(integer=True, min=1)
NONNEG_INT = Num(integer=True, min=0)
POS = Num(min=0, min_open=True)
NONNEG = Num(min=0)
PROB = Num(min=0, max=1)
INT = Num(integer=True)

# Rules where the default says too little (None, or an int default that takes fractions) or a range matters.
RULES = {
    "heat": NONNEG, "val.heat": NONNEG, "test.heat": NONNEG, "scale": POS_INT,
    "network_G.in_nc": POS_INT, "network_G.out_nc": POS_INT, "network_G.nf": POS_INT, "network_G.nb": POS_INT,
    "network_G.gc": POS_INT, "network_G.scale": POS_INT,
    "network_G.flow.K": POS_INT, "network_G.flow.L": POS_INT, "network_G.flow.hidden_channels": POS_INT,
    "network_G.flow.conditionInFeaDim": POS_INT, "network_G.flow.additionalFlowNoAffine": NONNEG_INT,
    "network_G.flow.stackRRDB.blocks": ListOf(NONNEG_INT),
    "network_G.flow.CondAffineSeparatedAndCond.hidden_channels": POS_INT,
    "datasets.*.batch_size": POS_INT, "datasets.*.n_workers": NONNEG_INT, "datasets.*.GT_size": POS_INT,
    "datasets.*.center_crop_hr_size": POS_INT, "datasets.*.quant": POS_INT, "datasets.*.n_max": POS_INT,
    "datasets.*.holdout": NONNEG_INT, "datasets.*.noise_prob": PROB, "datasets.*.noise_level": NONNEG,
    "datasets.*.resize_to": ListOf(POS_INT, length=2), "datasets.*.seed": INT,
    "datasets.*.split": Str(("train", "test")), "datasets.*.log_low": Bool(), "datasets.*.use_shuffle": Bool(),
    "datasets.*.concat_histeq": Bool(), "datasets.*.histeq_as_input": Bool(),
    "train.niter": POS_INT, "train.val_freq": NONNEG_INT, "train.manual_seed": INT, "train.warmup_iter": INT,
    "train.lr_G": POS, "train.weight_decay_G": NONNEG, "train.weight_decay_encoder": NONNEG,
    "train.beta1": Num(min=0, max=1, max_open=True), "train.beta2": Num(min=0, max=1, max_open=True),
    "train.lr_gamma": POS, "train.lr_steps": ListOf(NONNEG_INT), "train.lr_steps_rel": ListOf(PROB),
    "train.restarts": ListOf(NONNEG_INT), "train.restarts_rel": ListOf(PROB), "train.restart_weights": ListOf(NONNEG),
    "train.lr_steps_inverse": ListOf(NONNEG_INT), "train.lr_steps_inverse_rel": ListOf(PROB),
    "train.encoder_delay": PROB, "train.official_loop": Bool(), "train.use_config_betas": Bool(),
    "train.weight_l1": NONNEG, "train.weight_fl": NONNEG, "train.max_nonfinite": NONNEG_INT,
    "train.grad_clip": POS, "train.flow_warm_up_iter": INT, "train.threads": POS_INT,
    "train.ema_decay": Num(min=0, max=1, min_open=True, max_open=True),
    "train.lr_D": POS, "train.weight_gan": NONNEG, "train.channels_last": Bool(), "train.max_minutes": POS,
    "train.activation_checkpointing": Either(Bool(), Str(("full", "selective")),
                                             what="true (full), 'selective' or false"),
    "train.amp_dtype": Str(("bf16", "fp16", "fp32")), "train.invertible_backprop": Bool(),
    "network_G.drbn.width": POS_INT, "network_G.drbn.growth": POS_INT, "network_G.drbn.n_layers": POS_INT,
    "network_G.drbn.recurrences": POS_INT,
    "network_G.n2ldiff.dim": POS_INT, "network_G.n2ldiff.dim_mults": ListOf(POS_INT),
    "network_G.n2ldiff.in_dim": POS_INT, "network_G.n2ldiff.out_dim": POS_INT,
    "network_G.n2ldiff.cond_in_dim": POS_INT, "network_G.n2ldiff.timesteps": POS_INT,
    "network_G.n2ldiff.sample_seed": INT, "network_G.n2ldiff.sample_steps": POS_INT,
    "network_G.n2ldiff.on_cond": Str(),
    **{f"network_G.n2ldiff.{k}": Bool() for k in (
        "use_wn", "cond_use_wn", "use_instance_norm", "weight_init", "stronger_cond", "use_attn", "clip_denoised",
        "use_center", "use_center_sampler", "cond_on_res")},
    "val.max_images": POS_INT, "val.n_sample": POS_INT, "val.ssim": Str(SSIM_PROTOCOLS), "val.psnr": Str(PSNR_MODES),
    "logger.print_freq": POS_INT, "logger.save_checkpoint_freq": NONNEG_INT, "logger.keep_checkpoints": NONNEG_INT,
    "inference.tile": NONNEG_INT, "inference.max_memory": Num(min=0, min_open=True),
    "inference.pad_mode": Str(("reflect", "edge", "symmetric", "constant")),
    "path.resume_state": Either(Bool(), Str(), what="true, false, 'auto' or a training-state path"),
}


def rule_for(pattern: str, default):
    """The rule of a dotted key pattern: RULES, else one inferred from the schema default (None when neither)."""
    if pattern in RULES:
        return RULES[pattern]
    if isinstance(default, bool):
        return Bool()
    if isinstance(default, (int, float)):
        return Num()
    if isinstance(default, str):
        return Str()
    return None


def check_value(key: str, pattern: str, value, default):
    """`value` checked (and integral floats made ints) for `key`; None is always accepted (not set)."""
    if value is None:
        return None
    rule = rule_for(pattern, default)
    return rule(key, value) if rule is not None else value
