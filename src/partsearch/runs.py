"""Reading a run directory back: its checkpoints, its config and the model they rebuild.

A checkpoint is one `torch.save`d dict (INTERNALS.md, train; written by `partsearch.train.checkpoint`)
holding only tensors and plain Python values, so it loads with `torch.load(weights_only=True)`.
`load_run` rebuilds config, tokenizer and model from a run directory; evaluation, search, the demo
and the benchmarks read runs through this module and never import `partsearch.train`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from partsearch.config import Config, ConfigError, from_dict, load_config
from partsearch.errors import CheckpointError
from partsearch.hub import WeightsError, quiet_weight_loading, resolve_weights

LEVEL_WEIGHTS = "level_weights.json"  # the level weights a run chose on val (`eval/fusion.py`)

FORMAT = "partsearch/1"


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


def run_data_path(run_dir: str | Path, value: str) -> str:
    """A data path of a run's config as usable from here: relative paths are relative to the run
    directory (`portable_config`); runs written before that stored them relative to the directory
    training started in, which is tried second."""
    if not value or Path(value).is_absolute():
        return value
    from_run = Path(run_dir) / value
    return str(from_run) if from_run.exists() or not Path(value).exists() else value


def config_identity(cfg: Config) -> dict[str, Any]:
    """The resolved config without the entries at their default value, per section: what a run's
    fingerprint reads, so that a key a later version adds (with a default that keeps the old
    behaviour) leaves the fingerprints of existing runs, and so their indexes, as they were."""
    defaults = Config().to_dict()
    missing = object()
    return {section: {key: value for key, value in values.items() if defaults[section].get(key, missing) != value}
            for section, values in cfg.to_dict().items()}


def fingerprint(model: torch.nn.Module, cfg: Config) -> str:
    """sha256 of the model weights (sorted by name) and the config's non-default entries
    (`config_identity`)."""
    digest = hashlib.sha256(json.dumps(config_identity(cfg), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


@dataclass
class LoadedRun:
    """A trained model ready for inference (eval mode), with what built it: `cfg` (the resolved
    config), `tokenizer` (texts -> ids and mask), `transform` (PIL image -> normalised tensor at
    the model's input size), the checkpoint `path` and the weights' `fingerprint`."""

    cfg: Config
    model: torch.nn.Module
    tokenizer: Any
    path: Path
    fingerprint: str
    transform: Any


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


def load_run(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "cpu",
             level_weights: bool = True) -> LoadedRun:
    """Rebuild config, tokenizer and model from a run directory and load a checkpoint into it.

    `checkpoint` is `best`, `last` or a path. The config is the run's `config.yaml` (the
    checkpoint's own copy when the run directory has none). Backbones given by hub name are built
    with random init and then receive the checkpoint's weights, so no download is needed; the
    tokenizer is that of the training config. A checkpoint whose weights do not fit the config
    raises a CheckpointError listing the mismatching keys. With `level_weights`, the level weights
    the run chose on its val split (`eval/fusion.py`, `level_weights.json`) replace the config's
    `model.similarity_weights`, so everything that scores with the run uses them.
    """
    from partsearch.model.backbones import build_image_transform, build_tokenizer
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
    chosen = read_level_weights(run_dir) if level_weights else None
    if chosen is not None:
        cfg.model.similarity_weights = chosen
    return LoadedRun(cfg=cfg, model=model, tokenizer=tokenizer, path=path, fingerprint=fingerprint(model, cfg),
                     transform=build_image_transform(cfg.model, cfg.data, train=False))


def load(run_dir: str | Path, checkpoint: str = "best", device: str | torch.device = "auto") -> LoadedRun:
    """`partsearch.load`: the one way to get a trained model, like CLIP's `load()`.

    Returns a `LoadedRun` with `.model` (eval mode, on `device`: auto = the GPU when there is one),
    `.tokenizer`, `.transform` and `.cfg`::

        run = partsearch.load("runs/demo/run")
        image = run.transform(PIL.Image.open("crop.jpg").convert("RGB"))[None]
        tokens = run.tokenizer(["a woman in a red coat"])
        image_emb = run.model.encode_image(image)
        text_emb = run.model.encode_text(tokens.ids, tokens.mask)
    """
    from partsearch.device import resolve_device

    return load_run(run_dir, checkpoint, resolve_device(str(device)))


def read_level_weights(run_dir: str | Path) -> tuple[float, float, float] | None:
    """The weights a run chose on val, None when it has none (or the file is unreadable)."""
    try:
        weights = json.loads((Path(run_dir) / LEVEL_WEIGHTS).read_text())["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(weights, list) and len(weights) == 3 and all(isinstance(w, (int, float)) for w in weights)):
        return None
    return tuple(float(w) for w in weights)


ENVIRONMENT = "environment.json"  # {"sessions": [{"from_step", **partsearch.device.numerics}]}, by the trainer


def read_environment(run_dir: str | Path) -> list[dict[str, Any]]:
    """The training sessions a run recorded in `ENVIRONMENT`, oldest first; [] when it records none
    (trained before runs recorded it) or the file is unreadable."""
    try:
        loaded = json.loads((Path(run_dir) / ENVIRONMENT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    sessions = loaded.get("sessions") if isinstance(loaded, dict) else None
    return [s for s in sessions if isinstance(s, dict)] if isinstance(sessions, list) else []


def describe_environment(run_dir: str | Path) -> str | None:
    """How a run was trained, for a reader comparing its numbers with others': "torch 2.14.1, 2
    threads, AVX2 kernels (AMD EPYC ...)", one part per training session that differed from the
    one before. None when the run records nothing."""
    parts, last = [], None
    for session in read_environment(run_dir):
        text = (f"torch {session.get('torch')}, {session.get('threads')} threads, {session.get('cpu_kernels')} kernels "
                f"({session.get('gpu') or session.get('cpu')})")
        if text != last:
            parts.append(text if not parts else f"from step {session.get('from_step')}: {text}")
        last = text
    return "; ".join(parts) or None
