"""People detectors behind one interface: `detector(frame_bgr) -> list[PersonBox]`.

- `hog` (the default): OpenCV's HOG + linear SVM people detector (Dalal & Triggs, CVPR 2005,
  trained on INRIA Person), shipped inside OpenCV: no weights, no download, about 6 frames per
  second of 768x576 on a CPU core. On the frame enlarged 1.5x it finds upright, unoccluded people
  from about 65 px tall; its scores are SVM margins (about 0 to 4), not probabilities.
- torchvision's COCO detectors (`fasterrcnn_resnet50_fpn`, `retinanet_resnet50_fpn`,
  `ssdlite320_mobilenet_v3_large`, ... `DETECTORS`) by name, with their COCO weights from the torch
  hub cache (downloaded there when online), or from a local weights file: `PATH` whose file name
  starts with the architecture name (as torchvision's own files do, e.g.
  `fasterrcnn_resnet50_fpn_coco-258fb6c6.pth`) or `NAME:PATH`. Only the COCO class "person"
  (label 1) is kept; scores are probabilities.
"""

from __future__ import annotations

import os
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from partsearch.errors import DetectorError

HOG = "hog"
DETECTORS = (
    "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_v2", "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
    "fcos_resnet50_fpn", "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
)
COCO_PERSON = 1
COCO_CLASSES = 91
# Overlapping boxes of one person (HOG at neighbouring scales) are merged above this IoU.
NMS_IOU = 0.5


@dataclass(frozen=True)
class PersonBox:
    """A detected person in frame pixels: `x1, y1` inclusive, `x2, y2` exclusive (so the crop is
    `frame[y1:y2, x1:x2]`), and the detector's score."""

    x1: int
    y1: int
    x2: int
    y2: int
    score: float

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x1, self.y1, self.x2, self.y2

    def clipped(self, width: int, height: int) -> PersonBox | None:
        """The part of the box inside a `width` x `height` frame; None when nothing is."""
        x1, y1, x2, y2 = max(0, self.x1), max(0, self.y1), min(width, self.x2), min(height, self.y2)
        return PersonBox(x1, y1, x2, y2, self.score) if x2 > x1 and y2 > y1 else None


class Detector(Protocol):
    """What ingest needs from a detector: a name for the records, the score below which it drops
    boxes by default, and a call on one BGR frame `(H, W, 3)` uint8. A detector whose class sets
    `parallel_frames = True` is called on several frames at once from threads (it keeps no state
    between frames); without it, one frame at a time in order."""

    name: str
    default_min_score: float

    def __call__(self, frame: np.ndarray) -> list[PersonBox]: ...


def clip_boxes(boxes: np.ndarray, scores: np.ndarray, width: int, height: int) -> list[PersonBox]:
    """`(N, 4)` float x1, y1, x2, y2 -> integer boxes clipped to the frame (outwards rounding),
    after non-maximum suppression at `NMS_IOU`; empty boxes are dropped. Best score first."""
    import torch
    from torchvision.ops import nms

    if len(boxes) == 0:
        return []
    boxes, scores = np.asarray(boxes, dtype=np.float32), np.asarray(scores, dtype=np.float32)
    # One order whatever order the detector gave them in (OpenCV's threads vary it): suppression
    # between equal scores then keeps the same box every run.
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], -scores))
    boxes, scores = boxes[order], scores[order]
    boxes_t = torch.as_tensor(boxes)
    scores_t = torch.as_tensor(scores)
    keep = nms(boxes_t, scores_t, NMS_IOU).tolist()
    out = []
    for i in keep:
        x1, y1, x2, y2 = boxes[i]
        x1, y1 = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
        x2, y2 = min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))
        if x2 > x1 and y2 > y1:
            out.append(PersonBox(x1, y1, x2, y2, float(scores[i])))
    return out


