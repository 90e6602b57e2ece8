# NeuFlow re-made in Python.  Every target creates the virtual environment
# (.venv, from PyPI only) when it is missing or older than pyproject.toml.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
JOBS   ?= 2

# Verilog of a grid preset (make verilog GRID=tiny) or of one operator (UNIT=convolver)
GRID   ?= tiny
UNIT   ?=

.PHONY: env test test-fast verilog synth bench fit-mapper clean help

help:
	@echo "make test           create .venv if needed and run the whole test suite"
	@echo "make test-fast      the suite without the Verilator builds"
	@echo "make verilog GRID=  write build/GRID.v for a grid preset (tiny, ulx3s-85f, neuflow-v6)"
	@echo "make verilog UNIT=  write build/UNIT.v for one operator (convolver, alu, mapper, fifo-bank)"
	@echo "make synth GRID=    synthesize + place the grid for the LFE5U-85F, print resources and fmax"
	@echo "make bench          simulator speed of the processor (Verilator vs Amaranth), cycles/s"
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
ifeq ($(UNIT),)
	$(VENV)/bin/neuflow verilog --grid $(GRID) -o build/$(GRID).v
else
	$(VENV)/bin/neuflow verilog --unit $(UNIT) -o build/$(UNIT).v
endif

synth: $(STAMP)
	$(VENV)/bin/neuflow synth --grid $(GRID)

bench: $(STAMP)
	$(PY) -m sim.bench

FN ?= tanh
fit-mapper: $(STAMP)
	$(VENV)/bin/neuflow fit-mapper $(FN)

clean:
	rm -rf build sim_build .pytest_cache
