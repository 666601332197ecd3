"""Drawing a SynthPEDES person: the image and its part-label mask, shape by shape on both."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from partsearch.data.synth.attributes import COLORS, DENIM

SUPERSAMPLE = 2


def lower_rgb(person: dict[str, str]) -> tuple[int, int, int]:
    """The lower-body garment's colour as drawn: denim's shade for jeans, the garment colour otherwise."""
    return (DENIM if person["lower_type"] == "jeans" else COLORS)[person["lower_color"]]


def contrast(color: str) -> tuple[int, int, int]:
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


def render(person: dict[str, str], skin: tuple[int, int, int], view: str, occluded: bool,
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
    mark = contrast(person["upper_color"])
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
