"""Running the RTL: the fast Verilator harness that runs a memory image to halt
(built with a profile of the three-layer pipeline program, which lives here
too), the board model (a board's design on Verilator, its serial line on a
TCP socket), cached Verilator builds for the cocotb unit benches, and the
memory model for Amaranth's simulator.  They import :mod:`neuflow_hdl` and,
for the pipeline program, the assembler and numpy reference of :mod:`sim.golden`."""
