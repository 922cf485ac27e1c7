# `make run` and `make test` set up .venv themselves on a fresh machine.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The bundled sample bars end on 2013-03-01 (a Friday): run the main job as of that day.
AS_OF ?= 2013-03-01

.PHONY: venv run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: on these machines a CPU build of 2.13.0 lies on disk, while a plain
	# `torch` would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,web,postgres]'
	touch $(STAMP)

venv: $(STAMP)

run: venv
	$(VENV)/bin/stockcli --as-of $(AS_OF) daily
	$(VENV)/bin/stockcli --as-of $(AS_OF) report

test: venv
	$(PY) -m pytest -q

lint: venv
	$(VENV)/bin/ruff check stockcli tests migrations
	$(VENV)/bin/ruff format --check stockcli tests migrations
	$(VENV)/bin/mypy

bench: venv
	$(PY) -m pytest -q -s -m benchmark tests/benchmarks

clean:
	rm -rf $(VENV) data
