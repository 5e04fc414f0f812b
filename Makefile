# edgebuild: `make demo` builds the demo recipe end to end; `make test` runs every test (CI runs it too).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export YOLO_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test test-fast bench clean

$(BIN)/edgebuild: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -e ".[all]"
	touch $@

install: $(BIN)/edgebuild

demo: install
	$(BIN)/edgebuild +recipe=demo

test: install
	$(BIN)/python -m pytest -q tests

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow" tests

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf outputs .pytest_cache
