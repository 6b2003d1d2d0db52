"""Building datasets from the registry, and the resumable training DataLoader."""
from __future__ import annotations

from torch.utils.data import DataLoader, default_collate

from utils.errors import ImageError, OptionError
from utils.registry import DATASET_REGISTRY
from .sampler import EpochSampler


def create_dataset(phase_opt: dict, phase: str):
    """Instantiate ``DATASET_REGISTRY.get(phase_opt['dataset'])(phase_opt, phase)``."""
    name = (phase_opt or {}).get("dataset")
    if not name:
        raise OptionError(f"datasets.{phase}.dataset is missing (one of: {', '.join(DATASET_REGISTRY.keys())})")
    return DATASET_REGISTRY.get(name)(phase_opt, phase)


def collate_same_size(items: list):
    """default_collate, after checking the images can be stacked: different sizes are an error naming two files."""
    first = items[0]["LQ"].shape[-2:]
    for it in items[1:]:
        if it["LQ"].shape[-2:] != first:
            (h0, w0), (h1, w1) = first, it["LQ"].shape[-2:]
            raise ImageError(f"training images of different sizes in one batch: {items[0].get('LQ_path')} is "
                             f"{h0}x{w0}, {it.get('LQ_path')} is {h1}x{w1} (HxW); set datasets.train.use_crop and "
                             f"GT_size (or resize_to), or batch_size 1")
    return default_collate(items)


def create_train_loader(dataset, phase_opt: dict, seed: int, rank: int = 0, world_size: int = 1):
    """(DataLoader, EpochSampler) for training: shuffled by (seed, epoch), split across ranks, drop_last.

    Call ``sampler.set_epoch(epoch, skip)`` before each epoch; per-sample augmentation draws are seeded by the
    dataset's ``set_epoch`` (data/base_dataset.py), so batches are the same with or without worker processes.
    """
    batch = int(phase_opt.get("batch_size") or 1)
    sampler = EpochSampler(len(dataset), seed, shuffle=True, rank=rank, world_size=world_size)
    if sampler.per_rank < batch:
        raise OptionError(f"train set has {len(dataset)} pairs, fewer than one batch of {batch} per process "
                          f"(datasets.train.batch_size)")
    loader = DataLoader(dataset, batch_size=batch, sampler=sampler, drop_last=True, collate_fn=collate_same_size,
                        generator=sampler.loader_generator,  # not the global RNG (bit-exact resume, data/sampler.py)
                        num_workers=int(phase_opt.get("n_workers") or 0), persistent_workers=False,
                        pin_memory=bool(phase_opt.get("pin_memory")))
    return loader, sampler
