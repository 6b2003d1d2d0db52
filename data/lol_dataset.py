"""LOL-v1 (``LoL``) and LOL-v2 (``LoL_v2``) datasets, paired by name/number, never by sorted position."""
from __future__ import annotations

import re
from pathlib import Path

from utils.errors import OptionError
from utils.registry import DATASET_REGISTRY

from .base_dataset import LowLightDataset, Sample, find_subdir, pair_files
from .image_io import list_images


def explicit_dirs(opt: dict):
    """(dataroot_LQ, dataroot_GT) when both are given, None when neither; one without the other is an error."""
    lq, gt = opt.get("dataroot_LQ"), opt.get("dataroot_GT")
    if (lq is None) != (gt is None):
        raise OptionError("dataroot_LQ and dataroot_GT must be given together")
    return (Path(lq), Path(gt)) if lq is not None else None


def stem_samples(lq_dir: Path, gt_dir: Path) -> list[Sample]:
    """Samples from two folders paired by identical file stem."""
    pairs = pair_files(list_images(lq_dir), list_images(gt_dir), lambda p: p.stem, lq_dir, gt_dir)
    return [Sample(lq, gt, lq.stem) for lq, gt in pairs]


@DATASET_REGISTRY.register()
class LoL(LowLightDataset):
    """LOL-v1: ``root/our485/{low,high}`` for phase train, ``root/eval15/{low,high}`` otherwise; pairs by file stem.

    Keys: ``root``, or ``dataroot_LQ`` + ``dataroot_GT`` (override the layout), plus the base keys.
    """

    def _root(self) -> Path:
        if not self.opt.get("root"):
            raise OptionError(f"{type(self).__name__}: give 'root' (LOL-v1 layout) or dataroot_LQ + dataroot_GT")
        return Path(self.opt["root"])

    def _scan(self):
        dirs = explicit_dirs(self.opt)
        if dirs is None:
            split = find_subdir(self._root(), ["our485"] if self.train_split else ["eval15"])
            dirs = find_subdir(split, ["low"]), find_subdir(split, ["high"])
        return stem_samples(*dirs)


_V2_NUMBERED = re.compile(r"^(low|normal|high)0*(\d+)$", re.IGNORECASE)


def v2_pair_key(path: Path):
    """LOL-v2 pairing key: the number of ``lowNNNNN``/``normalNNNNN`` names, else the lower-cased stem."""
    m = _V2_NUMBERED.match(path.stem)
    return int(m.group(2)) if m else path.stem.lower()


@DATASET_REGISTRY.register()
class LoL_v2(LowLightDataset):
    """LOL-v2: ``root/{Real_captured,Synthetic}/{Train,Test}/{Low,Normal}`` (folder names case-insensitive;
    ``high`` is accepted for Normal, as the LLFlow authors renamed it).

    Real pairs ``lowNNNNN`` with ``normalNNNNN`` by the number; otherwise identical stems pair. Phase train reads
    Train, other phases Test. Keys: ``root``, ``subset`` (real | synthetic | both, default real; both = LLFlow's
    merged set), or ``dataroot_LQ`` + ``dataroot_GT`` (one folder pair, same number pairing), plus the base keys.
    """

    SUBSETS = {"real": ["Real_captured"], "synthetic": ["Synthetic"], "both": ["Real_captured", "Synthetic"]}

    def _scan(self):
        dirs = explicit_dirs(self.opt)
        if dirs is not None:
            return self._pair(*dirs)
        subset = self.opt.get("subset", "real")
        if subset not in self.SUBSETS:
            raise OptionError(f"LoL_v2.subset must be one of {sorted(self.SUBSETS)}, got {subset!r}")
        if not self.opt.get("root"):
            raise OptionError("LoL_v2: give 'root' (LOL-v2 layout) or dataroot_LQ + dataroot_GT")
        samples = []
        for sub in self.SUBSETS[subset]:
            split = find_subdir(find_subdir(self.opt["root"], [sub]), ["Train"] if self.train_split else ["Test"])
            samples += self._pair(find_subdir(split, ["Low"]), find_subdir(split, ["Normal", "high"]))
        return samples

    @staticmethod
    def _pair(lq_dir: Path, gt_dir: Path) -> list[Sample]:
        pairs = pair_files(list_images(lq_dir), list_images(gt_dir), v2_pair_key, lq_dir, gt_dir)
        return [Sample(lq, gt, lq.stem) for lq, gt in pairs]
