"""SynthPEDES people: the part attributes, their Zipf-like value weights, identities (a third of
them single-part mutations of an earlier one) and which parts a view shows."""

from __future__ import annotations

import numpy as np

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


def _weights(n: int) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** ZIPF_EXPONENT
    return w / w.sum()


def _draw_value(part: str, rng: np.random.Generator) -> str:
    values = PARTS[part]
    return values[rng.choice(len(values), p=_weights(len(values)))]


def normalise(person: dict[str, str]) -> dict[str, str]:
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
    return normalise(person)


def _mutate(person: dict[str, str], rng: np.random.Generator) -> dict[str, str]:
    """Change exactly one visible part (a colour, a garment, a pattern, the carried item...)."""
    out = dict(person)
    part = sorted(out)[rng.integers(len(out))]
    choices = [v for v in PARTS[part] if v != out[part]]
    out[part] = choices[rng.integers(len(choices))]
    for child, (parent, absent) in _DEPENDENT.items():
        if parent == part and out[part] != absent and child not in out:
            out[child] = _draw_value(child, rng)
    return normalise(out)


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


def hat_hides_hair(person: dict[str, str], view: str) -> bool:
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
        if part in ("hair_color", "hair_length") and hat_hides_hair(person, view):
            continue
        visible.append(part)
    return sorted(visible)
