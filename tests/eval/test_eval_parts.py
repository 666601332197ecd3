"""Part diagnostics on hand-made embeddings with known answers, and on a tiny model end to end."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from partsearch.cli import main as cli_main
from partsearch.eval import parts


def test_identical_tokens_have_diversity_one():
    tokens = torch.randn(5, 1, 8).expand(5, 4, 8)
    assert parts.mean_pairwise_cosine(tokens) == pytest.approx(1.0, abs=1e-6)


def test_orthogonal_tokens_have_diversity_zero():
    tokens = torch.eye(4)[None].repeat(3, 1, 1)
    assert parts.mean_pairwise_cosine(tokens) == pytest.approx(0.0, abs=1e-6)


def test_identical_tokens_have_no_diagonal_margin():
    image = torch.randn(6, 1, 8).expand(6, 3, 8)
    text = torch.randn(6, 1, 8).expand(6, 3, 8)
    out = parts.correspondence(image, text)
    assert out["margin"] == pytest.approx(0.0, abs=1e-6)
    assert np.allclose(out["matrix"], out["matrix"][0][0], atol=1e-6)


def test_matched_orthogonal_tokens_have_margin_one():
    tokens = torch.eye(3)[None].repeat(4, 1, 1)
    out = parts.correspondence(tokens, tokens)
    assert out["margin"] == pytest.approx(1.0) and out["diagonal"] == pytest.approx(1.0)


def test_auc_of_a_perfect_a_reversed_and_a_tied_score():
    labels = np.array([0, 0, 1, 1, 1], bool)
    assert parts.auc(np.array([0.1, 0.2, 0.3, 0.4, 0.5]), labels) == 1.0
    assert parts.auc(-np.array([0.1, 0.2, 0.3, 0.4, 0.5]), labels) == 0.0
    assert parts.auc(np.zeros(5), labels) == 0.5
    assert np.isnan(parts.auc(np.ones(3), np.ones(3, bool)))


def test_a_planted_attribute_gives_auc_one_in_its_token_only():
    rng = np.random.default_rng(0)
    people = [{"person": {"upper_color": c, "hair_color": h}, "visible": ["upper_color", "hair_color"]}
              for c, h in zip(rng.choice(["red", "blue", "black"], 30), rng.choice(["black", "brown"], 30))]
    colour = {"red": 0, "blue": 1, "black": 2}
    tokens = torch.randn(30, 2, 8)
    tokens[:, 1] = F.one_hot(torch.tensor([colour[p["person"]["upper_color"]] for p in people]), 8).float()
    aucs = parts.attribute_localisation(tokens, people, np.arange(30), attributes=("upper_color", "hair_color"))
    assert aucs["image_image"]["upper_color"][1] == 1.0
    assert abs(aucs["image_image"]["upper_color"][0] - 0.5) < 0.2
    assert abs(aucs["image_image"]["hair_color"][1] - 0.5) < 0.2


def test_pairs_of_one_person_are_left_out():
    i, j = parts._sample_pairs(np.array([1, 1, 2]), np.array([1, 1, 2]), 100, 0)
    assert sorted(zip(i.tolist(), j.tolist())) == [(0, 2), (1, 2), (2, 0), (2, 1)]


def test_foreground_contrast_of_a_flat_and_of_a_person_shaped_map():
    person = torch.zeros(2, 4, 2)
    person[:, 1:3] = 1.0
    assert parts.foreground_contrast(torch.ones(2, 4, 2), person) == pytest.approx(1.0)
    assert parts.foreground_contrast(0.25 + 0.75 * person, person) == pytest.approx(4.0)


def test_floor_peaks_counts_the_maps_brightest_on_a_cell_without_the_person():
    person = torch.zeros(3, 4, 2)
    person[:, 1:3, 0] = 1.0
    person[:, 3, 0] = 0.2  # the silhouette only touches this cell
    maps = torch.zeros(3, 4, 2)
    maps[0, 1, 0] = 1.0  # brightest on the person
    maps[1, 3, 0] = 1.0  # on the touched cell: the person at the grid's resolution
    maps[2, 0, 1] = 1.0  # on the floor
    assert parts.floor_peaks(maps, person) == pytest.approx(1 / 3)


def test_region_fractions_are_area_shares_at_the_token_grid():
    mask = np.zeros((8, 4), np.uint8)
    mask[:2] = 1   # head: top quarter
    mask[2:, :2] = 2  # upper body: left half below
    frac = parts.region_fractions(mask, (2, 1), (8, 4))
    assert frac.shape == (len(parts.REGIONS), 2, 1)
    assert torch.allclose(frac.sum(0), torch.ones(2, 1))
    assert frac[1, 0, 0] == 0.5 and frac[1, 1, 0] == 0.0 and frac[2, 1, 0] == 0.5 and frac[0, 0, 0] == 0.25


def test_token_regions_split_each_tokens_attention_mass():
    attention = torch.zeros(1, 2, 2, 1)
    attention[0, 0, 0, 0] = 1.0  # token 1 looks at the top cell, token 2 at the bottom
    attention[0, 1, 1, 0] = 1.0
    fractions = torch.zeros(1, len(parts.REGIONS), 2, 1)
    fractions[0, 1, 0, 0] = 1.0  # top cell: head
    fractions[0, 4, 1, 0] = 1.0  # bottom cell: shoes
    out = parts.token_regions(attention, fractions)
    assert out[0, 1] == 1.0 and out[1, 4] == 1.0 and out.sum() == 2.0


def test_stripe_regions_name_six_stripes_head_to_feet():
    assert parts.stripe_regions(6) == ["head", "shoulders", "torso", "hips", "legs", "feet"]
    names = parts.stripe_regions(12)
    assert names[0].startswith("head") and names[-1].startswith("feet") and len(set(names)) == 12


def test_summary_checks_the_head_to_feet_order():
    aucs = {"hair_color": [0.9, 0.5, 0.5], "upper_color": [0.5, 0.9, 0.5], "lower_color": [0.5, 0.5, 0.9],
            "shoe_color": [0.5, 0.6, 0.95]}
    diag = {"stripes": ["a", "b", "c"], "diversity": {"coarse_image": 0.2, "coarse_text": 0.4, "fine_text": 0.1},
            "correspondence": {"coarse": {"margin": 0.1}, "fine": {"margin": 0.2}},
            "attributes": {"fine": {"image_image": aucs}}}
    s = parts.summary(diag)
    assert s["coarse_token_cos"] == pytest.approx(0.3)
    assert s["attribute_stripes"]["shoe_color"] == {"stripe": "c", "auc": 0.95}
    assert s["stripes_head_to_feet"] is False  # lower and shoe colour share the last stripe
    aucs.update(hair_color=[0.9, 0.5, 0.5, 0.5], upper_color=[0.5, 0.9, 0.5, 0.5],
                lower_color=[0.5, 0.5, 0.9, 0.5], shoe_color=[0.5, 0.5, 0.5, 0.9])
    diag["stripes"] = ["a", "b", "c", "d"]
    assert parts.summary(diag)["stripes_head_to_feet"] is True


def test_background_bound_divides_the_largest_background_share_by_the_area():
    regions = {"attention": [[0.3, 0.7], [0.9, 0.1], [0.6, 0.4]], "area": [0.6, 0.4]}
    assert parts.background_bound(regions) == pytest.approx(1.5)
    assert parts.summary({"diversity": {"coarse_image": 0.2, "coarse_text": 0.4, "fine_text": 0.1},
                          "correspondence": {"coarse": {"margin": 0.1}, "fine": {"margin": 0.2}},
                          "token_regions": regions})["background_bound"] == pytest.approx(1.5)


@pytest.mark.slow
def test_parts_command_on_a_tiny_run(tmp_path, tiny_overrides, capsys):
    import yaml

    from partsearch.config import load_config
    from partsearch.data.synth import generate

    root = generate(tmp_path / "synth", num_ids=12, seed=0, size=(64, 32))
    config = tmp_path / "tiny.yaml"
    overrides = [*tiny_overrides, f"data.root={root}"]
    config.write_text(yaml.safe_dump(load_config(None, overrides).to_dict()))
    run = tmp_path / "run"
    assert cli_main(["train", "--config", str(config), "--out", str(run), "--max-steps", "2"]) == 0
    capsys.readouterr()
    assert cli_main(["parts", str(run), "--json", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    assert "token diversity" in printed and "foreground contrast" in printed and "brightest on the floor" in printed
    data = json.loads((tmp_path / "p.json").read_text())
    assert set(data["summary"]) >= {"coarse_token_cos", "coarse_margin", "fine_margin", "foreground_contrast",
                                    "floor_peaks", "attribute_stripes", "stripes_head_to_feet"}
    assert 0.0 <= data["summary"]["floor_peaks"] <= 1.0
    regions = np.array(data["token_regions"]["attention"])
    assert regions.shape == (2, len(parts.REGIONS)) and np.allclose(regions.sum(1), 1.0, atol=1e-4)
    assert "background-bound ratio" in printed and data["summary"]["background_bound"] > 0


def test_hair_colour_is_compared_only_between_equally_long_uncovered_hair():
    # token 0 shows the hair as drawn: its colour, elsewhere when long, nothing under a hat; pairs of
    # one colour seen differently must not count as "the same colour, unlike tokens"
    rng = np.random.default_rng(0)
    people = []
    for k in range(40):
        person = {"hair_color": str(rng.choice(["black", "brown", "blond"])), "hair_length": "short", "hat": "none"}
        if k % 4 == 1:
            person["hat"] = "cap"
        if k % 4 == 2:
            person["hair_length"] = "long"
        people.append({"person": person, "visible": ["hair_color", "hair_length", "hat"]})
    colour = {"black": 0, "brown": 1, "blond": 2}
    tokens = torch.randn(40, 1, 8)
    for k, p in enumerate(people):
        if p["person"]["hat"] == "none":
            long = 3 if p["person"]["hair_length"] == "long" else 0
            tokens[k, 0] = F.one_hot(torch.tensor(colour[p["person"]["hair_color"]] + long), 8).float()
    aucs = parts.attribute_localisation(tokens, people, np.arange(40), attributes=("hair_color",))
    assert aucs["image_image"]["hair_color"][0] == 1.0


@pytest.mark.slow
def test_parts_reads_a_relative_data_root_from_the_run_directory(tmp_path, tiny_overrides, monkeypatch, capsys):
    """A run trained with `--data-root data` stores the root relative to the run (`../data`); the
    parts command must read it from there, as eval does, wherever it is run from."""
    import yaml

    from partsearch.config import load_config
    from partsearch.data.synth import generate

    generate(tmp_path / "data", num_ids=12, seed=0, size=(64, 32))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(load_config(None, list(tiny_overrides)).to_dict()))
    monkeypatch.chdir(tmp_path)
    assert cli_main(["train", "--config", str(config), "--data-root", "data", "--out", "runs/a",
                     "--max-steps", "1"]) == 0
    assert load_config(tmp_path / "runs" / "a" / "config.yaml").data.root == "../../data"
    capsys.readouterr()
    assert cli_main(["parts", "runs/a"]) == 0
    assert "token diversity" in capsys.readouterr().out
