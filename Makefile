# transformers-viq: set-up, demo and tests. `make demo` and `make test` create the virtual environment if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install demo test test-slow common-tests lint bench miniature clean

# torch is pinned first (2.13.0: on the project's machines pip takes a CPU wheel kept on local disk; elsewhere install
# the torch build you want before `make`); everything else comes from requirements-dev.txt (exact pins that install
# together), lmms-eval without its dependencies (they would pull in a CUDA torch and torchvision;
# requirements-dev.txt pins the parts it imports) and the package itself (editable).
$(STAMP): pyproject.toml requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -r requirements-dev.txt
	$(PIP) install --quiet --no-deps lmms-eval==0.7.3
	$(PIP) install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --output-dir outputs/demo
	@echo
	@echo "The package and its commands live in $(VENV)/. Activate it once per shell:"
	@echo "    source $(VENV)/bin/activate"
	@echo "then: viq --help; viq encode assets/samples/*.png -o codes.safetensors --model examples/miniature-viq;"
	@echo "python training/sft.py ... (or call $(VENV)/bin/viq and $(VENV)/bin/python without activating)"

test: $(STAMP)
	$(PY) -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests eval benchmarks examples training demo

test-slow: $(STAMP)
	RUN_SLOW=1 $(PY) -m pytest -q -m slow tests

# transformers' own common tests (ModelTesterMixin, ConfigTester, ImageProcessingTestMixin, ProcessorTesterMixin) on
# the five ViQ classes; the first run downloads transformers' sdist with pip (tests/models/transformers_common.py).
# The log is outputs/common-tests.log; the last lines count passed and failed test functions per class.
common-tests: $(STAMP)
	$(PY) tests/models/transformers_common.py fetch
	mkdir -p outputs
	RUN_SLOW=1 $(PY) -m pytest -q -rA tests/models/viq/test_common_viq.py \
		tests/models/viq_qwen/test_common_viq_qwen.py > outputs/common-tests.log; status=$$?; \
		tail -n 1 outputs/common-tests.log; $(PY) tests/models/transformers_common.py summary outputs/common-tests.log; \
		exit $$status

# the paper end to end at miniature scale on this CPU (~20 minutes on 2 cores): outputs/miniature/results.md
miniature: $(STAMP)
	$(PY) training/miniature.py --output-dir outputs/miniature

bench: $(STAMP)
	$(PY) benchmarks/encode.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
