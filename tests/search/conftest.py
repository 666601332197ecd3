"""Fixtures of the search tests: a handful of 32x64 crops and an index built with FakeEncoder."""

import pytest
from search_fakes import CROPS, FakeEncoder, make_crop

from partsearch.search.index import build_index

@pytest.fixture
def encoder():
    return FakeEncoder()


@pytest.fixture
def images_dir(tmp_path):
    root = tmp_path / "images"
    for rel, (top, bottom) in CROPS.items():
        make_crop(root / rel, top, bottom)
    return root


@pytest.fixture
def index_dir(tmp_path, images_dir, encoder):
    out = tmp_path / "index"
    build_index(encoder, images_dir, out, batch_size=4, progress=False)
    return out