class HogDetector:
    """OpenCV's default HOG people detector (64x128 window, image pyramid at `scale`), run on the
    frame enlarged `upscale` times.

    A detection window holds a margin around the person; the box is shrunk by 15% of its width on
    each side and 5% of its height top and bottom, as OpenCV's own `samples/python/peopledetect.py`
    draws it. The window sees a person about 96 px tall, so at the frame's own size HOG misses
    everyone smaller; the defaults [ours] were chosen on vtest.avi's ground truth (people 50 to 150
    px tall; `python -m benchmarks tracks`, docs/VIDEO.md): 1.5x with pyramid steps of 1.1 finds
    0.88 of the people at precision 0.91, where 1x with steps of 1.05 finds 0.47 at 0.83, in less time.
    The windows are scored by `video.hog.HogPyramid`: OpenCV's `detectMultiScale` boxes and scores,
    its SVM applied as one matrix product per level (1.4x less CPU time)."""

    name = HOG
    default_min_score = 0.5
    # Frames may be detected on several threads at once: the call keeps no state between frames,
    # and OpenCV and numpy release Python's lock while they work (`ingest --workers`).
    parallel_frames = True

    def __init__(self, scale: float = 1.1, upscale: float = 1.5):
        from partsearch.video.hog import CELL, HogPyramid

        self._pyramid = HogPyramid()
        self._pool: ThreadPoolExecutor | None = None  # scores the levels when OpenCV may use threads
        self._pool_threads = 0
        self.win_stride = CELL  # the windows' step: one cell, as the matrix form needs
        self.scale = scale
        self.upscale = upscale

    @property
    def config(self) -> dict:
        return {"win_stride": self.win_stride, "scale": self.scale, "upscale": self.upscale}

    def __call__(self, frame: np.ndarray) -> list[PersonBox]:
        import cv2

        image = frame if self.upscale == 1 else cv2.resize(
            frame, None, fx=self.upscale, fy=self.upscale, interpolation=cv2.INTER_LINEAR)
        threads = cv2.getNumThreads()  # 1 while ingest detects several frames at once
        if threads > 1 and self._pool_threads != threads:
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self._pool, self._pool_threads = ThreadPoolExecutor(threads, thread_name_prefix="hog-levels"), threads
            weakref.finalize(self, self._pool.shutdown, wait=False)
        rects, weights = self._pyramid.detect(image, self.scale, self._pool if threads > 1 else None)
        if len(rects) == 0:
            return []
        rects = rects.astype(np.float32) / self.upscale
        x, y, w, h = rects.T
        pad_w, pad_h = 0.15 * w, 0.05 * h
        boxes = np.stack([x + pad_w, y + pad_h, x + w - pad_w, y + h - pad_h], axis=1)
        return clip_boxes(boxes, np.ravel(weights), frame.shape[1], frame.shape[0])


def _architecture(spec: str) -> tuple[str, Path | None]:
    """`NAME`, `NAME:PATH` or `PATH` -> (architecture, weights file or None for the hub weights)."""
    name, sep, rest = spec.partition(":")
    if sep and name in DETECTORS:
        return name, Path(rest)
    if spec in DETECTORS:
        return spec, None
    path = Path(spec)
    if path.suffix or os.sep in spec or path.exists():
        matches = [n for n in DETECTORS if path.name.startswith(n)]
        if not matches:
            raise DetectorError(
                f"--detector {spec}: cannot tell the architecture from the file name; "
                f"write it as NAME:PATH with NAME one of {', '.join(DETECTORS)}")
        return max(matches, key=len), path
    raise DetectorError(f"--detector {spec}: unknown detector; use hog, a torchvision detector "
                        f"({', '.join(DETECTORS)}), or a weights file (NAME:PATH)")


def _hub_state_dict(name: str) -> dict:
    """torchvision's default COCO weights for `name`, from the torch hub cache; downloaded there
    only when online (HF_HUB_OFFLINE, the project's offline switch, is not set)."""
    import torch
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file() and os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0"):
        raise DetectorError(
            f"--detector {name}: its weights are not in the torch hub cache ({cached}) and this machine is "
            f"offline (HF_HUB_OFFLINE is set); download {weights.url} elsewhere and pass --detector {name}:PATH")
    try:
        return weights.get_state_dict(progress=True, check_hash=False)
    except (OSError, RuntimeError) as err:
        raise DetectorError(f"--detector {name}: cannot get its weights ({err}); download {weights.url} "
                            f"and pass --detector {name}:PATH") from None


class TorchvisionDetector:
    """A torchvision COCO detector; keeps the "person" boxes. `device` is a torch device string."""

    default_min_score = 0.5

    def __init__(self, spec: str, device: str = "cpu"):
        import torch
        from torchvision.models import get_model

        arch, path = _architecture(spec)
        if path is None:
            state = _hub_state_dict(arch)
        else:
            if not path.is_file():
                raise DetectorError(f"--detector {spec}: no such weights file {path}")
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a damaged or foreign file; torch's errors vary by cause
                raise DetectorError(f"--detector {spec}: {path} is not a readable torch weights file ({err})") from None
            if isinstance(state, dict) and isinstance(state.get("model"), dict):
                state = state["model"]  # a torchvision reference-script checkpoint
        model = get_model(arch, weights=None, weights_backbone=None, num_classes=COCO_CLASSES)
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise DetectorError(f"--detector {spec}: these weights do not fit {arch} with the {COCO_CLASSES} COCO "
                                f"classes ({first})") from None
        self.name = arch if path is None else f"{arch}:{path.name}"
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)

    def __call__(self, frame: np.ndarray) -> list[PersonBox]:
        import torch

        rgb = np.ascontiguousarray(frame[:, :, ::-1])
        image = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1).float().div_(255)
        with torch.inference_mode():
            out = self.model([image])[0]
        person = out["labels"] == COCO_PERSON
        return clip_boxes(out["boxes"][person].cpu().numpy(), out["scores"][person].cpu().numpy(),
                          frame.shape[1], frame.shape[0])


def build_detector(spec: str, device: str = "cpu") -> Detector:
    """`hog`, a torchvision detector name, `NAME:PATH` or a weights `PATH` -> a detector."""
    if spec == HOG:
        return HogDetector()
    return TorchvisionDetector(spec, device)
