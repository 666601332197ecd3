"""From YAML values to the typed config fields (`partsearch.config` builds its dataclasses with it).

`build` fills a dataclass from a mapping, field by field: each value is converted to the field's
annotated type (`coerce`), an unknown key is an error naming the nearest valid one (`nearest`), and
an option that was removed (`REMOVED_KEYS`, `REMOVED_VALUES`) loads at its old default with a
warning and is refused at any other value.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
import warnings
from typing import Any

from partsearch.errors import ConfigError


# Names people write for a key, from other tools and papers [ours].
ALIASES = {"learning_rate": "lr", "learningrate": "lr", "wd": "weight_decay", "bs": "batch_size",
           "workers": "num_workers", "max_epochs": "epochs", "num_epochs": "epochs", "clip_grad": "grad_clip",
           "max_length": "max_tokens", "max_len": "max_tokens", "embed_dim": "dim", "steps": "max_steps"}


def nearest(name: str, options: list[str]) -> str:
    """'; did you mean X?' for a mistyped key: same name in another case, a known alias, the
    initials of a snake_case name (learning_rate -> lr), then a close spelling; nothing rather than
    a far-fetched guess."""
    lower = name.lower()
    initials = "".join(part[0] for part in lower.split("_") if part)
    candidates = [o for o in options if o.lower() == lower]
    candidates += [ALIASES[lower]] if ALIASES.get(lower) in options else []
    candidates += [initials] if "_" in lower and initials in options else []
    candidates += difflib.get_close_matches(lower, options, n=1, cutoff=0.6)
    return f"; did you mean '{candidates[0]}'?" if candidates else f"; valid keys: {', '.join(options)}"


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML value to the annotated type of a config field."""
    origin = typing.get_origin(hint)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}", key=where)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}", key=where)
        return value
    if hint is float:
        if isinstance(value, str):
            # YAML 1.1 reads "1e-4" (no dot) as a string.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}", key=where)
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}", key=where)
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}", key=where)
        return "" if value is None else str(value)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}", key=where)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(coerce(v, args[0], where) for v in value)
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}", key=where)
        return tuple(coerce(v, a, where) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint):
        # `X | None`: None stays None, anything else is read as X.
        (inner,) = (a for a in typing.get_args(hint) if a is not type(None))
        return None if value is None else coerce(value, inner, where)
    return value  # also the `bool | str` switches, whose values `train.optim` checks


# Options that were measured and removed (docs/METHOD.md, "Removed options"), with the value they
# had by default. A config (a run directory's included) that names one at that value still loads,
# with a warning; any other value is refused, since this version cannot rebuild what it trained.
REMOVED_KEYS: dict[str, Any] = {
    "data.widen": 0.0,
    "model.background_tokens": 0,
    "model.foreground_grad": False,
    "model.fine_head": False,
    "model.fine_center": False,
    "loss.negatives": "hardest",
    "loss.label_smoothing": 0.0,
}
REMOVED_VALUES: dict[str, tuple[Any, ...]] = {"loss.commonality": ("per_pair",)}


def removed(where: str, value: Any) -> bool:
    """True when `where` is a removed key at its old default (warned about, to be skipped); raises
    ConfigError for a removed key at another value, or a removed value."""
    if value in REMOVED_VALUES.get(where, ()):
        raise ConfigError(f"{where}: {value} was removed (docs/METHOD.md, \"Removed options\"); this version "
                          f"cannot rebuild a model trained with it; retrain without it", key=where)
    if where not in REMOVED_KEYS:
        return False
    default = REMOVED_KEYS[where]
    if value != default:
        raise ConfigError(f"{where}: this option was removed (docs/METHOD.md, \"Removed options\") and only its "
                          f"old default {default!r} can be read, got {value!r}; this version cannot rebuild a "
                          "model trained with it; retrain without it", key=where)
    warnings.warn(f"{where}: removed option at its default ({default!r}), ignored", stacklevel=2)
    return True


def build(cls: type, values: dict[str, Any], prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {values!r}", key=prefix.rstrip(".") or None)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        where = f"{prefix}{key}"
        if removed(where, value):
            continue
        if key not in names:
            raise ConfigError(f"unknown config key '{where}'{nearest(key, names)}", key=where)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = build(hint, value or {}, where + ".")
        else:
            kwargs[key] = coerce(value, hint, where)
    return cls(**kwargs)
