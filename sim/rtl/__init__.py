"""Running the RTL: cached Verilator builds, the cocotb runner of a memory image,
and the memory model for Amaranth's simulator.  They import only :mod:`neuflow_hdl`."""
