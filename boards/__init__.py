"""FPGA builds with open tools from PyPI (YoWASP yosys, nextpnr, ecppack), the
boards' tops, and the host's side of the serial host link."""
