# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test install clean-demo lint weights

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt setup.py
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m train.demo

test: $(STAMP)
	$(PY) -m pytest -q tests

# ImageNet EfficientNet-Lite0 as Keras weights, from the PyTorch package the [test] extra installs.
LITE0_WEIGHTS := data/weights/efficientnet_lite0.weights.h5
weights: $(LITE0_WEIGHTS)
$(LITE0_WEIGHTS): $(STAMP)
	$(PY) -m export.convert_weights efficientnet_lite0 --out $@

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-demo:
	rm -rf runs/demo data/shapes
