"""utils/metrics.py against independent implementations (direct numpy formulas, scikit-image, hand-computed cases)
and the official LLFlow test-script outputs in ../shared/golden/LLFlow."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from skimage.metrics import peak_signal_noise_ratio as sk_psnr
from skimage.metrics import structural_similarity as sk_ssim

from utils.metrics import (SSIM_PROTOCOLS, LPIPSMetric, LPIPSUnavailable, MetricAggregator, Protocol,
                           evaluate_pair, get_lpips_metric, gt_mean_llflow, gt_mean_plain, psnr,
                           quantise, resolve_lpips_backbone, ssim)

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _rgb(path):
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert img is not None, path
    return np.ascontiguousarray(img[:, :, ::-1])


def _pair(seed=0, shape=(30, 26, 3)):
    """A structured, correlated pair (so SSIM is neither ~0 nor ~1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    base = (100 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0))[..., None] + np.array([0, 20, -15])
    a = np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    b = np.clip(0.6 * base + 10 + rng.normal(0, 20, shape), 0, 255).astype(np.uint8)
    return a, b


# --- independent reference SSIMs written directly from the formula (explicit windows, no filtering library) ---
def _ssim_windows(x, y, weights, sample_cov):
    """Mean SSIM over every fully covered window position of a 2-D (or 1-D, via a (k,1) window) image."""
    wx = sliding_window_view(x, weights.shape)
    wy = sliding_window_view(y, weights.shape)
    axes = tuple(range(-weights.ndim, 0))
    mx = (wx * weights).sum(axes)
    my = (wy * weights).sum(axes)
    exx = (wx * wx * weights).sum(axes)
    eyy = (wy * wy * weights).sum(axes)
    exy = (wx * wy * weights).sum(axes)
    n = weights.size
    f = n / (n - 1) if sample_cov else 1.0
    vx, vy, cxy = f * (exx - mx ** 2), f * (eyy - my ** 2), f * (exy - mx * my)
    s = ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx ** 2 + my ** 2 + C1) * (vx + vy + C2))
    return s


def _ref_uniform_2d(x, y):
    return float(_ssim_windows(x.astype(float), y.astype(float), np.full((7, 7), 1 / 49), True).mean())


def _ref_gauss_2d(x, y):
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5 ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    return float(_ssim_windows(x.astype(float), y.astype(float), w, False).mean())


def _ref_percolumn(x, y):
    # 1-D window of 7 taps along the rows: N = 7 for the sample-covariance factor
    s = _ssim_windows(x.astype(float), y.astype(float), np.full((7, 1), 1 / 7), True)
    return float(s.mean(axis=0).mean())


def _rgb2gray_bt601(img):
    # cv2's RGB2GRAY is round(0.299 R + 0.587 G + 0.114 B) in fixed point; allow 1 grey level of rounding difference
    return img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114


# ---------------------------------------------------------------- PSNR
def test_psnr_constant_offset_hand_computed():
    gt = np.full((8, 9, 3), 100, np.uint8)
    pred = np.full((8, 9, 3), 110, np.uint8)
    expected = 10 * math.log10(255 ** 2 / 100)  # MSE = 10^2
    assert psnr(pred, gt) == pytest.approx(expected, abs=1e-12)
    assert psnr(pred, gt, "float") == pytest.approx(expected, abs=1e-12)
    f_gt, f_pred = np.full((4, 4, 3), 0.5), np.full((4, 4, 3), 0.6)  # MSE 0.01 -> 20 dB with peak 1
    assert psnr(f_pred, f_gt, "float") == pytest.approx(20.0, abs=1e-9)


def test_psnr_identical_is_inf_and_matches_skimage():
    a, b = _pair(1)
    assert psnr(a, a) == math.inf and psnr(a, a, "float") == math.inf
    assert psnr(a, b) == pytest.approx(sk_psnr(b, a), abs=1e-10)
    assert psnr(a, b, "float") == pytest.approx(sk_psnr(b / 255.0, a / 255.0, data_range=1.0), abs=1e-10)
    with pytest.raises(TypeError):
        psnr(a.astype(np.float32), b)  # uint8 mode refuses floats instead of guessing their scale
    with pytest.raises(ValueError):
        psnr(a, b, "db")


# ---------------------------------------------------------------- SSIM
@pytest.mark.parametrize("protocol", SSIM_PROTOCOLS)
def test_ssim_identical_is_one(protocol):
    a, _ = _pair(2)
    assert ssim(a, a, protocol) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("protocol", SSIM_PROTOCOLS)
def test_ssim_constant_images_hand_computed(protocol):
    # flat images: variances and covariance are 0, so SSIM = luminance term (2*mu_x*mu_y + C1)/(mu_x^2 + mu_y^2 + C1)
    a = np.full((20, 24, 3), 100, np.uint8)
    b = np.full((20, 24, 3), 110, np.uint8)
    expected = (2 * 100 * 110 + C1) / (100 ** 2 + 110 ** 2 + C1)
    assert ssim(a, b, protocol) == pytest.approx(expected, abs=1e-12)


def test_ssim_skimage_rgb_against_formula_and_skimage():
    a, b = _pair(3)
    ref = np.mean([_ref_uniform_2d(a[..., c], b[..., c]) for c in range(3)])
    assert ssim(a, b, "skimage_rgb") == pytest.approx(ref, abs=1e-10)
    assert ssim(a, b, "skimage_rgb") == pytest.approx(sk_ssim(a, b, channel_axis=2, data_range=255), abs=1e-12)


def test_ssim_matlab_rgb_against_formula_and_skimage_gaussian():
    a, b = _pair(4)
    ref = np.mean([_ref_gauss_2d(a[..., c], b[..., c]) for c in range(3)])
    got = ssim(a, b, "matlab_rgb")
    assert got == pytest.approx(ref, abs=1e-10)
    sk = sk_ssim(a, b, channel_axis=2, data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert got == pytest.approx(sk, abs=1e-10)
    assert abs(got - ssim(a, b, "skimage_rgb")) > 1e-3  # really a different protocol


def test_ssim_gray_protocols():
    a, b = _pair(5)
    ga, gb = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY), cv2.cvtColor(b, cv2.COLOR_RGB2GRAY)
    assert np.abs(ga.astype(float) - _rgb2gray_bt601(a.astype(float))).max() <= 1.0
    assert ssim(a, b, "gray") == pytest.approx(_ref_uniform_2d(ga, gb), abs=1e-10)
    pc = ssim(a, b, "gray_percolumn")
    assert pc == pytest.approx(_ref_percolumn(ga, gb), abs=1e-10)
    # skimage 0.18/0.19 with multichannel=True on a 2-D array: one 1-D SSIM per column (last axis), then the mean
    cols = np.mean([sk_ssim(ga[:, j], gb[:, j], data_range=255) for j in range(ga.shape[1])])
    assert pc == pytest.approx(cols, abs=1e-10)
    assert abs(pc - ssim(a, b, "gray")) > 1e-3


def test_ssim_rejects_bad_inputs():
    a, b = _pair(6)
    with pytest.raises(ValueError):
        ssim(a, b[:-1], "skimage_rgb")
    with pytest.raises(ValueError):
        ssim(a, b, "ms-ssim")
    with pytest.raises(TypeError):
        ssim(a / 255.0, b / 255.0)


# ---------------------------------------------------------------- GT-mean and quantisation
def test_quantise_truncate_vs_round():
    x = np.array([[[-0.2, 100.7 / 255, 1.3]]], np.float64)
    assert quantise(x, "truncate").tolist() == [[[0, 100, 255]]]
    assert quantise(x, "round").tolist() == [[[0, 101, 255]]]
    u = np.array([[[3, 4, 5]]], np.uint8)
    assert quantise(u).tolist() == u.tolist()


