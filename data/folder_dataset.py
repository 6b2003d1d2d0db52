"""Generic folder datasets: ``PairedFolder`` (low/GT matched by stem) and ``UnpairedFolder`` (low only)."""
from __future__ import annotations

from pathlib import Path

from utils.errors import OptionError, PairingError
from utils.registry import DATASET_REGISTRY

from .base_dataset import LowLightDataset, Sample
from .image_io import list_images
from .lol_dataset import stem_samples


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
