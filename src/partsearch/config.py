"""Typed configuration: dataclasses, YAML files and dotted command-line overrides.

Every default of the project lives here (METHOD.md marks which are the paper's and which are
ours). A config file only names what differs from these defaults. Unknown keys are errors that
name the key and the nearest valid one, so a typo never silently trains the wrong model.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from partsearch.errors import UserError
from partsearch.files import write_text_atomic

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ConfigError(UserError):
    """A configuration value or key a user wrote is wrong; the message says what to write."""


@dataclass
class DataConfig:
    """Where the data is and how it is read, augmented and batched."""

    dataset: str = "SynthPEDES"  # CUHK-PEDES | ICFG-PEDES | RSTPReid | SynthPEDES | jsonl
    root: str = "data/synth"
    jsonl_file: str = ""  # for dataset=jsonl: the annotation file (default: <root>/annotations.jsonl)
    image_size: tuple[int, int] = (384, 128)  # (H, W)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    max_tokens: int = 77
    batch_size: int = 64
    instances_per_id: int = 2  # K of the P x K identity-balanced sampler
    sampler: str = "identity"  # identity | random
    num_workers: int = 4
    flip: bool = True
    pad_crop: int = 10
    random_erasing: float = 0.5
    skip_bad_images: bool = False
    max_image_pixels: int = 50_000_000


@dataclass
class ModelConfig:
    """Backbones and the coarse-to-fine heads (METHOD.md, Architecture)."""

    image_backbone: str = "resnet50"  # resnet50 | vit_b16 | clip_vit_b16 | small_cnn | small_vit
    image_weights: str = "random"  # hub name, local path, or "random"
    text_backbone: str = "bert"  # bert | clip_text
    text_weights: str = "bert-base-uncased"  # hub name, local path, "minilm" (offline) or "random"
    # Tokenizer files: empty = those of text_weights (the MiniLM vocabulary when text_weights is
    # random); clip_text always uses open_clip's BPE.
    tokenizer: str = ""
    dim: int = 512  # shared width d
    num_coarse: int = 6  # N_c [ours]
    num_fine: int = 6  # P [ours]
    encoder_layers: int = 1  # [ours]
    encoder_heads: int = 8  # [ours]
    decoder_layers: int = 2  # [ours]
    decoder_heads: int = 8
    dropout: float = 0.1
    similarity_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (w_g, w_c, w_f) [ours]
    grad_checkpointing: bool = False
    freeze_image: str = "none"  # none | all | N (first N blocks/stages)
    freeze_text: str = "none"
    # Sizes of the from-scratch backbones: small_cnn / small_vit width, and the BERT built when
    # text_weights is random (bert-base by default; tests use tiny ones).
    image_width: int = 256
    text_width: int = 768
    text_layers: int = 12


@dataclass
class LossConfig:
    """Loss terms and their weights (METHOD.md, Losses)."""

    id_global: float = 1.0
    id_coarse: float = 1.0
    id_fine: float = 1.0
    rank_global: float = 1.0
    rank_coarse: float = 1.0
    cmr: float = 1.0  # lambda
    infonce: float = 0.0  # optional, global level [ours, beyond the paper]
    sdm: float = 0.0  # optional, IRRA's similarity distribution matching [ours]
    margin: float = 0.2
    negatives: str = "hardest"  # hardest | semihard
    commonality: str = "soft_rank"  # soft_rank | none
    cmr_alpha: float = 0.2
    cmr_min_margin: float = 0.05
    cmr_delta: float = 0.1
    cmr_temperature: float = 0.05
    contrastive_temperature: float = 0.02
    label_smoothing: float = 0.0
    id_scale: float = 20.0  # scale s of the cosine ID classifiers [ours, after NormFace]


@dataclass
class TrainConfig:
    """Optimisation and the training loop (METHOD.md, Training defaults)."""

    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-3
    backbone_lr_factor: float = 0.1
    weight_decay: float = 4e-5
    epochs: int = 60
    warmup_epochs: int = 5
    scheduler: str = "cosine"  # cosine | multistep
    milestones: tuple[int, ...] = (20, 40)
    gamma: float = 0.1
    grad_clip: float = 0.0  # 0 = off
    accumulate: int = 1
    precision: str = "auto"  # auto (bf16 autocast on GPU, fp32 on CPU) | bf16 | fp32
    # Speed only; what is computed stays the same up to float rounding (docs/BENCHMARKS.md has
    # the measurements behind each default, and `python -m benchmarks train-step` times them).
    compile: bool = False  # torch.compile the model; a version whose compiler fails falls back to eager with a warning
    # auto = the measured choice per device (`optim.AUTO`): off on CPU (no gain measured), off on
    # GPU until benchmarks/gpu.sh measures it.
    channels_last: bool | str = "auto"  # true | false | auto: NHWC images and conv weights
    fused_optimizer: bool | str = "auto"  # true | false | auto: Adam/AdamW update in fused kernels
    # The loss is checked for NaN/inf on the device every micro-batch and read on the host only every
    # `nan_check_every` steps, at each log line and before every evaluation or checkpoint; the error
    # still names the first bad step. 0 = only at those points; 1 = every step (one host sync each).
    nan_check_every: int = 0
    seed: int = 0
    eval_every: int = 1  # epochs
    eval_split: str = "val"  # val | test (test only when asked, and labelled so)
    log_every: int = 20  # steps
    max_steps: int = 0  # 0 = no limit
    time_limit_min: float = 0.0  # stop (checkpointed and evaluated) after this many minutes; 0 = none
    out_dir: str = "runs"
    name: str = ""  # run directory name; empty = config file stem
    device: str = "auto"  # auto | cpu | cuda | cuda:N


@dataclass
class EvalConfig:
    batch_size: int = 128
    memory_budget_mb: int = 256  # working memory for the metrics' query chunks


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def dump(self, path: str | Path) -> None:
        """Write the resolved config as YAML (atomically)."""
        write_text_atomic(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _nearest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.0)
    return f"; did you mean '{close[0]}'?" if close else ""


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type of a config field."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return "" if value is None else str(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_coerce(v, a, where) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key '{where}'{_nearest(key, names)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, where + ".")
        else:
            kwargs[key] = _coerce(value, hint, where)
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> Config:
    return _build(Config, values or {}, "")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=1e-4` -> (["train", "lr"], 0.0001); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if len(path) != 2 or not all(path):
        raise ConfigError(f"override key '{key}' must be section.key (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{text}': value is not valid YAML ({err})") from None
    return path, value


def merge_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    values = {k: dict(v) if isinstance(v, dict) else v for k, v in (values or {}).items()}
    sections = [f.name for f in dataclasses.fields(Config)]
    for text in overrides:
        (section, key), value = parse_override(text)
        if section not in sections:
            raise ConfigError(f"unknown config section '{section}'{_nearest(section, sections)}")
        values.setdefault(section, {})[key] = value
    return values


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (or only defaults when `path` is None) and apply overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    try:
        return from_dict(merge_overrides(values, list(overrides or [])))
    except ConfigError as err:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{err}") from None