def test_gt_mean_hand_computed():
    out = np.full((4, 5, 3), 0.2, np.float32)
    gt = np.full((4, 5, 3), 102, np.uint8)  # 0.4
    np.testing.assert_allclose(gt_mean_plain(out, gt), 0.4, atol=1e-6)
    # LLFlow swaps channels: BGR2GRAY on an RGB array weights R by 0.114 -> a pure-red GT has gray mean 0.114
    red = np.zeros((4, 5, 3), np.uint8)
    red[..., 0] = 255
    np.testing.assert_allclose(gt_mean_llflow(np.full((4, 5, 3), 0.5, np.float32), red), 0.114, atol=1e-6)
    np.testing.assert_allclose(gt_mean_plain(np.full((4, 5, 3), 0.5, np.float32), red), 1 / 3, atol=1e-6)
    # clipping after scaling; a black output is left black rather than divided by zero
    assert gt_mean_plain(np.array([[[0.1, 0.1, 0.4]]], np.float32), np.full((1, 1, 3), 255, np.uint8)).max() == 1.0
    assert np.all(gt_mean_llflow(np.zeros((2, 2, 3), np.float32), gt[:2, :2]) == 0)


def test_gt_mean_llflow_reproduces_official_golden(golden):
    g = golden("LLFlow")
    raw = np.load(g / "enhanced.npy")[0].transpose(1, 2, 0)  # (1,3,H,W) raw network output -> HxWx3 RGB
    gt = _rgb(g / "gt.png")
    official = _rgb(g / "enhanced.png").astype(int)
    ours = quantise(gt_mean_llflow(raw, gt), "truncate").astype(int)
    assert np.abs(ours - official).max() <= 1
    assert (ours != official).mean() < 0.01  # float round-off only; rounding instead of truncation differs a lot
    # the plain (consistent) variant is a different formula and does not reproduce the official file
    assert np.abs(quantise(gt_mean_plain(raw, gt), "truncate").astype(int) - official).max() > 1
    # without correction the official script just clips and truncates
    plain_official = _rgb(g / "enhanced_plain.png").astype(int)
    ours_plain = quantise(raw, "truncate").astype(int)
    assert np.abs(ours_plain - plain_official).max() <= 1 and (ours_plain != plain_official).mean() < 0.01
    assert (quantise(raw, "round").astype(int) != plain_official).mean() > 0.03  # many pixels are clipped


# ---------------------------------------------------------------- protocol, evaluate_pair, aggregation
def test_protocol_validation_and_describe():
    p = Protocol()
    assert p.describe() == ("PSNR uint8 RGB (peak 255); SSIM skimage_rgb (7x7 uniform, sample cov., RGB mean); "
                            "GT-mean: none; LPIPS: off")
    d = Protocol(ssim="gray_percolumn", gt_mean="llflow", lpips=True).as_dict()
    assert d["ssim"] == "gray_percolumn" and d["gt_mean"] == "llflow" and "truncate" in d["description"]
    for bad in ({"ssim": "foo"}, {"psnr": "y"}, {"gt_mean": "yes"}, {"quantisation": "floor"}):
        with pytest.raises(ValueError):
            Protocol(**bad)


def test_evaluate_pair_on_real_pair(shared_dir):
    d = shared_dir / "data" / "LOL-v1-mini" / "our485"
    name = sorted(p.name for p in (d / "low").glob("*.png"))[0]
    low, high = _rgb(d / "low" / name), _rgb(d / "high" / name)
    r = evaluate_pair(low, high)
    assert r["psnr"] == pytest.approx(sk_psnr(high, low), abs=1e-10)
    assert r["ssim"] == pytest.approx(sk_ssim(low, high, channel_axis=2, data_range=255), abs=1e-12)
    assert r["lpips"] is None
    # GT-mean (plain): the corrected, truncated image is what PSNR/SSIM see
    f = np.clip(low / 255.0 * (high.mean() / low.mean()), 0, 1)
    q = (f * 255).astype(np.uint8)
    r2 = evaluate_pair(low, high, Protocol(gt_mean="plain"))
    assert r2["psnr"] == pytest.approx(sk_psnr(high, q), abs=1e-3)
    assert r2["psnr"] > r["psnr"] + 5
    # float PSNR uses the unquantised corrected image
    r3 = evaluate_pair(low, high, Protocol(gt_mean="plain", psnr="float"))
    assert r3["psnr"] == pytest.approx(sk_psnr(high / 255.0, f, data_range=1.0), abs=1e-4)


