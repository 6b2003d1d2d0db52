"""data.zeromap: injection values, GLTG/chroma masks, per-call redraw vs i mod N, size handling, generator."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from data.folder_dataset import PairedFolder
from data.image_io import read_rgb, write_rgb
from data.zeromap import generate_zero_map, inject_zero_map, write_zero_map_set


def test_inject_zero_map_per_channel_white_only():
    low = np.array([[[100, 150, 200], [100, 150, 200], [10, 20, 30]]], np.uint8)
    zm = np.array([[[255, 0, 255], [254, 254, 254], [255, 255, 255]]], np.uint8)
    out, white = inject_zero_map(low, zm)
    assert out.dtype == np.uint8
    assert out.tolist() == [[[0, 150, 0], [100, 150, 200], [0, 0, 0]]]
    assert white.tolist() == [[[1, 0, 1], [0, 0, 0], [1, 1, 1]]]


def _paired(tmp_path, n=3, h=8, w=8, value=(100, 150, 200)):
    for i in range(n):
        img = np.empty((h, w, 3), np.uint8)
        img[:] = value
        img[0, 0] = (i + 1, i + 1, i + 1)  # tag each image
        write_rgb(tmp_path / "low" / f"im{i}.png", img)
        write_rgb(tmp_path / "gt" / f"im{i}.png", np.full((h, w, 3), 200, np.uint8))
    return {"dataroot_LQ": str(tmp_path / "low"), "dataroot_GT": str(tmp_path / "gt")}


def _zero_maps(folder, n, h=8, w=8):
    """Zero-map k whitens the R channel of column k (distinct, easy to recognise)."""
    paths = []
    for k in range(n):
        zm = np.zeros((h, w, 3), np.uint8)
        zm[:, k, 0] = 255
        paths.append(write_rgb(folder / f"zm{k}.png", zm))
    return paths


def test_gltg_injection_through_dataset_values_are_unit_range(tmp_path):
    opt = _paired(tmp_path, n=1)
    zm = np.zeros((8, 8, 3), np.uint8)
    zm[2:4, :, 0] = 255
    zm[2:4, :, 2] = 255
    write_rgb(tmp_path / "zm" / "a.png", zm)
    opt.update(log_low=True, aux_input="gltg_mask", zero_map={"folder": str(tmp_path / "zm")})
    item = PairedFolder(opt, "val")[0]
    lq, aux = item["LQ"], item["AUX"]
    assert lq.shape == (3, 8, 8) and aux.shape == (3, 8, 8)
    assert math.isclose(float(lq[0, 2, 5]), math.log(1e-3), rel_tol=1e-6)        # zeroed R
    assert math.isclose(float(lq[1, 2, 5]), math.log(150 / 255 + 1e-3), rel_tol=1e-6)  # untouched G
    assert math.isclose(float(lq[0, 6, 5]), math.log(100 / 255 + 1e-3), rel_tol=1e-6)
    assert float(lq.max()) <= math.log(1.001)  # the official int64 bug would give log(~200)
    np.testing.assert_array_equal(aux.numpy(), (zm.transpose(2, 0, 1) == 255).astype(np.float32))
    assert item["ZM_path"].endswith("a.png")


def test_chroma_rule_mask_follows_injected_pixels(tmp_path):
    opt = _paired(tmp_path, n=1, value=(120, 120, 120))  # grey: balanced everywhere
    zm = np.zeros((8, 8, 3), np.uint8)
    zm[5, 3, 1] = 255
    write_rgb(tmp_path / "zm" / "a.png", zm)
    opt.update(aux_input="zmar_mask", zero_map={"folder": str(tmp_path / "zm")})
    aux = PairedFolder(opt, "test")[0]["AUX"]
    expected = torch.zeros(1, 8, 8)
    expected[0, 5, 3] = 1  # G zeroed -> g share 0 -> unbalanced
    assert torch.equal(aux, expected)
    opt["aux_input"] = "upt_zero_map"
    assert torch.equal(PairedFolder(opt, "test")[0]["AUX"], 1 - expected)


def test_rule_must_fit_aux_kind(tmp_path):
    opt = _paired(tmp_path, n=1)
    _zero_maps(tmp_path / "zm", 1)
    opt.update(aux_input="zmar_mask", zero_map={"folder": str(tmp_path / "zm"), "rule": "gltg"})
    with pytest.raises(ValueError, match="rule 'gltg' does not fit aux_input 'zmar_mask'"):
        PairedFolder(opt, "val")


def test_training_redraws_per_call_test_uses_i_mod_n(tmp_path):
    opt = _paired(tmp_path, n=5)
    paths = _zero_maps(tmp_path / "zm", 3)
    opt.update(aux_input="gltg_mask", zero_map={"folder": str(tmp_path / "zm")})
    torch.manual_seed(0)
    train = PairedFolder(opt, "train")
    drawn = [train[0]["ZM_path"] for _ in range(12)]
    assert len(set(drawn)) > 1 and set(drawn) <= {str(p) for p in paths}
    val = PairedFolder(opt, "val")
    for i in range(len(val)):
        item = val[i]
        k = i % 3
        assert item["ZM_path"] == str(paths[k])
        assert float(item["AUX"][0, :, k].min()) == 1.0 and float(item["AUX"][0].sum()) == 8.0
        assert torch.equal(val[i]["LQ"], item["LQ"])  # deterministic


def test_training_prob_zero_never_injects(tmp_path):
    opt = _paired(tmp_path, n=2)
    _zero_maps(tmp_path / "zm", 2)
    opt.update(aux_input="gltg_mask", zero_map={"folder": str(tmp_path / "zm"), "prob": 0.0})
    ds = PairedFolder(opt, "train")
    assert all(ds[i % 2]["ZM_path"] == "" for i in range(6))
    assert float(ds[0]["LQ"].min()) > 0  # nothing zeroed


def test_size_mismatch_resize_or_error(tmp_path):
    opt = _paired(tmp_path, n=1, h=8, w=8)
    small = np.zeros((4, 4, 3), np.uint8)
    small[:2, :2] = 255  # top-left quarter
    write_rgb(tmp_path / "zm" / "small.png", small)
    opt.update(aux_input="gltg_mask", zero_map={"folder": str(tmp_path / "zm"), "size_mismatch": "resize"})
    aux = PairedFolder(opt, "val")[0]["AUX"]
    assert aux.shape == (3, 8, 8) and set(aux.unique().tolist()) == {0.0, 1.0}
    assert float(aux[0, :4, :4].min()) == 1.0 and float(aux[0].sum()) == 16.0
    opt["zero_map"]["size_mismatch"] = "error"
    with pytest.raises(ValueError, match=r"small\.png.*4x4.*im0\.png.*8x8"):
        PairedFolder(opt, "val")[0]


def test_generator_structures_and_determinism(tmp_path):
    a = generate_zero_map(96, 128, np.random.default_rng(7))
    b = generate_zero_map(96, 128, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.uint8 and a.shape == (96, 128, 3) and set(np.unique(a)) <= {0, 255}

    dark = generate_zero_map(96, 128, np.random.default_rng(1), dark_coverage=(0.1, 0.1), n_blobs=(0, 0),
                             n_lines=(0, 0), speckle_density=(0, 0))
    full = (dark == 255).all(axis=2)
    assert ((dark == 255).any(axis=2) == full).all()  # dark regions zero every channel
    assert abs(full.mean() - 0.1) < 0.02
    n_comp, _, stats, _ = cv2.connectedComponentsWithStats(full.astype(np.uint8))
    assert stats[1:, cv2.CC_STAT_AREA].max() >= 0.3 * full.sum()  # large connected regions, not salt

    blobs = generate_zero_map(96, 128, np.random.default_rng(2), dark_coverage=(0, 0), n_blobs=(1, 1),
                              n_lines=(0, 0), speckle_density=(0, 0))
    per_pixel = (blobs == 255).sum(axis=2)
    assert ((per_pixel == 1) | (per_pixel == 2)).sum() > 20 and (per_pixel == 3).sum() == 0  # saturated colours

    lines = generate_zero_map(96, 128, np.random.default_rng(3), dark_coverage=(0, 0), n_blobs=(0, 0),
                              n_lines=(2, 2), speckle_density=(0.01, 0.01))
    assert (lines == 255).any(axis=2).sum() >= 0.01 * 96 * 128


def test_write_zero_map_set_is_reproducible(tmp_path):
    p1 = write_zero_map_set(tmp_path / "a", 3, 32, 48, seed=11)
    p2 = write_zero_map_set(tmp_path / "b", 3, 32, 48, seed=11)
    assert [p.name for p in p1] == ["zeromap_0000.png", "zeromap_0001.png", "zeromap_0002.png"]
    assert all(x.read_bytes() == y.read_bytes() for x, y in zip(p1, p2))
    assert read_rgb(p1[0]).shape == (32, 48, 3)
    assert p1[0].read_bytes() != p1[1].read_bytes()


def test_mask_stays_aligned_with_injected_pixels_under_crop_flip_rot(tmp_path):
    opt = _paired(tmp_path, n=2, h=16, w=16)
    write_zero_map_set(tmp_path / "zm", 3, 16, 16, seed=4)
    opt.update(log_low=True, aux_input="gltg_mask", cache=True, use_crop=True, GT_size=8, use_flip=True,
               use_rot=True, zero_map={"folder": str(tmp_path / "zm")})
    ds = PairedFolder(opt, "train")
    ds.set_epoch(1)
    floor = math.log(1e-3)
    whites = 0
    for i in range(8):
        it = ds[i % 2]
        lq, aux = it["LQ"], it["AUX"]
        assert lq.shape == aux.shape == (3, 8, 8)
        zeroed = torch.isclose(lq, torch.full_like(lq, floor))
        assert torch.equal(zeroed, aux.bool())  # every source pixel is non-zero, so zeroed <=> white
        whites += int(aux.sum())
    assert 0 < whites < 8 * 3 * 64
