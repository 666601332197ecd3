"""The real path: a tiny random run on disk -> `partsearch index` -> Searcher / `partsearch search`,
checked against the model's own similarity on the same images."""

import json
import socket
import subprocess
import sys
import time

import httpx
import psutil
import pytest
import torch
from PIL import Image
from search_fakes import CROPS, make_crop

from partsearch.cli import main as cli
from partsearch.config import Config, ModelConfig
from partsearch.model.backbones import build_tokenizer
from partsearch.errors import SearchIndexError
from partsearch.model.fine import stripe_regions
from partsearch.model.model import build_model
from partsearch.model.similarity import level_similarities, similarity
from partsearch.search.encoder import RunEncoder
from partsearch.search.explain import explain
from partsearch.search.searcher import Searcher
from partsearch.runs import FORMAT, load_run
from partsearch.train.checkpoint import save_checkpoint

pytestmark = pytest.mark.slow
QUERY = "a man in a red jacket and blue trousers"


def write_random_run(run_dir, seed):
    """A run directory holding a random tiny model, as `partsearch train` would leave it."""
    cfg = Config()
    cfg.model = ModelConfig(
        image_backbone="small_cnn", image_weights="random", image_width=32, text_backbone="bert",
        text_weights="random", text_width=32, text_layers=1, dim=32, num_coarse=3, num_fine=4,
        encoder_heads=4, decoder_heads=4, dropout=0.0,
    )
    cfg.data.image_size = (64, 32)
    cfg.data.max_tokens = 12
    vocab = build_tokenizer(cfg.model, cfg.data.max_tokens).vocab_size
    torch.manual_seed(seed)
    model = build_model(cfg, vocab)
    run_dir.mkdir(parents=True)
    cfg.dump(run_dir / "config.yaml")
    save_checkpoint(run_dir / "best.pt", {"format": FORMAT, "config": cfg.to_dict(), "vocab_size": vocab,
                                          "model": model.state_dict()})
    return run_dir


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    run = write_random_run(root / "run", seed=0)
    images = root / "images"
    for rel, (top, bottom) in CROPS.items():
        make_crop(images / rel, top, bottom)
    index = root / "index"
    assert cli(["index", str(run), "--images", str(images), "--out", str(index), "--device", "cpu",
                "--batch-size", "4"]) == 0
    return run, images, index


@pytest.fixture(scope="module")
def searcher(built):
    return Searcher(built[2], device="cpu")


def model_similarities(run_dir, images_dir, paths, query):
    loaded = load_run(run_dir, "best", "cpu")
    encoder = RunEncoder(run_dir, device="cpu", run=loaded)
    batch = torch.stack([encoder.transform(Image.open(images_dir / p).convert("RGB")) for p in paths])
    tok = loaded.tokenizer([query])
    with torch.inference_mode():
        image_emb = loaded.model.encode_image(batch)
        text_emb = loaded.model.encode_text(tok.ids, tok.mask)
    weights = tuple(loaded.cfg.model.similarity_weights)
    return similarity(image_emb, text_emb, weights)[0], level_similarities(image_emb, text_emb)


def test_search_equals_the_top_of_the_model_similarity(built, searcher):
    run, images, _ = built
    entries = searcher.current().entries
    sims, levels = model_similarities(run, images, [e.path for e in entries], QUERY)
    results = searcher.search(QUERY, k=4)
    order = torch.argsort(sims, descending=True)[:4].tolist()
    assert [r.id for r in results] == [entries[i].id for i in order]
    assert [r.score for r in results] == pytest.approx(sims[order].tolist(), abs=1e-4)
    for r, i in zip(results, order):
        assert r.levels["global"] == pytest.approx(float(levels["global"][0, i]), abs=1e-4)
        assert r.levels["fine"] == pytest.approx(float(levels["fine"][0, i]), abs=1e-4)


