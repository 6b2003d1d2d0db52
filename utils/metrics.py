"""Image-quality metrics for low-light enhancement: one module for training validation and ``Measure.py``.

Every number this module produces belongs to a :class:`Protocol`; ``Protocol.describe()`` is the string that should
be written next to it, because published LOL figures differ by 1-5 dB / 0.05 SSIM depending on the protocol alone.

Images are HxWx3 **RGB** numpy arrays. "uint8" means 8-bit values 0..255; "float01" means floating point in [0, 1]
(e.g. a raw network output, which may stray outside [0, 1]).

PSNR (``psnr``)
    ``'uint8'``: 10·log10(255² / MSE) over all RGB values of two uint8 images, i.e. what
    ``skimage.metrics.peak_signal_noise_ratio`` computes on uint8 arrays (data range 255, inferred from the dtype);
    LLFlow / GLTG / UPT ``Measure.py``. ``'float'``: the same with peak 1 on [0, 1] floats, computed on the
    unquantised prediction (Retinexformer's convention). Identical images give ``inf`` (returned explicitly).

SSIM (``ssim``), named protocols (all on uint8 images, constants K1 = 0.01, K2 = 0.03, L = 255):
    ``'skimage_rgb'``   skimage ``structural_similarity(channel_axis=2, data_range=255)``: 7x7 uniform window,
                        sample covariance (N/(N-1), N = 49), mean over the valid (3-pixel-cropped) region of each
                        channel, then mean of the three channels. What GLTG-AFlow, ZMAR-SNFlow and UPT-Flow report and
                        what LLFlow's ``Measure.py`` computed by default before 2022-02-16.
    ``'matlab_rgb'``    Wang et al.'s MATLAB ``ssim_index``: 11x11 Gaussian window, sigma 1.5 (normalised over the
                        11x11 taps), population covariance, SSIM map over the *valid* region only (5 pixels cropped on
                        each side, no padding), mean per channel, then mean of R, G, B. The BasicSR / Retinexformer
                        ``calculate_ssim`` convention (with ``crop_border=0``). Implemented here with
                        ``cv2.sepFilter2D``; equal to skimage ``gaussian_weights=True, sigma=1.5,
                        use_sample_covariance=False``.
    ``'gray'``          ``cv2.cvtColor(x, COLOR_RGB2GRAY)`` on uint8 (cv2's rounded fixed-point gray), then 2-D skimage
                        SSIM with the 7x7 uniform window. This is what LLFlow's ``Measure.ssim`` computes with
                        scikit-image >= 0.20, where its ``multichannel=True`` keyword is silently swallowed.
    ``'gray_percolumn'`` the same gray image, but SSIM computed as LLFlow's ``Measure.ssim`` did with the pinned
                        scikit-image 0.18.1 (and 0.19): ``multichannel=True`` on a 2-D array treats the last axis (the
                        W columns) as channels, so it computes a **1-D SSIM along each image column** (7-tap uniform
                        window along the rows, sample covariance with N = 7, i.e. x 7/6; the 3 rows at the top and
                        bottom are cropped) and averages the W column values. Use it to reproduce LLFlow-era numbers
                        (its README's "0.93").

GT-mean brightness correction (applied to the prediction before quantisation; the GT is never changed):
    ``gt_mean_llflow``  exactly LLFlow ``test.py`` (and GLTG ``test_with_tricks.py``): out <- clip(out · g / m, 0, 1),
                        m = plain mean of all RGB values of the raw (unclipped) output, g = mean of
                        ``cv2.cvtColor(gt_rgb.astype(float32), COLOR_BGR2GRAY)`` / 255, i.e. the GT gray level with
                        R weighted 0.114 and B 0.299 (the official code feeds an RGB array to BGR2GRAY). The official
                        test then quantises by truncation (``quantise(x, 'truncate')``).
    ``gt_mean_plain``   out <- clip(out · mean(gt) / mean(out), 0, 1) with plain means over all RGB values (both on the
                        [0, 1] scale): the self-consistent variant.

LPIPS (``LPIPSMetric``): the ``lpips`` package, AlexNet trunk, v0.1 linear heads (shipped inside the package), inputs
RGB uint8 mapped to [-1, 1] by x / 127.5 - 1. Works offline: the AlexNet ``features.*`` weights come from an explicit
file (argument, else ``$LPIPS_ALEXNET``, else an already-downloaded torchvision checkpoint in the torch hub cache);
nothing is ever downloaded. When none is available, :class:`LPIPSUnavailable` says why.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import cv2
import numpy as np
from scipy.ndimage import uniform_filter1d
from skimage.metrics import structural_similarity as _sk_ssim

PSNR_MODES = ("uint8", "float")
SSIM_PROTOCOLS = ("skimage_rgb", "matlab_rgb", "gray", "gray_percolumn")
GT_MEAN_MODES = ("none", "llflow", "plain")
QUANTISATIONS = ("truncate", "round")
NO_REF_METRICS = ("niqe",)
#: True where a larger value is better (report tables mark the best method per column)
HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "lpips": False, "niqe": False}
_NO_REF_DESCRIPTIONS = {"niqe": "NIQE (LIVE pristine model, MATLAB Y rounded, 96x96 blocks, 2 scales)"}

_SSIM_DESCRIPTIONS = {
    "skimage_rgb": "skimage_rgb (7x7 uniform, sample cov., RGB mean)",
    "matlab_rgb": "matlab_rgb (11x11 Gaussian sigma 1.5, valid region, RGB mean)",
    "gray": "gray (cv2 RGB2GRAY uint8, 2-D 7x7 uniform)",
    "gray_percolumn": "gray_percolumn (cv2 RGB2GRAY uint8, 1-D 7-tap SSIM per column, skimage<=0.19 LLFlow)",
}
_GT_MEAN_DESCRIPTIONS = {
    "none": "none",
    "llflow": "llflow (out*mean(BGR2GRAY(gt_rgb))/mean(out), clip)",
    "plain": "plain (out*mean(gt)/mean(out), RGB means, clip)",
}


# ----------------------------------------------------------------------------------------------------------------
# input checks
# ----------------------------------------------------------------------------------------------------------------
def _check_pair(a: np.ndarray, b: np.ndarray, what: str) -> None:
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray):
        raise TypeError(f"{what}: expected numpy arrays, got {type(a).__name__} and {type(b).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{what}: shape mismatch {a.shape} vs {b.shape}")
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"{what}: expected HxWx3 RGB arrays, got shape {a.shape}")


def _check_uint8(a: np.ndarray, b: np.ndarray, what: str) -> None:
    _check_pair(a, b, what)
    if a.dtype != np.uint8 or b.dtype != np.uint8:
        raise TypeError(f"{what}: expected uint8 images, got {a.dtype} and {b.dtype} (quantise floats first)")


def _to_float01(x: np.ndarray) -> np.ndarray:
    """uint8 -> float64 / 255; floating arrays are returned as float64 unchanged (no clipping)."""
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float64, copy=False)
    raise TypeError(f"expected a uint8 or floating-point image, got {x.dtype}")


def shave(img: np.ndarray, border: int) -> np.ndarray:
    """``img`` without ``border`` pixels on each side (a view); an image too small to keep any pixel is an error."""
    if not border:
        return img
    h, w = img.shape[:2]
    if 2 * border >= h or 2 * border >= w:
        raise ValueError(f"crop border {border} px per side leaves nothing of a {w}x{h} (WxH) image")
    return img[border:h - border, border:w - border]


# ----------------------------------------------------------------------------------------------------------------
# PSNR
# ----------------------------------------------------------------------------------------------------------------
def psnr(pred: np.ndarray, gt: np.ndarray, mode: str = "uint8") -> float:
    """PSNR in dB over all RGB values; ``inf`` for identical images.

    mode ``'uint8'``: both uint8, peak 255 (= skimage ``peak_signal_noise_ratio`` on uint8).
    mode ``'float'``: peak 1; uint8 inputs are divided by 255, floating inputs are used as given (not clipped).
    """
    if mode == "uint8":
        _check_uint8(pred, gt, "psnr")
        a, b, peak = pred.astype(np.float64), gt.astype(np.float64), 255.0
    elif mode == "float":
        _check_pair(pred, gt, "psnr")
        a, b, peak = _to_float01(pred), _to_float01(gt), 1.0
    else:
        raise ValueError(f"unknown PSNR mode {mode!r}; choose one of {PSNR_MODES}")
    mse = float(np.mean((a - b) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(peak * peak / mse)


# ----------------------------------------------------------------------------------------------------------------
# SSIM
# ----------------------------------------------------------------------------------------------------------------
_C1 = (0.01 * 255.0) ** 2
_C2 = (0.03 * 255.0) ** 2


def _ssim_matlab_channel(x: np.ndarray, y: np.ndarray) -> float:
    """MATLAB ssim_index on one 2-D float64 channel: 11x11 Gaussian sigma 1.5, valid region, population stats."""
    if min(x.shape) < 11:
        raise ValueError(f"matlab_rgb SSIM needs images of at least 11x11 pixels, got {x.shape}")
    k = cv2.getGaussianKernel(11, 1.5, cv2.CV_64F)

    def filt(img):  # correlation with the (symmetric) window, then keep only the fully covered "valid" region
        return cv2.sepFilter2D(img, cv2.CV_64F, k, k, borderType=cv2.BORDER_REFLECT)[5:-5, 5:-5]

    mx, my = filt(x), filt(y)
    vx = filt(x * x) - mx * mx
    vy = filt(y * y) - my * my
    cxy = filt(x * y) - mx * my
    s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    return float(s.mean())


def _ssim_percolumn(x: np.ndarray, y: np.ndarray) -> float:
    """Mean over columns of a 1-D SSIM along each column (skimage 0.18/0.19 ``multichannel=True`` on a 2-D array)."""
    win = 7
    if x.shape[0] < win:
        raise ValueError(f"gray_percolumn SSIM needs at least {win} rows, got {x.shape}")
    cov_norm = win / (win - 1.0)  # sample covariance with N = win**ndim = 7 (ndim = 1)

    def filt(img):
        return uniform_filter1d(img, size=win, axis=0, mode="reflect")

    mx, my = filt(x), filt(y)
    vx = cov_norm * (filt(x * x) - mx * mx)
    vy = cov_norm * (filt(y * y) - my * my)
    cxy = cov_norm * (filt(x * y) - mx * my)
    s = ((2 * mx * my + _C1) * (2 * cxy + _C2)) / ((mx * mx + my * my + _C1) * (vx + vy + _C2))
    pad = (win - 1) // 2
    per_column = s[pad:-pad].mean(axis=0)
    return float(per_column.mean())


def ssim(pred: np.ndarray, gt: np.ndarray, protocol: str = "skimage_rgb") -> float:
    """SSIM of two HxWx3 RGB uint8 images under a named protocol (see the module docstring)."""
    _check_uint8(pred, gt, "ssim")
    if protocol == "skimage_rgb":
        return float(_sk_ssim(pred, gt, channel_axis=2, data_range=255))
    if protocol == "matlab_rgb":
        a, b = pred.astype(np.float64), gt.astype(np.float64)
        return float(np.mean([_ssim_matlab_channel(a[..., c], b[..., c]) for c in range(3)]))
    if protocol in ("gray", "gray_percolumn"):
        ga = cv2.cvtColor(pred, cv2.COLOR_RGB2GRAY)
        gb = cv2.cvtColor(gt, cv2.COLOR_RGB2GRAY)
        if protocol == "gray":
            return float(_sk_ssim(ga, gb, data_range=255))
        return _ssim_percolumn(ga.astype(np.float64), gb.astype(np.float64))
    raise ValueError(f"unknown SSIM protocol {protocol!r}; choose one of {SSIM_PROTOCOLS}")


# ----------------------------------------------------------------------------------------------------------------
# GT-mean correction and quantisation
# ----------------------------------------------------------------------------------------------------------------
def quantise(x: np.ndarray, method: str = "truncate") -> np.ndarray:
    """[0, 1] float image -> uint8: clip to [0, 1], multiply by 255 (in x's own float precision), then
    ``'truncate'`` (``astype(uint8)``, LLFlow/GLTG/UPT test scripts) or ``'round'`` (round half to even, like
    BasicSR's ``tensor2img``). A uint8 input is returned unchanged (copy)."""
    if method not in QUANTISATIONS:
        raise ValueError(f"unknown quantisation {method!r}; choose one of {QUANTISATIONS}")
    if x.dtype == np.uint8:
        return x.copy()
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"quantise expects a floating-point image in [0, 1], got {x.dtype}")
    y = np.clip(x, 0, 1) * x.dtype.type(255)
    if method == "round":
        y = np.rint(y)
    return y.astype(np.uint8)


def _scale_and_clip(out: np.ndarray, target_mean: float, out_mean: float) -> np.ndarray:
    if out_mean == 0 or not np.isfinite(out_mean):
        # an all-black prediction cannot be rescaled; leave it as it is rather than produce inf/nan.
        # (A negative mean -- possible for a raw output -- is used as is, exactly like the official code.)
        return np.clip(out, 0, 1)
    ratio = out.dtype.type(target_mean / out_mean)
    return np.clip(out * ratio, 0, 1)


def gt_mean_llflow(out: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """LLFlow ``test.py``'s GT-mean correction (spec fact 7), returned as float32 in [0, 1] (not quantised).

    out: HxWx3 RGB prediction, float in [0, 1] (raw network output, may lie outside) or uint8 (divided by 255).
    gt:  HxWx3 RGB uint8 reference.
    out <- clip(out * g / m, 0, 1); m = mean of all RGB values of the raw ``out``;
    g = mean(cv2.cvtColor(gt.astype(float32), COLOR_BGR2GRAY)) / 255 (BGR2GRAY on an RGB array, as the official code).
    A prediction with mean exactly 0 is only clipped (the official code would divide by zero); a negative mean is
    used as is, like the official code. Quantise afterwards with ``quantise(x, 'truncate')`` to match the
    official script exactly.
    """
    _check_pair(out, gt, "gt_mean_llflow")
    o = out.astype(np.float32) / np.float32(255) if out.dtype == np.uint8 else out.astype(np.float32)
    m = float(o.mean(dtype=np.float64))
    g = float(cv2.cvtColor(gt.astype(np.float32), cv2.COLOR_BGR2GRAY).mean(dtype=np.float64)) / 255.0
    return _scale_and_clip(o, g, m)


def gt_mean_plain(out: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Plain GT-mean correction: clip(out * mean(gt) / mean(out), 0, 1) with means over all RGB values.

    out: float in [0, 1] or uint8; gt: uint8 or float in [0, 1]. Returns float32 in [0, 1] (not quantised).
    """
    _check_pair(out, gt, "gt_mean_plain")
    o = out.astype(np.float32) / np.float32(255) if out.dtype == np.uint8 else out.astype(np.float32)
    return _scale_and_clip(o, float(_to_float01(gt).mean()), float(o.mean(dtype=np.float64)))


# ----------------------------------------------------------------------------------------------------------------
# LPIPS
# ----------------------------------------------------------------------------------------------------------------
class LPIPSUnavailable(RuntimeError):
    """LPIPS cannot be computed here (no AlexNet backbone file, or lpips/torch missing); ``str(e)`` is the reason."""


# torchvision checkpoint names of the ImageNet AlexNet (current and older torchvision)
_TORCHVISION_ALEXNET = ("alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth")
# lpips' alexnet wrapper keeps torchvision's features.<i> layer indices inside five slices
_ALEX_SLICE = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}


def resolve_lpips_backbone(backbone_path: Optional[str] = None) -> Path:
    """Where the AlexNet ``features.*`` weights come from: the argument, else ``$LPIPS_ALEXNET``, else a torchvision
    AlexNet checkpoint already in the torch hub cache (``$TORCH_HOME/hub/checkpoints``). Never downloads.
    Raises LPIPSUnavailable with the reason when none exists."""
    if backbone_path:
        p = Path(backbone_path).expanduser()
        if not p.is_file():
            raise LPIPSUnavailable(f"LPIPS backbone file {p} does not exist")
        return p
    env = os.environ.get("LPIPS_ALEXNET")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise LPIPSUnavailable(f"LPIPS_ALEXNET={env} does not exist")
        return p
    try:
        import torch.hub
        ckpt_dir = Path(torch.hub.get_dir()) / "checkpoints"
    except Exception as e:  # torch missing or broken
        raise LPIPSUnavailable(f"torch is not usable: {e}") from e
    for name in _TORCHVISION_ALEXNET:
        if (ckpt_dir / name).is_file():
            return ckpt_dir / name
    raise LPIPSUnavailable(
        "no AlexNet backbone for LPIPS: pass backbone_path/--lpips-backbone, set LPIPS_ALEXNET, or put torchvision's "
        f"{_TORCHVISION_ALEXNET[0]} into {ckpt_dir} (no download is attempted)")


class LPIPSMetric:
    """LPIPS (AlexNet, v0.1 linear heads), built once; call ``metric(pred_uint8, gt_uint8) -> float``.

    Raises LPIPSUnavailable (with the reason) when the backbone cannot be found or loaded.
    """

    def __init__(self, backbone_path: Optional[str] = None, device: str = "cpu"):
        self.backbone_path = resolve_lpips_backbone(backbone_path)
        try:
            import torch
            import lpips
        except Exception as e:
            raise LPIPSUnavailable(f"the lpips package cannot be imported: {e}") from e
        self._torch = torch
        self.device = torch.device(device)
        with warnings.catch_warnings():  # torchvision's deprecated `pretrained=` warnings; pnet_rand => no download
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(pretrained=False, net="alex", version="0.1", pnet_rand=True, verbose=False)
        heads = Path(lpips.__file__).resolve().parent / "weights" / "v0.1" / "alex.pth"
        try:
            head_sd = torch.load(heads, map_location="cpu", weights_only=True)
            trunk_sd = torch.load(self.backbone_path, map_location="cpu", weights_only=True)
        except Exception as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise LPIPSUnavailable(f"cannot read LPIPS weights ({heads} / {self.backbone_path}): {first}") from e
        if isinstance(trunk_sd, dict) and "state_dict" in trunk_sd and isinstance(trunk_sd["state_dict"], dict):
            trunk_sd = trunk_sd["state_dict"]
        sd = {}
        for idx, sl in _ALEX_SLICE.items():
            for kind in ("weight", "bias"):
                src = f"features.{idx}.{kind}"
                if src not in trunk_sd:
                    raise LPIPSUnavailable(f"{self.backbone_path} lacks '{src}': not a torchvision-style AlexNet file")
                sd[f"net.slice{sl}.{idx}.{kind}"] = trunk_sd[src]
        for i in range(5):
            key = f"lin{i}.model.1.weight"
            if key not in head_sd:
                raise LPIPSUnavailable(f"{heads} lacks '{key}'")
            sd[key] = head_sd[key]
        own = net.state_dict()
        for k, v in sd.items():
            if tuple(own[k].shape) != tuple(v.shape):
                raise LPIPSUnavailable(f"shape mismatch for {k}: {tuple(v.shape)} vs expected {tuple(own[k].shape)}")
        net.load_state_dict(sd, strict=False)  # scaling_layer buffers stay; lins.<i> share the lin<i> parameters
        self.net = net.eval().to(self.device)

    def _to_tensor(self, x: np.ndarray):
        t = self._torch.from_numpy(np.ascontiguousarray(x)).to(self.device, self._torch.float32)
        return (t.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0)

    def __call__(self, pred: np.ndarray, gt: np.ndarray) -> float:
        _check_uint8(pred, gt, "lpips")
        with self._torch.inference_mode():
            return float(self.net(self._to_tensor(pred), self._to_tensor(gt)).item())


_LPIPS_CACHE: Dict[Any, Any] = {}


def get_lpips_metric(backbone_path: Optional[str] = None, device: str = "cpu") -> LPIPSMetric:
    """A cached LPIPSMetric per (backbone, device); a failure is cached too and re-raised as LPIPSUnavailable."""
    key = (backbone_path, os.environ.get("LPIPS_ALEXNET"), os.environ.get("TORCH_HOME"), str(device))
    if key not in _LPIPS_CACHE:
        try:
            _LPIPS_CACHE[key] = LPIPSMetric(backbone_path, device)
        except LPIPSUnavailable as e:
            _LPIPS_CACHE[key] = e
    got = _LPIPS_CACHE[key]
    if isinstance(got, LPIPSUnavailable):
        raise LPIPSUnavailable(str(got))
    return got


# ----------------------------------------------------------------------------------------------------------------
# protocol, per-pair evaluation, aggregation
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Protocol:
    """How a number was measured. ``describe()`` must accompany every reported value.

    psnr: 'uint8' | 'float'; ssim: one of SSIM_PROTOCOLS; gt_mean: 'none' | 'llflow' | 'plain';
    lpips: compute LPIPS-alex v0.1; quantisation: 'truncate' | 'round', how a float prediction (or a GT-mean corrected
    one) becomes the uint8 image that uint8 PSNR, SSIM and LPIPS see. Float PSNR uses the unquantised image.
    crop_border: pixels shaved from every side of prediction and reference before anything else (GT-mean included);
    0 (the default) keeps the whole image. DRBN's published protocol shaves 10.

    Examples: the default (GLTG/UPT ``Measure.py``): ``Protocol()``. LLFlow's official ``test.py`` + ``Measure.py``
    with its pinned scikit-image 0.18.1: ``Protocol(ssim='gray_percolumn', gt_mean='llflow', lpips=True)``.
    """
    psnr: str = "uint8"
    ssim: str = "skimage_rgb"
    gt_mean: str = "none"
    lpips: bool = False
    quantisation: str = "truncate"
    inference: str = ""   # how the predictions were made (heat, tiles, self-ensemble, dtype), when known
    crop_border: int = 0
    no_ref: Tuple[str, ...] = ()
    full_ref: bool = True

    def __post_init__(self):
        if isinstance(self.crop_border, bool) or not isinstance(self.crop_border, int) or self.crop_border < 0:
            raise ValueError(f"Protocol.crop_border={self.crop_border!r}; expected a whole number of pixels >= 0")
        bad = [m for m in self.no_ref if m not in NO_REF_METRICS]
        if bad:
            raise ValueError(f"Protocol.no_ref={self.no_ref!r}; choose from {NO_REF_METRICS}")
        for name, allowed in (("psnr", PSNR_MODES), ("ssim", SSIM_PROTOCOLS), ("gt_mean", GT_MEAN_MODES),
                              ("quantisation", QUANTISATIONS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Protocol.{name}={getattr(self, name)!r}; choose one of {allowed}")

    @property
    def metric_keys(self) -> Tuple[str, ...]:
        """The per-image values this protocol produces, in table order."""
        return (("psnr", "ssim", "lpips") if self.full_ref else ()) + tuple(self.no_ref)

    def describe(self) -> str:
        parts = []
        if self.full_ref:
            psnr_txt = "PSNR uint8 RGB (peak 255)" if self.psnr == "uint8" else "PSNR float RGB (peak 1, unquantised)"
            gm = _GT_MEAN_DESCRIPTIONS[self.gt_mean]
            parts += [psnr_txt, f"SSIM {_SSIM_DESCRIPTIONS[self.ssim]}", f"GT-mean: {gm}"]
            if self.gt_mean != "none":
                parts.append(f"quantisation: {self.quantisation}")
            parts.append("LPIPS alex v0.1" if self.lpips else "LPIPS: off")
        else:
            parts.append("no reference")
        parts += [_NO_REF_DESCRIPTIONS[m] for m in self.no_ref]
        if self.crop_border:
            parts.append(f"crop border {self.crop_border} px per side")
        if self.inference:
            parts.append(f"inference: {self.inference}")
        return "; ".join(parts)

    def as_dict(self) -> Dict[str, Any]:
        d = asdict(self)
        d["no_ref"] = list(self.no_ref)
        d["description"] = self.describe()
        return d


DEFAULT_PROTOCOL = Protocol()

# Smallest (H, W) each SSIM protocol's window fits in, and the smallest side AlexNet (LPIPS) leaves a feature map of.
SSIM_MIN_SIZE = {"skimage_rgb": (7, 7), "matlab_rgb": (11, 11), "gray": (7, 7), "gray_percolumn": (7, 1)}
LPIPS_MIN_SIDE = 31


def size_problem(shape, protocol: Protocol, lpips: Optional[bool] = None) -> Optional[str]:
    """Why an image of `shape` (H, W, ...) is too small for `protocol` (None when it is not).

    PSNR works at any size; SSIM needs its window (SSIM_MIN_SIZE), LPIPS (when `lpips`, default protocol.lpips)
    needs LPIPS_MIN_SIDE pixels per side. Padding would change the numbers, so the callers refuse such images.
    """
    if not protocol.full_ref:
        return None
    h, w = int(shape[0]) - 2 * protocol.crop_border, int(shape[1]) - 2 * protocol.crop_border
    size = f"image is {int(shape[0])}x{int(shape[1])} (HxW)" + (
        f", {max(h, 0)}x{max(w, 0)} after the {protocol.crop_border}-pixel crop border" if protocol.crop_border else "")
    if h <= 0 or w <= 0:
        return None  # a crop border that leaves nothing: evaluate_pair names that itself
    mh, mw = SSIM_MIN_SIZE[protocol.ssim]
    if h < mh or w < mw:
        return f"{size}, smaller than the {mh}x{mw} window of SSIM protocol '{protocol.ssim}'; SSIM cannot be measured"
    if (protocol.lpips if lpips is None else lpips) and min(h, w) < LPIPS_MIN_SIDE:
        return f"{size}; LPIPS (AlexNet) needs at least {LPIPS_MIN_SIDE} pixels per side"
    return None


def evaluate_pair(pred: np.ndarray, gt: Optional[np.ndarray], protocol: Protocol = DEFAULT_PROTOCOL,
                  lpips_metric: Optional[LPIPSMetric] = None) -> Dict[str, Any]:
    """Metrics of one prediction against its reference under ``protocol``.

    pred: HxWx3 RGB, uint8 or float in [0, 1] (raw output; it is quantised with ``protocol.quantisation``).
    gt:   HxWx3 RGB uint8; None when ``protocol.full_ref`` is false (no-reference metrics only).
    Returns {'psnr': float, 'ssim': float, 'lpips': float | None} (full reference) plus one value per
    ``protocol.no_ref`` metric (computed on the prediction as quantised, before any GT-mean correction), and
    'lpips_unavailable_reason' when LPIPS was requested but cannot be computed. With ``protocol.lpips`` and no
    ``lpips_metric`` a cached default (``get_lpips_metric()``) is used.
    """
    res: Dict[str, Any] = {}
    if protocol.no_ref:
        from utils.niqe import niqe  # scipy-heavy; only when asked for
        own = shave(pred, protocol.crop_border)
        own = own if own.dtype == np.uint8 else quantise(np.clip(own, 0, 1), protocol.quantisation)
        res["niqe"] = niqe(np.ascontiguousarray(own))
    if not protocol.full_ref:
        return res
    if gt is None:
        raise ValueError("evaluate_pair: a full-reference protocol needs the reference image")
    _check_pair(pred, gt, "evaluate_pair")
    if gt.dtype != np.uint8:
        raise TypeError(f"evaluate_pair: the reference must be uint8, got {gt.dtype}")
    pred, gt = shave(pred, protocol.crop_border), shave(gt, protocol.crop_border)
    if protocol.gt_mean == "llflow":
        f = gt_mean_llflow(pred, gt)
    elif protocol.gt_mean == "plain":
        f = gt_mean_plain(pred, gt)
    elif pred.dtype == np.uint8:
        f = pred
    else:
        f = np.clip(pred, 0, 1)
    q = f if f.dtype == np.uint8 else quantise(f, protocol.quantisation)

    res.update({
        "psnr": psnr(q, gt, "uint8") if protocol.psnr == "uint8" else psnr(f, gt, "float"),
        "ssim": ssim(q, gt, protocol.ssim),
        "lpips": None,
    })
    if protocol.lpips:
        try:
            metric = lpips_metric if lpips_metric is not None else get_lpips_metric()
            res["lpips"] = metric(q, gt)
        except LPIPSUnavailable as e:
            res["lpips_unavailable_reason"] = str(e)
    return res


def _mean(values: List[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def _std(values: List[float]) -> Optional[float]:
    """Population standard deviation over images (ddof 0); None without values."""
    return float(np.std(values)) if values else None


@dataclass
class MetricAggregator:
    """Collects per-image results; ``means()`` averages per-image values (PSNR is a mean of per-image dB values,
    as every LLIE test script does). LPIPS is averaged over the images that have it. The metrics are
    ``protocol.metric_keys`` (psnr, ssim, lpips for a full-reference protocol, then the no-reference ones).

    A metric that is undefined for an image (NaN, e.g. NIQE of a flat image; any non-finite value but PSNR's +inf
    for identical images) is stored as None, listed by image in ``undefined`` with a warning, and the means say
    over how many images they were taken."""
    protocol: Protocol = DEFAULT_PROTOCOL
    rows: List[Dict[str, Any]] = field(default_factory=list)
    undefined: Dict[str, List[str]] = field(default_factory=dict)

    @property
    def keys(self) -> Tuple[str, ...]:
        return self.protocol.metric_keys

    def add(self, name: str, result: Dict[str, Any]) -> None:
        row = {"name": name}
        for k in self.keys:
            v = result.get(k)
            if v is not None and not math.isfinite(float(v)) and not (k == "psnr" and v == math.inf):
                logging.getLogger("lowlight_flow").warning("%s is undefined for %s (%s): left out of its mean",
                                                           k.upper(), name, v)
                self.undefined.setdefault(k, []).append(name)
                v = None
            row[k] = v
        self.rows.append(row)

    def counts(self) -> Dict[str, int]:
        """Per metric: over how many images its mean is taken."""
        return {k: len(self._values(k)) for k in self.keys}

    @property
    def count(self) -> int:
        return len(self.rows)

    def _values(self, k: str) -> List[float]:
        # inf (identical images) would make a mean meaningless only for PSNR, where it is the honest answer
        return [r[k] for r in self.rows if r[k] is not None and not (isinstance(r[k], float) and math.isnan(r[k]))]

    def means(self) -> Dict[str, Optional[float]]:
        return {k: _mean(self._values(k)) for k in self.keys}

    def stds(self) -> Dict[str, Optional[float]]:
        """Standard deviation over images of each metric (ddof 0)."""
        return {k: _std(self._values(k)) for k in self.keys}

    def summary(self, lpips_unavailable_reason: Optional[str] = None) -> Dict[str, Any]:
        """{'psnr','ssim','lpips' (means; with no-reference metrics also e.g. 'niqe'), 'std' (per metric),
        'count', 'protocol' (describe() + fields), 'per_image'} and, when LPIPS has no value,
        'lpips_unavailable_reason'."""
        out: Dict[str, Any] = dict(self.means())
        with np.errstate(invalid="ignore"):
            out["std"] = self.stds()
        out["count"] = self.count
        out["counts"] = self.counts()
        if self.undefined:
            out["undefined"] = {k: list(v) for k, v in self.undefined.items()}
        out["protocol"] = self.protocol.as_dict()
        if "lpips" in self.keys and out["lpips"] is None:
            out["lpips_unavailable_reason"] = lpips_unavailable_reason or (
                "LPIPS not requested" if not self.protocol.lpips else "LPIPS unavailable")
        out["per_image"] = [dict(r) for r in self.rows]
        return out

    def format_means(self) -> str:
        m, counts = self.means(), self.counts()

        def fmt(k, d, unit=""):
            s = "n/a" if m[k] is None else f"{m[k]:.{d}f}{unit}"
            if k in self.undefined:
                names = self.undefined[k]
                s += (f" (over {counts[k]} of {self.count} images; undefined for {', '.join(names[:3])}"
                      + (" ..." if len(names) > 3 else "") + ")")
            return s
        parts = []
        if self.protocol.full_ref:
            parts.append(f"PSNR {fmt('psnr', 3, ' dB')}  SSIM {fmt('ssim', 4)}  LPIPS {fmt('lpips', 4)}")
        parts += [f"{k.upper()} {fmt(k, 4)}" for k in self.protocol.no_ref]
        return "  ".join(parts) + f"  (n={self.count}; {self.protocol.describe()})"
