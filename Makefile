# Two commands do all set-up on a fresh machine: `make dev` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The tests' OpenID Provider (the `oidc-provider` npm package), pinned by its lock file.
OIDC   := tests/oidc/node_modules/.installed-stamp

.PHONY: install dev test lint typecheck pytest chromium oidc-harness bench clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("signoff needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./sdk -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

dev: install
	$(BIN)/signoff dev

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

# The browser test drives Debian's Chromium, never a browser Playwright downloads. As root (CI),
# install it when missing; elsewhere the test is skipped without it.
chromium:
	@if [ ! -x /usr/bin/chromium ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	fi

# The identity tests run a real OpenID Provider on node; npm installs it from the lock file.
$(OIDC): tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund
	@touch $(OIDC)

oidc-harness: $(OIDC)

# Two processes, each with its own dev server and Postgres, a test file to each at a time:
# most of the suite waits on timers, outages and restarts, so two halve it even on two cores.
pytest: install chromium oidc-harness
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test: lint typecheck pytest

bench: install
	$(BIN)/python -m bench.run_all

clean:
	rm -rf $(VENV) .signoff .pytest_cache .mypy_cache .ruff_cache tests/oidc/node_modules
