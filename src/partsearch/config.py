"""Typed configuration: dataclasses, YAML files and dotted command-line overrides.

Every default of the project lives here (METHOD.md marks which are the paper's and which are
ours). A config file only names what differs from these defaults. Unknown keys are errors that
name the key and the nearest valid one, so a typo never silently trains the wrong model
(`config_values.py` reads each value into its field).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from partsearch.config_values import build, nearest
from partsearch.errors import ConfigError
from partsearch.files import write_text_atomic


@dataclass
class DataConfig:
    """Where the data is and how it is read, augmented and batched."""

    dataset: str = "SynthPEDES"  # CUHK-PEDES | ICFG-PEDES | RSTPReid | SynthPEDES | jsonl
    root: str = "data/synth"
    jsonl_file: str = ""  # for dataset=jsonl: the annotation file (default: <root>/annotations.jsonl)
    image_size: tuple[int, int] = (384, 128)  # (H, W)
    # Image normalisation: None = the image backbone's own (`model/backbones/`: ImageNet's for
    # resnet50, vit_b16 and the small backbones, CLIP's for clip_vit_b16); a value overrides it.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    max_tokens: int = 77
    batch_size: int = 64
    instances_per_id: int = 2  # K of the P x K identity-balanced sampler
    sampler: str = "identity"  # identity | random
    num_workers: int = 4
    flip: bool = True
    pad_crop: int = 10
    random_erasing: float = 0.5
    # [ours] photometric augmentation for real crops (off by default, as in the published recipes):
    # torchvision's ColorJitter (brightness, contrast, saturation, hue) and the probability of a
    # Gaussian blur. Keep hue at 0 when captions name colours: a hue shift turns a red coat green.
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    blur: float = 0.0
    skip_bad_images: bool = False
    max_image_pixels: int = 50_000_000


@dataclass
class ModelConfig:
    """Backbones and the coarse-to-fine heads (METHOD.md, Architecture)."""

    image_backbone: str = "resnet50"  # resnet50 | vit_b16 | clip_vit_b16 | mobilenet_v2(_os8) | small_cnn | small_vit
    image_weights: str = "random"  # hub name, local path, "mobilenet_v2_imagenet" (offline) or "random"
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
    # [ours] dropout on the attention weights of the heads' encoders and decoder; None = `dropout`.
    # 0 in the demo's config: the coarse tokens' maps lie more on the person (METHOD.md).
    attention_dropout: float | None = None
    similarity_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)  # (w_g, w_c, w_f) [ours]
    # [ours] std of the learnable coarse and fine query tokens at initialisation (METHOD.md, "Making
    # the parts form"): at 0.02 the decoder's self-attention averaged them into one token before
    # any training (measured: pairwise cosine 0.99 on a random batch).
    query_init_std: float = 1.0
    # [ours] what the image stripes pool: "memory" = M_v (the paper), "projected" = the projected
    # backbone tokens before the encoder's self-attention, which keep each stripe's own content
    # (measured: stripes localise upper / lower / shoe colour with AUC 0.75-0.82 from "projected").
    fine_source: str = "projected"
    # [ours] whether the stripes pool M * A (the paper) or M alone: A comes from the coarse tokens,
    # which read little of small parts (shoes, hair), so within a stripe it favours the rows of the
    # larger part next to them (measured on a trained model: upper / shoe colour AUC 0.76 / 0.61
    # from M * A, 0.84 / 0.66 from M). A is still computed, shown and trained either way.
    fine_foreground: bool = True
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
    # optional [ours]: InfoNCE on each fine part's cosine (stripe p vs text fine token p), averaged
    # over parts: the part-level counterpart of `infonce`
    infonce_fine: float = 0.0
    sdm: float = 0.0  # optional, IRRA's similarity distribution matching [ours]
    margin: float = 0.2
    commonality: str = "soft_rank"  # soft_rank | weighted [ours] | none (losses/cmr.py)
    cmr_alpha: float = 0.2
    cmr_min_margin: float = 0.05
    cmr_delta: float = 0.1
    cmr_temperature: float = 0.05
    contrastive_temperature: float = 0.02
    # [ours] token diversity: weight of the mean squared pairwise cosine between the coarse tokens
    # (each modality) and between the text's fine tokens, pushing each token to carry its own part.
    diversity: float = 1.0
    # [ours] attention overlap: weight of the mean cosine between the tokens' attention maps (each
    # modality's coarse tokens, and the text's fine tokens), so each token reads its own part.
    attention_overlap: float = 1.0
    # [ours, after SCOPS' concentration loss] weight of the spatial variance of each coarse token's
    # attention map over the image, so a token reads one compact place rather than the whole floor.
    concentration: float = 0.0
    # [ours] part correspondence: weight of a cross-entropy, within each matched pair, that puts
    # image part p closer to text part p than to the pair's other text parts (and back), at the
    # fine level (stripes vs text fine tokens) and the coarse level (shared tokens). Without it the
    # fine diagonal margin stayed at 0.01 on the demo; with it, 0.11 (METHOD.md, "Making the parts form").
    part_match: float = 1.0
    # the levels the part correspondence covers (the ablation's `coarse` variant keeps it off the
    # fine level, which that variant does not train); the term is the mean over them
    part_match_levels: tuple[str, ...] = ("coarse", "fine")
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
    # Run the frozen text layers (model.freeze_text) once per caption, not once per step
    # (`train/text_cache.py`); the same states at every real token.
    cache_frozen_text: bool = True
    # After training, choose the similarity's level weights on the val split (`eval/fusion.py`)
    # [ours]; false keeps model.similarity_weights (the paper's plain sum by default).
    fit_level_weights: bool = True
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


# Bounds (inclusive; None = open) of numeric fields whose other values crash or silently do
# nothing. Choices (backbone, optimizer, ...) and the bounds that need other fields are checked by
# the module that uses them (train.optim, losses.criterion).
LIMITS: dict[str, tuple[float | None, float | None]] = {
    "data.image_size": (16, None),
    "data.max_tokens": (2, None),
    "data.batch_size": (1, None),
    "data.instances_per_id": (1, None),
    "data.num_workers": (0, None),
    "data.pad_crop": (0, None),
    "data.random_erasing": (0, 1),
    "data.color_jitter": (0, None),
    "data.blur": (0, 1),
    "data.max_image_pixels": (1, None),
    "model.dim": (1, None),
    "model.num_coarse": (1, None),
    "model.num_fine": (1, None),
    "model.dropout": (0, 1),
    "model.attention_dropout": (0, 1),
    "loss.margin": (0, None),
    "train.backbone_lr_factor": (0, None),
    "train.weight_decay": (0, None),
    "train.grad_clip": (0, None),
    "train.max_steps": (0, None),
    "train.time_limit_min": (0, None),
    "eval.batch_size": (1, None),
    "eval.memory_budget_mb": (1, None),
}


def check_limits(cfg: Config) -> None:
    """Raise ConfigError naming the first value outside `LIMITS`."""
    for key, (low, high) in LIMITS.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        for v in value if isinstance(value, tuple) else (value,):
            if v is None:  # an optional value left to its default
                continue
            if (low is not None and v < low) or (high is not None and v > high):
                wanted = f">= {low}" if high is None else f"between {low} and {high}"
                raise ConfigError(f"{key}: every value must be {wanted}, got {list(value)}" if isinstance(value, tuple)
                                  else f"{key}: must be {wanted}, got {value}", key=key)


def from_dict(values: dict[str, Any]) -> Config:
    cfg = build(Config, values or {}, "")
    check_limits(cfg)
    return cfg


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
            raise ConfigError(f"unknown config section '{section}'{nearest(section, sections)}", key=section)
        values.setdefault(section, {})[key] = value
    return values


SHIPPED_CONFIGS = Path(__file__).parent / "configs"


def shipped_config(name: str) -> Path:
    """The config file `name` (e.g. "synth_cpu.yaml") that ships inside the installed package, the
    same files as a checkout's `configs/`."""
    path = SHIPPED_CONFIGS / name
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml")))
        raise ConfigError(f"no shipped config named {name!r}; the shipped ones are {shipped}")
    return path


