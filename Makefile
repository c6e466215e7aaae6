# Loom's one entry point. Every target creates and uses .venv; nothing is assumed installed
# beyond Python 3.11 and make.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

# The editable install is a setuptools "strict" link tree, so a new module is invisible until
# the tree is rebuilt. The stamp's name hashes the set of source files and pyproject.toml, so
# adding, removing or renaming a module (or changing dependencies) re-installs on the next make.
SRC_SET := $(shell { find runtime bridge cluster web sdk -type f \( -name '*.py' -o -name '*.pyi' -o -name 'py.typed' -o -path 'web/static/*' \) 2>/dev/null | LC_ALL=C sort; cat pyproject.toml; } | cksum | cut -d' ' -f1)
STAMP   := $(VENV)/.installed-$(SRC_SET)

.DEFAULT_GOAL := help
.PHONY: help install browser run test lint type proto proto-check pytest bench clean

help: ## Show this help
	@echo "Loom: make <target>"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

# Several shells may run make at once (an editor, a test watcher); flock, where the machine has
# it, keeps two installs from writing the same venv together.
LOCK := $(shell command -v flock >/dev/null 2>&1 && echo "flock $(VENV)/.lock")

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(LOCK) $(PY) -m pip install --quiet --upgrade "pip>=24"
	$(LOCK) $(PY) -m pip install --quiet -e ".[dev]" --config-settings editable_mode=strict
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) browser ## Create .venv and install Loom with its dev tools

# The dashboard's tests drive a real Chromium through Playwright: the distribution's package,
# never a browser Playwright would download. Installed here when missing and we are root;
# otherwise this stops with the one command that installs it.
browser: ## Install the distribution's Chromium for the dashboard's tests (when missing)
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (the dashboard's browser tests need it)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; \
	  else \
	    echo "the dashboard's browser tests need Chromium; install it with:"; \
	    echo "  sudo apt-get install -y chromium"; exit 1; \
	  fi; }

run: $(STAMP) ## Start `loom serve` on embedded defaults
	$(BIN)/loom serve

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

type: $(STAMP) ## mypy --strict over the code and the tests
	$(BIN)/mypy runtime bridge cluster web sdk tests benchmarks examples

proto: $(STAMP) ## Regenerate the gRPC code from proto/
	$(PY) scripts/gen_protos.py

proto-check: $(STAMP) ## Fail when the generated gRPC code is stale
	$(PY) scripts/gen_protos.py --check

pytest: $(STAMP) browser ## The test suite only
	$(BIN)/pytest

test: lint type proto-check browser pytest ## Everything CI runs: lint, types, proto freshness, tests

bench: $(STAMP) ## Run every benchmark; one JSON line each
	@for b in benchmarks/[a-z]*.py; do $(PY) $$b || exit 1; done

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis
