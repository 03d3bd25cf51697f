# The data platform lab. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# The newest supported Python that starts: a pyenv shim on PATH can name a version it will not
# run, so each candidate is asked to start. PYTHON=/path/to/python picks one; VENV=.venv-3.13
# keeps a second environment beside the first.
SUPPORTED_PYTHONS := python3.13 python3.12 python3.11
PYTHON ?= $(firstword $(foreach p,$(SUPPORTED_PYTHONS),$(shell $(p) -c '' >/dev/null 2>&1 && echo $(p))))
UV_VERSION := 0.13.9
TOOLS := .tools
# Use a uv already on PATH; otherwise bootstrap a pinned one into .tools/.
UV := $(shell command -v uv 2>/dev/null || echo $(TOOLS)/bin/uv)
VENV ?= .venv
STAMP := $(VENV)/.synced-$(shell { cat uv.lock pyproject.toml; echo '$(PYTHON)'; } | sha256sum | cut -c1-12)
RUN := $(VENV)/bin
NO_PYTHON := no Python 3.11-3.13 starts here and no uv is on PATH to fetch one: install python3.13 (or 3.12, 3.11), or uv, or set PYTHON=/path/to/python

export UV_PROJECT_ENVIRONMENT := $(VENV)
# With an interpreter at hand uv must use it; with none, uv may fetch 3.13 where downloads work.
ifeq ($(PYTHON),)
PYTHON_REQUEST := 3.13
export UV_PYTHON_DOWNLOADS := automatic
else
PYTHON_REQUEST := $(PYTHON)
export UV_PYTHON_DOWNLOADS := never
endif

$(TOOLS)/bin/uv:
	@test -n "$(PYTHON)" || { echo "$(NO_PYTHON)" >&2; exit 1; }
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

# Bytecode is compiled once here: where Python may not write it (PYTHONDONTWRITEBYTECODE, a
# read-only image) every `lab` command would otherwise recompile mlflow, sklearn and the rest
# from source on each start, seconds per command (bench/train.py shows the import share).
$(STAMP): uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON_REQUEST)
	rm -f $(VENV)/.synced-* && touch $(STAMP)

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# The interpreter the environment is built with (`.ci/run` picks a second one beside it).
.PHONY: which-python
which-python:
	@echo $(PYTHON)

.PHONY: install
install: $(STAMP) ## Create .venv from the lock file (only when it changed)

# Headless Chromium renders the dbt docs site and this project's own in the tests; npm fetches
# the docs site's pinned mermaid once (Debian packages; root on the lab machines).
APT_INSTALL = command -v $(1) >/dev/null 2>&1 || { echo "installing $(2) (apt-get)"; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; }
.PHONY: system-deps
system-deps: ## Install the OS packages the tests need (chromium, npm), if missing
	@$(call APT_INSTALL,chromium,chromium)
	@$(call APT_INSTALL,npm,npm)

# Trains the gradient-boosted model once, inside Airflow: the Airflow month builds the marts,
# trains it and makes it the first champion; the baseline trained next is gated against it.
# Each step's seconds are printed as it ends, and all of them at the end.
DEMO_STEPS := "ingest" "lake status" "airflow-test --month 2013-12" "train --model baseline" "promote" \
	"champion" "api-demo"
.PHONY: demo
demo: $(STAMP) ## Run the platform end to end on the embedded default (prints each step's seconds)
	@set -e; times=""; begin=$$(date +%s%N); \
	for step in $(DEMO_STEPS); do \
		echo "== lab $$step"; start=$$(date +%s%N); \
		$(RUN)/lab $$step; \
		took=$$(( ($$(date +%s%N) - start) / 1000000 )); \
		printf '== lab %s: %d.%01d s\n' "$$step" $$((took / 1000)) $$((took % 1000 / 100)); \
		times="$$times$$(printf '%8d.%01d s  lab %s' $$((took / 1000)) $$((took % 1000 / 100)) "$$step")\n"; \
	done; \
	took=$$(( ($$(date +%s%N) - begin) / 1000000 )); \
	printf '\nmake demo, seconds per step:\n%b%8d.%01d s  total\n' "$$times" $$((took / 1000)) $$((took % 1000 / 100))

# Its own home: a champion trained on January-June 2013 serves July-December, and the
# monitoring loop decides whether it needs replacing. `make demo` is not needed first.
MONITORING_HOME := $(CURDIR)/.lab/demo-monitoring
.PHONY: demo-monitoring
demo-monitoring: $(STAMP) ## Train on Jan-Jun, replay Jul-Dec through the API, monitor, retrain if a rule fires
	LAB_HOME=$(MONITORING_HOME) $(RUN)/lab ingest
	LAB_HOME=$(MONITORING_HOME) $(RUN)/lab build
	LAB_HOME=$(MONITORING_HOME) LAB_VALIDATION_MONTHS=1 LAB_TEST_MONTHS=1 $(RUN)/lab train --through 2013-06
	LAB_HOME=$(MONITORING_HOME) $(RUN)/lab promote
	LAB_HOME=$(MONITORING_HOME) $(RUN)/lab replay --from 2013-07 --to 2013-12 --batch 100 --start-api
	LAB_HOME=$(MONITORING_HOME) $(RUN)/lab monitor --retrain

