"""Caption tokenizers: BERT WordPiece (transformers) and CLIP BPE (open_clip), both padded or
truncated to a fixed length with an attention mask. Which text backbone takes which tokenizer is
said by the backbone registry (`partsearch.model.backbones.build_tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from partsearch.errors import UserError
from partsearch.hub import MINILM, resolve_weights


@dataclass
class TokenBatch:
    """`ids (B, L)` long, `mask (B, L)` long with 1 on real tokens, `truncated (B,)` bool."""

    ids: torch.Tensor
    mask: torch.Tensor
    truncated: torch.Tensor


class Tokenizer(Protocol):
    vocab_size: int
    max_length: int

    def __call__(self, texts: list[str]) -> TokenBatch: ...


def _pad(sequences: list[list[int]], max_length: int, end_id: int, pad_id: int) -> TokenBatch:
    """Truncate to `max_length` keeping the end token last (as BERT and CLIP truncation do), then pad."""
    ids = np.full((len(sequences), max_length), pad_id, dtype=np.int64)
    lengths = np.fromiter((len(seq) for seq in sequences), dtype=np.int64, count=len(sequences))
    for i, seq in enumerate(sequences):
        ids[i, : min(len(seq), max_length)] = seq[:max_length]
    truncated = lengths > max_length
    ids[truncated, max_length - 1] = end_id
    mask = np.arange(max_length)[None, :] < np.minimum(lengths, max_length)[:, None]
    return TokenBatch(torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64)), torch.from_numpy(truncated))


class BertTokenizer:
    """A transformers fast WordPiece tokenizer ([CLS] text [SEP]), tokenised once without
    truncation so the `truncated` flag is exact."""

    def __init__(self, source: str, max_length: int):
        from transformers import AutoTokenizer

        try:
            self._tok = AutoTokenizer.from_pretrained(source, use_fast=True)
        except (OSError, ValueError) as err:
            raise UserError(
                f"could not load the tokenizer '{source}' ({str(err).splitlines()[0]}); offline, pass a local "
                "directory with tokenizer.json or vocab.txt as model.tokenizer (or model.text_weights), "
                "or use model.text_weights=minilm"
            ) from None
        self.max_length = max_length
        self.vocab_size = len(self._tok)

    def __call__(self, texts: list[str]) -> TokenBatch:
        encoded = self._tok(list(texts), add_special_tokens=True, truncation=False, padding=False,
                            verbose=False)["input_ids"]
        return _pad(encoded, self.max_length, self._tok.sep_token_id, self._tok.pad_token_id)


class ClipTokenizer:
    """open_clip's BPE for ViT-B-16 (ships with open_clip, works offline): <sot> text <eot>, pad 0."""

    def __init__(self, max_length: int):
        import open_clip

        self._tok = open_clip.get_tokenizer("ViT-B-16")
        self.max_length = max_length
        self.vocab_size = self._tok.vocab_size

    def __call__(self, texts: list[str]) -> TokenBatch:
        sot, eot = self._tok.sot_token_id, self._tok.eot_token_id
        return _pad([[sot] + self._tok.encode(t) + [eot] for t in texts], self.max_length, eot, 0)


def bert_tokenizer(model_cfg, max_length: int) -> BertTokenizer:
    """The BERT tokenizer of `model_cfg`: its files come from `model_cfg.tokenizer`, else from
    `model_cfg.text_weights` (hub name or local directory); random weights use the MiniLM
    vocabulary (an uncased BERT WordPiece) [ours]."""
    source = resolve_weights(model_cfg.tokenizer or model_cfg.text_weights)
    if source.is_random:
        source = resolve_weights(MINILM)
    return BertTokenizer(source.location, max_length)


def clip_tokenizer(model_cfg, max_length: int) -> ClipTokenizer:
    """open_clip's ViT-B/16 BPE (`model_cfg` is not read: the CLIP vocabulary is fixed)."""
    return ClipTokenizer(max_length)