def test_search_command_prints_json(built, capsys):
    _, _, index = built
    assert cli(["search", str(index), QUERY, "--top-k", "3", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in body["results"]] == [1, 2, 3]
    assert set(body["results"][0]) >= {"score", "levels", "parts", "path", "id"}
    assert len(body["results"][0]["parts"]["fine"]) == 4
    assert body["results"][0]["regions"] == stripe_regions(4)


def test_search_table_names_the_stripes_by_body_region(built, capsys):
    _, _, index = built
    assert cli(["search", str(index), QUERY, "--top-k", "1"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in stripe_regions(4)) and "part 1" not in out


def test_search_command_prints_a_table(built, capsys):
    _, images, index = built
    assert cli(["search", str(index), QUERY, "--top-k", "2"]) == 0
    out = capsys.readouterr().out
    assert "rank" in out and str(images) in out


def test_search_command_rejects_an_empty_query(built, capsys):
    _, _, index = built
    assert cli(["search", str(index), "  ", "--top-k", "2"]) == 2
    assert "empty" in capsys.readouterr().err


def test_search_command_finds_more_like_an_image_and_by_a_photo(built, capsys):
    _, images, index = built
    assert cli(["search", str(index), "--like", "0", "--top-k", "2", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["image"]["id"] == 0 and 0 not in [r["id"] for r in body["results"]]
    assert cli(["search", str(index), "--image", str(images / "red_red.png"), "--top-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"][0]["relpath"] == "red_red.png"


def test_search_command_names_a_filter_that_is_not_one(built, capsys):
    _, _, index = built
    assert cli(["search", str(index), QUERY, "--after", "noon"]) == 2
    assert "after 'noon'" in capsys.readouterr().err


def test_case_commands_find_sightings_keep_decisions_and_export(built, tmp_path, capsys):
    _, _, index = built
    assert cli(["case", "sightings", "--index", str(index), "--id", "0", "--top-k", "2", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["results"][0]["role"] == "source" and len(body["results"]) == 3
    other = body["results"][1]["id"]
    assert cli(["case", "add", "c1", "--index", str(index), "--id", str(other), "--confirm", "--query", QUERY]) == 0
    assert "confirmed" in capsys.readouterr().out
    assert cli(["case", "list", "--index", str(index)]) == 0 and capsys.readouterr().out.strip() == "c1"
    assert cli(["case", "export", "c1", "--index", str(index), "--out", str(tmp_path / "out")]) == 0
    exported = json.loads((tmp_path / "out" / "case.json").read_text())
    assert [s["decision"] for s in exported["sightings"]] == ["confirmed"] and (tmp_path / "out" / "sightings.csv").is_file()
    assert cli(["case", "show", "nope", "--index", str(index)]) == 2
    assert "no case 'nope'" in capsys.readouterr().err


def test_long_query_is_truncated_at_the_tokenizer_limit(searcher):
    response = searcher.query("red " * 30, 2)
    assert response.truncated is True and len(response.results) == 2


def test_explanation_maps_follow_the_model_grid(searcher):
    entry = searcher.current().entries[0]
    body = explain(searcher, entry.id, QUERY)
    assert body["map_size"] == list(searcher.encoder.run.model.grid)
    assert [p["rows"] for p in body["fine"]] == [list(b) for b in searcher.encoder.run.model.stripe_rows()]
    assert [p["region"] for p in body["fine"]] == stripe_regions(len(body["fine"]))


def test_another_model_cannot_search_or_extend_the_index(built, tmp_path, capsys):
    _, images, index = built
    other = write_random_run(tmp_path / "other", seed=1)
    with pytest.raises(SearchIndexError, match="built with model"):
        Searcher(index, encoder=RunEncoder(other, device="cpu"))
    assert cli(["index", str(other), "--images", str(images), "--out", str(index), "--device", "cpu"]) == 2
    assert "new --out" in capsys.readouterr().err


def test_missing_run_is_a_clear_error(built, tmp_path):
    _, images, _ = built
    run = write_random_run(tmp_path / "run", seed=0)
    index = tmp_path / "index"
    assert cli(["index", str(run), "--images", str(images), "--out", str(index), "--device", "cpu"]) == 0
    (run / "best.pt").rename(tmp_path / "elsewhere.pt")
    with pytest.raises(SearchIndexError, match="not there"):
        Searcher(index, device="cpu")


def test_an_index_moved_with_its_run_and_images_finds_them_there(built, tmp_path):
    import shutil

    run, images, index = built
    moved = tmp_path / "moved"
    for path in (run, images, index):
        shutil.copytree(path, moved / path.name)
    searcher = Searcher(moved / "index", device="cpu")
    assert searcher.encoder.source["checkpoint"] == str((moved / "run" / "best.pt").resolve())
    assert searcher.search(QUERY, 1)[0].path.startswith(str(moved / "images"))


def test_search_takes_the_run_explicitly_when_it_moved(built, tmp_path, capsys):
    _, images, _ = built
    run = write_random_run(tmp_path / "run", seed=0)
    index = tmp_path / "index"
    assert cli(["index", str(run), "--images", str(images), "--out", str(index), "--device", "cpu"]) == 0
    run.rename(tmp_path / "moved_run")
    assert cli(["search", str(index), QUERY, "--top-k", "1"]) == 2
    assert "--run" in capsys.readouterr().err
    assert cli(["search", str(index), QUERY, "--top-k", "1", "--run", str(tmp_path / "moved_run")]) == 0
    assert "rank" in capsys.readouterr().out


def test_serve_command_answers_on_loopback_only(built):
    _, _, index = built
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "partsearch", "serve", str(index), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "partsearch serve exited"
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "partsearch serve did not answer"
                time.sleep(0.2)
        assert health.json()["images"] == len(CROPS) and health.json()["uploads"] is False
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections() if c.status == psutil.CONN_LISTEN]
        assert listening and all(addr.ip == "127.0.0.1" for addr in listening)
        body = httpx.post(f"http://127.0.0.1:{port}/api/search", json={"query": QUERY, "top_k": 2}, timeout=10).json()
        assert [r["rank"] for r in body["results"]] == [1, 2]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
