"""NIQE (Mittal, Soundararajan, Bovik, "Making a Completely Blind Image Quality Analyzer", IEEE SPL 2012), computed
the way LLIE papers report it: the LIVE MATLAB release (``computequality`` with its ``modelparameters.mat``) as
BasicSR's ``calculate_niqe`` and pyiqa reproduce it. Lower is better.

Protocol (every step is the MATLAB release's, with BasicSR's colour handling):
  * RGB uint8 -> the Y channel of MATLAB ``rgb2ycbcr`` (16 + (65.481 R + 128.553 G + 24.966 B) / 255), rounded;
  * crop to whole 96x96 blocks from the top-left (no overlap);
  * two scales: the image, then MATLAB ``imresize(im, 0.5)`` (bicubic, antialiased, symmetric borders);
  * at each scale MSCN coefficients with a 7x7 Gaussian (sigma 7/6, replicate borders), then per block (96 / scale
    pixels) 18 features: an AGGD fit of the coefficients and of their products with the 4 neighbours (circular
    shifts inside the block);
  * fit a Gaussian (nanmean, covariance of the NaN-free rows) to the 36-d block features; the score is
    sqrt((mu_p - mu_d) pinv((S_p + S_d) / 2) (mu_p - mu_d)^T) against the pristine model (mu_p, S_p).

The pristine model is ``utils/data/niqe_pris_params.npz`` (provenance and licence: ``utils/data/README.md``).
An image needs at least two whole 96x96 blocks (e.g. 192x96 pixels).

Precision: the AGGD shape is picked from a grid with step 0.001, so a block whose fit lies near the midpoint of two
grid values flips with the last bits of the arithmetic, and one flip moves the score by about 1e-3 to 1e-2.
Faithful implementations therefore differ by up to a few hundredths on some images, not by machine precision. This one computes in float64
like the release; on BasicSR's ``baboon.png`` it gives 5.72996 where MATLAB R2021a gives 5.72957 (quoted in
BasicSR's ``calculate_niqe``) and BasicSR's float32 code 5.72956: one alpha of one of the 50 blocks differs by 0.001.
"""
from __future__ import annotations

import math
import warnings
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from scipy.special import gamma

PARAMS_FILE = Path(__file__).resolve().parent / "data" / "niqe_pris_params.npz"
BLOCK = 96
DESCRIPTION = "NIQE (LIVE pristine model, MATLAB Y channel rounded, 96x96 blocks, 2 scales; lower is better)"

# AGGD shape search grid of the MATLAB release: alpha in 0.2:0.001:10 and the ratio each alpha implies.
_ALPHAS = np.round(np.arange(0.2, 10.0005, 0.001), 3)
_RHO = gamma(2.0 / _ALPHAS) ** 2 / (gamma(1.0 / _ALPHAS) * gamma(3.0 / _ALPHAS))


class NIQEError(ValueError):
    """An image NIQE cannot score (too small, wrong type); the message says why."""


@lru_cache(maxsize=1)
def pristine_model() -> tuple[np.ndarray, np.ndarray]:
    """(mu (36,), cov (36, 36)) of the pristine multivariate Gaussian, float64."""
    with np.load(PARAMS_FILE) as d:
        mu = np.asarray(d["mu_pris_param"], np.float64).reshape(-1)
        cov = np.asarray(d["cov_pris_param"], np.float64)
    if mu.shape != (36,) or cov.shape != (36, 36):
        raise NIQEError(f"{PARAMS_FILE}: expected a 36-d mean and a 36x36 covariance, got {mu.shape} / {cov.shape}")
    return mu, cov


def gaussian_window(size: int = 7, sigma: float = 7.0 / 6.0) -> np.ndarray:
    """MATLAB ``fspecial('gaussian', size, sigma)``, normalised to sum 1."""
    r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2.0 * sigma * sigma))
    return g / g.sum()


def matlab_y(rgb: np.ndarray) -> np.ndarray:
    """Y of MATLAB ``rgb2ycbcr`` for an HxWx3 RGB uint8 image, rounded to whole grey levels (float64)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise NIQEError(f"NIQE expects an HxWx3 RGB uint8 image, got {rgb.dtype} {rgb.shape}")
    x = rgb.astype(np.float64)
    y = 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0
    return np.floor(y + 0.5)  # MATLAB rounds halves away from zero (y > 0)


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic kernel with a = -0.5 (MATLAB imresize 'bicubic')."""
    a = np.abs(x)
    a2, a3 = a * a, a * a * a
    return ((1.5 * a3 - 2.5 * a2 + 1.0) * (a <= 1)
            + (-0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0) * ((a > 1) & (a <= 2)))


