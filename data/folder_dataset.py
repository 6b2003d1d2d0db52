"""Generic folder datasets: ``PairedFolder`` (low/GT matched by stem), ``UnpairedFolder`` (low only) and
``HighLowFolders`` (several folders with low/ and high/)."""
from __future__ import annotations

from pathlib import Path

from utils.errors import OptionError, PairingError
from utils.registry import DATASET_REGISTRY

from .base_dataset import LowLightDataset, Sample, find_subdir, pair_files
from .image_io import list_images
from .lol_dataset import stem_samples, v2_pair_key


@DATASET_REGISTRY.register()
class PairedFolder(LowLightDataset):
    """Two flat folders ``dataroot_LQ`` and ``dataroot_GT`` whose files match by stem (any image extension).

    A low image without a GT, or a GT without a low image, is an error listing them. Plus the base keys.
    """

    def _scan(self):
        lq, gt = self.opt.get("dataroot_LQ"), self.opt.get("dataroot_GT")
        if not lq or not gt:
            raise OptionError("PairedFolder needs dataroot_LQ and dataroot_GT")
        return stem_samples(Path(lq), Path(gt))


@DATASET_REGISTRY.register()
class UnpairedFolder(LowLightDataset):
    """Every image in the flat folder ``dataroot_LQ``, without GT (items have no GT/GT_path). Plus the base keys."""

    paired = False

    def _scan(self):
        lq = self.opt.get("dataroot_LQ")
        if not lq:
            raise OptionError("UnpairedFolder needs dataroot_LQ")
        files = list_images(Path(lq))
        stems = [f.stem for f in files]
        dup = sorted({s for s in stems if stems.count(s) > 1})
        if dup:
            raise PairingError(f"{lq}: several files share a stem ({', '.join(dup)}); output names would collide")
        return [Sample(f, None, f.stem) for f in files]


@DATASET_REGISTRY.register()
class HighLowFolders(LowLightDataset):
    """Several folders, each with ``low/`` and ``high/`` (any case), concatenated in the order given: ``roots``
    (a list, or one path). Files pair by stem, or by number for LOL-v2's ``lowNNNNN``/``normalNNNNN`` names.
    The official N2LDiff training sets (LOL our485, LOL-v2 Real_captured/Train, VE-LOL-L-Cap-Full/train) have this
    layout. Plus the base keys.
    """

    def _scan(self):
        roots = self.opt.get("roots")
        if not roots:
            raise OptionError("HighLowFolders needs 'roots' (folders that hold low/ and high/)")
        samples = []
        for root in [roots] if isinstance(roots, str) else roots:
            lq_dir, gt_dir = find_subdir(root, ["low"]), find_subdir(root, ["high"])
            pairs = pair_files(list_images(lq_dir), list_images(gt_dir), v2_pair_key, lq_dir, gt_dir)
            samples += [Sample(lq, gt, lq.stem) for lq, gt in pairs]
        return samples
