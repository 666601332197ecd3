"""A tiny deterministic stand-in for a trained model, so index/searcher/service logic is tested
without training: images are embedded by the mean colour of the whole crop (global), of two fixed
colour mixes (coarse) and of three horizontal stripes (fine); texts by the colour words they name."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from partsearch.model.model import Embeddings
from partsearch.model.similarity import similarity as model_similarity
from partsearch.search.encoder import GalleryArrays

COLOURS = {
    "red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0),
    "white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0), "yellow": (1.0, 1.0, 0.0),
}
MIX = np.array([[1.0, 0.5, 0.0, 0.2], [0.0, 0.5, 1.0, 0.2]], np.float32)  # the two "coarse tokens"
MAX_WORDS = 16
CROPS = {  # relative path -> (top colour, bottom colour)
    "a/red_blue.jpg": ("red", "blue"),
    "a/green_black.png": ("green", "black"),
    "b/blue_blue.webp": ("blue", "blue"),
    "b/deep/white_red.jpeg": ("white", "red"),
    "yellow_green.png": ("yellow", "green"),
    "red_red.png": ("red", "red"),
}


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _vec(rgb) -> np.ndarray:
    return np.array([*rgb, 0.1], np.float32)


class FakeEncoder:
    dim, num_coarse, num_fine = 4, 2, 3
    weights = (1.0, 1.0, 1.0)

    def __init__(self, fingerprint: str = "fake-model-1"):
        self.fingerprint = fingerprint
        self.source = {"run_dir": "", "checkpoint": ""}

    def _embed(self, whole: np.ndarray, stripes: np.ndarray, foreground: np.ndarray) -> GalleryArrays:
        g = _unit(whole)
        c = _unit(g[:, None, :] * MIX[None] + 0.05)
        f = _unit(stripes)
        return GalleryArrays(g, c, f, foreground.astype(np.float32))

    def encode_images(self, images: list[Image.Image]) -> GalleryArrays:
        arr = np.stack([np.asarray(im.convert("RGB").resize((32, 64)), np.float32) / 255 for im in images])
        whole = np.stack([_vec(a.reshape(-1, 3).mean(0)) for a in arr])
        stripes = np.stack([[_vec(a[s * 64 // 3:(s + 1) * 64 // 3].reshape(-1, 3).mean(0)) for s in range(3)]
                            for a in arr])
        lum = arr.mean(-1).reshape(len(arr), 8, 8, 4, 8).mean((2, 4))  # (B, 8, 4) map
        return self._embed(whole, stripes, lum / np.maximum(lum.max((1, 2), keepdims=True), 1e-6))

    def encode_texts(self, texts: list[str]) -> tuple[GalleryArrays, np.ndarray]:
        vecs, truncated = [], []
        for text in texts:
            words = text.lower().split()
            truncated.append(len(words) > MAX_WORDS)
            named = [COLOURS[w] for w in words[:MAX_WORDS] if w in COLOURS] or [(0.5, 0.5, 0.5)]
            vecs.append(_vec(np.mean(named, 0)))
        whole = np.stack(vecs)
        stripes = np.repeat(whole[:, None, :], 3, axis=1)
        return self._embed(whole, stripes, np.zeros((len(texts), 1, 1))), np.array(truncated)

    def fold_gallery(self, emb: GalleryArrays) -> np.ndarray:
        n = len(emb)
        return np.concatenate([emb.global_, emb.coarse.reshape(n, -1), emb.fine.reshape(n, -1)], 1)

    def fold_query(self, emb: GalleryArrays) -> np.ndarray:
        n = len(emb)
        wg, wc, wf = self.weights
        return np.concatenate([wg * emb.global_, wc / self.num_coarse * emb.coarse.reshape(n, -1),
                               wf / self.num_fine * emb.fine.reshape(n, -1)], 1)

    def stripe_bounds(self, height: int) -> list[tuple[int, int]]:
        """Rows as adaptive max pooling to (P, 1) splits them."""
        return [(i * height // 3, -(-(i + 1) * height // 3)) for i in range(3)]


def embeddings(arrays: GalleryArrays) -> Embeddings:
    """The model's `Embeddings` of numpy arrays (no copy)."""
    return Embeddings(torch.from_numpy(arrays.global_), torch.from_numpy(arrays.coarse), torch.from_numpy(arrays.fine))


