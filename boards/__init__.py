"""FPGA builds with open tools from PyPI (YoWASP yosys and nextpnr)."""
