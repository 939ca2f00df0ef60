# Two commands need nothing but Python 3.11 and make: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed

.PHONY: run test lint bench pyz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: $(STAMP)  ## start the daemon on the embedded defaults (or $$WAHOOKD_CONFIG / ./wahookd.toml)
	$(BIN)/wahookd serve

lint: $(STAMP)
	$(BIN)/ruff check wahookd tests examples
	$(BIN)/ruff format --check wahookd tests examples
	$(BIN)/mypy
	$(BIN)/mypy --strict examples/receivers/python/receiver.py

# test-deps: node, npm, php-cli and chromium through apt when root and missing, then
# `npm ci` for examples/receivers/node; otherwise it says what is missing and the tests
# that need it skip with that reason
test: lint  ## lint, type-check, then the whole suite
	sh scripts/test-deps.sh
	$(BIN)/python -m pytest

$(BENCH_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

# BENCH_ARGS=--quick for a smoke run; see `.venv/bin/python bench/run.py --help`
# then the ordering rows (h), (i) (issue 13), --quick too when BENCH_ARGS has it;
# ORDERING_ARGS="--only i" for one of them, see `.venv/bin/python bench/ordering.py --help`;
# then the cluster rows (j)-(m) (issue 15: nodes over PostgreSQL, its own server),
# CLUSTER_ARGS="--events 50000" say, see `.venv/bin/python bench/cluster.py --help`
bench: $(BENCH_STAMP)  ## the speed suite (issue 6): a table, and bench/results/bench.json
	sh bench/setup.sh
	$(BIN)/python bench/run.py $(BENCH_ARGS)
	$(BIN)/python bench/ordering.py $(filter --quick,$(BENCH_ARGS)) $(ORDERING_ARGS)
	$(BIN)/python bench/cluster.py $(filter --quick,$(BENCH_ARGS)) $(CLUSTER_ARGS)

pyz: $(STAMP)  ## build dist/wahookd.pyz (shiv zipapp, pinned dependencies)
	packaging/build-pyz.sh $(BIN)/python

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
