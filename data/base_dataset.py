"""The dataset base class: loading, optional RAM cache, zero-map injection, augmentation and LQ/AUX assembly.

Subclasses only find their files (``_scan``); everything a sample goes through is here, in the order of spec 1.4:
load -> (zero-map) -> histeq -> histeq_as_input -> crop -> centre crop -> flip -> rot -> /255 -> gamma_aug ->
aux map -> noise -> log_low -> concat_histeq.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from utils.errors import ImageError, OptionError
from utils.pairing import pair_by_key, short_list  # noqa: F401  (short_list re-exported)
from .image_io import read_frame
from .preprocess import (AUX_KINDS, add_noise, aux_input, build_lq, gamma_aug, histeq, paired_center_crop,
                         paired_flip_rot, paired_random_crop, random_gamma, to_tensor01)
from .zeromap import ZeroMapInjector


@dataclass(frozen=True)
class Sample:
    """One item: the low image (None when the dataset makes it on the fly), its GT (None when unpaired) and the
    output name."""
    lq: Path | None
    gt: Path | None
    name: str


def find_subdir(parent, names) -> Path:
    """The child folder of parent whose name equals one of names, ignoring case; errors list what exists."""
    parent = Path(parent)
    if not parent.is_dir():
        raise ImageError(f"{parent}: dataset folder not found")
    wanted = [n.lower() for n in names]
    for n in wanted:
        hits = [d for d in parent.iterdir() if d.is_dir() and d.name.lower() == n]
        if len(hits) > 1:
            raise ImageError(f"{parent}: ambiguous folders {short_list(h.name for h in hits)} (differ only in case)")
        if hits:
            return hits[0]
    found = sorted(d.name for d in parent.iterdir() if d.is_dir())
    raise ImageError(f"{parent}: none of the folders {'/'.join(names)} exists (found: {short_list(found) or 'none'})")


def pair_files(lq_files, gt_files, key, lq_dir, gt_dir) -> list[tuple[Path, Path]]:
    """Pair two file lists by key(path); duplicates and files without a partner (either side) are errors."""
    return pair_by_key(lq_files, gt_files, key, lq_dir, gt_dir, extra="error", what=("low image", "GT image"))[0]


def _opt_int(opt, key):
    v = opt.get(key)
    return None if v in (None, False) else int(v)


class LowLightDataset(Dataset):
    """Base of every dataset here, built as ``cls(opt, phase)`` from the phase dict ``datasets.<phase>``.

    Option keys read here (all optional):
    - input assembly: ``log_low``, ``concat_histeq``, ``histeq_as_input``, ``aux_input`` (None | gltg_mask |
      zmar_mask | upt_zero_map), ``zero_map`` (dict, see data.zeromap.ZeroMapInjector);
    - listing: ``split`` (train | test; default: the phase's own), ``swap_roles`` (the GT image becomes the input
      and the low image the target, e.g. N2LDiff's normal -> low task);
    - loading: ``cache`` (decode everything into RAM at construction, default false = lazy), ``resize_to``
      ([W, H], cv2 bilinear, applied to low and GT at load time; default native size), ``npy_channel_order``
      (bgr | rgb for .npy frames, default bgr);
    - train phase only: ``use_crop`` + ``GT_size``, ``center_crop_hr_size``, ``use_flip``, ``use_rot``,
      ``use_vflip``, ``use_transpose``,
      ``noise_prob`` + ``noise_level``, ``gamma_aug``.
    Items: ``LQ``, ``GT`` (paired only), ``AUX`` (when aux_input is set), ``LQ_path`` ('' for a low image made on
    the fly), ``GT_path`` (paired only),
    ``name``, and ``ZM_path`` ('' when no zero-map was injected) when a zero_map option is present. Outside the
    train phase also ``LQ_raw`` / ``GT_raw`` (uint8 HxWx3 as read, low after zero-map injection) and ``AUX_mask``
    (the injected zero-map, when one was), which evaluation feeds to the same enhance path as the test scripts.
    The class attribute ``paired`` says whether items carry GT.
    """

    paired = True

    def __init__(self, opt: dict, phase: str):
        self.opt = dict(opt or {})
        self.phase = phase
        self.train = phase == "train"  # augment and draw zero-maps at random
        # Which files to list: the training or the test split of the layout. Defaults to the phase; the trainer's
        # holdout validation lists the training split without augmenting it (split: train, phase: val).
        split = self.opt.get("split") or ("train" if self.train else "test")
        if split not in ("train", "test"):
            raise OptionError(f"split must be 'train' or 'test', got {split!r}")
        self.train_split = split == "train"
        self.flags = {k: bool(self.opt.get(k)) for k in ("log_low", "concat_histeq", "histeq_as_input")}
        self.need_his = self.flags["concat_histeq"] or self.flags["histeq_as_input"]
        self.aux_kind = self.opt.get("aux_input")
        if self.aux_kind not in AUX_KINDS:
            raise OptionError(f"aux_input must be one of {AUX_KINDS}, got {self.aux_kind!r}")
        self.zero_map = (ZeroMapInjector(self.opt["zero_map"], self.aux_kind, cache=bool(self.opt.get("cache")))
                         if self.opt.get("zero_map") else None)
        self.resize_to = self._parse_resize(self.opt.get("resize_to"))
        self.npy_channel_order = self.opt.get("npy_channel_order", "bgr")

        self.crop_size = _opt_int(self.opt, "GT_size") if self.opt.get("use_crop") else None
        if self.opt.get("use_crop") and not self.crop_size:
            raise OptionError(f"{type(self).__name__}: use_crop needs GT_size")
        self.center_crop = _opt_int(self.opt, "center_crop_hr_size")
        self.use_flip = bool(self.opt.get("use_flip"))
        self.use_rot = bool(self.opt.get("use_rot"))
        self.use_vflip = bool(self.opt.get("use_vflip"))
        self.use_transpose = bool(self.opt.get("use_transpose"))
        self.noise_prob = float(self.opt.get("noise_prob") or 0.0)
        self.noise_level = float(self.opt.get("noise_level") or 0.0)
        self.use_gamma = bool(self.opt.get("gamma_aug"))

        self.samples: list[Sample] = self._scan()
        if not self.samples:
            raise ImageError(f"{type(self).__name__} ({phase}): no samples found")
        if self.opt.get("swap_roles"):
            # The reverse task (N2LDiff synthesises low light from normal light): the network input is the
            # normally exposed image and the target the low one. Swapped here, so every later step sees it.
            if not self.paired:
                raise OptionError(f"datasets.{phase}.swap_roles: {type(self).__name__} has no pairs to swap")
            self.samples = [Sample(s.gt, s.lq, s.name) for s in self.samples]
        self._img_cache: dict = {}
        self._his_cache: dict = {}
        self._rng = None
        self._rng_key = None
        self._epoch_seed = None
        if self.opt.get("cache"):
            self._fill_cache()

    # -- subclass hooks
    def _scan(self) -> list[Sample]:
        raise NotImplementedError

    def _load_pair(self, index: int, rng: np.random.Generator) -> tuple[Sample, np.ndarray, np.ndarray | None]:
        """The sample behind index and its (low, GT or None) uint8 RGB arrays, before any augmentation.

        Datasets that make their low images (data/synthetic_dataset.py) override this; rng is the sample's
        generator, so what they draw is reproducible like the augmentation.
        """
        s = self.samples[index]
        low = self._image(s.lq)
        gt = self._image(s.gt) if s.gt is not None else None
        self._check_sizes(s, low, gt)
        return s, low, gt

    # -- loading
    @staticmethod
    def _parse_resize(v):
        if v is None:
            return None
        if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(int(x) > 0 for x in v)):
            raise OptionError(f"resize_to must be [W, H], got {v!r}")
        return int(v[0]), int(v[1])

    def _read(self, path: Path) -> np.ndarray:
        img = read_frame(path, self.npy_channel_order)
        if self.resize_to and (img.shape[1], img.shape[0]) != self.resize_to:
            img = cv2.resize(img, self.resize_to, interpolation=cv2.INTER_LINEAR)
        return img

    def _image(self, path: Path) -> np.ndarray:
        img = self._img_cache.get(path)
        return img if img is not None else self._read(path)

    def _his(self, path: Path | None, img: np.ndarray) -> np.ndarray:
        his = self._his_cache.get(path)
        # The cached histeq describes the cached low image only: pixels changed since (zero-map injection) or made
        # on the fly get their own.
        return his if his is not None and img is self._img_cache.get(path) else histeq(img)

    def _fill_cache(self):
        for s in self.samples:
            for p in (s.lq, s.gt):
                if p is not None and p not in self._img_cache:
                    self._img_cache[p] = self._read(p)
            if s.lq is None:  # made on the fly: nothing to check or equalise yet
                continue
            self._check_sizes(s, self._img_cache[s.lq], self._img_cache.get(s.gt) if s.gt else None)
            if self.need_his and s.lq not in self._his_cache:
                self._his_cache[s.lq] = histeq(self._img_cache[s.lq])

    @staticmethod
    def _check_sizes(s: Sample, low, gt):
        if gt is not None and low.shape[:2] != gt.shape[:2]:
            raise ImageError(f"size mismatch: low image {s.lq} is {low.shape[0]}x{low.shape[1]} but its GT "
                             f"{s.gt} is {gt.shape[0]}x{gt.shape[1]} (HxW)")

    def set_epoch(self, seed: int):
        """Seed this epoch's per-sample random draws (crop, flip, rot, noise, gamma, zero-map choice).

        With an epoch seed, the draws of sample i depend only on (seed, i): the same in any worker, in any order,
        and after a resume part-way through the epoch. Without it, draws follow the DataLoader's worker seed
        (or torch's seed when used bare) as a stream.
        """
        self._epoch_seed = int(seed)
        self._rng = None

    def _call_rng(self, index: int) -> np.random.Generator:
        if self._epoch_seed is not None:
            return np.random.default_rng([self._epoch_seed % 2**63, index])
        info = get_worker_info()
        key = info.seed if info is not None else torch.initial_seed()
        if self._rng is None or key != self._rng_key:
            self._rng, self._rng_key = np.random.default_rng(key % 2**63), key
        return self._rng

    # -- Dataset API
    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        rng = self._call_rng(index)
        s, low, gt = self._load_pair(index, rng)
        src = s.lq if s.lq is not None else s.gt  # the file errors name (the normal image of a made low image)

        white, zm_path = None, None
        if self.zero_map is not None:
            zm_path = self.zero_map.choose(index, self.train, rng)
            if zm_path is not None:
                low, white = self.zero_map.apply(low, zm_path, src)
        his = self._his(s.lq, low) if self.need_his else None
        net_low = his if self.flags["histeq_as_input"] else low

        arrays = {"low": net_low, "gt": gt, "his": his, "white": white}
        keys = [k for k, v in arrays.items() if v is not None]
        if self.train:
            vals = [arrays[k] for k in keys]
            if self.crop_size:
                vals = paired_random_crop(vals, self.crop_size, rng, name=str(src))
            if self.center_crop:
                vals = paired_center_crop(vals, self.center_crop, name=str(src))
            vals = paired_flip_rot(vals, rng, self.use_flip, self.use_rot, self.use_vflip, self.use_transpose)
            arrays.update(zip(keys, vals))

        low_t = to_tensor01(arrays["low"])
        if self.train and self.use_gamma:
            low_t = gamma_aug(low_t, random_gamma(rng))
        white_t = None
        if arrays["white"] is not None:
            white_t = torch.from_numpy(np.ascontiguousarray(arrays["white"].transpose(2, 0, 1))).float()
        # The aux map describes image content, so it is taken before the noise draw.
        aux = aux_input(low_t, self.aux_kind, zero_map=white_t)
        if self.train:
            low_t = add_noise(low_t, rng, self.noise_prob, self.noise_level)
        his_t = to_tensor01(arrays["his"]) if arrays["his"] is not None else None
        # net_low already is the histeq when histeq_as_input, so build_lq must not substitute again (noise kept).
        lq = build_lq(low_t, his_t, {**self.flags, "histeq_as_input": False})

        item = {"LQ": lq, "LQ_path": str(s.lq) if s.lq is not None else "", "name": s.name}
        if arrays["gt"] is not None:
            item["GT"] = to_tensor01(arrays["gt"])
            item["GT_path"] = str(s.gt)
        if not self.train:
            # Evaluation runs the test scripts' path (engine/evaluate.py): it pads and preprocesses the 8-bit image
            # itself, so it gets the image as read (after any zero-map injection) and the injected mask.
            item["LQ_raw"] = low
            if gt is not None:
                item["GT_raw"] = gt
            if white is not None:
                item["AUX_mask"] = white
        if aux is not None:
            item["AUX"] = aux
        if self.zero_map is not None:
            item["ZM_path"] = str(zm_path) if zm_path is not None else ""
        return item
