# Two commands: `make run` serves the hub, `make test` runs the suite.
# Both set up a virtualenv first; without DATABASE_URL an embedded PostgreSQL is used.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[embedded,test]'
	touch $@

install: $(STAMP)

run: install
	$(BIN)/hub serve --migrate --demo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var/test-pgdata
