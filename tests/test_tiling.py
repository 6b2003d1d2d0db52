"""Layer-wise tiled execution (models/tiling): tiles give the full-frame output of every block and every family.

Each block is checked against its own forward on maps a few tiles wide, with perturbed weights (no identity
layers), sizes that need padding (patch grid, LeWin windows) and tiles smaller than the maps, so a statistic taken
from one tile instead of the whole map (channel attention, pooling, row/column means) shows up as a large error.
The families are checked end to end on a real 400x600 LOL image with the golden weights.
"""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.image_io import read_rgb
from engine.inference import Enhancer
from models.networks.encoders import gltg_restormer, zmar_restormer
from models.networks.encoders.lewin import LeWinTransformerBlock
from models.networks.encoders.restormer_blocks import TransformerBlock
from models.networks.encoders.restormer_unet import pad_to_multiple
from models.build import build_generator
from models.networks.encoders.rrdb import ResidualDenseBlock
from models.networks.flow.couplings.aflow import AFlowStep
from models.networks.flow.couplings.cross import CrossCoupling
from models.networks.flow.couplings.llflow import CondAffineSeparatedAndCond
from models.networks.flow.couplings.snflow import SNFlowCoupling
from models.tiling import TilePlan, conv_reach, spans, tiled_execution
from models.tiling.core import map_tiles_inplace
from models.tiling.memory import estimate_peak_bytes, tile_for_budget
from options.options import load_options
from tests.flow_checks import perturb_
from utils.errors import OptionError

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {"llflow": "LLFlow", "gltg": "GLTG-AFlow", "zmar": "ZMAR-SNFlow", "upt": "UPT-Flow"}
SMALL = {"hidden_channels": 16}   # coupling keyword arguments


def _golden(g: Path, overrides=()):
    """Options and generator of a golden folder, loaded like the test scripts load a checkpoint."""
    opt = load_options(g / "config.yml", list(overrides))
    return opt, build_generator(opt, str(g / "weights.pth"))[0].eval()


def _run(module, *args, tile=16, **kwargs):
    with torch.inference_mode():
        full = module(*args, **kwargs)
        with tiled_execution(module, tile):
            tiled = module(*args, **kwargs)
    return full, tiled


def _close(full, tiled, tol=1e-5):
    full, tiled = (full[0], tiled[0]) if isinstance(full, tuple) else (full, tiled)
    scale = full.abs().max().item()
    assert tiled.shape == full.shape
    assert (tiled - full).abs().max().item() <= tol * max(1.0, scale)


def test_spans_cover_the_map_without_overlap():
    for n, size in ((400, 192), (17, 16), (16, 16), (5, 16), (1000, 64)):
        parts = spans(n, size)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a1 == b0 for (_, a1), (b0, _) in zip(parts, parts[1:]))
        assert max(b - a for a, b in parts) <= size and len(parts) == math.ceil(n / size)


@pytest.mark.parametrize("tile", [8, 6, 64])     # in place with one row of delay; rows too thin: a copy; one tile
def test_in_place_tiles_equal_the_whole_map(tile):
    torch.manual_seed(0)
    net = torch.nn.Sequential(*[torch.nn.Conv2d(4, 4, 3, padding=1) for _ in range(3)]).eval()   # reach 3
    x = torch.randn(1, 4, 40, 29)
    with torch.inference_mode():
        expected = x + net(x)
        out = map_tiles_inplace(lambda t: t + net(t), x.clone(), TilePlan(tile), conv_reach(net))
    assert (out - expected).abs().max() < 1e-5


def test_reach_is_derived_from_the_convolutions():
    assert conv_reach(ResidualDenseBlock(8, 4)) == 5                   # five 3x3 convolutions in a chain
    assert conv_reach(TransformerBlock(8, 2).ffn.dwconv) == 1