def _resolve(path: Path) -> Path:
    """`path` itself when it is a file; otherwise, for a relative `NAME.yaml` or `configs/NAME.yaml`,
    the shipped config of that name, so the documented commands work outside a checkout too."""
    if path.is_file() or path.is_absolute() or path.parent not in (Path("."), Path("configs")):
        return path
    shipped = SHIPPED_CONFIGS / path.name
    return shipped if shipped.is_file() else path


def find_config(path: str | Path) -> Path:
    """The config file a user named: the file itself, or the shipped config of that name
    (`_resolve`); a ConfigError naming the shipped ones when there is neither."""
    found = _resolve(Path(path))
    if not found.is_file():
        shipped = ", ".join(sorted(p.name for p in SHIPPED_CONFIGS.glob("*.yaml")))
        raise ConfigError(f"--config {path}: no such file, and no shipped config of that name ({shipped})")
    return found


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config file (or only defaults when `path` is None) and apply overrides. A
    relative `configs/NAME.yaml` that is not there names the shipped config (`shipped_config`)."""
    values: dict[str, Any] = {}
    if path is not None:
        path = _resolve(Path(path))
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
    overrides = list(overrides or [])
    try:
        return from_dict(merge_overrides(values, overrides))
    except ConfigError as err:
        # Name where the faulty key was written: the command line (an override) or the file.
        written = [text.split("=", 1)[0].strip() for text in overrides]
        from_line = err.key is None or any(k == err.key or k.startswith(err.key + ".") for k in written)
        if path is None or (from_line and overrides):
            raise ConfigError(f"command line: {err}" if overrides else str(err), key=err.key) from None
        raise ConfigError(f"{path}: {err}", key=err.key) from None
