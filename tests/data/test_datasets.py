"""Datasets and loaders on a tiny image folder built here."""

import logging
from collections import Counter

import pytest
import torch
from PIL import Image

from partsearch.config import Config, DataConfig, ModelConfig
from partsearch.data.datasets import (GalleryImages, QueryCaptions, TrainPairs, build_gallery_loader,
                                      build_query_loader, build_train_loader, collate_trimmed, find_bad_images)
from partsearch.data.formats import Record
from partsearch.model.backbones import build_image_transform, build_tokenizer
from partsearch.errors import DataError, UserError, user_message

SIZE = (32, 16)


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(ModelConfig(text_weights="minilm"), max_length=12)


@pytest.fixture
def folder(tmp_path):
    records = []
    for pid in range(4):
        for k in range(2):
            name = f"p{pid}_{k}.png"
            Image.new("RGB", (16, 32), (60 * pid, 40 * k, 100)).save(tmp_path / name)
            records.append(Record(name, pid, (f"person {pid} view {k}", f"someone number {pid}"), "train"))
    return tmp_path, records


def config(**data):
    return Config(data=DataConfig(**{"image_size": SIZE, "num_workers": 0} | data))


def transform(train: bool):
    cfg = config()
    return build_image_transform(cfg.model, cfg.data, train)


def test_train_pairs_item_per_caption(folder, tokenizer):
    root, records = folder
    pairs = TrainPairs(records, root, tokenizer, transform(train=True), 10_000)
    assert len(pairs) == 16
    item = pairs[3]
    assert item["image"].shape == (3, *SIZE) and item["image"].dtype == torch.float32
    assert item["ids"].shape == (12,) and item["ids"].dtype == torch.long
    assert item["mask"].dtype == torch.long
    assert (item["label"], item["image_index"]) == (0, 1)
    assert torch.equal(item["ids"], tokenizer(["someone number 0"]).ids[0])


def test_missing_train_image_names_the_file(folder, tokenizer):
    root, records = folder
    (root / "p2_1.png").unlink()
    with pytest.raises(DataError, match=r"1 of 8 images are missing .*p2_1\.png.*skip_bad_images"):
        TrainPairs(records, root, tokenizer, transform(train=True), 10_000)


def test_corrupt_train_image_names_the_file_when_read(folder, tokenizer):
    root, records = folder
    (root / "p1_0.png").write_bytes(b"garbage")
    pairs = TrainPairs(records, root, tokenizer, transform(train=True), 10_000)
    with pytest.raises(DataError, match=r"corrupt or unreadable image .*p1_0\.png"):
        pairs[4]


def test_corrupt_train_image_message_offers_the_check_before_training(folder, tokenizer):
    root, records = folder
    (root / "p1_0.png").write_bytes(b"garbage")
    pairs = TrainPairs(records, root, tokenizer, transform(train=True), 10_000)
    with pytest.raises(DataError, match=r"skip_bad_images=true.*partsearch data-stats --check-images"):
        pairs[4]


def test_a_corrupt_image_read_in_a_loader_worker_is_one_clean_message(folder, tokenizer):
    root, records = folder
    (root / "p1_0.png").write_bytes(b"garbage")
    loader = build_train_loader(config(batch_size=8, num_workers=1), records, root, tokenizer, transform(train=True))
    with pytest.raises(DataError) as err:
        list(loader)
    message = user_message(err.value)
    assert message.startswith("corrupt or unreadable image") and "p1_0.png" in message
    assert "Traceback" not in message and "\n" not in message


def test_find_bad_images_names_each_missing_or_corrupt_file(folder):
    root, records = folder
    (root / "p1_0.png").write_bytes(b"garbage")
    (root / "p3_1.png").unlink()
    bad = find_bad_images(records, root, 10_000)
    assert [r.image for r, _ in bad] == ["p1_0.png", "p3_1.png"]
    assert "corrupt" in bad[0][1] and "not found" in bad[1][1]


