"""SynthPEDES captions: CUHK-PEDES-style sentences from the attributes visible in an image, with
templates, synonyms, shades and shuffled, partly omitted attributes."""

from __future__ import annotations

import numpy as np

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
