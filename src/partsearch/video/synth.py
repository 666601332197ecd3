"""A synthetic street video with known tracks [ours], for the tests and the ingest benchmark.

SynthPEDES-like people (`partsearch.data.synth` identities: hair, upper, lower and shoe colours,
trousers, shorts or a skirt) walk across a static textured background. They are drawn with adult
proportions (head about 1/7.5 of the height, shoulders a quarter of it, long swinging legs) rather
than with SynthPEDES' crop-filling cartoon proportions: OpenCV's HOG people detector, trained on
photographs of people (INRIA), finds the former and rarely the latter (docs/VIDEO.md).

Every figure is also drawn on its own mask, so a ground-truth box is the exact extent of the
figure's pixels in that frame (x2, y2 exclusive). Figures never overlap, so every figure is
visible in every frame it is in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from partsearch.data.synth import COLORS, SKIN, lower_rgb, make_identities


# Nearest a figure's centre comes to the frame's left and right sides, and to its lane's inner
# boundary, in figure heights.
EDGE_MARGIN = 0.30
LANE_MARGIN = 0.35
# Frames per stride cycle: a second at 10 frames/s, a person's usual cadence.
STRIDE_FRAMES = 10


@dataclass
class SyntheticVideo:
    """What was written: the file, its frame rate and size, and the ground truth per figure
    (`tracks[k]` maps a frame index to that figure's box `(x1, y1, x2, y2)`)."""

    path: Path
    fps: float
    size: tuple[int, int]
    tracks: list[dict[int, tuple[int, int, int, int]]] = field(default_factory=list)

    def boxes(self, frame: int) -> list[tuple[int, int, int, int]]:
        return [track[frame] for track in self.tracks if frame in track]


def draw_walker(draw: ImageDraw.ImageDraw, cx: float, top: float, height: float, phase: float,
                person: dict[str, str], skin: tuple[int, int, int], mask: bool = False) -> None:
    """One walking person seen from the front, `height` pixels from the top of the head to the
    soles; `phase` (radians) sets the stride (the feet never quite close, so the legs stay two). With `mask`, every part is drawn in white."""

    def color(rgb: tuple[int, int, int]) -> tuple[int, int, int] | int:
        return 255 if mask else rgb

    u = height

    def y(f: float) -> float:
        return top + f * u

    upper = color(COLORS[person["upper_color"]])
    lower = color(lower_rgb(person))
    skin_c = color(skin)
    spread = (0.05 + 0.06 * abs(np.sin(phase))) * u  # feet apart, widest mid-stride
    garment_end = {"trousers": 0.94, "jeans": 0.94, "shorts": 0.66, "skirt": 0.50}[person["lower_type"]]
    for side in (-1, 1):
        hip = cx + side * 0.045 * u
        foot = cx + side * spread
        half = 0.0375 * u

        def at(f: float) -> float:
            return hip + (foot - hip) * (f - 0.50) / 0.46

        draw.polygon([(hip - half, y(0.50)), (hip + half, y(0.50)), (foot + half * 0.7, y(0.96)),
                      (foot - half * 0.7, y(0.96))], fill=skin_c)
        if garment_end > 0.50:
            draw.polygon([(hip - half, y(0.50)), (hip + half, y(0.50)),
                          (at(garment_end) + half * 0.8, y(garment_end)), (at(garment_end) - half * 0.8, y(garment_end))],
                         fill=lower)
        draw.ellipse((foot - 0.04 * u, y(0.95), foot + 0.045 * u, y(1.0)), fill=color(COLORS[person["shoe_color"]]))
    if person["lower_type"] == "skirt":
        draw.polygon([(cx - 0.10 * u, y(0.48)), (cx + 0.10 * u, y(0.48)), (cx + 0.13 * u, y(0.70)),
                      (cx - 0.13 * u, y(0.70))], fill=lower)
    draw.polygon([(cx - 0.12 * u, y(0.18)), (cx + 0.12 * u, y(0.18)), (cx + 0.10 * u, y(0.52)),
                  (cx - 0.10 * u, y(0.52))], fill=upper)
    for side in (-1, 1):
        draw.ellipse((cx + side * 0.10 * u - 0.03 * u, y(0.17), cx + side * 0.10 * u + 0.03 * u, y(0.23)), fill=upper)
        swing = 0.04 * u * np.sin(phase) * side
        elbow = (cx + side * 0.13 * u + swing, y(0.36))
        draw.line((cx + side * 0.11 * u, y(0.20), *elbow), fill=upper, width=max(1, int(0.05 * u)))
        draw.line((*elbow, cx + side * 0.13 * u + 2 * swing, y(0.50)), fill=skin_c, width=max(1, int(0.04 * u)))
    hw = 0.055 * u
    draw.rectangle((cx - 0.025 * u, y(0.12), cx + 0.025 * u, y(0.19)), fill=skin_c)
    draw.ellipse((cx - hw, y(0.0), cx + hw, y(0.135)), fill=skin_c)
    if "hair_color" in person:  # bald people have none
        draw.chord((cx - hw, y(0.0), cx + hw, y(0.09)), 180, 360, fill=color(COLORS[person["hair_color"]]))


def background(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A static street-like backdrop `(H, W, 3)` uint8 RGB: a vertical light gradient with soft
    colour blotches (low-frequency texture) and mild pixel noise."""
    h, w = size
    base = np.linspace(165, 120, h)[:, None, None] * np.ones((h, w, 3))
    coarse = Image.fromarray(rng.uniform(0, 255, (max(2, h // 16), max(2, w // 16), 3)).astype(np.uint8))
    blotches = np.asarray(coarse.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64) / 255 * 50 - 25
    pixels = base + blotches + rng.normal(0, 4, (h, w, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def render_frames(num_frames: int = 64, size: tuple[int, int] = (240, 320), people: int = 2,
                  height: int = 128, seed: int = 0) -> tuple[list[np.ndarray], list[dict[int, tuple[int, int, int, int]]]]:
    """RGB frames `(H, W, 3)` uint8 and the ground-truth tracks. Figure k walks across its own lane
    (the frame width divided in `people` equal lanes, so figures never overlap) once, at constant
    speed, from a frame in the first eighth of the video to the last frame; even figures walk left
    to right, odd ones right to left. A lane ends `EDGE_MARGIN` heights from the frame's sides and
    `LANE_MARGIN` heights from the next lane. A figure takes a stride every `STRIDE_FRAMES` frames."""
    h, w = size
    rng = np.random.default_rng([seed, 7])
    backdrop = background(size, rng)
    identities = make_identities(max(people, 6), seed)[:people]
    lane = w / people
    walkers = []
    for k, person in enumerate(identities):
        figure = height * rng.uniform(0.95, 1.05)
        # HOG's window is wider than the person: keep a figure that far from the frame's sides
        lo = k * lane + (EDGE_MARGIN if k == 0 else LANE_MARGIN) * figure
        hi = (k + 1) * lane - (EDGE_MARGIN if k == people - 1 else LANE_MARGIN) * figure
        walkers.append({
            "person": person,
            "skin": SKIN[int(rng.integers(len(SKIN)))],
            "height": figure,
            "top": (h - height) / 2 + rng.uniform(-0.08, 0.08) * (h - height),
            "path": (lo, hi) if k % 2 == 0 else (hi, lo),
            "start": int(rng.integers(0, max(1, num_frames // 8))),
            "phase": rng.uniform(0, 2 * np.pi),
        })
    frames, tracks = [], [dict() for _ in walkers]
    for t in range(num_frames):
        image = Image.fromarray(backdrop.copy())
        draw = ImageDraw.Draw(image)
        for k, walker in enumerate(walkers):
            if t < walker["start"]:
                continue
            (x_from, x_to), walked = walker["path"], (t - walker["start"]) / max(1, num_frames - 1 - walker["start"])
            cx = x_from + (x_to - x_from) * walked
            phase = 2 * np.pi * (t - walker["start"]) / STRIDE_FRAMES + walker["phase"]
            mask = Image.new("L", (w, h), 0)
            draw_walker(ImageDraw.Draw(mask), cx, walker["top"], walker["height"], phase, walker["person"],
                        walker["skin"], mask=True)
            draw_walker(draw, cx, walker["top"], walker["height"], phase, walker["person"], walker["skin"])
            ys, xs = np.nonzero(np.asarray(mask))
            tracks[k][t] = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        frames.append(np.asarray(image))
    return frames, tracks


def write_video(path: str | Path, num_frames: int = 64, size: tuple[int, int] = (240, 320), fps: float = 10.0,
                people: int = 2, height: int = 128, seed: int = 0) -> SyntheticVideo:
    """Write the frames of `render_frames` as a Motion-JPEG AVI (decodable by every OpenCV build
    with FFmpeg) and return the ground truth."""
    import cv2

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames, tracks = render_frames(num_frames, size, people, height, seed)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (size[1], size[0]))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} (no Motion-JPEG encoder in this build)")
    try:
        for frame in frames:
            writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    finally:
        writer.release()
    return SyntheticVideo(path, fps, size, tracks)
