"""SynthPEDES: layout, determinism, skewed attributes, captions true to the visible parts, atomic writes."""

import itertools
import json
import re
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from partsearch.cli import main
from partsearch.data import synth
from partsearch.data.formats import load_dataset
from partsearch.errors import UserError



def colour_words(name):
    """The words a caption may use for a colour: its name, its synonyms, its shade ("dark", "light")."""
    phrases = (name, *synth.COLOR_SYNONYMS.get(name, ()), synth.SHADES.get(name, name))
    return {word for phrase in phrases for word in phrase.split()}


COLOR_WORDS = set().union(*(colour_words(c) for c in synth.COLORS))
COLOR_PARTS = ("hair_color", "hat_color", "upper_color", "lower_color", "shoe_color", "bag_color")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return synth.generate(tmp_path_factory.mktemp("synth") / "d", num_ids=30, seed=3)


@pytest.fixture(scope="module")
def entries(dataset):
    return json.loads((dataset / "reid_raw.json").read_text())


def tree_bytes(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_synth_then_data_stats(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["synth", "--out", str(out), "--ids", "10", "--size", "64x32"]) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and "| train" in printed.out
    assert "10/10 identities" in printed.err
    assert main(["data-stats", "--dataset", "SynthPEDES", "--root", str(out), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert [stats[s]["ids"] for s in ("train", "val", "test")] == [6, 2, 2]
    assert all(stats[s]["captions"] == 2 * stats[s]["images"] for s in stats)
    first = load_dataset("SynthPEDES", out).train[0]
    assert Image.open(out / "imgs" / first.image).size == (32, 64)


def test_ids_start_at_one_with_train_ids_first(entries):
    ids = {s: sorted({e["id"] for e in entries if e["split"] == s}) for s in ("train", "val", "test")}
    assert ids["train"] == list(range(1, 25))
    assert ids["val"] == [25, 26, 27] and ids["test"] == [28, 29, 30]


def test_two_to_five_images_per_identity(entries):
    counts = Counter(e["id"] for e in entries)
    assert set(counts.values()) <= {2, 3, 4, 5} and len(set(counts.values())) > 1


def test_same_arguments_give_identical_bytes(tmp_path):
    a = synth.generate(tmp_path / "a", num_ids=6, seed=7)
    b = synth.generate(tmp_path / "b", num_ids=6, seed=7)
    assert tree_bytes(a) == tree_bytes(b)


def test_another_seed_gives_another_dataset(tmp_path):
    a = synth.generate(tmp_path / "a", num_ids=6, seed=7)
    b = synth.generate(tmp_path / "b", num_ids=6, seed=8)
    assert (a / "reid_raw.json").read_bytes() != (b / "reid_raw.json").read_bytes()


def test_identities_are_unique_attribute_combinations():
    people = synth.make_identities(200, seed=0)
    assert len({tuple(sorted(p.items())) for p in people}) == 200


def test_most_common_value_of_each_part_is_shared_by_many():
    people = synth.make_identities(60, seed=0)
    for part in ("hair_color", "upper_color", "lower_color", "shoe_color", "upper_type", "lower_type", "bag"):
        top_share = Counter(p.get(part) for p in people).most_common(1)[0][1] / len(people)
        assert top_share >= 0.25, part


def differing_parts(a, b):
    """Parts whose value differs; a colour counts with its item (a new hat brings its colour)."""
    keys = {k for k in set(a) | set(b) if a.get(k) != b.get(k)}
    return {k.replace("_color", "") if k in ("hat_color", "bag_color") else k for k in keys}


def test_many_identity_pairs_differ_in_one_part():
    people = synth.make_identities(60, seed=0)
    one_part = sum(len(differing_parts(a, b)) == 1 for a, b in itertools.combinations(people, 2))
    assert one_part >= 15


def test_caption_colours_belong_to_visible_attributes(entries):
    for entry in entries:
        attrs = entry["attributes"]
        allowed = set().union(*(colour_words(attrs["person"][p]) for p in COLOR_PARTS if p in attrs["visible"]))
        for caption in entry["captions"]:
            words = set(re.findall(r"[a-z]+", caption.lower()))
            assert words & COLOR_WORDS <= allowed, (caption, attrs)


def test_hidden_parts_are_never_mentioned(entries):
    views = Counter(e["attributes"]["view"] for e in entries)
    assert set(views) == {"front", "back", "side"}
    for entry in entries:
        attrs = entry["attributes"]
        for caption in entry["captions"]:
            if attrs["view"] != "front":
                assert "logo" not in caption
            if attrs["view"] == "front" and attrs["person"]["bag"] == "backpack":
                assert "backpack" not in caption
            if attrs["occluded"]:
                assert "shoes" not in caption and "sneakers" not in caption


def test_visibility_follows_the_view():
    person = {"hair_color": "black", "build": "average", "upper_type": "t-shirt", "upper_color": "red",
              "upper_pattern": "logo", "lower_type": "shorts", "lower_color": "blue", "shoe_color": "white",
              "bag": "backpack", "bag_color": "green", "hat": "none"}
    front = synth.visible_parts(person, "front", occluded=False)
    back = synth.visible_parts(person, "back", occluded=True)
    assert "upper_pattern" in front and "bag" not in front
    assert "upper_pattern" not in back and "bag_color" in back and "shoe_color" not in back


def test_a_hat_hides_short_hair_from_the_front_and_a_bald_head_from_every_side():
    person = {"gender": "man", "hair_length": "short", "hair_color": "brown", "hat": "cap", "hat_color": "red",
              "upper_type": "coat", "upper_color": "blue", "upper_pattern": "plain", "lower_type": "trousers",
              "lower_color": "black", "shoe_color": "white", "bag": "none", "build": "average"}
    front = synth.visible_parts(person, "front", occluded=False)
    assert "hair_color" not in front and "hair_length" not in front and "hat_color" in front
    assert {"hair_color", "hair_length"} <= set(synth.visible_parts(person, "back", occluded=False))
    assert {"hair_color", "hair_length"} <= set(synth.visible_parts(person, "side", occluded=False))
    assert {"hair_color", "hair_length"} <= set(synth.visible_parts({**person, "hair_length": "long"}, "front", False))
    bald = {k: v for k, v in person.items() if k != "hair_color"} | {"hair_length": "bald", "hat": "beanie"}
    assert all("hair_length" not in synth.visible_parts(bald, view, False) for view in ("front", "back", "side"))


def test_captions_leave_out_some_attributes_and_vary(entries):
    captions = [c for e in entries for c in e["captions"]]
    assert len(set(captions)) == len(captions)
    assert any("hair" not in c for c in captions) and any("hair" in c for c in captions)


def test_too_few_ids_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="at least 6 identities"):
        synth.generate(tmp_path / "x", num_ids=5)


def test_held_out_sets_the_val_and_test_identities(tmp_path):
    root = synth.generate(tmp_path / "d", num_ids=10, seed=0, size=(64, 32), held_out=3)
    stats = load_dataset("SynthPEDES", root, verbose=False).stats()
    assert {split: row["ids"] for split, row in stats.items()} == {"train": 4, "val": 3, "test": 3}


def test_held_out_that_leaves_too_few_to_train_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match=r"--held-out 5 with --ids 10.*between 2 and 4"):
        synth.generate(tmp_path / "d", num_ids=10, held_out=5)
    assert list(tmp_path.iterdir()) == []


def test_cli_synth_held_out(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "s"), "--ids", "8", "--held-out", "3", "--size", "64x32"]) == 0
    stats = load_dataset("SynthPEDES", tmp_path / "s", verbose=False).stats()
    assert stats["train"]["ids"] == 2 and stats["test"]["ids"] == 3


