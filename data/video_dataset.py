"""SDSD, SID and SMID in the SNR-Net / Retinexformer layout: one sub-folder per video, frames as .npy or images.

Layouts (``root`` given; ``dataroot_LQ`` + ``dataroot_GT`` override them):
- ``SDSD``: ``root/{input,GT}/<video>/<frame>`` (indoor_static_np or outdoor_static_np), frames paired by name.
- ``SID``:  ``root/{short_sid2,long_sid2}/<video>/<frame>``; every low frame pairs with the video's single
  long-exposure reference (the first GT file in plain sorted order, as the reference readers take it).
- ``SMID``: ``root/{SMID_LQ_np,SMID_Long_np}/<video>/<frame>``; like SID, GT names containing ``half`` skipped.
Videos are paired across the two roots by folder name; a video missing on one side is an error.

Splits are explicit. Exactly one of ``test_split`` (list of video names; a comma-separated string is accepted),
``split_file`` (one name per line) or ``test_prefix`` (list of name prefixes) selects the test videos; phase train
uses all other videos, val/test use the selected ones. The published choices are:
SDSD-indoor ``[pair11, pair21, pair1, pair19, pair4, pair9]``; SDSD-outdoor ``[MVI_0898, MVI_0928, MVI_0906,
MVI_0975, MVI_1001, MVI_0997, MVI_1003, MVI_1026, MVI_1030, MVI_1032]``; SID ``test_prefix: ['1']`` (train =
names starting with 0 or 2); SMID the ``test_list.txt`` shipped next to ``SMID_Long_np``.

``split_match``: ``exact``, or ``base`` where ``<name>_2`` also matches ``<name>``. SDSD defaults to ``base``
because SNR-Net/Retinexformer test ``pairN_2`` with ``pairN`` (outdoor: 20 test folders, not the 10 the paper
states; Retinexformer#189). SID/SMID default to ``exact``.

Resolution: native by default. Retinexformer resizes every frame, train and test, to 960x512 (``resize_to:
[960, 512]``), which changes the reported PSNR by about 1 dB. ``npy_channel_order`` (default bgr) says how .npy
frames are stored; the reference readers swap channels after ``np.load``, i.e. they treat the arrays as BGR.
"""
from __future__ import annotations

import re
from pathlib import Path

from natsort import natsorted

from utils.errors import ImageError, OptionError, PairingError
from utils.registry import DATASET_REGISTRY

from .base_dataset import LowLightDataset, Sample, find_subdir, pair_files, short_list
from .image_io import FRAME_EXTENSIONS, list_images
from .lol_dataset import explicit_dirs


