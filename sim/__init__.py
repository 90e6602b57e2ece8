"""Software side of verification: the bit-exact numpy reference, the mapper fitter
and the Verilator/cocotb runner."""