def test_skip_bad_images_drops_and_reports_them(folder, tokenizer, caplog):
    root, records = folder
    (root / "p1_0.png").write_bytes(b"garbage")
    (root / "p3_1.png").unlink()
    with caplog.at_level(logging.WARNING):
        pairs = TrainPairs(records, root, tokenizer, transform(train=True), 10_000,
                           skip_bad_images=True)
    assert pairs.skipped == 2 and len(pairs) == 12
    assert "skipped 2 of 8 images" in caplog.text and "p1_0.png" in caplog.text and "p3_1.png" in caplog.text
    assert all(pairs[i]["label"] == pairs.labels[i] for i in range(len(pairs)))


def test_gallery_images_in_record_order(folder):
    root, records = folder
    gallery = GalleryImages(records, root, transform(train=False), 10_000)
    item = gallery[5]
    assert (item["pid"], item["index"]) == (2, 5) and item["image"].shape == (3, *SIZE)


def test_query_captions_one_per_caption_in_record_order(folder, tokenizer):
    _, records = folder
    queries = QueryCaptions(records, tokenizer)
    assert len(queries) == 16
    assert [queries[i]["pid"] for i in range(4)] == [0, 0, 0, 0]
    assert torch.equal(queries[2]["ids"], tokenizer(["person 0 view 1"]).ids[0])


def test_train_loader_batches_are_identity_balanced(folder, tokenizer):
    root, records = folder
    loader = build_train_loader(config(batch_size=4, instances_per_id=2), records, root, tokenizer, transform(train=True), seed=0)
    loader.sampler.set_epoch(1)
    batches = list(loader)
    assert batches and all(b["image"].shape == (4, 3, *SIZE) for b in batches)
    for batch in batches:
        assert sorted(Counter(batch["label"].tolist()).values()) == [2, 2]


def test_random_sampler_drops_the_last_partial_batch(folder, tokenizer):
    root, records = folder
    loader = build_train_loader(config(batch_size=5, sampler="random"), records, root, tokenizer, transform(train=True))
    assert [len(b["label"]) for b in loader] == [5, 5, 5]


def test_unknown_sampler_is_a_clear_error(folder, tokenizer):
    root, records = folder
    with pytest.raises(UserError, match="unknown data.sampler 'balanced'; valid values are identity, random"):
        build_train_loader(config(sampler="balanced"), records, root, tokenizer, transform(train=True))


def test_gallery_and_query_loaders_keep_order(folder, tokenizer):
    root, records = folder
    gallery = list(build_gallery_loader(config(), records, root, transform(train=False), batch_size=3))
    queries = list(build_query_loader(config(), records, tokenizer, batch_size=5))
    assert torch.cat([b["index"] for b in gallery]).tolist() == list(range(8))
    assert torch.cat([b["pid"] for b in queries]).tolist() == [r.pid for r in records for _ in r.captions]


def test_train_loader_with_worker_processes(folder, tokenizer):
    root, records = folder
    loader = build_train_loader(config(batch_size=4, num_workers=1), records, root, tokenizer, transform(train=True))
    batch = next(iter(loader))
    assert batch["ids"].shape[0] == 4 and batch["image"].shape == (4, 3, *SIZE)


def test_collate_cuts_padding_after_the_longest_caption_in_multiples_of_8():
    ids = torch.zeros(20, dtype=torch.long)
    items = [{"ids": ids, "mask": (torch.arange(20) < n).long(), "label": 0} for n in (3, 9)]
    batch = collate_trimmed(items)
    assert batch["ids"].shape == (2, 16) and batch["mask"].shape == (2, 16)
    assert batch["mask"].sum(dim=1).tolist() == [3, 9]


def test_collate_never_cuts_a_caption_at_the_length_limit():
    items = [{"ids": torch.ones(12, dtype=torch.long), "mask": torch.ones(12, dtype=torch.long)}]
    assert collate_trimmed(items)["ids"].shape == (1, 12)


def test_query_loader_trims_padding(folder):
    root, records = folder
    long_tokenizer = build_tokenizer(ModelConfig(text_weights="minilm"), max_length=64)
    batch = next(iter(build_query_loader(config(), records, long_tokenizer, batch_size=16)))
    assert batch["ids"].shape[1] == 8
