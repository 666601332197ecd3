"""Where weights come from, and how loading them looks on the terminal."""

import pytest
from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
from transformers import AutoModel
from transformers.utils import logging as transformers_logging

from partsearch.hub import minilm_dir, quiet_weight_loading


@pytest.fixture
def bars_restored():
    yield
    transformers_logging.enable_progress_bar()
    enable_progress_bars()


def test_loading_weights_draws_no_progress_bar_but_downloads_keep_theirs(bars_restored, capfd):
    quiet_weight_loading()
    AutoModel.from_pretrained(minilm_dir())
    assert "Loading weights" not in capfd.readouterr().err
    assert not are_progress_bars_disabled()