def test_restormer_block_with_global_channel_attention():
    torch.manual_seed(0)
    blk = perturb_(TransformerBlock(8, 2), std=0.3).eval()
    x = torch.randn(1, 8, 37, 45).contiguous(memory_format=torch.channels_last)
    full, tiled = _run(blk, x)
    _close(full, tiled)
    # the same block with one tile's statistics instead of the whole map's is far off: the test can tell
    with torch.inference_mode():
        local = torch.cat([blk(x[..., :, :23]), blk(x[..., :, 23:])], -1)
    assert (local - full).abs().max() > 1e-2


def test_zmar_block_with_mask_attention_on_a_padded_grid():
    torch.manual_seed(0)
    blk = perturb_(zmar_restormer.TransformerBlockWithMask(8, 2, 2.66, False, True), std=0.3).eval()
    x = torch.randn(2, 8, 34, 42)                                      # padded to 36x44 inside
    mask = (torch.rand(2, 1, 34, 42) > 0.6).float()
    attn = zmar_restormer.mask_attention_map(pad_to_multiple(mask))
    _close(*_run(blk, x, attn))


def test_gltg_block_with_intra_patch_attention():
    torch.manual_seed(0)
    blk = perturb_(gltg_restormer.TransformerBlockWithMask(8, 2, 2.66, False, True), std=0.3).eval()
    x = torch.randn(1, 8, 34, 42).contiguous(memory_format=torch.channels_last)
    gram = gltg_restormer.mask_gram(pad_to_multiple((torch.rand(1, 1, 34, 42) > 0.5).float()))
    _close(*_run(blk, x, gram))


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("size", [(23, 31), (25, 35)])                  # zero-padded to 25x35 inside, or not
def test_lewin_block_windows_and_eca(shift, size):
    torch.manual_seed(0)
    blk = perturb_(LeWinTransformerBlock(8, 2, 5, shift), std=0.3).eval()
    x, zmap = torch.randn(1, *size, 8), torch.randn(1, *size, 8)
    _close(*_run(blk, x, zmap))


def test_dense_block():
    torch.manual_seed(0)
    _close(*_run(perturb_(ResidualDenseBlock(8, 4), std=0.1).eval(), torch.randn(1, 8, 40, 33)))


@pytest.mark.parametrize("make", [
    lambda: CondAffineSeparatedAndCond(12, 6, **SMALL),
    lambda: SNFlowCoupling(12, 6, **SMALL),
    lambda: CrossCoupling(12, 6, **SMALL),                               # CBAM: channel pools
    lambda: AFlowStep(12, 6, "AFlowCoupling", SMALL, torch.Generator().manual_seed(0),
                      width=16),   # SAN, CSN, SCAN
], ids=["llflow", "snflow", "cross", "aflow"])
@pytest.mark.parametrize("reverse", [False, True])
def test_couplings(make, reverse):
    torch.manual_seed(0)
    layer = perturb_(make(), std=0.2).eval()
    z, ft = torch.randn(1, 12, 30, 41), torch.randn(1, 6, 30, 41)
    full, tiled = _run(layer, z, torch.zeros(1), ft, reverse=reverse)
    _close(full, tiled)
    assert (full[0] - z).abs().max() > 1e-2                             # not an identity
    assert torch.isnan(tiled[1]).all()                                  # the log-det is not computed in tiles


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(FAMILIES))
def test_tiles_of_192_reproduce_the_full_frame_on_a_real_image(golden, shared_dir, variant):
    g = golden(FAMILIES[variant])
    files = sorted((shared_dir / "data/LOL-v1-mini/our485/low").glob("*.png"))
    if not files:
        pytest.skip("no LOL-v1-mini images in the shared folder")
    low = read_rgb(files[0])
    assert low.shape == (400, 600, 3)
    opt, model = _golden(g)
    full = Enhancer(model, opt, device="cpu", tile=0)(low)
    tiled = Enhancer(model, opt, device="cpu", tile=192)(low)
    assert _psnr(full, tiled) >= 50.0
    assert np.abs(full - tiled).max() < 1e-4                            # exact up to float rounding


