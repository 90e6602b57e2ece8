"""Golden models of the machine: the bit-exact numpy operators, the assembler and
instruction-set simulator of the control CPU, the reference engine that runs a
whole memory image, and the mapper fitter.  They import only :mod:`neuflow_hdl`."""