def test_refuses_to_overwrite_a_directory_that_is_not_synthpedes(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not a SynthPEDES dataset"):
        synth.generate(tmp_path, num_ids=6)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_replaces_a_previous_dataset_and_leaves_no_temporary_files(tmp_path):
    synth.generate(tmp_path / "d", num_ids=6, seed=0)
    synth.generate(tmp_path / "d", num_ids=8, seed=1)
    assert [p.name for p in tmp_path.iterdir()] == ["d"]
    assert len(load_dataset("SynthPEDES", tmp_path / "d").stats()) == 3
    assert len({e["id"] for e in json.loads((tmp_path / "d" / "reid_raw.json").read_text())}) == 8


def test_an_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(job)

    original = synth._identity_images
    monkeypatch.setattr(synth, "_identity_images", failing)
    with pytest.raises(KeyboardInterrupt):
        synth.generate(tmp_path / "d", num_ids=6)
    assert list(tmp_path.iterdir()) == []


def test_every_image_has_a_part_mask_of_its_size(dataset, entries):
    for entry in entries:
        rel = entry["attributes"]["mask"]
        assert rel == "masks/" + entry["file_path"][:-len(".jpg")] + ".png"
        mask = Image.open(dataset / rel)
        assert mask.mode == "L" and mask.size == Image.open(dataset / "imgs" / entry["file_path"]).size
        assert set(np.unique(np.asarray(mask))) <= set(synth.MASK_LABELS)


def render_with_mask(person, view="front", occluded=False, seed=0):
    image, mask = synth.render(person, synth.SKIN[0], view, occluded, (128, 64), np.random.default_rng(seed))
    return np.asarray(image, np.float32), np.asarray(mask)


PLAIN = {"hair_color": "blonde", "hat": "none", "build": "heavy", "upper_type": "jacket", "upper_color": "blue",
         "upper_pattern": "plain", "lower_type": "trousers", "lower_color": "red", "shoe_color": "green",
         "bag": "handbag", "bag_color": "yellow"}


def test_mask_labels_hold_the_colours_of_their_parts():
    image, mask = render_with_mask(PLAIN, seed=1)
    expect = {synth.HEAD: None, synth.UPPER: "blue", synth.LOWER: "red", synth.SHOES: "green", synth.ITEM: "yellow"}
    for label, colour in expect.items():
        assert (mask == label).sum() >= 20, synth.MASK_LABELS[label]
        if colour is not None:  # the body part's median colour is the attribute's (lighting varies +-18%)
            median = np.median(image[mask == label], axis=0)
            assert np.abs(median - synth.COLORS[colour]).max() < 60, (synth.MASK_LABELS[label], median)


def test_mask_parts_run_from_head_to_feet_and_corners_are_background():
    _, mask = render_with_mask(PLAIN, seed=2)
    rows = {label: np.nonzero(mask == label)[0].mean() for label in (synth.HEAD, synth.UPPER, synth.LOWER, synth.SHOES)}
    assert rows[synth.HEAD] < rows[synth.UPPER] < rows[synth.LOWER] < rows[synth.SHOES]
    assert mask[0, 0] == mask[0, -1] == mask[-1, 0] == mask[-1, -1] == synth.BACKGROUND


def test_an_occluder_at_the_feet_is_background_in_the_mask():
    _, mask = render_with_mask(PLAIN, occluded=True, seed=3)
    assert (mask == synth.SHOES).sum() == 0 and (mask == synth.HEAD).sum() > 0



def test_people_are_consistent_bald_men_skirted_women_denim_jeans():
    people = synth.make_identities(400, seed=0)
    for person in people:
        assert not (person["gender"] == "woman" and person["hair_length"] == "bald"), person
        assert not (person["gender"] == "man" and person["lower_type"] == "skirt"), person
        assert person["lower_type"] != "jeans" or person["lower_color"] in synth.DENIM, person
        assert ("hair_color" in person) == (person["hair_length"] != "bald"), person
    assert {p["gender"] for p in people} == {"man", "woman"}
    assert {p["hair_length"] for p in people} == {"short", "long", "bald"}
    assert any(p["lower_type"] == "jeans" for p in people)


def test_a_mutation_that_brings_hair_back_gives_it_a_colour():
    person = {**PLAIN, "gender": "man", "hair_length": "bald"}
    del person["hair_color"]
    person["gender"] = "woman"  # a bald woman is made short-haired, and short hair has a colour
    fixed = synth.normalise(dict(person))
    assert fixed["hair_length"] == "short" and fixed["hair_color"] in synth.PARTS["hair_color"]


def captions_of(person, view="front", n=40, seed=0):
    rng = np.random.default_rng(seed)
    visible = synth.visible_parts(person, view, occluded=False)
    return [synth.make_caption(person, visible, rng).lower() for _ in range(n)]


def test_captions_name_the_gender_or_a_neutral_noun_never_the_other_gender():
    man = set(synth.GENDER_NOUNS["man"])
    woman = set(synth.GENDER_NOUNS["woman"])
    for gender, other in (("man", woman), ("woman", man)):
        words = [set(re.findall(r"[a-z]+", c)) for c in captions_of({**PLAIN, "gender": gender, "hair_length": "long"})]
        assert all(not (w & other) for w in words)
        assert any(w & set(synth.GENDER_NOUNS[gender]) for w in words)
        assert any(w & set(synth.NOUNS) for w in words)


def test_a_bald_persons_captions_say_so_and_give_no_hair_colour():
    person = {**PLAIN, "gender": "man", "hair_length": "bald"}
    del person["hair_color"]
    captions = captions_of(person)
    assert any("bald" in c or "shaved" in c for c in captions)
    assert not any("hair" in c for c in captions)


def test_long_hair_is_said_and_drawn_to_the_shoulders():
    long_haired = {**PLAIN, "gender": "woman", "hair_length": "long"}
    assert any("long blonde hair" in c or "long blond hair" in c for c in captions_of(long_haired))
    lowest = {}
    for length in ("short", "long"):
        _, mask = render_with_mask({**long_haired, "hair_length": length}, view="back", seed=4)
        lowest[length] = np.nonzero(mask == synth.HEAD)[0].max()
    assert lowest["long"] > lowest["short"] + 4  # rows of a 128-row crop


def test_jeans_are_drawn_in_greyed_denim_and_called_jeans():
    image, mask = render_with_mask({**PLAIN, "lower_type": "jeans", "lower_color": "blue"}, seed=5)
    median = np.median(image[mask == synth.LOWER], axis=0)
    assert np.abs(median - synth.DENIM["blue"]).max() < 40, median
    assert np.abs(median - synth.COLORS["blue"]).max() > 60, median  # not the saturated garment blue
    person = {**PLAIN, "lower_type": "jeans", "lower_color": "blue"}
    assert all("jeans" in c for c in captions_of(person))
