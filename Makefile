# Spaceport: `make serve` runs it with embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SPACEPORT_DATA_DIR ?= $(CURDIR)/.spaceport

.PHONY: serve test lint venv bench clean lock

UV_VERSION := 0.13.9
LOCK_CMD := uv pip compile --universal --python-version 3.11 --extra dev pyproject.toml -o requirements.lock

# Spaceport's own dependencies are locked (requirements.lock): the drift that breaks old Space repos would
# break `make serve` too. `make lock` re-resolves them (the upgrade path); tests/controller/test_lock.py
# fails when pyproject.toml and the lock disagree.
# Bytecode is compiled at install (--compile-bytecode) and for Spaceport's own sources before each run (COMPILE):
# where PYTHONDONTWRITEBYTECODE is set (these machines set it) nothing else writes it, and every process that
# imports Spaceport compiled ~1,500 modules from source again: 5.1 CPU-seconds per `spaceport serve`
# start instead of 2.0 (measured), on every server a test starts and every controller restart. The suite runs
# without it, so pytest keeps its assertion-rewritten test modules (collection: 12 CPU-seconds -> 6 per worker).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	@$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -r requirements.lock
	@$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

lock: $(STAMP)
	$(BIN)/$(LOCK_CMD) --upgrade -q
	@echo "requirements.lock re-resolved; run make test before committing it"

venv: $(STAMP)

COMPILE = $(BIN)/python -m compileall -q -j 0 controller builder web

serve: $(STAMP)
	@bash scripts/ensure-host.sh
	@$(COMPILE)
	$(BIN)/spaceport serve --host 0.0.0.0 --port 8000

# The suite stops itself after TEST_WALL_SECONDS (CI allows 90 minutes in all), so a run that hangs still prints
# which tests failed (tests/conftest.py logs each failure to $(TEST_FAILURES) as it happens) and the machine's state.
TEST_WALL_SECONDS ?= 4200
# A broken machine (full disk, dead engine) fails test after test, each up to its 300 s timeout: stop early.
TEST_MAXFAIL ?= 25
TEST_FAILURES := $(CURDIR)/.test-failures.log
# Three workers on two cores: a third of the suite's time is spent waiting (apps starting, builds, Docker), and a
# third worker fills it (pytest 16:32 -> 13:30-14:40 on the 2-core CI machine, measured; CPU 80% -> ~90% busy).
TEST_WORKERS ?= 3

test: $(STAMP)
	@bash scripts/test-services.sh $(CURDIR)/.test-env.sh
	@$(COMPILE) tests bench
	@. $(CURDIR)/.test-env.sh && $(BIN)/python -m tests.support.images
	@rm -f $(TEST_FAILURES)
	@. $(CURDIR)/.test-env.sh && PATH=$(CURDIR)/$(BIN):$$PATH SPACEPORT_TEST_FAILURES=$(TEST_FAILURES) \
	  env -u PYTHONDONTWRITEBYTECODE timeout --foreground --signal=INT --kill-after=120 $(TEST_WALL_SECONDS) \
	  $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile -q -rfEs --maxfail=$(TEST_MAXFAIL) $(PYTEST_ARGS) \
	  || { status=$$?; [ $$status != 124 ] || echo "the suite ran past $(TEST_WALL_SECONDS) s and was stopped"; \
	       bash scripts/test-diagnostics.sh $(TEST_FAILURES); exit $$status; }
	@$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(BIN)/ruff check controller builder web tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .test-env.sh .test-failures.log