# Its own home and stream key: the batch ends with November's file; the first week of December
# reaches the API only as events (the sink writes them into the lake); then December's file lands
# and `lab stream check` compares every logged prediction of the week with the rebuilt marts.
# A monthly file holds a UTC month (time_hour), so the evening of 30 November (New York) is in
# December's: the replay starts that local day, and the events the batch holds are refused by id.
# Weather, planes, airports and airlines are their own feeds, loaded whole before the replay.
STREAM_HOME := $(CURDIR)/.lab/demo-stream
.PHONY: demo-stream
demo-stream: $(STAMP) ## Train through November, stream 2013-12-01..07 through the API and the lake, check against the batch
	export LAB_HOME=$(STREAM_HOME) LAB_STREAM_KEY=lab-demo-stream:flight-events; set -e; \
	rm -rf $(STREAM_HOME); \
	$(RUN)/lab stream reset --yes; \
	$(RUN)/lab ingest airlines airports planes weather; \
	for month in 01 02 03 04 05 06 07 08 09 10 11; do $(RUN)/lab ingest flights --partition 2013-$$month; done; \
	$(RUN)/lab build; \
	$(RUN)/lab train --through 2013-11; \
	$(RUN)/lab promote; \
	$(RUN)/lab stream replay --from 2013-11-30 --to 2013-12-07 --speed max --start-api --start-sink; \
	$(RUN)/lab ingest flights --partition 2013-12; \
	$(RUN)/lab build; \
	$(RUN)/lab stream check --from 2013-11-30 --to 2013-12-07

# The full stack as supervised processes (lab stack), its own home and database,
# driven end to end, then stopped and wiped (`down --volumes`).
STACK_HOME := $(CURDIR)/.lab/stack-demo
.PHONY: stack-demo
stack-demo: $(STAMP) ## The full stack here: up, 3 months through the scheduler on Celery, train, promote, serve, down
	export LAB_HOME=$(STACK_HOME) LAB_PG_DATABASE=lab_stack_demo; \
	trap '$(RUN)/lab stack down --volumes' EXIT; set -e; \
	$(RUN)/lab stack up; \
	$(RUN)/lab stack backfill --from 2013-01 --to 2013-03; \
	$(RUN)/lab stack run lab -- env LAB_VALIDATION_MONTHS=1 LAB_TEST_MONTHS=1 lab train; \
	$(RUN)/lab stack run lab -- lab promote; \
	$(RUN)/lab stack run lab -- lab replay --from 2013-03 --to 2013-03 --batch 100; \
	$(RUN)/lab stack status

.PHONY: test
# --durations: the slowest tests printed on every run keep CI's time budget in sight.
test: $(STAMP) system-deps ## Run the whole test suite (starts what it needs), all but the full stack's
	$(RUN)/pytest -m "not stack" --durations=15

# The full stack started for real (`lab stack up`), driven end to end, then stopped.
.PHONY: test-stack
test-stack: $(STAMP) system-deps ## Run the full stack's end-to-end test (Postgres, S3, MLflow server, Airflow on Celery, the API)
	$(RUN)/pytest -m stack

# The inner loop: no test marked slow (dbt builds, Airflow runs, a trained model)
# or integration (the S3 + Postgres variants). `make test` still runs everything.
.PHONY: test-fast
test-fast: $(STAMP) system-deps ## Run the quick tests only (a few minutes)
	$(RUN)/pytest -m "not slow and not integration"

.PHONY: lint
# sqlfluff reads .sqlfluff here: the dbt templater on an in-memory DuckDB target, so
# it needs no built warehouse (see the comment in .sqlfluff).
lint: $(STAMP) ## ruff (lint + format), mypy, the layer contract (import-linter), sqlfluff (dbt SQL)
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/mypy
	$(RUN)/lint-imports
	$(RUN)/sqlfluff lint dbt_project

# The page is compared with the code by tests/core/test_settings_doc.py: a new setting needs a run.
.PHONY: docs-config
docs-config: $(STAMP) ## Regenerate docs/configuration.md from the settings object
	$(RUN)/python -m core.settings_doc docs/configuration.md

# The documentation site. mermaid is vendored (docs/fetch_mermaid.sh, pinned by sha256) so the
# diagrams render with no network. Any broken link or missing page fails the strict build.
MERMAID_JS := docs/javascripts/mermaid.min.js
$(MERMAID_JS): docs/fetch_mermaid.sh
	@$(call APT_INSTALL,npm,npm)
	docs/fetch_mermaid.sh

.PHONY: docs
docs: $(STAMP) $(MERMAID_JS) ## Build the documentation site into site/ (mkdocs-material, strict)
	NO_MKDOCS_2_WARNING=1 $(RUN)/mkdocs build --strict --site-dir site

.PHONY: bench
bench: $(STAMP) ## Run the benchmark scripts (prints figures; not part of test)
	$(RUN)/python bench/ingest.py
	$(RUN)/python bench/dbt.py
	$(RUN)/python bench/train.py
	$(RUN)/python bench/serve.py
	$(RUN)/python bench/airflow.py
	test -f $(MONITORING_HOME)/warehouse.duckdb || $(MAKE) demo-monitoring
	$(RUN)/python bench/monitor.py --home $(MONITORING_HOME)

.PHONY: airflow
airflow: $(STAMP) ## Start Airflow standalone with the project's DAGs (Ctrl-C stops it)
	$(RUN)/lab airflow

.PHONY: clean
clean: ## Remove local state (.lab/) — the lake, warehouse and registry
	rm -rf .lab
