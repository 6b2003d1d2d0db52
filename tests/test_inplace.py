"""models/inplace.py: results written into intermediates only where autograd is not recording and the dtype and shape
allow it, with the out-of-place values; the blocks that use it give bit-identical outputs with and without autograd
and leave their inputs untouched."""
import pytest
import torch

from models.networks.encoders.restormer_blocks import TransformerBlock
from models.networks.encoders.rrdb import RRDB
from models.inplace import add_to, mul_into


def test_written_in_place_only_without_autograd():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 3, 4, 5, generator=g), torch.randn(2, 3, 4, 5, generator=g)
    want_add, want_mul = x + y, y * x
    with torch.no_grad():
        y1 = y.clone()
        assert add_to(y1, x) is y1 and torch.equal(y1, want_add)
        y2 = y.clone()
        assert mul_into(y2, x) is y2 and torch.equal(y2, want_mul)
        y3 = y.clone()
        assert mul_into(y3, 0.2) is y3 and torch.equal(y3, y * 0.2)
    y4 = y.clone()
    out = add_to(y4, x)                       # autograd recording: a new tensor, y4 untouched
    assert out is not y4 and torch.equal(y4, y) and torch.equal(out, want_add)


def test_not_written_when_the_result_is_wider_or_larger():
    x = torch.randn(2, 3, 4, 5)
    with torch.no_grad():
        y = torch.randn(2, 3, 4, 5).bfloat16()      # bf16 + fp32 is fp32: never rounded into the bf16 tensor
        out = add_to(y, x)
        assert out.dtype == torch.float32 and out is not y and torch.equal(out, x + y)
        small = torch.randn(1, 3, 1, 1)              # broadcasting to a bigger shape cannot be written in place
        out = mul_into(small, x)
        assert out.shape == x.shape and torch.equal(out, small * x)


@pytest.mark.parametrize("make", [lambda: TransformerBlock(16, 2, layernorm_bias=False),
                                  lambda: TransformerBlock(16, 2, layernorm_bias=True), lambda: RRDB(16, 8)])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_blocks_bit_identical_with_and_without_autograd(make, layout):
    torch.manual_seed(0)
    block = make().to(memory_format=layout)
    x = torch.randn(1, 16, 12, 10).contiguous(memory_format=layout)
    ref = block(x).detach()
    keep = x.clone()
    with torch.inference_mode():
        out = block(x)
    assert torch.equal(out, ref)
    assert torch.equal(x, keep)                          # the input is never written
