# Two commands: `make run` serves the hub, `make test` runs the suite.
# Both set up a virtualenv first; without DATABASE_URL an embedded PostgreSQL is used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

JS     := tests/js
WORKERS ?= 1
.PHONY: run test install js browser pgbouncer clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@

install: $(STAMP)

# The official JS clients (supabase-js, realtime-js, phoenix) for the protocol tests, pinned by package-lock.json.
$(JS)/node_modules/.stamp: $(JS)/package-lock.json
	@if command -v npm >/dev/null; then cd $(JS) && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.stamp; \
	else echo "WARNING: npm not found: the JS client tests will be skipped (and fail with CI=true)"; fi

js: $(JS)/node_modules/.stamp

# Debian's Chromium for the console tests (browser downloads by test tools fail here).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); } || \
	  echo "WARNING: chromium is not installed and could not be: the console browser tests will be skipped"

# Debian's pgbouncer, for the transaction-pooler tests (tests/test_pooler.py).
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null); } || \
	  echo "WARNING: pgbouncer is not installed and could not be: the pooler tests will be skipped"

run: install
	$(BIN)/hub serve --migrate --demo --workers $(WORKERS)

test: install js browser pgbouncer
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -rs $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var/test-pgdata $(JS)/node_modules
