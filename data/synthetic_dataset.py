"""``Synthetic``: training pairs made from normal-light images, optionally mixed with real pairs.

Keys (plus every base key: crop, flip, rot, log_low, histeq, aux maps, zero-maps, cache, resize_to all apply):
- ``dataroot_GT``: folder of normal-light images (the GT of every made pair).
- exactly one low-image source:
  - ``synthesis``: the physics synthesiser's ranges, a YAML path (e.g. confs/synthesis/physics_LOL.yml) or the
    same mapping inline. A new low image is drawn for every sample in every epoch, from the sample's generator
    (the base's ``set_epoch``/``_call_rng``: a function of the trainer's epoch seed and the index, so it repeats
    across runs, resumes and DataLoader workers). Outside training the draws depend on (``seed``, index) only, so
    validation sees the same images every time.
  - ``dataroot_LQ``: a folder of low images made beforehand (e.g. by ``python tools/synthesize.py --method
    n2ldiff``), paired with ``dataroot_GT`` by file stem.
- ``real``: optional real-pair dataset spec, e.g. ``{dataset: LoL, root: ...}``. Only its listing keys belong there
  (dataset, root, dataroot_LQ/GT, subset, split and the video split keys); reading and every preprocessing step
  follow this phase's keys, so real and made pairs go through identical augmentation.
- ``synthetic_ratio``: with ``real``, the probability that a sample comes from the made pairs (required, in
  [0, 1]); the choice is the sample generator's first draw, so it is deterministic per (epoch seed, index).
  Index i uses made pair i mod N_made or real pair i mod N_real; the length is the larger of the two.
Items are the base's; ``LQ_path`` is '' for a low image synthesised on the fly.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from utils.errors import OptionError
from utils.registry import DATASET_REGISTRY

from .base_dataset import LowLightDataset, Sample
from .image_io import list_images
from .lol_dataset import stem_samples
from .synthesis.physics import PhysicsConfig, load_physics_config, synthesize

REAL_LISTING_KEYS = ("dataset", "root", "dataroot_LQ", "dataroot_GT", "subset", "split", "test_split", "split_file",
                     "test_prefix", "split_match", "frame_pairing", "gt_exclude")


@DATASET_REGISTRY.register()
class Synthetic(LowLightDataset):
    """Pairs (synthesised low, normal) from a folder of normal-light images, mixable with real pairs."""

    def _where(self, key: str) -> str:
        return f"datasets.{self.opt.get('phase') or self.phase}.{key}"

    def _scan(self):
        gt_dir = self.opt.get("dataroot_GT")
        if not gt_dir:
            raise OptionError(f"{self._where('dataroot_GT')}: Synthetic needs the folder of normal-light images")
        if self.opt.get("swap_roles"):
            raise OptionError(f"{self._where('swap_roles')}: not supported by Synthetic (its low images are made "
                              f"from dataroot_GT); use PairedFolder with swap_roles on a made folder instead")
        spec, lq_dir = self.opt.get("synthesis"), self.opt.get("dataroot_LQ")
        if (spec is None) == (lq_dir is None):
            raise OptionError(f"{self._where('synthesis')}: give exactly one of 'synthesis' (physics ranges) or "
                              f"'dataroot_LQ' (low images made beforehand)")
        self.physics: PhysicsConfig | None = None
        if spec is not None:
            self.physics = (PhysicsConfig.from_dict(spec, self._where("synthesis")) if isinstance(spec, dict)
                            else load_physics_config(spec))
            made = [Sample(None, f, f.stem) for f in list_images(Path(gt_dir))]
        else:
            made = stem_samples(Path(lq_dir), Path(gt_dir))
        self.n_made = len(made)
        self.seed = int(self.opt.get("seed") or 0)
        real = self._real_samples()
        self.n_real = len(real)
        ratio = self.opt.get("synthetic_ratio")
        if real:
            if ratio is None:
                raise OptionError(f"{self._where('synthetic_ratio')} is required with 'real' (a probability)")
            if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or not 0 <= ratio <= 1:
                raise OptionError(f"{self._where('synthetic_ratio')} must be a number in [0, 1], got {ratio!r}")
        elif ratio is not None and ratio != 1:
            raise OptionError(f"{self._where('synthetic_ratio')} = {ratio!r} needs a 'real' dataset to mix with")
        self.ratio = float(1.0 if ratio is None else ratio)
        return made + real

    def _real_samples(self) -> list[Sample]:
        spec = self.opt.get("real")
        if spec is None:
            return []
        if not isinstance(spec, dict):
            raise OptionError(f"{self._where('real')} must be a dataset mapping, e.g. {{dataset: LoL, root: DIR}}")
        for k in spec:
            if k not in REAL_LISTING_KEYS:
                raise OptionError(f"{self._where('real')}.{k}: only listing keys belong here "
                                  f"({', '.join(REAL_LISTING_KEYS)}); preprocessing follows this phase's keys")
        name = spec.get("dataset")
        if not name or name == "Synthetic":
            raise OptionError(f"{self._where('real')}.dataset must name a real-pair dataset, got {name!r}")
        cls = DATASET_REGISTRY.get(name)
        if not cls.paired:
            raise OptionError(f"{self._where('real')}.dataset {name} has no GT; real pairs are needed")
        # Built only to list its files (no cache, no preprocessing): this dataset reads and augments them.
        listing = cls({**spec, "split": spec.get("split") or self.opt.get("split")}, self.phase)
        return list(listing.samples)

    def __len__(self):
        return max(self.n_made, self.n_real)

    def _call_rng(self, index: int) -> np.random.Generator:
        if not self.train and self._epoch_seed is None:
            return np.random.default_rng([self.seed, index])
        return super()._call_rng(index)

    def _load_pair(self, index, rng):
        made = self.n_real == 0 or rng.random() < self.ratio
        s = self.samples[index % self.n_made] if made else self.samples[self.n_made + index % self.n_real]
        gt = self._image(s.gt)
        if s.lq is not None:
            low = self._image(s.lq)
            self._check_sizes(s, low, gt)
        else:
            low = synthesize(gt, self.physics.sample(rng), rng)
        return s, low, gt
