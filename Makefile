# Two commands on a fresh clone: `make quickstart` and `make test`. Each creates the virtual
# environment .venv on first use from the tested, pinned set (constraints.txt) and reuses it
# afterwards; it is rebuilt when pyproject.toml or constraints.txt change. `make quickstart
# OUT=runs/again` writes a second quickstart elsewhere.
# The long form, for people who manage their own environments, is in the README.

PYTHON ?= python3
VENV := .venv
OUT ?= runs/quickstart
STAMP := $(VENV)/.installed
# llama-cpp-python (a dev dependency: the GGUF tests run exported files in llama.cpp) builds only its library
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF

.PHONY: quickstart test ui clean-venv

quickstart: $(STAMP)
	$(VENV)/bin/hone quickstart --out $(OUT)

# the web UI on http://127.0.0.1:7860/ (hone ui --help for --host, --port, --auth, --runs)
ui: $(STAMP)
	$(VENV)/bin/hone ui

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# torch==2.13.0 first so pip takes the local CPU wheel, not gigabytes of CUDA packages
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] < (3, 11) and "hone needs Python 3.11 or newer: set PYTHON=python3.11")'
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(VENV)/bin/pip install --quiet torch==2.13.0 -c constraints.txt -e ".[dev]"
	touch $(STAMP)

clean-venv:
	rm -rf $(VENV)
