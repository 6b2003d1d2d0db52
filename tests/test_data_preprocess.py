"""data.preprocess: golden equivalence with the official preprocessing, hand-computed rules, augmentation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from data.image_io import read_rgb
from data.preprocess import (add_noise, aux_input, build_lq, chroma_balanced, chroma_mask, gamma_aug, histeq,
                             log_low, paired_center_crop, paired_flip_rot, paired_random_crop, to_tensor01,
                             zero_element_mask)


def _golden_low(folder):
    low = read_rgb(folder / "low.png")
    return low, to_tensor01(low)[None]


# ------------------------------------------------------------------ golden files (official code outputs)

def test_llflow_cond_input_matches_golden(golden):
    g = golden("LLFlow")
    low, lt = _golden_low(g)
    lq = build_lq(lt, to_tensor01(histeq(low))[None], {"log_low": True, "concat_histeq": True})
    ref = np.load(g / "cond_input.npy")
    assert lq.shape == ref.shape == (1, 6, 64, 96)
    np.testing.assert_allclose(lq.numpy(), ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("model,log", [("ZMAR-SNFlow", True), ("UPT-Flow", False)])
def test_three_channel_cond_input_matches_golden(golden, model, log):
    g = golden(model)
    _, lt = _golden_low(g)
    lq = build_lq(lt, None, {"log_low": log, "concat_histeq": False})
    np.testing.assert_allclose(lq.numpy(), np.load(g / "cond_input.npy"), atol=1e-6, rtol=0)


def test_zmar_mask_and_upt_zero_map_equal_golden_exactly(golden):
    _, lt = _golden_low(golden("ZMAR-SNFlow"))
    zmar = np.load(golden("ZMAR-SNFlow") / "mask.npy")
    upt = np.load(golden("UPT-Flow") / "zero_map.npy")
    assert 0.1 < zmar.mean() < 0.9  # the crop really has both kinds of pixel
    np.testing.assert_array_equal(chroma_mask(lt, "unbalanced_is_one").numpy(), zmar)
    np.testing.assert_array_equal(chroma_mask(lt, "balanced_is_one").numpy(), upt)
    np.testing.assert_array_equal(aux_input(lt, "zmar_mask").numpy(), zmar)
    np.testing.assert_array_equal(aux_input(lt, "upt_zero_map").numpy(), upt)


def test_gltg_zero_element_mask_is_official_times_255(golden):
    g = golden("GLTG-AFlow")
    low, lt = _golden_low(g)
    official = np.load(g / "mask.npy")  # {0, 1/255}: the /255 bug
    ours = zero_element_mask(low)
    assert ours.shape == (3, 64, 96) and set(np.unique(ours.numpy())) == {0.0, 1.0}
    np.testing.assert_array_equal(ours.numpy()[None] / 255.0, official.astype(np.float64))
    np.testing.assert_array_equal(aux_input(lt, "gltg_mask").numpy(), ours.numpy()[None])
    # The training-side mask (ToTensor of a 0/255 zero-map) is the same map in {0, 1}.
    np.testing.assert_array_equal(ours.numpy()[None], np.load(g / "fwd_mask.npy"))


# ------------------------------------------------------------------ hand-computed rules

def test_histeq_hand_computed():
    img = np.zeros((2, 3, 3), np.uint8)
    img[..., 0] = [[10, 10, 50], [90, 90, 90]]    # hist 2/1/3: lut 0, 255*1/4 = 63.75 -> 64, 255
    img[..., 1] = 77                              # constant channel stays as it is
    img[..., 2] = [[200, 0, 0], [0, 100, 200]]    # hist 3/1/2: lut 0, 85, 255
    out = histeq(img)
    assert out[..., 0].tolist() == [[0, 0, 64], [255, 255, 255]]
    assert out[..., 1].tolist() == [[77, 77, 77], [77, 77, 77]]
    assert out[..., 2].tolist() == [[255, 0, 0], [0, 85, 255]]


def _pixels(*rgb):
    return torch.tensor(rgb, dtype=torch.float32).T.reshape(3, 1, len(rgb))


def test_chroma_rule_on_hand_made_pixels():
    x = _pixels((0, 0, 0), (1, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.3, 0.2), (0.8, 0.1, 0.1), (0.0, 0.6, 0.6))
    # black: all shares 0; saturated red; grey 1/3 each; balanced; b share 0.1/1.0001 <= 0.1; cyan (r = 0)
    bal = chroma_balanced(x)
    assert bal.shape == (1, 1, 6)
    assert bal.flatten().tolist() == [0, 0, 1, 1, 0, 0]
    assert chroma_mask(x, "unbalanced_is_one").flatten().tolist() == [1, 1, 0, 0, 1, 1]
    assert chroma_mask(x, "balanced_is_one").flatten().tolist() == [0, 0, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="polarity"):
        chroma_mask(x, "ones")


def test_zero_element_mask_any_channel_zero():
    img = np.array([[[0, 128, 255], [1, 1, 1], [0, 0, 0], [5, 0, 9]]], np.uint8)
    m = zero_element_mask(img)
    assert m.shape == (3, 1, 4)
    for c in range(3):
        assert m[c].flatten().tolist() == [1, 0, 1, 1]
    assert torch.equal(zero_element_mask(to_tensor01(img)), m)  # float input gives the same map


def test_log_low_and_build_lq_options():
    x = torch.tensor([0.0, 0.5, 1.0]).reshape(3, 1, 1)
    his = torch.full((3, 1, 1), 0.25)
    assert torch.allclose(log_low(x).flatten(), torch.log(torch.tensor([1e-3, 0.501, 1.001])))
    assert torch.equal(build_lq(x, None, {}), x)
    sub = build_lq(x, his, {"histeq_as_input": True, "log_low": True, "concat_histeq": True})
    assert sub.shape == (6, 1, 1)
    assert torch.allclose(sub[:3], torch.log(torch.full((3, 1, 1), 0.251)))
    assert torch.equal(sub[3:], his)  # histeq stays linear
    with pytest.raises(ValueError, match="his01"):
        build_lq(x, None, {"concat_histeq": True})


def test_aux_input_kinds():
    x = _pixels((0, 0.5, 0.5), (0.4, 0.4, 0.4))
    assert aux_input(x, None) is None
    assert aux_input(x, "gltg_mask")[0].flatten().tolist() == [1, 0]
    zm = torch.tensor([[[0.0, 1.0]]]).expand(3, 1, 2)
    assert aux_input(x, "gltg_mask", zero_map=zm)[0].flatten().tolist() == [0, 1]
    hwc = np.zeros((1, 2, 3), np.uint8)
    hwc[0, 1] = 1
    assert aux_input(x, "gltg_mask", zero_map=hwc)[0].flatten().tolist() == [0, 1]
    with pytest.raises(ValueError, match="channels first"):
        aux_input(x, "gltg_mask", zero_map=torch.from_numpy(hwc))
    with pytest.raises(ValueError, match="unknown aux_input"):
        aux_input(x, "gltg")


# ------------------------------------------------------------------ augmentation

def _coords(h, w):
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, np.zeros_like(yy)], axis=2).astype(np.int32)


def test_random_crop_same_window_for_all_arrays_and_size_error():
    a, b = _coords(10, 12), _coords(10, 12) * 2
    rng = np.random.default_rng(5)
    ca, cb = paired_random_crop([a, b], 4, rng)
    assert ca.shape == (4, 4, 3)
    np.testing.assert_array_equal(cb, ca * 2)
    assert ca[1, 0, 0] == ca[0, 0, 0] + 1 and ca[0, 1, 1] == ca[0, 0, 1] + 1  # a contiguous window
    with pytest.raises(ValueError, match="small.png.*10x12.*GT_size=16"):
        paired_random_crop([a], 16, rng, name="small.png")
    (c,) = paired_center_crop([a], 4)
    assert (c[0, 0, 0], c[0, 0, 1]) == (3, 4)


def test_flip_rot_shared_draw_and_never_180():
    a = _coords(4, 4)
    rng = np.random.default_rng(0)
    corners = set()
    for _ in range(60):
        x, y = paired_flip_rot([a, a + 100], rng, use_flip=False, use_rot=True)
        np.testing.assert_array_equal(y, x + 100)
        corners.add(tuple(x[0, 0, :2]))
    # top-left after rot90 k=0/1/3 (counter-clockwise) comes from (0,0), (0,3), (3,0); k=2 would give (3,3)
    assert corners == {(0, 0), (0, 3), (3, 0)}
    flips = {tuple(paired_flip_rot([a], rng, True, False)[0][0, 0, :2]) for _ in range(30)}
    assert flips == {(0, 0), (0, 3)}


def test_noise_probability_and_level():
    x = torch.full((3, 64, 64), 0.5)
    rng = np.random.default_rng(1)
    assert add_noise(x, rng, 0, 5) is x
    y = add_noise(x, rng, 1.0, 5)
    assert abs(float((y - x).std()) - 5 / 255) < 0.002 and abs(float((y - x).mean())) < 0.002


def test_gamma_aug_stays_float_unit_range():
    x = np.array([0.25, 0.5], np.float32)
    y = gamma_aug(x, 2.0)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [0.125, 0.5])  # (x/max)^2 * max
    t = gamma_aug(torch.tensor([0.1, 0.2, 0.4]), 0.5)
    assert torch.allclose(t, torch.tensor([0.2, 0.4 * 0.5 ** 0.5, 0.4]))
    assert float(gamma_aug(torch.zeros(3), 2.0).sum()) == 0.0
