"""Checks shared by the flow-layer tests: invertibility and log-det against an autograd Jacobian."""
from __future__ import annotations

import torch


def run(layer, z, ft, reverse):
    logdet = z.new_zeros(z.shape[0])
    if ft is None:
        return layer(z, logdet, reverse=reverse)
    return layer(z, logdet, ft, reverse=reverse)


def assert_invertible(layer, z, ft=None, atol=1e-4):
    """reverse(forward(z)) == z and the two log-dets cancel."""
    with torch.no_grad():
        y, ld_f = run(layer, z, ft, False)
        x, ld_r = run(layer, y, ft, True)
    assert (x - z).abs().max().item() < atol, f"reconstruction error {(x - z).abs().max().item():.3g}"
    assert torch.allclose(ld_f, -ld_r, rtol=1e-4, atol=atol), (ld_f, ld_r)
    return y, ld_f


def assert_logdet_matches_jacobian(layer, z, ft=None, rtol=1e-3, atol=1e-3):
    """The layer's log-det equals log|det J| of the forward map, for a single tiny sample (float64)."""
    if hasattr(layer, "double"):
        layer = layer.double()
    z = z.double()[:1]
    ft = None if ft is None else ft.double()[:1]

    def f(flat):
        y, _ = run(layer, flat.view_as(z), ft, False)
        return y.reshape(-1)

    jac = torch.autograd.functional.jacobian(f, z.reshape(-1))
    expected = torch.linalg.slogdet(jac)[1]
    with torch.no_grad():
        _, ld = run(layer, z, ft, False)
    assert torch.allclose(ld[0], expected, rtol=rtol, atol=atol), (ld[0].item(), expected.item())


def perturb_(module: torch.nn.Module, std: float = 0.05, seed: int = 0):
    """Add noise to every parameter so that no layer (zero-init convs included) is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(std * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module
