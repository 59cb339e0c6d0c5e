# The two commands a researcher needs: `make run` and `make test`. Both install first.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run run-cls run-det run-ssl run-ablations test test-yolo bench docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[test]'
	touch $(STAMP)

# Both quick starts, each followed by its report: classification (digits, 6 strategies x 3
# seeds) and detection (generated shapes + tiny CenterNet, 6 strategies x 3 seeds).
run: run-cls run-det

run-cls: install
	$(VENV)/bin/alb sweep experiment=quickstart
	$(VENV)/bin/alb report results/quickstart

run-det: install
	$(VENV)/bin/alb sweep experiment=quickstart_det
	$(VENV)/bin/alb report results/quickstart_det

# Elezi et al. in minutes: flip-consistency SSL + pseudo-labels, random vs consistency x 3 seeds.
run-ssl: install
	$(VENV)/bin/alb sweep experiment=quickstart_ssl
	$(VENV)/bin/alb report results/quickstart_ssl

# The reality check's ablations at laptop scale on digits: diversity, budget, fine-tuning, duplicates.
run-ablations: install
	for p in digits digits_budget20 digits_budget80 digits_finetune digits_x2 digits_x5; do \
	  $(VENV)/bin/alb sweep experiment=reality_check/$$p || exit 1; done
	$(VENV)/bin/alb report results/reality_check_digits results/reality_check_digits_budget20 \
	  results/reality_check_digits_budget80 results/reality_check_digits_finetune \
	  results/reality_check_digits_x2 results/reality_check_digits_x5 --out results/reality_check_digits_pooled

test: install
	$(VENV)/bin/python -m pytest -q

# The optional Ultralytics YOLO extra (AGPL-3.0) and its tests; the default suite skips them.
test-yolo: install
	$(VENV)/bin/python -m pip install -e '.[test,yolo]'
	$(VENV)/bin/python -m pytest -q tests/test_yolo.py tests/test_detectors.py -k yolo

bench: install
	$(VENV)/bin/python benchmarks/bench_select.py
	$(VENV)/bin/python benchmarks/bench_select_det.py
	$(VENV)/bin/python benchmarks/bench_detectors.py
	$(VENV)/bin/python benchmarks/bench_data_check.py
	$(VENV)/bin/python benchmarks/bench_ssl.py
	$(VENV)/bin/python benchmarks/bench_train.py
	$(VENV)/bin/python benchmarks/bench_determinism.py --models centernet_tiny,ssdlite_mobilenet --size 128 --batch 2 --steps 5 --repeats 2
	$(VENV)/bin/python benchmarks/bench_checkpoint.py

# The docs site (mkdocs-material) into site/; --strict: a broken link, a missing page or a
# failing generated reference fails the build
docs: install
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(VENV)/bin/mkdocs build --strict

clean:
	rm -rf results/quickstart results/quickstart_det results/quickstart_ssl build site *.egg-info
