# Quick start: `make run` serves the shipped config on 127.0.0.1:5300; `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check typecheck bench clean

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

# Not part of `make test`: Twisted is not pinned, and a release that annotates more of its API
# turns smartdns/txtyping.py's ignores into "unused ignore" errors (the sign a wrapper can go).
typecheck: install
	$(BIN)/pip install -q 'mypy>=1.10' types-pyOpenSSL
	$(BIN)/mypy --strict smartdns/

clean:
	rm -rf $(VENV) build *.egg-info _trial_temp
