"""A resumable, seedable sampler: the order of epoch e is a fixed permutation of (seed, e), split across ranks, and
an epoch can be entered part-way (after a resume) by skipping the batches already consumed."""
from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        self.n, self.seed, self.shuffle, self.rank, self.world = n, int(seed), shuffle, rank, world_size
        self.epoch, self.skip = 0, 0
        self.per_rank = n // world_size

    def set_epoch(self, epoch: int, skip_samples: int = 0):
        self.epoch, self.skip = int(epoch), int(skip_samples)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        mine = order[: self.per_rank * self.world][self.rank::self.world]
        return iter(mine[self.skip:])

    def __len__(self):
        return max(0, self.per_rank - self.skip)
