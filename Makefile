# Convenience targets. Everything here is also reachable without make: ./scripts/demo, ./scripts/test.
# Extra arguments: make test ARGS='-x -k redis'.   Skip apt: make test AVTOMATIKA_NO_APT=1.
SHELL := /bin/bash
VENV := .venv
ARGS ?=
export AVTOMATIKA_NO_APT

.DEFAULT_GOAL := help
.PHONY: help bootstrap demo test lint format bench clean distclean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

bootstrap: ## install missing system packages, create .venv, pip install -e ".[all,test]" when needed
	@bash scripts/bootstrap.sh

demo: ## run the engine with the demo blueprints and workers
	@bash scripts/demo $(ARGS)

test: ## run the whole test suite (ARGS go to pytest)
	@bash scripts/test $(ARGS)

lint: bootstrap ## ruff check and ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: bootstrap ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: bootstrap ## run the benchmarks (benchmarks/), if there are any
	@if [[ -f benchmarks/__main__.py ]]; then \
		$(VENV)/bin/python -m benchmarks $(ARGS); \
	else \
		echo "no benchmarks yet (benchmarks/__main__.py is missing)"; \
	fi

clean: ## remove build output and caches (keeps .venv)
	rm -rf build dist artifacts .pytest_cache .ruff_cache .mypy_cache ./*.egg-info engine/*.egg-info
	find . -path ./.venv -prune -o -path ./.git -prune -o -type d -name __pycache__ -print0 | xargs -0r rm -rf

distclean: clean ## clean, and remove .venv too
	rm -rf $(VENV)