def test_evaluate_pair_float_prediction_is_clipped_and_quantised():
    a, b = _pair(7)
    raw = a.astype(np.float64) / 255 + 0.3 / 255  # 0.3 grey levels above a, truncation gives back a
    raw[0, 0, 0] = 1.7
    want = a.copy()
    want[0, 0, 0] = 255
    r = evaluate_pair(raw, b, Protocol())
    assert r["psnr"] == pytest.approx(sk_psnr(b, want), abs=1e-10)
    r_round = evaluate_pair(raw, b, Protocol(quantisation="round"))
    assert r_round["psnr"] == pytest.approx(r["psnr"], abs=1e-10)  # +0.3 rounds back down too


def test_aggregator_means_and_rows():
    agg = MetricAggregator(Protocol(lpips=True))
    agg.add("a.png", {"psnr": 10.0, "ssim": 0.5, "lpips": 0.2})
    agg.add("b.png", {"psnr": 20.0, "ssim": 0.7, "lpips": None})
    assert agg.count == 2 and [r["name"] for r in agg.rows] == ["a.png", "b.png"]
    m = agg.means()
    assert m["psnr"] == pytest.approx(15.0) and m["ssim"] == pytest.approx(0.6) and m["lpips"] == pytest.approx(0.2)
    s = MetricAggregator(Protocol()).summary()
    assert s["count"] == 0 and s["psnr"] is None and s["lpips"] is None and "not requested" in s[
        "lpips_unavailable_reason"]


# ---------------------------------------------------------------- LPIPS
def test_lpips_with_shared_backbone(shared_dir):
    backbone = shared_dir / "weights" / "alexnet_features.pth"
    d = shared_dir / "data" / "LOL-v1-mini" / "our485"
    metric = LPIPSMetric(str(backbone))
    names = sorted(p.name for p in (d / "low").glob("*.png"))[:2]
    for n in names:
        low, high = _rgb(d / "low" / n), _rgb(d / "high" / n)
        low, high = low[::2, ::2].copy(), high[::2, ::2].copy()  # keep the test fast
        v = metric(low, high)
        assert 0.2 < v < 0.9, (n, v)  # LOL low vs normal is ~0.56 on eval15
        assert metric(high, high) == 0.0
    # the trunk really carries the file's weights (not torchvision's random init)
    import torch
    sd = torch.load(backbone, map_location="cpu", weights_only=True)
    assert torch.equal(metric.net.net.slice1[0].weight, sd["features.0.weight"])
    r = evaluate_pair(low, high, Protocol(lpips=True), lpips_metric=metric)
    assert r["lpips"] == pytest.approx(v, abs=1e-6)


def test_lpips_unavailable_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("LPIPS_ALEXNET", raising=False)
    with pytest.raises(LPIPSUnavailable, match="no AlexNet backbone"):
        resolve_lpips_backbone()
    with pytest.raises(LPIPSUnavailable, match="does not exist"):
        LPIPSMetric(str(tmp_path / "missing.pth"))
    monkeypatch.setenv("LPIPS_ALEXNET", str(tmp_path / "nope.pth"))
    with pytest.raises(LPIPSUnavailable, match="LPIPS_ALEXNET"):
        get_lpips_metric()
    monkeypatch.delenv("LPIPS_ALEXNET")
    a, b = _pair(8)
    r = evaluate_pair(a, b, Protocol(lpips=True))  # other metrics still computed
    assert r["lpips"] is None and "no AlexNet backbone" in r["lpips_unavailable_reason"]
    assert r["psnr"] == pytest.approx(sk_psnr(b, a), abs=1e-10)


def test_lpips_wrong_backbone_file(tmp_path):
    import torch
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(LPIPSUnavailable, match="features.0.weight"):
        LPIPSMetric(str(bad))
