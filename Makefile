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

MODEL  ?= models/digits.onnx
INPUT  ?=
OUT    ?= build/compiled
IMAGES ?= 20

.PHONY: env demo test test-fast fuzz formal verilog compile sim synth bitstream bench fit-mapper clean help

help:
	@echo "make demo           create .venv if needed; compile the digits ConvNet, run it on Verilator"
	@echo "                    (IMAGES=20; IMAGES=all for the whole test split)"
	@echo "make test           create .venv if needed and run the whole test suite"
	@echo "make compile MODEL= compile an ONNX model for GRID into OUT (build/compiled)"
	@echo "make sim MODEL= INPUT=  compile MODEL, run it on Verilator with INPUT (.npy): bit-exact check, cycles"
	@echo "make test-fast      the suite without the Verilator builds"
	@echo "make fuzz           the compiler fuzzer with FUZZ=2000 random networks (make test runs 40)"
	@echo "make formal         the formal proofs of the stream parts (SymbiYosys + z3; make test runs them)"
	@echo "make verilog GRID=  write build/GRID.v for a grid preset (tiny, ulx3s-85f, neuflow-v6)"
	@echo "make verilog UNIT=  write build/UNIT.v for one operator (convolver, alu, mapper, fifo-bank)"
	@echo "make synth GRID=    synthesize + place the grid for the LFE5U-85F, print resources and fmax"
	@echo "make synth UNIT=    the same for one tile operator alone (convolver, alu, mapper, fifo-bank)"
	@echo "                    (SEEDS=1,2,3: once per placer seed, fmax min / median / max)"
	@echo "make bitstream BOARD=  the board's bitstream (ulx3s-85f: grid, block RAM, UART host link, PLL)"
	@echo "make bench          compile time and estimated frames/s (scene parsing, the model zoo); simulator speed"
	@echo "make fit-mapper FN= print the 8-segment mapper fit of FN (tanh, sigmoid, ...)"
	@echo "make env            only create/refresh .venv"
	@echo "make clean          remove build outputs (keeps .venv)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
ifeq ($(IMAGES),all)
	$(PY) -m sim.app.demo --grid $(GRID) --all
else
	$(PY) -m sim.app.demo --grid $(GRID) --images $(IMAGES)
endif

compile: $(STAMP)
	$(VENV)/bin/neuflow compile $(MODEL) --grid $(GRID) -o $(OUT)

sim: $(STAMP)
	@test -n "$(INPUT)" || (echo "make sim: give INPUT=file.npy (shaped like the model's input)"; exit 2)
	$(VENV)/bin/neuflow compile $(MODEL) --grid $(GRID) -o $(OUT) --no-reference
	$(VENV)/bin/neuflow simulate $(OUT) --input $(INPUT) --output $(OUT)/output.npy --engine rtl

test: $(STAMP)
	$(PY) -m pytest -n $(JOBS) --dist loadgroup

test-fast: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m "not verilator"

formal: $(STAMP)
	$(PY) -m pytest -n $(JOBS) -m formal

FUZZ ?= 2000
fuzz: $(STAMP)
	NEUFLOW_FUZZ_EXAMPLES=$(FUZZ) $(PY) -m pytest tests/test_fuzz.py -q

verilog: $(STAMP)
ifeq ($(UNIT),)
	$(VENV)/bin/neuflow verilog --grid $(GRID) -o build/$(GRID).v
else
	$(VENV)/bin/neuflow verilog --unit $(UNIT) -o build/$(UNIT).v
endif

synth: $(STAMP)
	$(VENV)/bin/neuflow synth $(if $(UNIT),--unit $(UNIT),--grid $(GRID)) $(if $(ROUTE_MINUTES),--route-minutes $(ROUTE_MINUTES)) $(if $(SEEDS),--seeds $(SEEDS))

BOARD ?= ulx3s-85f
bitstream: $(STAMP)
	$(VENV)/bin/neuflow board bitstream --board $(BOARD) $(if $(ROUTE_MINUTES),--route-minutes $(ROUTE_MINUTES)) $(if $(SEEDS),--seeds $(SEEDS))

bench: $(STAMP)
	$(PY) -m sim.app.bench_compiler
	$(PY) -m sim.app.bench

FN ?= tanh
fit-mapper: $(STAMP)
	$(VENV)/bin/neuflow fit-mapper $(FN)

clean:
	rm -rf build sim_build .pytest_cache
