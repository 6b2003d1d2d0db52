"""Building datasets from the registry and reproducible DataLoaders for them."""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from utils.registry import DATASET_REGISTRY


def create_dataset(phase_opt: dict, phase: str):
    """Instantiate ``DATASET_REGISTRY.get(phase_opt['dataset'])(phase_opt, phase)``."""
    name = (phase_opt or {}).get("dataset")
    if not name:
        raise ValueError(f"datasets.{phase}.dataset is missing (one of: {', '.join(DATASET_REGISTRY.keys())})")
    return DATASET_REGISTRY.get(name)(phase_opt, phase)


def _seed_worker(worker_id: int):
    # Datasets draw from torch.initial_seed(); this covers code that uses the global numpy/random RNGs.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SeededDataLoader(DataLoader):
    """A DataLoader whose per-sample random draws are reproducible with or without worker processes.

    Workers get seeds from ``generator`` anyway; with ``num_workers=0`` each new iteration (epoch) hands the
    dataset a fresh seed drawn from a second generator, so augmentation does not depend on torch's global seed.
    """

    def __init__(self, *args, aug_seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.aug_generator = torch.Generator()
        self.aug_generator.manual_seed(int(aug_seed))

    def __iter__(self):
        if self.num_workers == 0 and hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(int(torch.randint(0, 2**62, (1,), generator=self.aug_generator)))
        return super().__iter__()


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def create_dataloader(dataset, phase_opt: dict, phase: str, seed: int, distributed: bool = False) -> DataLoader:
    """A DataLoader for dataset.

    Train: ``batch_size`` (required), shuffle, drop_last, ``n_workers`` (default 0) workers seeded from a
    torch.Generator(seed + rank), so the sample order and every per-sample draw repeat from run to run.
    Other phases: batch 1, no shuffle. ``distributed`` uses a DistributedSampler (call ``sampler.set_epoch``
    each epoch; for val/test it pads the last ranks with repeated samples, as DistributedSampler does).
    Optional key: ``pin_memory`` (default false).
    """
    opt = phase_opt or {}
    train = phase == "train"
    workers = int(opt.get("n_workers") or 0)
    generator = torch.Generator()
    generator.manual_seed(int(seed) + _rank())
    if train:
        if not opt.get("batch_size"):
            raise ValueError("datasets.train.batch_size is required")
        batch = int(opt["batch_size"])
    else:
        batch = 1
    sampler = None
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=train, seed=int(seed), drop_last=train)
    if train and len(dataset) < batch * (1 if sampler is None else sampler.num_replicas):
        raise ValueError(f"train set has {len(dataset)} samples, fewer than one batch of {batch}; "
                         f"with drop_last no batch would ever be produced")
    return SeededDataLoader(dataset, batch_size=batch, shuffle=(train and sampler is None), sampler=sampler,
                            num_workers=workers, drop_last=train, pin_memory=bool(opt.get("pin_memory")),
                            worker_init_fn=_seed_worker, generator=generator, persistent_workers=False,
                            aug_seed=int(seed) * 1000003 + _rank())
