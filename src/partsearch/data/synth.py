"""SynthPEDES [ours]: a procedural text-based person search dataset in CUHK-PEDES layout.

Each identity is a unique combination of part-level attributes (gender, hair length and colour,
hat, upper body garment, colour and pattern, lower body garment and colour, shoes, carried item,
build). The vocabulary includes words of real CUHK-PEDES-style captions ("a man / a woman",
"long hair", "blue jeans", "navy", "a dark jacket", "light shoes"), and what they name is drawn:
long hair to the shoulders, bald heads, jeans in greyed denim with a seam, navy and light blue.
Attribute values are drawn from Zipf-like weights, so some values (black trousers, white shoes) are
shared by many people and others are rare, which is the situation the commonality-based margin of
METHOD.md addresses; about a third of the identities are single-part mutations of an earlier one, so many
pairs of people differ in one part only.

Every identity gets 2 to 5 images that vary the view (front/back/side), pose, scale, position,
lighting, background clutter, occlusion, blur and noise. Every image gets 2 captions written only
from the attributes visible in it (a logo is on the chest, so it is hidden from the back and the
side; a backpack is hidden from the front; an occluder at the feet hides the shoes; a hat hides a
bald head, and short hair from the front), with several templates, synonyms, shuffled attribute
order and one or two attributes left out; the subject is the person's gender ("man", "lady"...)
three times in four, a neutral noun otherwise, and a dark or light colour is sometimes named by
its shade alone ("dark trousers").

The output is `DIR/reid_raw.json` + `DIR/imgs/synth/*.jpg`, ids from 1 (train ids first), split
80/10/10 by identity with at least 2 identities per split. Each annotation also carries
`attributes = {"person": {...}, "view": ..., "visible": [...], "occluded": bool, "mask": ...}`.
Same arguments give byte-identical files: every identity is drawn from its own seeded generator.

Part ground truth, for diagnostics only (training never reads it): every image has a label mask
`DIR/masks/<its path relative to imgs/, with .png>` (`attributes["mask"]` names it relative to DIR),
same size as the image, uint8: 0 background and occluders, 1 head (hair, hat, face, neck), 2 upper
body (torso, sleeves, arms, hands), 3 lower body (garment and bare legs), 4 shoes, 5 carried item
(`MASK_LABELS`). Each shape is drawn on the mask with its label at the same time as on the image, so
the mask holds what is visible; it is downsampled with nearest-neighbour, the image with a box
filter, so a label may differ from the image at a part's edge by one pixel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from partsearch.errors import UserError

COLORS = {
    "black": (25, 25, 25),
    "white": (240, 240, 240),
    "gray": (130, 130, 130),
    "blue": (30, 70, 210),
    "red": (215, 30, 30),
    "green": (30, 150, 50),
    "yellow": (245, 215, 30),
    "brown": (120, 70, 30),
    "pink": (245, 135, 190),
    "purple": (130, 45, 175),
    "orange": (250, 135, 20),
    "blonde": (225, 195, 110),
    "navy": (30, 40, 90),
    "light blue": (140, 175, 225),
    "beige": (205, 185, 145),
}
# Jeans are drawn in denim's greyed shades, not the saturated garment colours; these are the
# colours jeans come in.
DENIM = {"blue": (70, 95, 145), "navy": (35, 45, 80), "light blue": (135, 160, 200), "black": (40, 40, 48),
         "gray": (115, 115, 122)}

# Values are listed most common first; their weights follow a Zipf law (_weights).
PARTS: dict[str, tuple[str, ...]] = {
    "gender": ("man", "woman"),
    "hair_length": ("short", "long", "bald"),
    "hair_color": ("black", "brown", "blonde", "gray"),
    "hat": ("none", "cap", "beanie"),
    "hat_color": ("red", "white", "black", "blue", "yellow", "green"),
    "upper_type": ("t-shirt", "jacket", "coat"),
    "upper_color": ("black", "white", "blue", "red", "gray", "navy", "green", "yellow", "pink", "purple",
                    "orange", "brown", "light blue", "beige"),
    "upper_pattern": ("plain", "stripes", "logo", "plaid"),
    "lower_type": ("trousers", "jeans", "shorts", "skirt"),
    "lower_color": ("black", "blue", "gray", "navy", "white", "brown", "beige", "light blue", "red", "green",
                    "pink"),
    "shoe_color": ("white", "black", "brown", "red", "blue", "yellow"),
    "bag": ("none", "backpack", "handbag", "umbrella"),
    "bag_color": ("black", "red", "blue", "brown", "yellow", "green", "pink", "orange"),
    "build": ("average", "slim", "heavy"),
}
# A part's colour only exists when the part does.
_DEPENDENT = {"hat_color": ("hat", "none"), "bag_color": ("bag", "none"), "hair_color": ("hair_length", "bald")}
ZIPF_EXPONENT = 1.2
MUTATION_RATE = 0.35
VIEWS = ("front", "back", "side")
VIEW_WEIGHTS = (0.45, 0.3, 0.25)
SKIN = ((235, 200, 170), (200, 150, 110), (140, 95, 60))
SUPERSAMPLE = 2


def _weights(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    return w / w.sum()


def _draw_value(part: str, rng: np.random.Generator) -> str:
    values = PARTS[part]
    return values[rng.choice(len(values), p=_weights(len(values)))]


def _normalise(person: dict[str, str]) -> dict[str, str]:
    """Make a drawn or mutated person consistent: no bald women or men in skirts (both rare in
    pedestrian data), jeans only in denim colours, a colour exactly for the parts that exist (the
    most common one where a change brought a part back)."""
    if person.get("gender") == "woman" and person.get("hair_length") == "bald":
        person["hair_length"] = "short"
    if person.get("gender") == "man" and person.get("lower_type") == "skirt":
        person["lower_type"] = "trousers"
    if person.get("lower_type") == "jeans" and person.get("lower_color") not in DENIM:
        person["lower_color"] = "blue"
    for part, (parent, absent) in _DEPENDENT.items():
        if person.get(parent) == absent:
            person.pop(part, None)
        elif parent in person and part not in person:
            person[part] = PARTS[part][0]
    return person


# Hair length follows gender: most women's hair is long, most men's short.
HAIR_LENGTH_WEIGHTS = {"man": (0.88, 0.04, 0.08), "woman": (0.3, 0.7, 0.0)}


def _sample_person(rng: np.random.Generator) -> dict[str, str]:
    person = {part: _draw_value(part, rng) for part in PARTS}
    person["hair_length"] = PARTS["hair_length"][rng.choice(3, p=HAIR_LENGTH_WEIGHTS[person["gender"]])]
    return _normalise(person)


def _mutate(person: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
    """Change exactly one visible part (a colour, a garment, a pattern, the carried item...)."""
    out = dict(person)
    part = sorted(out)[rng.integers(len(out))]
    choices = [v for v in PARTS[part] if v != out[part]]
    out[part] = choices[rng.integers(len(choices))]
    for child, (parent, absent) in _DEPENDENT.items():
        if parent == part and out[part] != absent and child not in out:
            out[child] = _draw_value(child, rng)
    return _normalise(out)


def make_identities(num_ids: int, seed: int) -> list[dict[str, str]]:
    """`num_ids` distinct attribute combinations: skewed draws, a third of them single-part mutations."""
    rng = np.random.default_rng([seed, 0])
    people: list[dict[str, str]] = []
    seen: set[tuple] = set()
    while len(people) < num_ids:
        if len(people) >= 2 and rng.random() < MUTATION_RATE:
            candidate = _mutate(people[rng.integers(len(people))], rng)
        else:
            candidate = _sample_person(rng)
        key = tuple(sorted(candidate.items()))
        if key not in seen:
            seen.add(key)
            people.append(candidate)
    return people


def _hat_hides_hair(person: dict[str, str], view: str) -> bool:
    """A cap or beanie covers a bald head from every side, and short hair from the front (it shows
    below the hat from the back and the side; long hair falls beside the face)."""
    if person.get("hat", "none") == "none":
        return False
    return person.get("hair_length") == "bald" or (person.get("hair_length") == "short" and view == "front")


def visible_parts(person: dict[str, str], view: str, occluded: bool) -> list[str]:
    """The attributes a viewer can see in one image (what its captions may mention)."""
    visible = []
    for part in person:
        if part == "upper_pattern" and person[part] == "logo" and view != "front":
            continue  # the logo is printed on the chest
        if part in ("bag", "bag_color") and person["bag"] == "backpack" and view == "front":
            continue  # a backpack hides behind the body
        if part == "shoe_color" and occluded:
            continue
        if part in ("hair_color", "hair_length") and _hat_hides_hair(person, view):
            continue
        visible.append(part)
    return sorted(visible)


# ---------------------------------------------------------------- drawing


def lower_rgb(person: dict[str, str]) -> tuple[int, int, int]:
    """The lower-body garment's colour as drawn: denim's shade for jeans, the garment colour otherwise."""
    return (DENIM if person["lower_type"] == "jeans" else COLORS)[person["lower_color"]]


def _contrast(color: str) -> tuple[int, int, int]:
    r, g, b = COLORS[color]
    return (20, 20, 20) if 0.3 * r + 0.6 * g + 0.1 * b > 140 else (235, 235, 235)


# Part labels of the masks (DESIGN.md): 0 background and occluders, then the body regions.
MASK_LABELS = {0: "background", 1: "head", 2: "upper body", 3: "lower body", 4: "shoes", 5: "carried item"}
BACKGROUND, HEAD, UPPER, LOWER, SHOES, ITEM = range(6)


class _Canvas:
    """Draws every shape twice: in colour on the image and as its part label on the mask, so the
    mask is exactly the visible pixels of each part (later shapes cover earlier ones in both)."""

    def __init__(self, image: Image.Image, mask: Image.Image) -> None:
        self._image = ImageDraw.Draw(image)
        self._mask = ImageDraw.Draw(mask)

    def __getattr__(self, shape: str):
        def draw(*args, label: int, fill, **kwargs):
            getattr(self._image, shape)(*args, fill=fill, **kwargs)
            getattr(self._mask, shape)(*args, fill=label, **kwargs)

        return draw


def _render(person: dict[str, str], skin: tuple[int, int, int], view: str, occluded: bool,
            size: tuple[int, int], rng: np.random.Generator) -> tuple[Image.Image, Image.Image]:
    """The image and its part-label mask (`MASK_LABELS`, mode "L", same size)."""
    H, W = size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE
    base = rng.uniform(140, 215)
    tint = rng.uniform(-15, 15, size=3)
    background = tuple(int(np.clip(base + t, 0, 255)) for t in tint)
    image = Image.new("RGB", (W, H), background)
    mask = Image.new("L", (W, H), BACKGROUND)
    draw = _Canvas(image, mask)
    for _ in range(rng.integers(0, 4)):  # muted clutter: walls, windows, signs
        x0, y0 = rng.uniform(-0.2, 1.0) * W, rng.uniform(-0.2, 1.0) * H
        x1, y1 = x0 + rng.uniform(0.1, 0.6) * W, y0 + rng.uniform(0.05, 0.4) * H
        shade = rng.uniform(90, 230)
        draw.rectangle((x0, y0, x1, y1), label=BACKGROUND, fill=tuple(int(shade + v) for v in rng.uniform(-12, 12, size=3)))

    u = H * rng.uniform(0.80, 0.94)  # figure height
    top = (H - u) / 2 + rng.uniform(-0.04, 0.04) * H
    cx = W / 2 + rng.uniform(-0.07, 0.07) * W
    build = {"slim": 0.8, "average": 1.0, "heavy": 1.25}[person["build"]]
    side = view == "side"
    facing = 1 if rng.random() < 0.5 else -1  # side view: which way the person walks
    torso_w = 0.30 * u * build * (0.6 if side else 1.0) * (0.9 if person.get("gender") == "woman" else 1.0)
    leg_w = 0.12 * u * build
    stride = rng.uniform(0.0, 0.09) * u
    swing = rng.uniform(-0.05, 0.05) * u

    def y(f: float) -> float:
        return top + f * u

    upper = COLORS[person["upper_color"]]
    jeans = person["lower_type"] == "jeans"
    lower = lower_rgb(person)
    shoes = COLORS[person["shoe_color"]]
    hair_length = person.get("hair_length", "short")
    hair = COLORS[person["hair_color"]] if hair_length != "bald" else skin
    bag_color = COLORS.get(person.get("bag_color", ""), (0, 0, 0))
    hem = 0.66 if person["upper_type"] == "coat" else 0.50

    if side:
        feet = [cx - stride, cx + stride]
        hips = [cx, cx]
    else:
        feet = [cx - 0.08 * u * build - stride / 2, cx + 0.08 * u * build + stride / 2]
        hips = [cx - 0.07 * u * build, cx + 0.07 * u * build]

    if person["bag"] == "backpack" and side:
        bx = cx - facing * (torso_w / 2 + 0.07 * u)
        draw.rounded_rectangle((bx - 0.08 * u, y(0.19), bx + 0.08 * u, y(0.46)), radius=0.02 * u, label=ITEM, fill=bag_color)

    # legs: the lower-body garment, skin below shorts and skirts, shoes
    garment_end = {"trousers": 0.93, "jeans": 0.93, "shorts": 0.66, "skirt": 0.50}[person["lower_type"]]
    for hip, foot in zip(hips, feet):
        half = leg_w / 2

        def at(f: float) -> float:
            t = (f - 0.50) / 0.43
            return hip + (foot - hip) * t

        if garment_end > 0.50:
            draw.polygon([(hip - half, y(0.49)), (hip + half, y(0.49)), (at(garment_end) + half * 0.8, y(garment_end)),
                          (at(garment_end) - half * 0.8, y(garment_end))], label=LOWER, fill=lower)
            if jeans:  # the outer seam, a lighter line of faded denim
                seam = tuple(min(255, c + 45) for c in lower)
                out = -1 if hip < cx or (side and foot < hip) else 1
                draw.line((hip + out * half * 0.7, y(0.52), at(0.91) + out * half * 0.6, y(0.91)), label=LOWER,
                          fill=seam, width=max(1, int(0.01 * u)))
        if garment_end < 0.93:
            sw = half * 0.55
            draw.polygon([(at(garment_end) - sw, y(garment_end)), (at(garment_end) + sw, y(garment_end)),
                          (foot + sw, y(0.93)), (foot - sw, y(0.93))], label=LOWER, fill=skin)
        toe = facing * 0.03 * u if side else 0.0
        draw.ellipse((foot - 0.065 * u + toe, y(0.91), foot + 0.065 * u + toe, y(0.99)), label=SHOES, fill=shoes)
    if person["lower_type"] == "skirt":
        draw.polygon([(cx - torso_w * 0.45, y(0.48)), (cx + torso_w * 0.45, y(0.48)),
                      (cx + torso_w * 0.75, y(0.72)), (cx - torso_w * 0.75, y(0.72))], label=LOWER, fill=lower)

    # torso with its pattern
    box = (cx - torso_w / 2, y(0.16), cx + torso_w / 2, y(hem))
    draw.rounded_rectangle(box, radius=0.03 * u, label=UPPER, fill=upper)
    mark = _contrast(person["upper_color"])
    pattern = person["upper_pattern"]
    if pattern == "stripes":
        for k in range(int((hem - 0.2) / 0.07) + 1):
            y0 = y(0.2 + 0.07 * k)
            draw.rectangle((box[0] + 1, y0, box[2] - 1, y0 + 0.028 * u), label=UPPER, fill=mark)
    elif pattern == "plaid":
        step = 0.075 * u
        for k in range(1, int((box[2] - box[0]) / step) + 1):
            draw.line((box[0] + k * step, box[1], box[0] + k * step, box[3]), label=UPPER, fill=mark, width=max(1, int(0.015 * u)))
        for k in range(1, int((box[3] - box[1]) / step) + 1):
            draw.line((box[0], box[1] + k * step, box[2], box[1] + k * step), label=UPPER, fill=mark, width=max(1, int(0.015 * u)))
    elif pattern == "logo" and view == "front":
        r = 0.06 * u
        draw.ellipse((cx - r, y(0.27) - r, cx + r, y(0.27) + r), label=UPPER, fill=mark)
    if person["upper_type"] == "jacket" and view == "front":
        draw.line((cx, y(0.17), cx, y(hem)), label=UPPER, fill=mark, width=max(1, int(0.012 * u)))
    if person["bag"] == "backpack" and view == "back":
        draw.rounded_rectangle((cx - torso_w * 0.4, y(0.19), cx + torso_w * 0.4, y(0.45)),
                               radius=0.02 * u, label=ITEM, fill=bag_color)

    # arms: sleeves to the elbow for a t-shirt, to the wrist otherwise
    arm_w = max(2, int(0.075 * u * build))
    shoulders = [cx] if side else [cx - torso_w / 2 - arm_w / 3, cx + torso_w / 2 + arm_w / 3]
    hands = []
    for k, sx in enumerate(shoulders):
        direction = facing if side else (-1 if k == 0 else 1)
        hx = sx + (swing * 2 if side else direction * 0.03 * u + swing)
        hy = y(0.50)
        ex, ey = (sx + hx) / 2, y(0.34)
        sleeve_end = (ex, ey) if person["upper_type"] == "t-shirt" else (hx, hy - 0.02 * u)
        draw.line((ex, ey, hx, hy), label=UPPER, fill=skin, width=arm_w)
        draw.line((sx, y(0.19), *sleeve_end), label=UPPER, fill=upper, width=arm_w)
        draw.ellipse((hx - arm_w * 0.6, hy - arm_w * 0.6, hx + arm_w * 0.6, hy + arm_w * 0.6), label=UPPER, fill=skin)
        hands.append((hx, hy))

    carry = hands[-1] if not side else hands[0]
    if person["bag"] == "handbag":
        hx, hy = carry
        draw.line((hx, hy, hx, hy + 0.04 * u), label=ITEM, fill=bag_color, width=max(1, int(0.01 * u)))
        draw.rounded_rectangle((hx - 0.07 * u, hy + 0.03 * u, hx + 0.07 * u, hy + 0.14 * u), radius=0.015 * u,
                               label=ITEM, fill=bag_color)
    elif person["bag"] == "umbrella":
        hx, hy = carry
        draw.polygon([(hx - 0.035 * u, hy), (hx + 0.035 * u, hy), (hx + 0.008 * u, y(0.97)), (hx - 0.008 * u, y(0.97))],
                     label=ITEM, fill=bag_color)
        draw.line((hx, hy - 0.05 * u, hx, hy), label=ITEM, fill=(60, 60, 60), width=max(1, int(0.012 * u)))

    # head, hair, hat; long hair falls to the shoulders: beside the face from the front, behind the head
    # from the side, over the neck from the back
    hw = 0.075 * u
    head = (cx - hw, y(0.02), cx + hw, y(0.155))
    hair_x = cx - facing * hw * 0.4 if side else cx
    long_hair = (hair_x - hw * 1.15, y(0.03), hair_x + hw * 1.15, y(0.25 if view == "back" else 0.22))
    if hair_length == "long" and view == "side":
        draw.rounded_rectangle(long_hair, radius=0.03 * u, label=HEAD, fill=hair)
    elif hair_length == "long":
        for sign in (-1, 1):
            inner, outer = cx + sign * hw * 0.55, cx + sign * hw * 1.15
            draw.rounded_rectangle((min(inner, outer), y(0.05), max(inner, outer), y(0.22)), radius=0.02 * u,
                                   label=HEAD, fill=hair)
    draw.rectangle((cx - hw * 0.4, y(0.13), cx + hw * 0.4, y(0.17)), label=HEAD, fill=skin)
    draw.ellipse(head, label=HEAD, fill=skin)
    if view == "back":
        draw.ellipse(head, label=HEAD, fill=hair)
        if hair_length == "long":
            draw.rounded_rectangle(long_hair, radius=0.03 * u, label=HEAD, fill=hair)
    elif view == "side":
        draw.pieslice((head[0], head[1], head[2], head[3]), 180, 360, label=HEAD, fill=hair)
        back_x = cx - facing * hw * 0.5
        draw.ellipse((back_x - hw * 0.55, y(0.03), back_x + hw * 0.55, y(0.14)), label=HEAD, fill=hair)
    else:
        draw.pieslice((head[0], head[1], head[2], y(0.11)), 180, 360, label=HEAD, fill=hair)
    if person["hat"] == "cap":
        hat = COLORS[person["hat_color"]]
        draw.pieslice((cx - hw * 1.05, y(0.0), cx + hw * 1.05, y(0.09)), 180, 360, label=HEAD, fill=hat)
        brim = facing * hw if side else 0.0
        draw.rectangle((cx - hw * 1.1 + brim, y(0.04), cx + hw * 1.1 + brim, y(0.055)), label=HEAD, fill=hat)
    elif person["hat"] == "beanie":
        hat = COLORS[person["hat_color"]]
        draw.chord((cx - hw * 1.05, y(-0.02), cx + hw * 1.05, y(0.11)), 180, 360, label=HEAD, fill=hat)
        draw.rectangle((cx - hw * 1.05, y(0.035), cx + hw * 1.05, y(0.055)), label=HEAD, fill=hat)

    # an occluder (a pole or a low wall) in front of the person
    if occluded:
        shade = tuple(int(v) for v in rng.uniform(70, 200, size=3))
        draw.rectangle((0, y(rng.uniform(0.84, 0.89)), W, H), label=BACKGROUND, fill=shade)
    elif rng.random() < 0.15:
        px = cx + rng.uniform(-0.45, 0.45) * W
        shade = tuple(int(v) for v in rng.uniform(70, 200, size=3))
        draw.rectangle((px, 0, px + rng.uniform(0.04, 0.08) * W, H), label=BACKGROUND, fill=shade)

    image = image.resize((size[1], size[0]), Image.Resampling.BOX)
    mask = mask.resize((size[1], size[0]), Image.Resampling.NEAREST)
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 0.8))))
    pixels = np.asarray(image, dtype=np.float32) * rng.uniform(0.82, 1.15)
    pixels += rng.normal(0.0, rng.uniform(0.0, 5.0), size=pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8)), mask


# ---------------------------------------------------------------- captions

NOUNS = ("person", "pedestrian", "individual")
GENDER_NOUNS = {"man": ("man", "guy", "gentleman"), "woman": ("woman", "lady", "girl")}
GENDER_RATE = 0.75  # how often a caption names the gender instead of a neutral noun
BUILD_WORDS = {"slim": ("slim", "thin", "slender"), "heavy": ("heavy-set", "stocky", "broad")}
UPPER_WORDS = {"t-shirt": ("t-shirt", "tee", "short-sleeved shirt"), "jacket": ("jacket", "long-sleeved jacket"),
               "coat": ("coat", "long coat")}
LOWER_WORDS = {"trousers": ("trousers", "pants", "long pants"), "jeans": ("jeans", "denim jeans"),
               "shorts": ("shorts",), "skirt": ("skirt",)}
HAT_WORDS = {"cap": ("cap", "baseball cap"), "beanie": ("beanie", "knit hat")}
BAG_WORDS = {"backpack": ("backpack",), "handbag": ("handbag", "bag", "purse"), "umbrella": ("umbrella",)}
COLOR_SYNONYMS = {"gray": ("gray", "grey"), "navy": ("navy", "navy blue", "dark blue"),
                  "light blue": ("light blue", "pale blue"), "beige": ("beige", "khaki"), "blonde": ("blonde", "blond")}
# Captions often name only the shade: "dark shoes", "light hair".
SHADES = {"black": "dark", "navy": "dark", "brown": "dark", "white": "light", "light blue": "light",
          "beige": "light", "blonde": "light"}
SHADE_RATE = 0.15
HAIR_LENGTH_RATE = 0.6  # how often the hair's length is said


def _pick(rng: np.random.Generator, options) -> str:
    return options[rng.integers(len(options))]


def _color(name: str, rng: np.random.Generator) -> str:
    if name in SHADES and rng.random() < SHADE_RATE:
        return SHADES[name]
    return _pick(rng, COLOR_SYNONYMS.get(name, (name,)))


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _upper_phrase(person: dict[str, str], visible: set[str], rng: np.random.Generator) -> str:
    noun = _pick(rng, UPPER_WORDS[person["upper_type"]])
    color = _color(person["upper_color"], rng)
    pattern = person["upper_pattern"] if "upper_pattern" in visible else ""
    if pattern == "stripes":
        return _pick(rng, (_article(f"striped {color} {noun}"), _article(f"{color} {noun} with stripes")))
    if pattern == "plaid":
        return _article(f"{_pick(rng, ('plaid', 'checked'))} {color} {noun}")
    if pattern == "logo":
        return _article(f"{color} {noun} with a logo on the {_pick(rng, ('front', 'chest'))}")
    if pattern == "plain" and rng.random() < 0.3:
        return _article(f"plain {color} {noun}")
    return _article(f"{color} {noun}")


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def make_caption(person: dict[str, str], visible: list[str], rng: np.random.Generator) -> str:
    """One sentence or two from the visible attributes, leaving one or two of them out."""
    seen = set(visible)
    hair_key = "hair_length" if "hair_length" in person else "hair_color"
    items = [k for k in ("hair", "hat", "upper", "lower", "shoes", "bag", "build")
             if {"hair": hair_key, "hat": "hat", "upper": "upper_color", "lower": "lower_color",
                 "shoes": "shoe_color", "bag": "bag", "build": "build"}[k] in seen]
    if person["build"] == "average":
        items.remove("build")
    if person.get("hat", "none") == "none" and "hat" in items:
        items.remove("hat")
    if person["bag"] == "none" and "bag" in items:
        items.remove("bag")
    droppable = [k for k in items if k not in ("upper", "lower")]
    for _ in range(min(len(droppable), 1 + int(rng.random() < 0.4))):
        items.remove(droppable.pop(rng.integers(len(droppable))))

    wear = []
    if "hat" in items:
        wear.append(_article(f"{_color(person['hat_color'], rng)} {_pick(rng, HAT_WORDS[person['hat']])}"))
    wear.append(_upper_phrase(person, seen, rng))
    lower_noun = _pick(rng, LOWER_WORDS[person["lower_type"]])
    lower = f"{_color(person['lower_color'], rng)} {lower_noun}"
    wear.append(_article(lower) if person["lower_type"] == "skirt" else lower)
    if "shoes" in items:
        wear.append(f"{_color(person['shoe_color'], rng)} {_pick(rng, ('shoes', 'sneakers'))}")
    order = rng.permutation(len(wear))
    wear = [wear[i] for i in order]

    # each clause as (participle form, finite form)
    clauses = [(f"{_pick(rng, ('wearing', 'dressed in', 'in'))} {_join(wear)}", f"is wearing {_join(wear)}")]
    if "hair" in items and person.get("hair_length") == "bald":
        clauses.append((f"with a {_pick(rng, ('shaved', 'bald'))} head", "is bald"))
    elif "hair" in items:
        length = person.get("hair_length", "")
        length = f"{length} " if length and rng.random() < HAIR_LENGTH_RATE else ""
        hair = f"{length}{_color(person['hair_color'], rng)} hair"
        clauses.append((f"with {hair}", f"has {hair}"))
    if "bag" in items:
        bag = _article(f"{_color(person['bag_color'], rng)} {_pick(rng, BAG_WORDS[person['bag']])}")
        verb = "holding" if person["bag"] == "umbrella" else "carrying"
        clauses.append((f"{verb} {bag}", f"is {verb} {bag}"))
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]

    gendered = person.get("gender") in GENDER_NOUNS and rng.random() < GENDER_RATE
    noun = _pick(rng, GENDER_NOUNS[person["gender"]] if gendered else NOUNS)
    build = f"{_pick(rng, BUILD_WORDS[person['build']])} " if "build" in items else ""
    determiner = _pick(rng, ("a", "the", "this"))
    subject = _article(f"{build}{noun}") if determiner == "a" else f"{determiner} {build}{noun}"
    style = rng.integers(3)
    if style == 0 or len(clauses) == 1:
        text = f"{subject} {_join([c[0] for c in clauses])}."
    elif style == 1:
        rest = _join([c[1] for c in clauses[1:]])
        text = f"{subject} {clauses[0][1]}. The {noun} {rest}."
    else:
        text = f"{subject} {clauses[0][1]}, {_join([c[0] for c in clauses[1:]])}."
    return text[0].upper() + text[1:]


# ---------------------------------------------------------------- dataset


def _split_sizes(num_ids: int) -> tuple[int, int, int]:
    held = max(2, round(0.1 * num_ids))
    return num_ids - 2 * held, held, held


def _identity_images(job: tuple) -> list[dict]:
    """Draw and caption all images of one identity; returns annotation entries with their JPEG bytes."""
    pid, split, person, seed, size = job
    rng = np.random.default_rng([seed, 1, pid])
    skin = SKIN[rng.integers(len(SKIN))]
    entries = []
    for k in range(int(rng.integers(2, 6))):
        view = VIEWS[rng.choice(len(VIEWS), p=VIEW_WEIGHTS)]
        occluded = bool(rng.random() < 0.12)
        image, mask = _render(person, skin, view, occluded, size, rng)
        visible = visible_parts(person, view, occluded)
        captions = [make_caption(person, visible, rng) for _ in range(2)]
        buffer = BytesIO()
        image.save(buffer, format="JPEG", quality=92, subsampling=0, optimize=False)
        mask_png = BytesIO()
        mask.save(mask_png, format="PNG", optimize=False)
        entries.append({
            "id": pid,
            "split": split,
            "file_path": f"synth/{pid:05d}_{k}.jpg",
            "captions": captions,
            "processed_tokens": [re.findall(r"[a-z0-9\-]+", c.lower()) for c in captions],
            "attributes": {"person": person, "view": view, "visible": visible, "occluded": occluded,
                           "mask": f"masks/synth/{pid:05d}_{k}.png"},
            "_jpeg": buffer.getvalue(),
            "_mask": mask_png.getvalue(),
        })
    return entries


def generate(out_dir: str | Path, num_ids: int = 1000, seed: int = 0, size: tuple[int, int] = (128, 64),
             progress: bool = False) -> Path:
    """Write a SynthPEDES dataset to `out_dir` (replacing a previous SynthPEDES there) and return it.

    The dataset is built in a temporary directory next to `out_dir` and renamed into place, so an
    interrupted run leaves nothing half-written. One process draws 1,000 identities in seconds.
    """
    out_dir = Path(out_dir)
    if num_ids < 6:
        raise UserError(f"--ids {num_ids} is too few; SynthPEDES needs at least 6 identities (2 per split)")
    if out_dir.exists() and (not out_dir.is_dir() or (any(out_dir.iterdir())
                                                       and not (out_dir / "reid_raw.json").is_file())):
        raise UserError(f"{out_dir} exists and is not a SynthPEDES dataset; choose another --out or remove it")
    start = time.perf_counter()
    people = make_identities(num_ids, seed)
    order = np.random.default_rng([seed, 2]).permutation(num_ids)
    n_train, n_val, _ = _split_sizes(num_ids)
    jobs = []
    for rank, index in enumerate(order):
        split = "train" if rank < n_train else "val" if rank < n_train + n_val else "test"
        jobs.append((rank + 1, split, people[index], seed, tuple(size)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (tmp / "imgs" / "synth").mkdir(parents=True)
        (tmp / "masks" / "synth").mkdir(parents=True)
        annotations = []
        for done, entries in enumerate(map(_identity_images, jobs), start=1):
            for entry in entries:
                (tmp / "imgs" / entry["file_path"]).write_bytes(entry.pop("_jpeg"))
                (tmp / entry["attributes"]["mask"]).write_bytes(entry.pop("_mask"))
                annotations.append(entry)
            if progress and (done % max(1, num_ids // 10) == 0 or done == num_ids):
                print(f"synth: {done}/{num_ids} identities ({time.perf_counter() - start:.1f} s)",
                      file=sys.stderr, flush=True)
        (tmp / "reid_raw.json").write_text(json.dumps(annotations, sort_keys=True, indent=1) + "\n")
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
            out_dir.rename(old / "data")
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir

