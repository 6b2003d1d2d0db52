"""Built-in demo data: low/normal pairs synthesised from the photos shipped inside scikit-image, and ``Demo``.

Each normal image is a 256x384 (HxW) crop of a bundled photo. Its low-light partner is made physically: sRGB ->
linear, exposure scale in [0.02, 0.1], Poisson shot noise plus Gaussian read noise, back through the sRGB curve,
rounded to uint8. Everything is seeded, so the files are byte-identical on every machine with the same packages.
The layout is LOL-v1's (``our485/{low,high}`` = 12 train pairs, ``eval15/{low,high}`` = 3 val/test pairs), and the
val photos are never used for training (split by photo, not by crop).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from utils.errors import ImageError
from utils.registry import DATASET_REGISTRY

from .image_io import write_rgb
from .lol_dataset import LoL
from .synthesis.srgb import linear_to_srgb, srgb_to_linear

DEMO_SEED = 20240601
DEMO_HW = (256, 384)
_MARKER = ".demo_complete"
_VERSION = f"lowlight-flow demo data v1 seed={DEMO_SEED} size={DEMO_HW[0]}x{DEMO_HW[1]}"

# (name, skimage loader name, crop: top fraction, left fraction, height fraction of the largest 2:3 window)
_TRAIN = [
    ("rocket_a", "rocket", 0.0, 0.0, 1.0), ("rocket_b", "rocket", 0.3, 0.5, 0.6),
    ("hubble_a", "hubble_deep_field", 0.0, 0.0, 0.5), ("hubble_b", "hubble_deep_field", 0.5, 0.4, 0.5),
    ("retina_a", "retina", 0.1, 0.1, 0.4), ("retina_b", "retina", 0.5, 0.5, 0.4),
    ("motorcycle_a", "motorcycle_left", 0.0, 0.0, 1.0), ("motorcycle_b", "motorcycle_right", 0.4, 0.4, 0.55),
    ("ihc", "immunohistochemistry", 0.2, 0.0, 0.8), ("colorwheel", "colorwheel", 0.0, 0.0, 1.0),
    ("camera", "camera", 0.1, 0.0, 0.9), ("brick", "brick", 0.0, 0.0, 1.0),
]
_VAL = [("astronaut", "astronaut", 0.0, 0.0, 1.0), ("coffee", "coffee", 0.0, 0.0, 1.0),
        ("chelsea", "chelsea", 0.0, 0.0, 1.0)]


def default_demo_root() -> Path:
    """``$LLFLOW_DEMO_DIR`` if set, else ``<repo>/.cache/demo_data``."""
    env = os.environ.get("LLFLOW_DEMO_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".cache" / "demo_data"


def _load_photo(loader: str) -> np.ndarray:
    import skimage.data as skd  # imported lazily: only demo generation needs it

    if loader == "motorcycle_left":
        img = skd.stereo_motorcycle()[0]
    elif loader == "motorcycle_right":
        img = skd.stereo_motorcycle()[1]
    else:
        img = getattr(skd, loader)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3]).astype(np.uint8)


def _crop_resize(img: np.ndarray, top: float, left: float, frac: float) -> np.ndarray:
    h, w = img.shape[:2]
    oh, ow = DEMO_HW
    ch = int(min(h, w * oh / ow) * frac)
    cw = int(round(ch * ow / oh))
    y = int(top * (h - ch))
    x = int(left * (w - cw))
    crop = img[y:y + ch, x:x + cw]
    interp = cv2.INTER_AREA if ch >= oh else cv2.INTER_CUBIC
    return cv2.resize(crop, (ow, oh), interpolation=interp)


def degrade(normal_uint8: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible low-light capture of a normal sRGB uint8 image: exposure, Poisson-Gaussian noise, re-encoding."""
    lin = srgb_to_linear(normal_uint8.astype(np.float64) / 255.0)
    exposure = rng.uniform(0.02, 0.1)  # LOL-v1 low images average 4-25 of 255; this lands there
    full_well = rng.uniform(300.0, 1500.0)  # photo-electrons at linear 1.0: sets the shot-noise level
    read_sigma = rng.uniform(0.0005, 0.003)
    signal = rng.poisson(lin * exposure * full_well) / full_well
    noisy = signal + rng.normal(0.0, read_sigma, size=lin.shape)
    return np.round(linear_to_srgb(noisy) * 255.0).astype(np.uint8)


def generate_demo_data(root, seed: int = DEMO_SEED) -> Path:
    """Write the demo pairs into root (LOL-v1 layout) unconditionally; returns root."""
    root = Path(root)
    for split, items in (("our485", _TRAIN), ("eval15", _VAL)):
        for idx, (name, loader, top, left, frac) in enumerate(items):
            normal = _crop_resize(_load_photo(loader), top, left, frac)
            rng = np.random.default_rng([seed, 0 if split == "our485" else 1, idx])
            write_rgb(root / split / "high" / f"{name}.png", normal)
            write_rgb(root / split / "low" / f"{name}.png", degrade(normal, rng))
    return root


def _is_current(marker: Path) -> bool:
    try:
        return marker.read_text() == _VERSION
    except OSError:
        return False


def ensure_demo_data(root=None) -> Path:
    """Return the demo data folder, generating it on first use (idempotent, safe against concurrent callers)."""
    root = Path(root) if root is not None else default_demo_root()
    marker = root / _MARKER
    if _is_current(marker):
        return root
    if root.exists() and any(root.iterdir()) and not marker.is_file():
        raise ImageError(f"{root}: exists and is not a demo data folder; choose an empty or new folder")
    root.parent.mkdir(parents=True, exist_ok=True)
    # Build in a sibling temp folder and move it into place, so a crash never leaves a half-written data set.
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=str(root.parent)))
    os.chmod(tmp, 0o755)  # mkdtemp makes it owner-only; the moved folder should look like any other
    try:
        generate_demo_data(tmp)
        (tmp / _MARKER).write_text(_VERSION)
        if _is_current(marker):  # another process finished first: keep its copy
            return root
        if marker.is_file():  # an outdated version of our own data
            shutil.rmtree(root)
        elif root.exists():
            root.rmdir()
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_current(marker):  # losing the race to a valid copy is fine
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root


@DATASET_REGISTRY.register()
class Demo(LoL):
    """``LoL`` over the built-in demo data; key ``root`` (optional) overrides the cache folder."""

    def _root(self) -> Path:
        return ensure_demo_data(self.opt.get("root"))
