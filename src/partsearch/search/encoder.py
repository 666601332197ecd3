"""What the search package needs from a model: the `Encoder` protocol and its real implementation.

The index, the searcher and the service only talk to an `Encoder`, so their logic can be tested
with a tiny stand-in; `RunEncoder` (the default everywhere) wraps a trained run loaded with
`partsearch.runs.load_run`.

All arrays cross this boundary as float32 numpy arrays with L2-normalised vectors:
`GalleryArrays(global_ (B, d), coarse (B, N_c, d), fine (B, P, d), foreground (B, h, w))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image


@dataclass
class GalleryArrays:
    """Numpy copy of `partsearch.model.Embeddings`; `foreground` is `(B, h, w)` (zeros for text)."""

    global_: np.ndarray
    coarse: np.ndarray
    fine: np.ndarray
    foreground: np.ndarray

    def __len__(self) -> int:
        return int(self.global_.shape[0])

    def take(self, rows: Sequence[int] | np.ndarray) -> "GalleryArrays":
        rows = np.asarray(rows, dtype=np.int64)
        return GalleryArrays(self.global_[rows], self.coarse[rows], self.fine[rows], self.foreground[rows])

    @staticmethod
    def concat(parts: Sequence["GalleryArrays"], like: "GalleryArrays | None" = None) -> "GalleryArrays":
        parts = [p for p in parts if len(p)]
        if not parts:
            if like is None:
                raise ValueError("concat of nothing needs a template")
            return like.take([])
        return GalleryArrays(
            np.concatenate([p.global_ for p in parts]),
            np.concatenate([p.coarse for p in parts]),
            np.concatenate([p.fine for p in parts]),
            np.concatenate([p.foreground for p in parts]),
        )


class Encoder(Protocol):
    """A trained model as the search package sees it."""

    fingerprint: str  # changes whenever the weights or config change
    dim: int  # d
    num_coarse: int  # N_c
    num_fine: int  # P
    source: dict  # where the model came from: {"run_dir": ..., "checkpoint": ...}
    weights: tuple[float, float, float]  # (w_g, w_c, w_f) of the similarity

    def encode_images(self, images: list[Image.Image]) -> GalleryArrays: ...

    def encode_texts(self, texts: list[str]) -> tuple[GalleryArrays, np.ndarray]:
        """Text embeddings and the `(B,)` bool flags of captions cut at the tokenizer limit."""

    def fold_gallery(self, emb: GalleryArrays) -> np.ndarray:
        """`(G, D)`, D = d (1 + N_c + P): one vector per image (METHOD.md, Similarity)."""

    def fold_query(self, emb: GalleryArrays) -> np.ndarray:
        """`(Q, D)` weighted so that `fold_query(t) @ fold_gallery(v).T` is the model's similarity."""

    def stripe_bounds(self, height: int) -> list[tuple[int, int]]:
        """Rows `[start, end)` of the foreground map that fine part i pools over."""


class RunEncoder:
    """An `Encoder` over a trained run directory (`partsearch.runs.load_run`)."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best", device: str = "auto", run=None):
        import torch

        from partsearch.device import resolve_device
        from partsearch.runs import load_run

        self._torch = torch
        self.device = str(resolve_device(device))
        self.run = run if run is not None else load_run(run_dir, checkpoint, self.device)
        self.run.model.eval()
        cfg = self.run.cfg
        self.transform = self.run.transform
        self.fingerprint = str(self.run.fingerprint)
        self.dim = int(cfg.model.dim)
        self.num_coarse = int(cfg.model.num_coarse)
        self.num_fine = int(cfg.model.num_fine)
        self.weights = tuple(float(w) for w in cfg.model.similarity_weights)
        checkpoint_path = Path(self.run.path).resolve()
        self.source = {
            "run_dir": str(Path(run_dir).resolve()) if run_dir else str(checkpoint_path.parent),
            "checkpoint": str(checkpoint_path),
        }

    def _to_arrays(self, emb, batch: int) -> GalleryArrays:
        def np32(t):
            return t.detach().float().cpu().numpy()

        fg = emb.foreground
        foreground = np32(fg) if fg is not None else np.zeros((batch, 1, 1), np.float32)
        return GalleryArrays(np32(emb.global_), np32(emb.coarse), np32(emb.fine), foreground)

    def _to_embeddings(self, arrays: GalleryArrays):
        from partsearch.model.model import Embeddings

        t = self._torch.from_numpy
        return Embeddings(t(arrays.global_), t(arrays.coarse), t(arrays.fine), t(arrays.foreground))

    def encode_images(self, images: list[Image.Image]) -> GalleryArrays:
        batch = self._torch.stack([self.transform(im) for im in images]).to(self.device)
        with self._torch.inference_mode():
            return self._to_arrays(self.run.model.encode_image(batch), len(images))

    def encode_texts(self, texts: list[str]) -> tuple[GalleryArrays, np.ndarray]:
        tok = self.run.tokenizer(list(texts))
        with self._torch.inference_mode():
            emb = self.run.model.encode_text(tok.ids.to(self.device), tok.mask.to(self.device))
        return self._to_arrays(emb, len(texts)), tok.truncated.cpu().numpy().astype(bool)

    def fold_gallery(self, emb: GalleryArrays) -> np.ndarray:
        from partsearch.model.similarity import fold_gallery

        return fold_gallery(self._to_embeddings(emb)).float().numpy()

    def fold_query(self, emb: GalleryArrays) -> np.ndarray:
        from partsearch.model.similarity import fold_query

        return fold_query(self._to_embeddings(emb), self.weights).float().numpy()

    def stripe_bounds(self, height: int) -> list[tuple[int, int]]:
        from partsearch.model.fine import stripe_bounds

        return stripe_bounds(height, self.num_fine)
