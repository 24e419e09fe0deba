# Spaceport: `make serve` runs it with embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export SPACEPORT_DATA_DIR ?= $(CURDIR)/.spaceport

.PHONY: serve test lint venv bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade uv
	@$(BIN)/uv pip install -q --python $(BIN)/python -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

serve: $(STAMP)
	@bash scripts/ensure-host.sh
	$(BIN)/spaceport serve --host 0.0.0.0 --port 8000

test: $(STAMP)
	@bash scripts/test-services.sh $(CURDIR)/.test-env.sh
	@. $(CURDIR)/.test-env.sh && PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -n 2 --dist loadfile -q -rfEs $(PYTEST_ARGS)
	@$(MAKE) --no-print-directory lint

lint: $(STAMP)
	$(BIN)/ruff check controller builder web tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(STAMP)
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .test-env.sh
