# Two entry points (see README): `make demo` trains/tests/measures a tiny model on the built-in demo data,
# `make test` runs the test suite (what CI runs); `make test-fast` runs all but the tests marked slow
# (docs/development.md). Each creates .venv and installs requirements.txt on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_CONF := confs/LLFlow/demo_tiny.yml
DEMO_RUN  := experiments/demo_tiny_LLFlow
DEMO_DATA := .cache/demo_data

.PHONY: demo test test-fast install clean-demo

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

demo: install
	$(PY) -c "from data.demo import ensure_demo_data; print('demo data:', ensure_demo_data())"
	$(PY) train.py --opt $(DEMO_CONF)
	$(PY) test.py --opt $(DEMO_CONF) --out results/demo_tiny_LLFlow
	$(PY) Measure.py --gt $(DEMO_DATA)/eval15/high --pred results/demo_tiny_LLFlow --csv results/demo_tiny_LLFlow/measure.csv --json results/demo_tiny_LLFlow/measure.json
	$(PY) tools/grid.py --low $(DEMO_DATA)/eval15/low --pred results/demo_tiny_LLFlow --gt $(DEMO_DATA)/eval15/high --out results/demo_tiny_LLFlow/grid.png

test: install
	$(PY) -m pytest -q tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

clean-demo:
	rm -rf $(DEMO_RUN) results/demo_tiny_LLFlow
