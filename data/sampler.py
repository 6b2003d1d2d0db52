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
        # The DataLoader built on this sampler draws its workers' base seed from this generator when an epoch's
        # iterator is created. Left to the global torch RNG, that draw would be saved in a training state taken
        # mid-epoch and made a second time after the resume, shifting every later torch.rand* of the training step.
        self.loader_generator = torch.Generator()
        self._reseed_loader()

    def set_epoch(self, epoch: int, skip_samples: int = 0):
        self.epoch, self.skip = int(epoch), int(skip_samples)
        self._reseed_loader()

    def _reseed_loader(self):
        self.loader_generator.manual_seed((self.seed * 1000003 + self.epoch) * 4099 + self.rank)

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