def similarity(encoder: FakeEncoder, images: GalleryArrays, texts: GalleryArrays) -> np.ndarray:
    """(Q, G): the model's similarity (`model.similarity.similarity`), computed directly, not folded."""
    return model_similarity(embeddings(images), embeddings(texts), encoder.weights).numpy()


def make_crop(path, top, bottom, fmt=None, size=(32, 64)) -> None:
    """A 32x64 'pedestrian' with a `top` colour over a `bottom` colour."""
    im = Image.new("RGB", size, tuple(int(255 * x) for x in COLOURS[bottom]))
    im.paste(tuple(int(255 * x) for x in COLOURS[top]), (0, 0, size[0], size[1] // 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format=fmt)


def make_ingest_gallery(root, tracks, fps=10.0, frame_size=(160, 120)):
    """A gallery as `partsearch ingest` leaves it, without decoding any video: `tracks` maps
    (video file name, track id) to the (top, bottom) colours of its crops, one crop per sampled
    frame (every 5th frame). Writes crops, per-video records.jsonl and video.json markers; returns
    the records. The videos themselves are not written (`write_video_for` does)."""
    records = []
    for video in sorted({v for v, _ in tracks}):
        folder = root / "crops" / video.replace(".", "_")
        lines = []
        for (v, track), crops in sorted(tracks.items()):
            if v != video:
                continue
            for n, (top, bottom) in enumerate(crops):
                frame = 5 * n + track
                crop = folder / f"t{track:04d}_f{frame:06d}.jpg"
                make_crop(crop, top, bottom)
                x1 = 10 + 40 * (track - 1)
                lines.append({"crop": crop.relative_to(root).as_posix(), "video": f"videos/{video}",
                              "frame": frame, "time": round(frame / fps, 3), "box": [x1, 20, x1 + 32, 84],
                              "track": track, "score": 1.5})
        (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
        (folder / "video.json").write_text(json.dumps({"format": "partsearch-ingest/1", "video": f"videos/{video}",
                                                      "fps": fps, "width": frame_size[0], "height": frame_size[1]}))
        records += lines
    return records


def write_video_for(root, video, frames=40, fps=10.0, size=(160, 120)):
    """A small MJPEG video at root/videos/<video>: frame i is a flat grey of level 5 i, so a frame
    read back tells which one it is."""
    import cv2

    path = root / "videos" / video
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 5 * i, np.uint8))
    writer.release()
    return path


def manifest_lines(index_dir) -> list[dict]:
    """The live generation's manifest lines as stored in its segments, less the catalogue's deleted ids."""
    from partsearch.search.store import IndexStore

    store = IndexStore(index_dir)
    catalogue = json.loads(store.catalogue_path(store.current_name()).read_text())
    lines = [(ref, json.loads(line)) for ref in catalogue["segments"]
             for line in (store.segments_dir / ref["name"] / "manifest.jsonl").read_text().splitlines()]
    return [line for ref, line in lines if line["id"] not in ref["deleted"]]


def camera_gallery(root, tracks, cameras):
    """`make_ingest_gallery` with each video's camera and start: `cameras` maps the video file name
    to (camera name, ISO 8601 start or None); each record gets `camera` and `wall_time` (start plus
    its time in the video) as `partsearch ingest --camera NAME --start TIME` writes them."""
    import datetime

    records = make_ingest_gallery(root, tracks)
    for record in records:
        camera, start = cameras[record["video"].rsplit("/", 1)[-1]]
        record["camera"] = camera
        record["wall_time"] = None if start is None else (
            datetime.datetime.fromisoformat(start) + datetime.timedelta(seconds=record["time"])).isoformat()
    return records