def _resize_matrix(n_in: int, scale: float) -> np.ndarray:
    """(n_out, n_in) matrix of MATLAB imresize along one axis: antialiased bicubic for scale < 1, mirrored borders."""
    n_out = int(math.ceil(n_in * scale))
    kscale = scale if scale < 1 else 1.0          # antialiasing widens the kernel by 1/scale
    width = 4.0 / kscale
    u = np.arange(1, n_out + 1, dtype=np.float64) / scale + 0.5 * (1.0 - 1.0 / scale)  # 1-based input coordinates
    left = np.floor(u - width / 2.0)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps)[None, :]
    w = kscale * _cubic(kscale * (u[:, None] - idx))
    w /= w.sum(axis=1, keepdims=True)
    mirror = np.concatenate([np.arange(n_in), np.arange(n_in)[::-1]])  # symmetric padding, edge repeated
    src = mirror[np.mod(idx.astype(np.int64) - 1, 2 * n_in)]
    m = np.zeros((n_out, n_in))
    np.add.at(m, (np.repeat(np.arange(n_out), taps), src.ravel()), w.ravel())
    return m


def imresize_half(img: np.ndarray) -> np.ndarray:
    """MATLAB ``imresize(img, 0.5)`` (bicubic, antialiased) of a 2-D float64 image."""
    h, w = img.shape
    return _resize_matrix(h, 0.5) @ img @ _resize_matrix(w, 0.5).T


def aggd_fit(x: np.ndarray) -> tuple[float, float, float]:
    """(alpha, beta_left, beta_right) of an asymmetric generalised Gaussian by the release's moment matching."""
    x = x.ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        left = math.sqrt(np.mean(x[x < 0] ** 2)) if np.any(x < 0) else float("nan")
        right = math.sqrt(np.mean(x[x > 0] ** 2)) if np.any(x > 0) else float("nan")
        g = left / right
        r = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
        r_norm = r * (g ** 3 + 1) * (g + 1) / (g * g + 1) ** 2
        alpha = float(_ALPHAS[np.argmin((_RHO - r_norm) ** 2)])
        k = math.sqrt(gamma(1.0 / alpha) / gamma(3.0 / alpha))
    return alpha, left * k, right * k


def block_features(block: np.ndarray) -> list[float]:
    """The 18 NIQE features of one block of MSCN coefficients."""
    alpha, bl, br = aggd_fit(block)
    feats = [alpha, (bl + br) / 2.0]
    for shift in ((0, 1), (1, 0), (1, 1), (1, -1)):  # horizontal, vertical, two diagonals (MATLAB circshift)
        alpha, bl, br = aggd_fit(block * np.roll(block, shift, axis=(0, 1)))
        feats += [alpha, (br - bl) * gamma(2.0 / alpha) / gamma(1.0 / alpha), bl, br]
    return feats


def niqe_gray(img: np.ndarray, mu_p: np.ndarray | None = None, cov_p: np.ndarray | None = None) -> float:
    """NIQE of a 2-D grey image with values in [0, 255] (float), against the pristine model (default: shipped)."""
    if mu_p is None or cov_p is None:
        mu_p, cov_p = pristine_model()
    h, w = img.shape
    nh, nw = h // BLOCK, w // BLOCK
    if nh * nw < 2:  # the image's feature covariance needs two blocks (one gives NaN in BasicSR/pyiqa)
        raise NIQEError(f"NIQE needs at least two {BLOCK}x{BLOCK} blocks (e.g. {2 * BLOCK}x{BLOCK} pixels), got "
                        f"{w}x{h} (WxH)")
    im = np.asarray(img, np.float64)[:nh * BLOCK, :nw * BLOCK]  # double, as the release's double(im)
    win = gaussian_window()
    feats = []
    for scale in (1, 2):
        mu = cv2.filter2D(im, cv2.CV_64F, win, borderType=cv2.BORDER_REPLICATE)
        sigma = np.sqrt(np.abs(cv2.filter2D(im * im, cv2.CV_64F, win, borderType=cv2.BORDER_REPLICATE) - mu * mu))
        mscn = (im - mu) / (sigma + 1.0)
        b = BLOCK // scale
        feats.append(np.array([block_features(mscn[i * b:(i + 1) * b, j * b:(j + 1) * b])
                               for i in range(nh) for j in range(nw)]))
        if scale == 1:
            im = imresize_half(im)
    f = np.concatenate(feats, axis=1)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (flat image): NIQE is NaN, said later
        mu_d = np.nanmean(f, axis=0)
    clean = f[~np.isnan(f).any(axis=1)]
    if len(clean) < 2:
        return float("nan")  # like MATLAB's nancov on fewer than two complete rows
    cov_d = np.cov(clean, rowvar=False)
    d = mu_p - mu_d
    return float(math.sqrt(max(float(d @ np.linalg.pinv((cov_p + cov_d) / 2.0) @ d), 0.0)))


def niqe(rgb: np.ndarray) -> float:
    """NIQE of an HxWx3 RGB uint8 image (see the module docstring for the protocol)."""
    return niqe_gray(matlab_y(rgb))
