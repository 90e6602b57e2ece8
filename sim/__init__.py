"""Simulation: the golden models of the machine (:mod:`sim.golden`), the RTL
runners (:mod:`sim.rtl`) and the applications on top (:mod:`sim.app`)."""
