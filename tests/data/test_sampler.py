"""Identity-balanced P x K sampling across ranks and epochs."""

from collections import Counter

import pytest

from partsearch.data.sampler import IdentitySampler
from partsearch.errors import UserError

# 12 identities with 1 to 7 items each
LABELS = [pid for pid in range(12) for _ in range(1 + pid % 7)]


def batches(sampler, size):
    indices = list(sampler)
    return [indices[i: i + size] for i in range(0, len(indices), size)]


def test_every_batch_has_p_identities_with_k_items_each():
    sampler = IdentitySampler(LABELS, batch_size=8, instances_per_id=2, seed=0)
    assert len(sampler) > 0 and len(sampler) % 8 == 0
    for batch in batches(sampler, 8):
        counts = Counter(LABELS[i] for i in batch)
        assert len(counts) == 4 and set(counts.values()) == {2}


def test_identity_with_one_item_is_repeated_to_k():
    sampler = IdentitySampler([0, 1, 1, 2, 2], batch_size=6, instances_per_id=2, seed=0)
    assert sorted(sampler) == [0, 0, 1, 2, 3, 4]


def test_two_ranks_get_disjoint_equal_shares():
    ranks = [IdentitySampler(LABELS, 8, 2, seed=1, rank=r, world_size=2) for r in range(2)]
    for sampler in ranks:
        sampler.set_epoch(3)
    a, b = (list(s) for s in ranks)
    assert len(a) == len(b) > 0
    assert not set(a) & set(b)


def test_order_depends_only_on_seed_and_epoch():
    a = IdentitySampler(LABELS, 8, 2, seed=5)
    b = IdentitySampler(LABELS, 8, 2, seed=5)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)


def test_batch_size_must_be_a_multiple_of_k():
    with pytest.raises(UserError, match="batch_size=7 must be a multiple of data.instances_per_id=2"):
        IdentitySampler(LABELS, 7, 2, seed=0)


def test_too_few_identities_for_a_batch():
    with pytest.raises(UserError, match="needs 4 identities, but the training split has 3"):
        IdentitySampler([0, 1, 2], 8, 2, seed=0)
