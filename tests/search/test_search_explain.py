import numpy as np
from PIL import Image

from partsearch.search.display import coarse_display
from partsearch.search.explain import display_map, overlay


def test_display_map_stretches_a_flat_looking_map_to_the_full_range():
    values = np.array([[0.7, 0.8], [0.75, 1.0]], np.float32)
    shown = display_map(values)
    assert shown.min() == 0.0 and shown.max() == 1.0
    assert np.allclose(shown, [[0.0, 1 / 3], [1 / 6, 1.0]])


def test_display_map_of_a_constant_map_is_all_zero():
    assert not display_map(np.full((3, 2), 0.9, np.float32)).any()


def test_overlay_changes_only_where_the_map_is_high():
    image = Image.new("RGB", (8, 16), (100, 100, 100))
    heat = np.zeros((4, 2), np.float32)
    heat[0, 0] = 1.0
    pixels = np.asarray(overlay(image, heat), np.int32)
    assert (np.abs(pixels[0, 0] - pixels[-1, -1]) > 20).any()
    assert (pixels[-1, -1] == pixels[-2, -2]).all()


def test_coarse_tokens_that_score_alike_are_shown_as_one_row():
    [(label, value)] = coarse_display([0.853, 0.854, 0.854, 0.853])
    assert label == "coarse (4 tokens alike)" and abs(value - 0.8535) < 1e-9


def test_coarse_tokens_that_differ_are_listed_one_by_one():
    assert [k for k, _ in coarse_display([0.2, 0.6, 0.4])] == ["token 1", "token 2", "token 3"]


def test_each_parts_relative_score_is_its_distance_from_the_gallerys_mean_in_the_parts_typical_deviation(index_dir, encoder):
    from partsearch.search.explain import explain
    from partsearch.search.searcher import Searcher, part_cosines

    searcher = Searcher(index_dir, encoder=encoder)
    gen = searcher.current()
    text, _ = encoder.encode_texts(["red top"])
    _, _, fine = part_cosines(gen.arrays, np.arange(len(gen.entries)), text)
    why = explain(searcher, gen.entries[0].id, "red top")
    row = gen.rows[gen.entries[0].id]
    spread = np.sqrt(np.mean(fine.var(axis=0)))  # one scale for every part: the RMS of their deviations
    for p in why["fine"]:
        expected = (fine[row, p["part"]] - fine[:, p["part"]].mean()) / spread
        assert np.isclose(p["relative"], expected, atol=1e-4)


def test_a_part_where_the_gallery_hardly_varies_does_not_get_the_longest_bar_for_a_tiny_change(tmp_path, encoder):
    """Two people differ in the top (red against white) and by 2/255 in the near-black trousers,
    which every other person wears too: the top's bar must drop most, as its cosine does."""
    from partsearch.search.explain import explain
    from partsearch.search.index import build_index
    from partsearch.search.searcher import Searcher

    def crop(name, top, bottom):
        image = Image.new("RGB", (32, 64), bottom)
        image.paste(top, (0, 0, 32, 32))
        image.save(tmp_path / "images" / name)

    (tmp_path / "images").mkdir()
    crop("a.png", (255, 0, 0), (0, 0, 0))
    crop("b.png", (255, 255, 255), (0, 5, 5))
    for n, top in enumerate([(0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (128, 128, 128)]):
        crop(f"other{n}.png", top, [(0, 0, 0), (0, 5, 0), (0, 0, 5)][n % 3])
    build_index(encoder, tmp_path / "images", tmp_path / "index", batch_size=4, progress=False)
    searcher = Searcher(tmp_path / "index", encoder=encoder)
    by_name = {e.name: e for e in searcher.current().entries}
    one, two = (explain(searcher, by_name[name].id, "red")["fine"] for name in ("a.png", "b.png"))
    cosine = [p["score"] - q["score"] for p, q in zip(one, two)]
    bar = [p["relative"] - q["relative"] for p, q in zip(one, two)]
    assert int(np.argmax(cosine)) == 0
    assert int(np.argmax(bar)) == 0


def test_a_part_that_matches_better_than_the_gallery_reads_positive_and_one_that_does_not_negative(index_dir, encoder):
    from partsearch.search.explain import explain
    from partsearch.search.searcher import Searcher

    searcher = Searcher(index_dir, encoder=encoder)
    by_name = {e.name: e for e in searcher.current().entries}
    red_top = next(e for name, e in by_name.items() if name.startswith("red_"))
    other = next(e for name, e in by_name.items() if not name.startswith("red_"))
    assert max(p["relative"] for p in explain(searcher, red_top.id, "red top")["fine"]) > 0
    assert min(p["relative"] for p in explain(searcher, other.id, "red top")["fine"]) < 0
