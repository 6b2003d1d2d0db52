"""Semi-supervised training data (DRBN stage 2): the items of a paired dataset plus, per item, a crop of an unpaired
low-light photo (``LQ_unpaired``) and a crop of a high-quality reference photo (``HQ``).

The two extra sets are explicit folders, ``dataroot_unpaired_LQ`` and ``dataroot_HQ``, and must not be test data:
both official stage-2 branches drew their unpaired low-light images from test sets (spec 7.1), which leaks the test
set into training. :func:`check_unpaired_sources` refuses a folder that is, contains or lies inside a test folder of
the config, or whose path names an official test split.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from utils.errors import OptionError
from utils.registry import DATASET_REGISTRY

from .image_io import list_images, read_rgb
from .split_guard import check_not_test_folder
from .preprocess import paired_flip_rot, paired_random_crop, to_tensor01

UNPAIRED_KEYS = ("dataroot_unpaired_LQ", "dataroot_HQ")


def _related(a: Path, b: Path) -> bool:
    """a equals b, or one lies inside the other."""
    return a == b or a in b.parents or b in a.parents


def check_unpaired_sources(opt: dict) -> None:
    """OptionError when datasets.train's unpaired folders are a test split (see the module docstring).

    Test folders are ``dataroot_LQ`` / ``dataroot_GT`` of every ``datasets.<phase>`` but train and holdout
    validation, the top-level ``dataroot_LR``, ``dataroot_test`` and ``dataroot_GT`` (refused when equal, inside or
    containing), and those phases' layout ``root`` (refused when equal or containing). Any folder whose own name or
    parent's name has a test-split token, or that is a published SDSD/SID/SMID test video, is refused too
    (data/split_guard.py, the rule every checkpoint selection uses).
    """
    phases = opt.get("datasets") or {}
    train = phases.get("train") or {}
    tests = [(f"{k}", opt.get(k)) for k in ("dataroot_LR", "dataroot_test", "dataroot_GT")]
    roots = []
    for name, ph in phases.items():
        if name != "train" and not (ph or {}).get("holdout"):
            tests += [(f"datasets.{name}.{k}", (ph or {}).get(k)) for k in ("dataroot_LQ", "dataroot_GT")]
            roots.append((f"datasets.{name}.root", (ph or {}).get("root")))
    tests = [(k, Path(v).resolve()) for k, v in tests if v]
    roots = [(k, Path(v).resolve()) for k, v in roots if v]
    for key in UNPAIRED_KEYS:
        value = train.get(key)
        if not value:
            raise OptionError(f"option 'datasets.train.{key}' is required for semi-supervised training")
        p = Path(value).resolve()
        # a layout root holds the training split too: only the root itself (or a folder above it) is refused here;
        # its test split inside is caught by name below
        hits = [(k, t) for k, t in tests if _related(p, t)] + [(k, r) for k, r in roots if p == r or p in r.parents]
        if hits:
            tkey, tp = hits[0]
            raise OptionError(f"option 'datasets.train.{key}' ('{value}') overlaps the test data of '{tkey}' "
                              f"('{tp}'): unpaired training images must not come from a test split")
        check_not_test_folder(p, f"datasets.train.{key}", "unpaired training images")


def _fit_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Upscale an image whose shorter side is below `size` so a size x size crop exists."""
    h, w = img.shape[:2]
    if min(h, w) >= size:
        return img
    s = size / min(h, w)
    return cv2.resize(img, (max(size, round(w * s)), max(size, round(h * s))), interpolation=cv2.INTER_LINEAR)


@DATASET_REGISTRY.register()
class SemiSupervised(Dataset):
    """``paired_dataset`` (any registered paired dataset, built from the same phase options) plus, in the train
    phase, ``LQ_unpaired`` and ``HQ``: random ``GT_size`` crops of a random image of ``dataroot_unpaired_LQ`` /
    ``dataroot_HQ`` with the same flips as the paired data. Other phases yield the paired items unchanged.
    """

    paired = True

    def __init__(self, opt: dict, phase: str):
        self.opt = dict(opt or {})
        inner = self.opt.get("paired_dataset") or "LoL"
        if inner == "SemiSupervised":
            raise OptionError("option 'paired_dataset' must name a paired dataset, not SemiSupervised")
        self.paired_set = DATASET_REGISTRY.get(inner)(dict(self.opt, dataset=inner), phase)
        self.extra = phase == "train" and (self.opt.get("split") or "train") == "train"
        self._seed = None
        self._cache: dict = {}
        if self.extra:
            if not (self.opt.get("use_crop") and self.opt.get("GT_size")):
                raise OptionError("SemiSupervised training needs use_crop and GT_size (the unpaired crops match it)")
            self.size = int(self.opt["GT_size"])
            for key in UNPAIRED_KEYS:
                if not self.opt.get(key):
                    raise OptionError(f"option 'datasets.{phase}.{key}' is required for SemiSupervised")
            self.unpaired = list_images(self.opt["dataroot_unpaired_LQ"])
            self.hq = list_images(self.opt["dataroot_HQ"])
            flags = ("use_flip", "use_vflip", "use_transpose", "use_rot")
            self.flips = [bool(self.opt.get(k)) for k in flags]

    def __len__(self):
        return len(self.paired_set)

    def set_epoch(self, seed: int):
        """Seed this epoch's draws (see LowLightDataset.set_epoch); the extra crops use their own stream."""
        self.paired_set.set_epoch(seed)
        self._seed = int(seed)

    def _rng(self, index: int) -> np.random.Generator:
        seed = self._seed if self._seed is not None else int(torch.randint(0, 2**62, (1,)))
        return np.random.default_rng([seed % 2**63, index, 1])

    def _read(self, path: Path) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            img = _fit_crop(read_rgb(path), self.size)
            if self.opt.get("cache"):
                self._cache[path] = img
        return img

    def _crop(self, files, rng) -> torch.Tensor:
        img = self._read(files[int(rng.integers(len(files)))])
        img = paired_random_crop([img], self.size, rng)[0]
        hflip, vflip, transpose, rot = self.flips
        img = paired_flip_rot([img], rng, hflip, rot, vflip, transpose)[0]
        return to_tensor01(img)

    def __getitem__(self, index: int) -> dict:
        item = self.paired_set[index]
        if self.extra:
            rng = self._rng(index)
            item["LQ_unpaired"] = self._crop(self.unpaired, rng)
            item["HQ"] = self._crop(self.hq, rng)
        return item