def _video_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ImageError(f"{root}: video folder not found")
    vids = natsorted([d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")], key=lambda d: d.name)
    if not vids:
        raise ImageError(f"{root}: contains no video sub-folders")
    return vids


class _VideoFrames(LowLightDataset):
    LQ_DIR = GT_DIR = ""
    SPLIT_MATCH = "exact"

    def _roots(self):
        dirs = explicit_dirs(self.opt)
        if dirs is not None:
            return dirs
        if not self.opt.get("root"):
            raise OptionError(f"{type(self).__name__}: give 'root' or dataroot_LQ + dataroot_GT")
        root = Path(self.opt["root"])
        return find_subdir(root, [self.LQ_DIR]), find_subdir(root, [self.GT_DIR])

    def _test_names(self):
        given = [k for k in ("test_split", "split_file", "test_prefix") if self.opt.get(k)]
        if len(given) != 1:
            raise OptionError(f"{type(self).__name__}: give exactly one of test_split, split_file, test_prefix "
                              f"(got {given or 'none'}); see data/video_dataset.py for the published splits")
        key = given[0]
        if key == "split_file":
            path = Path(self.opt["split_file"])
            if not path.is_file():
                raise ImageError(f"{path}: split_file not found")
            names = [ln.strip() for ln in path.read_text().splitlines()]
            return "names", [n for n in names if n and not n.startswith("#")]
        val = self.opt[key]
        if isinstance(val, str):
            val = [v.strip() for v in val.split(",") if v.strip()]
        return ("prefix" if key == "test_prefix" else "names"), [str(v) for v in val]

    def _is_test(self, name: str, mode: str, entries, match: str) -> bool:
        if mode == "prefix":
            return any(name.startswith(p) for p in entries)
        return name in entries or (match == "base" and re.sub(r"_2$", "", name) in entries)

    def _scan(self):
        lq_root, gt_root = self._roots()
        pairs = pair_files(_video_dirs(lq_root), _video_dirs(gt_root), lambda d: d.name, lq_root, gt_root)
        mode, entries = self._test_names()
        match = self.opt.get("split_match", self.SPLIT_MATCH)
        if match not in ("exact", "base"):
            raise OptionError(f"split_match must be 'exact' or 'base', got {match!r}")
        names = [lq.name for lq, _ in pairs]
        if mode == "names":
            unknown = [e for e in entries if e not in names]
            if unknown:
                raise PairingError(f"{type(self).__name__}: test videos not found in {lq_root}: {short_list(unknown)}")
        elif not any(self._is_test(n, mode, entries, match) for n in names):
            raise PairingError(f"{type(self).__name__}: no video in {lq_root} starts with {entries}")
        samples = []
        for lq_dir, gt_dir in pairs:
            if self._is_test(lq_dir.name, mode, entries, match) != self.train_split:
                samples += self._frames(lq_dir, gt_dir)
        return samples

    def _frames(self, lq_dir: Path, gt_dir: Path) -> list[Sample]:
        raise NotImplementedError


@DATASET_REGISTRY.register()
class SDSD(_VideoFrames):
    """SDSD (static, SNR-Net release): frames paired by stem, or by natural-sorted position with
    ``frame_pairing: index`` (equal counts required). Keys: see the module docstring plus the base keys."""

    LQ_DIR, GT_DIR, SPLIT_MATCH = "input", "GT", "base"

    def _frames(self, lq_dir, gt_dir):
        lq = list_images(lq_dir, FRAME_EXTENSIONS)
        gt = list_images(gt_dir, FRAME_EXTENSIONS)
        how = self.opt.get("frame_pairing", "name")
        if how == "name":
            pairs = pair_files(lq, gt, lambda p: p.stem, lq_dir, gt_dir)
        elif how == "index":
            if len(lq) != len(gt):
                raise ImageError(f"{lq_dir} has {len(lq)} frames but {gt_dir} has {len(gt)}")
            pairs = list(zip(lq, gt))
        else:
            raise OptionError(f"frame_pairing must be 'name' or 'index', got {how!r}")
        return [Sample(a, b, f"{lq_dir.name}_{a.stem}") for a, b in pairs]


class _ReferenceGT(_VideoFrames):
    GT_EXCLUDE: tuple = ()

    def _frames(self, lq_dir, gt_dir):
        exclude = self.opt.get("gt_exclude", list(self.GT_EXCLUDE))
        gts = sorted((f for f in list_images(gt_dir, FRAME_EXTENSIONS) if not any(e in f.name for e in exclude)),
                     key=lambda f: f.name)
        if not gts:
            raise ImageError(f"{gt_dir}: no usable reference frame (excluded: {exclude})")
        return [Sample(f, gts[0], f"{lq_dir.name}_{f.stem}") for f in list_images(lq_dir, FRAME_EXTENSIONS)]


@DATASET_REGISTRY.register()
class SID(_ReferenceGT):
    """SID-Sony as processed by SNR-Net (``short_sid2``/``long_sid2``); one reference GT per video.
    Keys: see the module docstring (``gt_exclude``: substrings of GT names to skip) plus the base keys."""

    LQ_DIR, GT_DIR = "short_sid2", "long_sid2"


@DATASET_REGISTRY.register()
class SMID(_ReferenceGT):
    """SMID as processed by SNR-Net (``SMID_LQ_np``/``SMID_Long_np``); one reference GT per video, names
    containing 'half' skipped by default (``gt_exclude``). Keys: see the module docstring plus the base keys."""

    LQ_DIR, GT_DIR, GT_EXCLUDE = "SMID_LQ_np", "SMID_Long_np", ("half",)
