# Quick start: `make run` serves the shipped config on 127.0.0.1:5300; `make test` runs the suite.
# smartdns needs Python 3.11 or newer: `make run PYTHON=python3.12` picks another interpreter.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
MIN_PYTHON := 3.11

.PHONY: run test check typecheck dist-check bench clean python-version

# Checked before .venv is made, so a too-old Python leaves nothing behind for the next run.
python-version:
	@$(PYTHON) -c 'import sys; v = sys.version_info; sys.exit(0 if v >= (3, 11) else "smartdns needs Python $(MIN_PYTHON) or newer; $(PYTHON) is %d.%d (run: make PYTHON=python3.11 ...)" % v[:2])'

# --clear: a .venv left by another Python (or a failed install) is replaced, not reused.
$(STAMP): setup.cfg pyproject.toml | python-version
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '.[test]'
	$(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])' > $(STAMP)

install: python-version $(STAMP)
	@if [ "$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != "$$(cat $(STAMP))" ]; then \
		rm -f $(STAMP); $(MAKE) --no-print-directory $(STAMP); fi
	$(BIN)/pip install -q --no-deps --force-reinstall .
	@# The optional C module (setup.py) next to the sources too, for the tests and `make run`,
	@# which import smartdns from this tree; without a compiler smartdns runs without it.
	$(BIN)/python setup.py -q build_ext --inplace 2>&1 | grep -v "^running\|^copying" || true

run: install
	$(BIN)/twistd -n --pidfile= smartdns --config smartdns.toml

test: install
	$(BIN)/python -m twisted.trial tests

check: install
	$(BIN)/smartdns check --config smartdns.toml

# Build the wheel and sdist, check their metadata, install the wheel alone in a fresh venv and
# serve one query from it (what a `pip install` user gets).  Part of CI.
dist-check: install
	$(BIN)/python .ci/dist_check.py

# Not part of `make test`: Twisted is not pinned, and a release that annotates more of its API
# turns smartdns/txtyping.py's ignores into "unused ignore" errors (the sign a wrapper can go).
typecheck: install
	$(BIN)/pip install -q 'mypy>=1.10' types-pyOpenSSL
	$(BIN)/mypy --strict smartdns/

clean:
	rm -rf $(VENV) build dist *.egg-info _trial_temp
