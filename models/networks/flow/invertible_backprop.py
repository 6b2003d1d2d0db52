"""Memory-saving backward pass for the flow (``train.invertible_backprop: true``).

A flow step is invertible, so its input can be recomputed from its output: :class:`InvertibleStepFunction` runs the
step without recording a graph and keeps only the step's output and the conditioning tensor. In the backward pass
it reconstructs the input with the step's reverse pass, re-runs the step forward under ``enable_grad`` and
back-propagates through that one step. The activations of the coupling subnetworks (the hidden-width maps, most of a
flow's training memory) are therefore never stored for more than one step at a time; the price is one reverse and
one forward pass of every step more in the backward (the same trade as activation checkpointing, without storing
the step inputs).

A step may expose ``conditioning(ft)`` (what its coupling computes from the conditioning alone: the injector's
scale and shift and the ft part of the subnets' first convolutions, most of a step's FLOPs) and accept it back as
``cond=``: the backward then computes it once, with the graph, and uses a detached copy for the reconstruction, so
the extra cost is about one forward of each step rather than two.

The gradients are those of the stored-activation graph up to float32 rounding of the reconstructed input (tested
for every coupling in the registry). Steps must be deterministic given (input, conditioning, parameters): true of
every registered step and coupling (no dropout, no sampling inside a step). ActNorm's data-dependent
initialisation happens in the first forward, before anything is reconstructed.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class InvertibleStepFunction(torch.autograd.Function):
    """(z, logdet) -> step(z, logdet, ft), storing only the output z and ft (see the module docstring)."""

    @staticmethod
    def forward(ctx, step: nn.Module, z, logdet, ft, *params):
        dev = z.device.type
        ctx.step = step
        ctx.autocast = (torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev), dev)
        with torch.no_grad():
            z_out, logdet_out = step(z, logdet, ft)
        ctx.ft_needs_grad = ft is not None and ft.requires_grad
        ctx.save_for_backward(z_out, ft)
        ctx.logdet_shape = logdet.shape
        return z_out, logdet_out

    @staticmethod
    def backward(ctx, grad_z, grad_logdet):
        z_out, ft = ctx.saved_tensors
        step = ctx.step
        enabled, dtype, dev = ctx.autocast
        params = [p for p in step.parameters() if p.requires_grad]
        with torch.autocast(dev, dtype=dtype, enabled=enabled):
            ft_in = ft.detach().requires_grad_(True) if ctx.ft_needs_grad else ft
            with torch.enable_grad():
                cond = step.conditioning(ft_in) if hasattr(step, "conditioning") else None
            kw_re, kw = ({}, {}) if cond is None else ({"cond": _detached(cond)}, {"cond": cond})
            with torch.no_grad():
                zero = z_out.new_zeros(ctx.logdet_shape)
                z_in, _ = step(z_out, zero, ft, reverse=True, **kw_re)
            with torch.enable_grad():
                z_in = z_in.detach().requires_grad_(True)
                z_re, dlogdet = step(z_in, z_out.new_zeros(ctx.logdet_shape), ft_in, **kw)
        inputs = [z_in] + ([ft_in] if ctx.ft_needs_grad else []) + params
        outs, grads_out = [z_re], [grad_z]
        if grad_logdet is not None and dlogdet.requires_grad:
            outs.append(dlogdet)
            grads_out.append(grad_logdet)
        grads = list(torch.autograd.grad(outs, inputs, grads_out, allow_unused=True))
        g_z = grads.pop(0)
        g_ft = grads.pop(0) if ctx.ft_needs_grad else None
        # params the step did not use get None; the engine treats that as a zero gradient
        return (None, g_z, grad_logdet, g_ft, *grads)


def _detached(x):
    if isinstance(x, (tuple, list)):
        return type(x)(_detached(v) for v in x)
    return x.detach() if torch.is_tensor(x) else x


def run_step(step: nn.Module, z, logdet, ft):
    """step(z, logdet, ft) through :class:`InvertibleStepFunction` (forward direction only)."""
    params = [p for p in step.parameters() if p.requires_grad]
    return InvertibleStepFunction.apply(step, z, logdet, ft, *params)


def enable_invertible_backprop(module: nn.Module, on: bool = True) -> int:
    """Switch the invertible backward pass on (or off) for every flow under `module`; returns how many flows."""
    count = 0
    for m in module.modules():
        if hasattr(m, "invertible_backprop"):
            m.invertible_backprop = bool(on)
            count += 1
    return count