def test_automatic_tiles_above_the_memory_limit(golden, shared_dir, caplog):
    g = golden("ZMAR-SNFlow")
    opt, model = _golden(g)
    files = sorted((shared_dir / "data/LOL-v1-mini/our485/low").glob("*.png"))
    if not files:
        pytest.skip("no LOL-v1-mini images in the shared folder")
    low = read_rgb(files[0])                                            # 400x600
    full = estimate_peak_bytes(model, 400, 600)
    assert tile_for_budget(model, 400, 600, full) is None               # fits: full frame
    enh = Enhancer(model, opt, device="cpu", max_memory=0.6 * full / 1024 ** 3)
    with caplog.at_level("INFO"):
        tile = enh.tile_for(400, 600)
    assert tile is not None and 128 <= tile < 600 and "layer-wise tiles" in caplog.text
    assert estimate_peak_bytes(model, 400, 600, tile) <= 0.6 * full
    np.testing.assert_allclose(enh(low), Enhancer(model, opt, device="cpu", tile=0)(low), atol=1e-4)
    assert "above" in enh.describe(0.0)


@pytest.mark.parametrize("key,value", [("tile", 8), ("tile", 1.5), ("max_memory", 0), ("max_memory", "lots")])
def test_bad_tile_options_are_one_line_errors(golden, key, value):
    g = golden("LLFlow")
    with pytest.raises(OptionError, match=f"inference.{key}"):  # at load (typed options) or in the Enhancer
        opt, model = _golden(g, [f"inference.{key}={value}"])
        Enhancer(model, opt, device="cpu")


PEAK_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
torch.set_num_threads(1)
from models.tiling import tiled_execution
from models.build import build_generator
from options.options import load_options
opt = load_options({folder!r} + "/config.yml")
model = build_generator(opt, {folder!r} + "/weights.pth")[0].eval().to(memory_format=torch.channels_last)
lq = torch.rand(1, 3, 400, 600).contiguous(memory_format=torch.channels_last)
aux = (torch.rand(1, 1, 400, 600) > 0.5).float()
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key + ":"))
with torch.inference_mode():
    model.reverse(lq[..., :64, :64], aux[..., :64, :64])
    base = status("VmRSS")
    open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM): imports may have peaked higher
    with tiled_execution(model, {tile}):
        model.reverse(lq, aux)
print((status("VmHWM") - base) / 1024)
"""


@pytest.mark.slow
def test_tiles_bound_the_peak_memory(golden):
    """Peak RSS growth of one 400x600 UPT-Flow (golden size) enhancement: tiles of 64 px need far less than the
    full frame (glibc's default allocator unmaps freed large blocks, so RSS follows live memory)."""
    g = golden("UPT-Flow")
    peaks = {}
    for tile in (0, 64):
        code = PEAK_SCRIPT.format(root=str(ROOT), folder=str(g), tile=tile)
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "LOWLIGHT_SYSTEM_MALLOC": "1"})
        assert r.returncode == 0, r.stderr[-2000:]
        peaks[tile] = float(r.stdout.split()[-1])
    assert peaks[64] < 0.5 * peaks[0], peaks


def test_compiled_modules_run_eagerly_inside_tiled_execution():
    """inference.compile compiles with nn.Module.compile; tiled frames must not trace the tile loops."""
    torch.manual_seed(0)
    blk = perturb_(TransformerBlock(8, 2), std=0.3).eval()
    x = torch.randn(1, 8, 40, 40)

    def compiled(*args, **kwargs):
        raise AssertionError("the compiled call ran")
    blk._compiled_call_impl = compiled
    with torch.inference_mode():
        with tiled_execution(blk, 16):
            tiled = blk(x)
        assert blk._compiled_call_impl is compiled                       # restored afterwards
        blk._compiled_call_impl = None
        _close(blk(x), tiled)
