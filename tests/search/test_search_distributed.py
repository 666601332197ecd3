"""`torchrun --nproc_per_node N -m partsearch index ...`: every rank embeds its share and writes its
own segment, one commit publishes them all, and the index is the one a single process builds."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from search_fakes import FakeEncoder, make_crop

from partsearch.search.index import Shard, build_index
from partsearch.search.searcher import Searcher
from partsearch.search.store import IndexStore

SCRIPT = """
import sys
import torch.distributed as dist
from search_fakes import FakeEncoder
from partsearch.search.index import Shard, build_index

dist.init_process_group("gloo")
build_index(FakeEncoder(), sys.argv[1], sys.argv[2], batch_size=2, progress=False,
            shard=Shard(dist.get_rank(), dist.get_world_size()))
dist.destroy_process_group()
"""


def _torchrun(tmp_path, images_dir, out, processes=2):
    script = tmp_path / "build.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parent), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(processes), str(script), str(images_dir), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


def _same_index(a, b, encoder):
    one, two = IndexStore(a).load(), IndexStore(b).load()
    assert one.entries == two.entries
    np.testing.assert_array_equal(np.asarray(one.folded), np.asarray(two.folded))
    np.testing.assert_array_equal(np.asarray(one.arrays.foreground), np.asarray(two.arrays.foreground))
    for text in ("red", "blue green"):
        assert ([(r.id, r.score) for r in Searcher(a, encoder=encoder).search(text, 10)]
                == [(r.id, r.score) for r in Searcher(b, encoder=encoder).search(text, 10)])


@pytest.mark.slow
def test_two_processes_build_the_index_one_process_builds(tmp_path, images_dir, encoder):
    for i, colour in enumerate(["red", "green", "blue", "white", "black"]):
        make_crop(images_dir / "more" / f"{i}.png", colour, "yellow")
    build_index(encoder, images_dir, tmp_path / "one", batch_size=2, progress=False)
    _torchrun(tmp_path, images_dir, tmp_path / "two")
    _same_index(tmp_path / "one", tmp_path / "two", encoder)
    gen = IndexStore(tmp_path / "two").load()
    assert [len(s) for s in gen.segments] == [5, 6]  # one segment per rank, published in one catalogue
    assert gen.name == "gen-000001" and not (tmp_path / "two" / "work").exists()

    # An update on two processes: new images split between the ranks, deleted ones marked deleted.
    (images_dir / "red_red.png").unlink()
    for i, colour in enumerate(["red", "green", "blue"]):
        make_crop(images_dir / "late" / f"{i}.png", "white", colour)
    build_index(encoder, images_dir, tmp_path / "one", batch_size=2, progress=False)
    _torchrun(tmp_path, images_dir, tmp_path / "two")
    _same_index(tmp_path / "one", tmp_path / "two", encoder)


def test_a_shard_takes_a_contiguous_share_in_rank_order():
    items = list(range(7))
    assert [list(Shard(r, 3).part(items)) for r in range(3)] == [[0, 1], [2, 3], [4, 5, 6]]
    assert list(Shard().part(items)) == items


@pytest.mark.slow
def test_torchrun_of_the_index_command_builds_the_index_of_one_process(tmp_path, images_dir):
    from test_search_end_to_end import write_random_run

    from partsearch.cli import main

    run = write_random_run(tmp_path / "run", seed=0)
    args = [str(run), "--images", str(images_dir), "--device", "cpu", "--batch-size", "1"]
    assert main(["index", *args, "--out", str(tmp_path / "one")]) == 0
    # PYTHONFAULTHANDLER: a rank that aborts prints where (it once aborted in teardown)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "partsearch", "index", *args, "--out", str(tmp_path / "two")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("6 images; 6 added") == 1  # rank 0 reports, once
    one, two = IndexStore(tmp_path / "one").load(), IndexStore(tmp_path / "two").load()
    assert one.entries == two.entries and len(two.segments) == 2
    np.testing.assert_array_equal(np.asarray(one.folded), np.asarray(two.folded))
