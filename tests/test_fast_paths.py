"""Speed rewrites checked against the plain formulas they replace: MDTA with the attention folded into the output
projection, the couplings' shared conditioning convolution, MSFormer's convolution of repeated maps, and the
process allocator setting."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from models.networks.encoders.msformer import _conv_of_copies
from models.networks.encoders.restormer_blocks import Attention, Downsample, Upsample
from models.networks.flow.couplings.llflow import after_first_conv, cond_first_convs, z_part_first_conv
from models.networks.flow.ops import affine_subnet
from tests.flow_checks import perturb_

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def mdta_reference(m: Attention, x):
    """Restormer's MDTA written out: normalise q, k over HW, softmax(q k^T * t) v per head, 1x1 projection."""
    b, c, h, w = x.shape
    q, k, v = m.qkv_dwconv(m.qkv(x)).chunk(3, dim=1)
    shape = (b, m.num_heads, c // m.num_heads, h * w)
    q, k, v = (t.reshape(shape) for t in (q, k, v))
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = torch.softmax(q @ k.transpose(-2, -1) * m.temperature, dim=-1)
    return m.project_out((attn @ v).reshape(b, c, h, w))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_mdta_fold_equals_reference(bias, channels_last):
    torch.manual_seed(0)
    m = perturb_(Attention(12, 3, bias=bias), std=0.3)
    with torch.no_grad():
        m.temperature.copy_(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1))
    x = torch.randn(2, 12, 7, 9)
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        got, ref = m(x), mdta_reference(m, x)
    assert got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_mdta_fold_gradients_equal_reference():
    torch.manual_seed(1)
    m = perturb_(Attention(8, 2), std=0.3)
    x = torch.randn(2, 8, 5, 6, requires_grad=True)
    grads = []
    for fn in (m, lambda t: mdta_reference(m, t)):
        m.zero_grad()
        x.grad = None
        (fn(x) ** 2).sum().backward()
        grads.append([x.grad.clone()] + [p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mdta_zero_input_stays_finite():
    # F.normalize clamps |q| at 1e-12; the Gram-matrix form must do the same (no 0/0).
    m = Attention(4, 2)
    out = m(torch.zeros(1, 4, 3, 3))
    assert torch.isfinite(out).all()


def test_shared_conditioning_conv_equals_separate_convs():
    torch.manual_seed(2)
    ft, z1 = torch.randn(2, 7, 5, 6), torch.randn(2, 3, 5, 6)
    inj = perturb_(affine_subnet(7, 8, 16, k_first=1, k_hidden=3, k_last=1), std=0.2)
    aff = perturb_(affine_subnet(3 + 7, 6, 16, k_first=1, k_hidden=3, k_last=1), std=0.2)
    h_inj, h_aff = cond_first_convs(ft, [(inj, 0), (aff, 3)])
    with torch.no_grad():
        torch.testing.assert_close(after_first_conv(inj, h_inj), inj(ft), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(after_first_conv(aff, z_part_first_conv(aff, z1, h_aff)),
                                   aff(torch.cat([z1, ft], 1)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("resample,ch,copies", [(Upsample, 12, 2), (Downsample, 1, 8)])
def test_conv_of_copies_equals_conv_of_repeat(resample, ch, copies):
    torch.manual_seed(3)
    m = resample(ch * copies)
    u = torch.randn(2, ch, 6, 8)
    with torch.no_grad():
        torch.testing.assert_close(_conv_of_copies(m, u, copies), m(u.repeat(1, copies, 1, 1)),
                                   rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="copies"):
        _conv_of_copies(m, u, copies + 1)


_FAULTS = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {root!r})
    from utils.runtime import keep_freed_memory
    applied = keep_freed_memory()
    import torch
    x = torch.empty(64 * 2 ** 20 // 4).fill_(1.0)     # 64 MiB: above glibc's largest mmap threshold
    del x
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    y = torch.empty(48 * 2 ** 20 // 4).fill_(2.0)     # smaller: fits the freed block whatever its alignment
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc setting")
@pytest.mark.parametrize("opt_out", [False, True])
def test_keep_freed_memory_reuses_large_blocks(opt_out):
    env = {"LOWLIGHT_SYSTEM_MALLOC": "1"} if opt_out else {}
    r = subprocess.run([sys.executable, "-c", _FAULTS.format(root=str(ROOT))], capture_output=True, text=True,
                       env={**__import__("os").environ, **env}, check=True)
    applied, faults = r.stdout.split()
    if not opt_out and applied != "True":
        pytest.skip("not glibc: mallopt unavailable")
    pages = 48 * 2 ** 20 // 4096
    if opt_out:
        assert applied == "False" and int(faults) > pages // 2      # a fresh mapping, faulted in page by page
    else:
        assert int(faults) < pages // 20                            # the freed block was reused


def test_mdta_half_precision_does_not_overflow():
    # The Gram matrix sums over all pixels before normalisation: 128x128 pixels of magnitude ~3 exceed float16's
    # 65504, so it must be formed in float32 (the plain formula normalises first and never gets near the limit).
    torch.manual_seed(4)
    m = perturb_(Attention(4, 2), std=0.3)
    with torch.no_grad():
        m.qkv.weight.copy_(torch.eye(4).repeat(3, 1).view(12, 4, 1, 1))     # q = k = v = x
        m.qkv_dwconv.weight.zero_()
        m.qkv_dwconv.weight[:, :, 1, 1] = 1.0
    x = 3.0 + 0.1 * torch.randn(1, 4, 128, 128)
    with torch.no_grad():
        ref = mdta_reference(m, x)
        try:
            got = m.half()(x.half()).float()
        except RuntimeError as e:   # a CPU build without float16 convolutions
            pytest.skip(f"float16 conv unavailable on CPU: {e}")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=2e-2)
