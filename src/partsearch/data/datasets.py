"""Datasets and loaders: training image-caption pairs, test gallery images, test query captions.

Captions are tokenised once, up front, in one batched call; items only index the result.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from partsearch.data.formats import Record
from partsearch.data.images import load_image
from partsearch.data.sampler import IdentitySampler
from partsearch.data.tokenizers import Tokenizer
from partsearch.errors import DataError, UserError

log = logging.getLogger(__name__)

SAMPLERS = ("identity", "random")
_SHOWN = 5  # bad files named in a report


CHECK_HINT = "find every bad image first with `partsearch data-stats --check-images`"


def find_bad_images(records: list[Record], image_root: str | Path, max_pixels: int,
                    progress: bool = False) -> list[tuple[Record, str]]:
    """Decode every record's image; returns (record, why) for each one that is missing, corrupt
    or over `max_pixels`, so bad files are found before training instead of mid-epoch."""
    from partsearch.progress import tqdm

    bad = []
    for record in tqdm(records, desc="checking images", unit="img", disable=not progress):
        try:
            load_image(Path(image_root) / record.image, max_pixels)
        except DataError as err:
            bad.append((record, str(err)))
    return bad


def _check_images(records: list[Record], image_root: Path, max_pixels: int, skip_bad: bool) -> list[Record]:
    """With `skip_bad`, decode every image and drop the records whose image fails; otherwise only
    check that every file exists (cheap) and leave corrupt files to fail, named, when read."""
    if not skip_bad:
        missing = [r.image for r in records if not (image_root / r.image).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} of {len(records)} images are missing under {image_root}, e.g. "
                f"{image_root / missing[0]}; fix the dataset or set data.skip_bad_images=true"
            )
        return records
    failures = find_bad_images(records, image_root, max_pixels)
    failed = {id(record) for record, _ in failures}
    kept = [record for record in records if id(record) not in failed]
    bad = [why for _, why in failures]
    if bad:
        log.warning("skipped %d of %d images (data.skip_bad_images): %s", len(bad), len(records),
                    "; ".join(bad[:_SHOWN]))
    if not kept:
        raise DataError(f"every one of the {len(records)} images under {image_root} is missing or corrupt")
    return kept


class TrainPairs(Dataset):
    """One item per (image, caption) pair of the train split:
    `{"image": (3, H, W) float, "ids": (L,) long, "mask": (L,) long, "label": int, "image_index": int}`;
    `image_index` indexes `self.records` (the records kept after checking)."""

    def __init__(self, records: list[Record], image_root: str | Path, tokenizer: Tokenizer, transform,
                 max_pixels: int, skip_bad_images: bool = False):
        self.image_root = Path(image_root)
        self.records = _check_images(records, self.image_root, max_pixels, skip_bad_images)
        self.skipped = len(records) - len(self.records)
        self.transform = transform
        self.max_pixels = max_pixels
        self.pairs = [(i, j) for i, r in enumerate(self.records) for j in range(len(r.captions))]
        tokens = tokenizer([c for r in self.records for c in r.captions])
        self.ids, self.mask = tokens.ids, tokens.mask
        self.labels = [self.records[i].pid for i, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_index, _ = self.pairs[index]
        record = self.records[image_index]
        try:
            image = load_image(self.image_root / record.image, self.max_pixels)
        except DataError as err:
            raise DataError(f"{err}; set data.skip_bad_images=true to leave such images out, or {CHECK_HINT}") from None
        return {
            "image": self.transform(image),
            "ids": self.ids[index],
            "mask": self.mask[index],
            "label": record.pid,
            "image_index": image_index,
        }


class GalleryImages(Dataset):
    """One item per image of a split, in record order: `{"image": (3, H, W), "pid": int, "index": int}`."""

    def __init__(self, records: list[Record], image_root: str | Path, transform, max_pixels: int):
        self.image_root = Path(image_root)
        self.records = _check_images(records, self.image_root, max_pixels, skip_bad=False)
        self.transform = transform
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image = load_image(self.image_root / record.image, self.max_pixels)
        return {"image": self.transform(image), "pid": record.pid, "index": index}


class QueryCaptions(Dataset):
    """One item per caption of a split, in record order: `{"ids": (L,), "mask": (L,), "pid": int, "index": int}`."""

    def __init__(self, records: list[Record], tokenizer: Tokenizer):
        self.pids = [r.pid for r in records for _ in r.captions]
        tokens = tokenizer([c for r in records for c in r.captions])
        self.ids, self.mask = tokens.ids, tokens.mask

    def __len__(self) -> int:
        return len(self.pids)

    def __getitem__(self, index: int) -> dict:
        return {"ids": self.ids[index], "mask": self.mask[index], "pid": self.pids[index], "index": index}


TRIM_MULTIPLE = 8  # trimmed lengths are multiples of 8: few distinct shapes for torch.compile [ours]


def collate_trimmed(items: list[dict]) -> dict:
    """`default_collate`, then cut `ids`/`mask` after the batch's longest caption, rounded up to a
    multiple of 8. Padding is masked everywhere, so this changes no output, only the cost: captions
    are padded to `data.max_tokens` once, up front, but most batches are far shorter (SynthPEDES
    captions have a median of 22 tokens against a limit of 48) [ours]."""
    batch = default_collate(items)
    if "mask" in batch:
        longest = int(batch["mask"].sum(dim=1).max()) if batch["mask"].numel() else 0
        keep = min(batch["mask"].shape[1], max(TRIM_MULTIPLE, -(-longest // TRIM_MULTIPLE) * TRIM_MULTIPLE))
        batch["ids"], batch["mask"] = batch["ids"][:, :keep], batch["mask"][:, :keep]
    return batch


def _loader(dataset: Dataset, cfg, batch_size: int, **kwargs) -> DataLoader:
    workers = cfg.data.num_workers
    return DataLoader(dataset, batch_size=batch_size, num_workers=workers, persistent_workers=workers > 0,
                      pin_memory=torch.cuda.is_available(), collate_fn=collate_trimmed, **kwargs)


def build_train_loader(cfg, records: list[Record], image_root: str | Path, tokenizer: Tokenizer, transform,
                       rank: int = 0, world_size: int = 1, seed: int = 0) -> DataLoader:
    """Training pairs in batches of `cfg.data.batch_size` per rank (last partial batch dropped);
    `tokenizer` and `transform` (the training one, with augmentation) are the model's
    (`partsearch.model.backbones.build_tokenizer` / `build_image_transform`). The sampler
    (`loader.sampler`) has `set_epoch(e)`; call it at the start of every epoch."""
    data = cfg.data
    dataset = TrainPairs(records, image_root, tokenizer, transform,
                         data.max_image_pixels, data.skip_bad_images)
    if data.sampler == "identity":
        sampler = IdentitySampler(dataset.labels, data.batch_size, data.instances_per_id, seed, rank, world_size)
    elif data.sampler == "random":
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed,
                                     drop_last=True)
    else:
        raise UserError(f"unknown data.sampler '{data.sampler}'; valid values are {', '.join(SAMPLERS)}")
    return _loader(dataset, cfg, data.batch_size, sampler=sampler, drop_last=True)


def build_gallery_loader(cfg, records: list[Record], image_root: str | Path, transform, batch_size: int) -> DataLoader:
    """The images of `records`, each through `transform` (the model's test-time one)."""
    dataset = GalleryImages(records, image_root, transform, cfg.data.max_image_pixels)
    return _loader(dataset, cfg, batch_size, shuffle=False)


def build_query_loader(cfg, records: list[Record], tokenizer: Tokenizer, batch_size: int) -> DataLoader:
    return _loader(QueryCaptions(records, tokenizer), cfg, batch_size, shuffle=False)
