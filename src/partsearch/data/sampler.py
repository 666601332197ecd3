"""Identity-balanced P x K batch sampling, as in the re-identification lineage (Hermans et al.,
*In Defense of the Triplet Loss*, 2017; torchreid's RandomIdentitySampler): every batch holds P
identities with K samples each, so the ranking losses always find positives and negatives."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from partsearch.errors import UserError


class IdentitySampler(Sampler[int]):
    """Indices such that each consecutive run of `batch_size` has `batch_size / K` identities x K items.

    An identity with fewer than K items is topped up by repeating its items; one with more gives
    `n // K` disjoint groups of K per epoch (leftovers wait for a later epoch's shuffle). Batches
    are dealt round-robin to `world_size` ranks, each getting the same number; `batch_size` is per
    rank. `set_epoch(e)` reshuffles; the order depends only on (seed, epoch) [ours].
    """

    def __init__(self, labels: Sequence[int], batch_size: int, instances_per_id: int, seed: int = 0,
                 rank: int = 0, world_size: int = 1):
        if instances_per_id < 1 or batch_size % instances_per_id:
            raise UserError(
                f"data.batch_size={batch_size} must be a multiple of data.instances_per_id={instances_per_id}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.batch_size = batch_size
        self.k = instances_per_id
        self.p = batch_size // instances_per_id
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        groups: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            groups[int(label)].append(index)
        self._groups = [np.asarray(groups[label]) for label in sorted(groups)]
        if len(self._groups) < self.p:
            raise UserError(
                f"a batch of {batch_size} with data.instances_per_id={instances_per_id} needs {self.p} identities, "
                f"but the training split has {len(self._groups)}; lower data.batch_size"
            )
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        chunks: list[list[np.ndarray]] = []
        for items in self._groups:
            items = rng.permutation(items)
            if len(items) < self.k:
                items = np.concatenate([items, rng.choice(items, self.k - len(items))])
            chunks.append([items[i: i + self.k] for i in range(0, len(items) - self.k + 1, self.k)])
        batches = []
        remaining = np.array([len(c) for c in chunks])
        while (remaining > 0).sum() >= self.p:
            alive = np.flatnonzero(remaining > 0)
            # drawing in proportion to the groups left drains large identities evenly [ours]
            weights = remaining[alive] / remaining[alive].sum()
            chosen = rng.choice(alive, self.p, replace=False, p=weights)
            batch = [chunks[g][len(chunks[g]) - remaining[g]] for g in chosen]
            remaining[chosen] -= 1
            batches.append(np.concatenate(batch))
        per_rank = len(batches) // self.world_size
        mine = batches[self.rank: per_rank * self.world_size: self.world_size]
        self._indices = np.concatenate(mine).tolist() if mine else []

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices)

    def __len__(self) -> int:
        return len(self._indices)
