# The two commands a researcher needs: `make run` and `make test`. Both install first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run run-cls run-det test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

# Quick start: the digits benchmark (6 strategies x 3 seeds), then the report.
run: install
	$(VENV)/bin/alb sweep experiment=quickstart
	$(VENV)/bin/alb report results/quickstart

test: install
	$(VENV)/bin/python -m pytest -q

bench: install
	$(VENV)/bin/python benchmarks/bench_select.py

clean:
	rm -rf results/quickstart build *.egg-info
