# Quick start: `make run` serves the shipped config on 127.0.0.1:5300; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check bench clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '.[test]'
	touch $(STAMP)

install: $(STAMP)
	$(BIN)/pip install -q --no-deps --force-reinstall .

run: install
	$(BIN)/twistd -n --pidfile= smartdns --config smartdns.toml

test: install
	$(BIN)/python -m twisted.trial tests

check: install
	$(BIN)/smartdns check --config smartdns.toml

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
