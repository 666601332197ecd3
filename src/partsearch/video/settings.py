"""The settings of `partsearch ingest`, apart from the pipeline so the command line reads its
defaults without importing OpenCV, torch or Norfair."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IngestSettings:
    """How videos are turned into crops; a finished video is ingested again when these change.

    `fps`: sampled frames per second (None: every frame). `detector`: `hog`, a torchvision detector
    name, `NAME:PATH` or a weights path (`detect.build_detector`). `min_score`: boxes scoring below
    it are dropped (None: the detector's default, 0.5 for both kinds; HOG scores are SVM margins,
    torchvision's probabilities). `min_height`: boxes lower than this many pixels are dropped
    (too small to search by description). `jpeg_quality`: of the crops. `stitch`: join the
    fragments of one person's walk after tracking, by motion and colour (`video.stitch`).
    `reidentify`: then join the walks of a person who leaves the view and comes back, by colour
    (`stitch.reidentify`).
    `motion_gate`: a fixed camera; run the detector only where the frame moves (`video.gate`)."""

    fps: float | None = 5.0
    detector: str = "hog"
    min_score: float | None = None
    min_height: int = 48
    jpeg_quality: int = 95
    stitch: bool = True
    reidentify: bool = True
    motion_gate: bool = False
