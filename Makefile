# NeuFlow re-made in Python.  Every target creates the virtual environment
# (.venv, from PyPI only) when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

# Verilog generation of one operator: make verilog UNIT=convolver
UNIT   ?= convolver

.PHONY: env test test-fast verilog fit-mapper clean help

help:
	@echo "make test           create .venv if needed and run the whole test suite"
	@echo "make test-fast      the suite without the Verilator builds"
	@echo "make verilog UNIT=  write build/UNIT.v (convolver, alu, mapper, fifo-bank)"
	@echo "make fit-mapper FN= print the 8-segment mapper fit of FN (tanh, sigmoid, ...)"
	@echo "make env            only create/refresh .venv"
	@echo "make clean          remove build outputs (keeps .venv)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not verilator"

verilog: $(STAMP)
	$(VENV)/bin/neuflow verilog --unit $(UNIT) -o build/$(UNIT).v

FN ?= tanh
fit-mapper: $(STAMP)
	$(VENV)/bin/neuflow fit-mapper $(FN)

clean:
	rm -rf build sim_build .pytest_cache
