"""Checkpoints and run directories.

A checkpoint is one `torch.save`d dict (INTERNALS.md, train): `{"format": "partsearch/1",
"config", "num_classes", "vocab_size", "model", "criterion", "optimizer", "scheduler", "scaler",
"rng", "epoch", "step", "best", "metrics"}` plus `"batch"` (micro-batches done in `epoch`) and
`"selection"` (how best.pt was chosen) [ours]. It holds only tensors and plain Python values, so
it loads with `torch.load(weights_only=True)`. It is written to a temporary file in the same
directory and renamed over the target, so a crash mid-write leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from partsearch.config import Config, ConfigError, from_dict, load_config
from partsearch.errors import CheckpointError
from partsearch.files import atomic_path
from partsearch.hub import WeightsError, quiet_weight_loading, resolve_weights

FORMAT = "partsearch/1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (temporary file + rename)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def link_checkpoint(source: str | Path, target: str | Path) -> None:
    """Make `target` hold what `source` holds (best.pt = last.pt when an evaluation improved), as a
    hard link, so the two names share one copy on disk: a checkpoint carries the frozen pretrained
    weights too (about 83 of the embedded default's 121 MB), and writing it twice doubled a run's
    size [ours]. `save_checkpoint` always writes a new file and renames it over its target, so
    rewriting `source` later never changes `target`. Where links are not supported, a copy."""
    with atomic_path(target) as tmp:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with `weights_only=True`; CheckpointError naming the file when it is
    missing, unreadable or not a partsearch checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a partsearch checkpoint (format {FORMAT!r} expected)")
    return payload


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch and CUDA generator states as weights_only-loadable values."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": [name, torch.from_numpy(key.copy()), pos, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str, path: Path,
                       config_diff: list[str] | None = None) -> None:
    """`module.load_state_dict(state)`, or a CheckpointError listing every missing, unexpected and
    shape-mismatched key (and the config fields that differ, which usually explain them)."""
    own = module.state_dict()
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if problems:
        shown = "; ".join(problems[:12]) + (f"; ... {len(problems) - 12} more" if len(problems) > 12 else "")
        hint = f" Config differences: {', '.join(config_diff)}." if config_diff else ""
        raise CheckpointError(
            f"{path}: the {what} weights do not match this configuration ({len(problems)} keys: {shown}).{hint} "
            "Use the config the checkpoint was trained with."
        )
    module.load_state_dict(state)


def config_differences(a: dict[str, Any], b: dict[str, Any], sections: tuple[str, ...] = ("model",)) -> list[str]:
    """'section.key: a -> b' for every differing value of the given sections."""
    out = []
    for section in sections:
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key) != sb.get(key):
                out.append(f"{section}.{key}: {sa.get(key)!r} -> {sb.get(key)!r}")
    return out


DATA_PATHS = ("root", "jsonl_file")  # the data.* fields that are paths


def portable_config(cfg: Config, run_dir: str | Path) -> Config:
    """A copy of `cfg` for the run's `config.yaml`: relative data paths (relative to the directory
    training started in) are rewritten relative to `run_dir`, so evaluation works from any
    directory and a run moved together with its data still finds it. Absolute paths stay."""
    out = from_dict(cfg.to_dict())
    for key in DATA_PATHS:
        value = getattr(cfg.data, key)
        if value and not Path(value).is_absolute():
            setattr(out.data, key, os.path.relpath(Path(value).resolve(), Path(run_dir).resolve()))
    return out


def run_data_path(run_dir: str | Path, value: str) -> str:
    """A data path of a run's config as usable from here: relative paths are relative to the run
    directory (`portable_config`); runs written before that stored them relative to the directory
    training started in, which is tried second."""
    if not value or Path(value).is_absolute():
        return value
    from_run = Path(run_dir) / value
    return str(from_run) if from_run.exists() or not Path(value).exists() else value


def fingerprint(model: torch.nn.Module, cfg: Config) -> str:
    """sha256 of the model weights (sorted by name) and the resolved config."""
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LoadedRun:
    """A trained model ready for inference (eval mode), with what built it."""

    cfg: Config
    model: torch.nn.Module
    tokenizer: Any
    path: Path
    fingerprint: str


def resolve_checkpoint(run_dir: str | Path, checkpoint: str = "best") -> Path:
    run_dir = Path(run_dir)
    if checkpoint in ("best", "last"):
        path = run_dir / f"{checkpoint}.pt"
        if not path.is_file():
            raise CheckpointError(
                f"{path} does not exist; is {run_dir} a run directory written by `partsearch train`?"
            )
        return path
    return Path(checkpoint)


def _without_download(spec: str) -> str:
    """Local weights stay (they also fix the architecture of a pretrained BERT, e.g. MiniLM's 12
    heads); hub names become `random`, since the checkpoint overwrites every weight anyway."""
    try:
        return spec if resolve_weights(spec).kind == "local" else "random"
    except WeightsError:
        return "random"


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild config, tokenizer and model from a run directory and load a checkpoint into it.

    `checkpoint` is `best`, `last` or a path. The config is the run's `config.yaml` (the
    checkpoint's own copy when the run directory has none). Backbones given by hub name are built
    with random init and then receive the checkpoint's weights, so no download is needed; the
    tokenizer is that of the training config. A checkpoint whose weights do not fit the config
    raises a CheckpointError listing the mismatching keys.
    """
    from partsearch.data.tokenizers import build_tokenizer
    from partsearch.model.model import build_model

    quiet_weight_loading()
    run_dir = Path(run_dir)
    path = resolve_checkpoint(run_dir, checkpoint)
    payload = load_checkpoint(path, map_location="cpu")
    try:
        ckpt_cfg = from_dict(payload["config"])
    except ConfigError as err:
        raise CheckpointError(f"{path}: its stored config is not valid for this version: {err}") from None
    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else ckpt_cfg
    tokenizer = build_tokenizer(cfg.model, cfg.data.max_tokens)
    offline_cfg = from_dict(cfg.to_dict())
    offline_cfg.model.image_weights = _without_download(cfg.model.image_weights)
    offline_cfg.model.text_weights = _without_download(cfg.model.text_weights)
    model = build_model(offline_cfg, payload["vocab_size"])
    diff = config_differences(ckpt_cfg.to_dict(), cfg.to_dict())
    load_state_checked(model, payload["model"], "model", path, diff)
    model.to(device).eval()
    return LoadedRun(cfg=cfg, model=model, tokenizer=tokenizer, path=path, fingerprint=fingerprint(model, cfg))
