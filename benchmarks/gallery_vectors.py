"""Realistic gallery vectors for the search benchmark: real embeddings of SynthPEDES images, and a
generator calibrated on them that extends a gallery to any size.

`python -m benchmarks gallery-vectors --run RUN_DIR --data SYNTH_DIR --out DIR` embeds every image
of a SynthPEDES dataset (`partsearch synth`) with a trained run, through the code `partsearch
index` runs (`search.encoder.RunEncoder`: `encode_images` then `fold_gallery`), and every caption
(`encode_texts` then `fold_query`). It writes to DIR:

    folded.f16.npy    (G, D) float16  the images' folded vectors, D = d (1 + N_c + P)
    identity.npy      (G,) int64      the identity of each image
    query_folded.npy  (Q, D) float32  the captions' folded queries
    query_global.npy  (Q, d) float32  their global vectors
    query_identity.npy (Q,) int64
    meta.json         run, dataset, d, N_c, P, counts, seconds

The embedding is checkpointed every `--chunk` images, so a killed run continues where it stopped.

`calibrated_gallery(measured, size, seed)` [ours] extends the measured vectors to `size` images.
It keeps the two things an index sees in trained embeddings - several images per identity, and
identities that share attributes - by drawing from the measured pieces only:

- each measured identity has a centroid c (the mean of its images' folded vectors) and each image
  a residual r = v - c (its view, pose, occlusion);
- a new identity's centroid is c_a + (c_b - c_c) * lam with a, b, c random measured identities and
  lam ~ U(0, 0.5): a measured person moved part of the way by the difference between two others,
  so new people stay on the measured manifold (and share its attributes) without duplicating one;
- its images are c + r for residuals r drawn from the pool of all measured residuals, as many
  as a random measured identity has;
- every block of the folded vector (global, each coarse token, each fine stripe) is then
  L2-normalised again, as the model's outputs are.

The measured images themselves come first, unchanged, so a calibrated gallery of G <= measured is
the real one. Queries are the real captions' embeddings; at sizes beyond the measured gallery
their identities' images are a vanishing share of it, which makes recall@10 against the exact
ranking the harder to reach (the top 10 is decided among many near neighbours), as in a city.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, log, positive


def blocks_normalised(folded: np.ndarray, dim: int) -> np.ndarray:
    """L2-normalise each d-wide block of `(B, D)` folded vectors (float32)."""
    x = np.asarray(folded, np.float32).reshape(len(folded), -1, dim)
    x /= np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return x.reshape(len(folded), -1)


class Calibration:
    """Identity centroids and within-identity residuals of a measured gallery (float32)."""

    def __init__(self, folded: np.ndarray, identity: np.ndarray, dim: int):
        self.dim = dim
        labels, inverse, counts = np.unique(identity, return_inverse=True, return_counts=True)
        sums = np.zeros((len(labels), folded.shape[1]), np.float64)
        for start in range(0, len(folded), 50_000):
            stop = min(start + 50_000, len(folded))
            np.add.at(sums, inverse[start:stop], np.asarray(folded[start:stop], np.float64))
        self.centroids = (sums / counts[:, None]).astype(np.float32)
        self.residuals = np.empty(folded.shape, np.float32)
        for start in range(0, len(folded), 50_000):
            stop = min(start + 50_000, len(folded))
            self.residuals[start:stop] = np.asarray(folded[start:stop], np.float32) - self.centroids[inverse[start:stop]]
        self.images_per_identity = counts

    def new_images(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """About `count` new images `(n, D)` float32 and their new identity numbers `(n,)` (0-based)."""
        n_ids = len(self.centroids)
        sizes = []
        while sum(sizes) < count:
            sizes.append(int(self.images_per_identity[rng.integers(n_ids)]))
        sizes = np.array(sizes)
        sizes[-1] -= sum(sizes) - count
        a, b, c = (rng.integers(n_ids, size=len(sizes)) for _ in range(3))
        lam = rng.uniform(0.0, 0.5, size=(len(sizes), 1)).astype(np.float32)
        centroids = self.centroids[a] + (self.centroids[b] - self.centroids[c]) * lam
        ident = np.repeat(np.arange(len(sizes)), sizes)
        vectors = centroids[ident] + self.residuals[rng.integers(len(self.residuals), size=count)]
        return blocks_normalised(vectors, self.dim), ident


def calibrated_gallery(measured: Path, size: int, out: Path, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    """Write a `(size, D)` float16 gallery to `out` (.npy, memory-mapped): the measured images first,
    then calibrated new ones. Returns the identity of each row (new identities numbered after the
    measured ones)."""
    folded = np.load(measured / "folded.f16.npy", mmap_mode="r")
    identity = np.load(measured / "identity.npy")
    dim = json.loads((measured / "meta.json").read_text())["dim"]
    gallery = np.lib.format.open_memmap(out, mode="w+", dtype=np.float16, shape=(size, folded.shape[1]))
    take = min(size, len(folded))
    gallery[:take] = folded[:take]
    ids = np.empty(size, np.int64)
    ids[:take] = identity[:take]
    if size > take:
        calibration = Calibration(folded, identity, dim)
        rng = np.random.default_rng(seed)
        next_id = int(identity.max()) + 1
        for start in range(take, size, chunk):
            stop = min(start + chunk, size)
            vectors, ident = calibration.new_images(rng, stop - start)
            gallery[start:stop] = vectors.astype(np.float16)
            ids[start:stop] = ident + next_id
            next_id += int(ident.max()) + 1
    gallery.flush()
    return ids


def embed(run_dir: str, data_dir: Path, out: Path, batch: int, chunk: int, limit: int | None,
          queries: int) -> dict:
    """Embed the images and captions of a SynthPEDES dataset into `out` (see the module docstring)."""
    from PIL import Image

    from partsearch.search.encoder import RunEncoder

    encoder = RunEncoder(run_dir, "best", device="cpu")
    every = json.loads((data_dir / "reid_raw.json").read_text())
    records = every[:limit]
    out.mkdir(parents=True, exist_ok=True)
    width = encoder.dim * (1 + encoder.num_coarse + encoder.num_fine)
    parts = out / "parts"
    parts.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for start in range(0, len(records), chunk):
        part = parts / f"{start:08d}.npy"
        if part.exists():
            continue
        folded = np.empty((0, width), np.float16)
        for b in range(start, min(start + chunk, len(records)), batch):
            images = [Image.open(data_dir / "imgs" / r["file_path"]).convert("RGB")
                      for r in records[b:min(b + batch, start + chunk, len(records))]]
            vectors = encoder.fold_gallery(encoder.encode_images(images)).astype(np.float16)
            folded = np.concatenate([folded, vectors])
        tmp = part.with_name(part.stem + ".tmp.npy")
        np.save(tmp, folded)
        tmp.replace(part)
        log(f"embedded {start + len(folded):,}/{len(records):,} images ({time.perf_counter() - t0:.0f} s)")
    image_s = time.perf_counter() - t0
    folded = np.concatenate([np.load(p) for p in sorted(parts.glob("[0-9]*.npy"))])
    np.save(out / "folded.f16.npy", folded)
    np.save(out / "identity.npy", np.array([r["id"] for r in records], np.int64))

    # The queries are test captions, whether or not `limit` kept their images.
    captions = [(c, r["id"]) for r in every if r.get("split") == "test" for c in r["captions"]][:queries]
    t0 = time.perf_counter()
    qf, qg = [], []
    for b in range(0, len(captions), batch):
        emb, _ = encoder.encode_texts([c for c, _ in captions[b:b + batch]])
        qf.append(encoder.fold_query(emb))
        qg.append(emb.global_)
    np.save(out / "query_folded.npy", np.concatenate(qf).astype(np.float32))
    np.save(out / "query_global.npy", np.concatenate(qg).astype(np.float32))
    np.save(out / "query_identity.npy", np.array([i for _, i in captions], np.int64))
    meta = {"run": str(Path(run_dir).resolve()), "data": str(data_dir.resolve()), "dim": encoder.dim,
            "num_coarse": encoder.num_coarse, "num_fine": encoder.num_fine, "images": len(folded),
            "identities": len({r["id"] for r in records}), "captions": len(captions),
            # parts embedded by an earlier, killed run are not counted in image_seconds_this_run
            "image_seconds_this_run": image_s, "caption_seconds": time.perf_counter() - t0,
            "fingerprint": encoder.fingerprint}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = base_parser("gallery-vectors", "embed SynthPEDES images and captions with a trained run")
    parser.add_argument("--run", required=True, help="a trained run directory (partsearch.load)")
    parser.add_argument("--data", required=True, help="a SynthPEDES dataset (partsearch synth --out DIR)")
    parser.add_argument("--out", required=True, help="where the vectors go")
    parser.add_argument("--batch", type=positive, default=256)
    parser.add_argument("--chunk", type=positive, default=10_000, help="images per checkpointed part")
    parser.add_argument("--limit", type=positive, default=None, help="embed only the first N records")
    parser.add_argument("--queries", type=positive, default=500, help="test captions embedded as queries")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, args.threads))
    data = Path(args.data)
    if not (data / "reid_raw.json").is_file():
        parser.error(f"--data {data}: no reid_raw.json; generate one with `partsearch synth --out {data}`")
    meta = embed(args.run, data, Path(args.out), args.batch, args.chunk, args.limit, args.queries)
    log(f"{meta['images']:,} images ({meta['image_seconds_this_run']:.0f} s in this run), {meta['captions']:,} captions; wrote {args.out}")
    return 0
