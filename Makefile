# Two commands on a fresh clone: `make quickstart` and `make test`. Each creates the virtual
# environment .venv on first use from the tested, pinned set (constraints.txt) and reuses it
# afterwards; it is rebuilt when pyproject.toml or constraints.txt change. `make quickstart
# OUT=runs/again` writes a second quickstart elsewhere.
# The long form, for people who manage their own environments, is in the README.

PYTHON ?= python3
VENV := .venv
OUT ?= runs/quickstart
STAMP := $(VENV)/.installed

.PHONY: quickstart test clean-venv

quickstart: $(STAMP)
	$(VENV)/bin/hone quickstart --out $(OUT)

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# torch==2.13.0 first so pip takes the local CPU wheel, not gigabytes of CUDA packages
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11) and "hone needs Python 3.11 or newer: set PYTHON=python3.11")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet torch==2.13.0 -c constraints.txt -e ".[dev]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
