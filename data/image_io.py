"""Reading and writing 8-bit RGB images (and .npy frames) with one-line, file-naming errors."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from natsort import natsorted

from utils.atomic import atomic_open
from utils.errors import ImageError, OptionError, OutputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
FRAME_EXTENSIONS = IMAGE_EXTENSIONS | {".npy"}


def _to_rgb8(img: np.ndarray, path, bgr: bool) -> np.ndarray:
    """Validate a decoded array and return it as contiguous uint8 HxWx3 RGB."""
    if img.dtype == np.uint16:
        raise ImageError(f"{path}: 16-bit image; convert it to 8-bit first (values are never rescaled silently)")
    if img.dtype != np.uint8:
        raise ImageError(f"{path}: unsupported pixel type {img.dtype}; only 8-bit images are accepted")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        # Grayscale is accepted and replicated to 3 identical channels, because every network here expects RGB.
        return np.ascontiguousarray(np.repeat(img[:, :, None], 3, axis=2))
    if img.ndim != 3 or img.shape[2] not in (2, 3, 4):
        raise ImageError(f"{path}: unsupported image shape {img.shape}; expected HxW, HxWx3 or HxWx4")
    if img.shape[2] in (2, 4):
        alpha = img[:, :, -1]
        if not np.all(alpha == 255):
            raise ImageError(f"{path}: image has transparent pixels (alpha < 255); flatten it onto a background first")
        img = img[:, :, :-1]
        if img.shape[2] == 1:
            return np.ascontiguousarray(np.repeat(img, 3, axis=2))
    if bgr:
        img = img[:, :, ::-1]
    return np.ascontiguousarray(img)


def read_rgb(path) -> np.ndarray:
    """Read an image file as uint8 HxWx3 RGB.

    Grayscale images are converted to 3 identical channels; RGBA is accepted only when fully opaque (alpha dropped).
    16-bit or float images, transparency, missing and undecodable files raise ImageError naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise ImageError(f"{p}: file not found")
    # imdecode(fromfile) is cv2.imread(IMREAD_UNCHANGED) but also works for non-ASCII paths on Windows.
    try:
        buf = np.fromfile(str(p), dtype=np.uint8)
        img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    except (OSError, cv2.error):
        img = None
    if img is None:
        raise ImageError(f"{p}: cannot decode image (corrupt file or unsupported format)")
    return _to_rgb8(img, p, bgr=True)


def read_npy_rgb(path, channel_order: str = "bgr") -> np.ndarray:
    """Read an HxWx3 uint8 .npy frame (SNR-Net style) and return it as RGB.

    channel_order says how the array is stored: 'bgr' (what the SNR-Net/Retinexformer readers assume, they swap
    channels after np.load) or 'rgb'.
    """
    p = Path(path)
    if channel_order not in ("bgr", "rgb"):
        raise OptionError(f"channel_order must be 'bgr' or 'rgb', got {channel_order!r}")
    if not p.is_file():
        raise ImageError(f"{p}: file not found")
    try:
        arr = np.load(str(p), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise ImageError(f"{p}: cannot read .npy frame ({type(e).__name__})") from None
    if not isinstance(arr, np.ndarray):
        raise ImageError(f"{p}: .npy file does not hold a single array")
    return _to_rgb8(arr, p, bgr=(channel_order == "bgr"))


def read_frame(path, npy_channel_order: str = "bgr") -> np.ndarray:
    """Read an image file or a .npy frame as uint8 HxWx3 RGB."""
    if Path(path).suffix.lower() == ".npy":
        return read_npy_rgb(path, npy_channel_order)
    return read_rgb(path)


def write_rgb(path, img: np.ndarray) -> Path:
    """Write a uint8 HxWx3 RGB image; creates parent folders and replaces the target atomically."""
    p = Path(path)
    if not (isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3):
        desc = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ImageError(f"{p}: write_rgb expects a uint8 HxWx3 RGB array, got {desc}")
    ext = p.suffix.lower() or ".png"
    try:
        ok, enc = cv2.imencode(ext, np.ascontiguousarray(img[:, :, ::-1]))
    except cv2.error:
        ok = False
    if not ok:
        raise OutputError(f"{p}: cannot write images in format '{ext}' (use one of "
                          f"{', '.join(sorted(IMAGE_EXTENSIONS - {'.pgm'}))})")
    with atomic_open(p) as f:
        f.write(enc.tobytes())
    return p


def list_images(folder, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    """Natural-sorted image files (by extension, case-insensitive, hidden files skipped) directly inside folder."""
    d = Path(folder)
    if not d.is_dir():
        raise ImageError(f"{d}: image folder not found")
    files = [f for f in d.iterdir()
             if f.is_file() and not f.name.startswith(".") and f.suffix.lower() in extensions]
    if not files:
        raise ImageError(f"{d}: folder contains no images ({', '.join(sorted(extensions))})")
    return natsorted(files, key=lambda f: f.name)
