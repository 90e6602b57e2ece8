"""Running the RTL: the fast Verilator harness that runs a memory image to halt,
cached Verilator builds for the cocotb unit benches, and the memory model for
Amaranth's simulator.  They import only :mod:`neuflow_hdl`."""
