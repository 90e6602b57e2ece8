"""The configuration bus: how the control CPU writes and reads the registers of
the grid's tiles, the grid itself and the streamer's ports.

Every address is a ``CONFIG_ADDRESS`` (:mod:`neuflow_hdl.regs`): tile, unit,
register.  A write is one cycle of ``we`` with ``addr`` and ``wdata``; a read is
one cycle of ``re``, answered on ``rdata`` the next cycle by the one responder
the address names (every other responder answers 0, so the controller ORs the
answers).  Software encodes and decodes addresses with
:func:`neuflow_hdl.regs.config_address`, :func:`neuflow_hdl.regs.streamer_address`
and :func:`neuflow_hdl.regs.decode_address`.
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .regs import CONFIG_ADDRESS, REGISTER_BITS

__all__ = ["ConfigBus"]

#: The configuration bus, from the controller's side (responders take it ``In``).
ConfigBus = wiring.Signature({
    "addr": Out(CONFIG_ADDRESS),
    "wdata": Out(REGISTER_BITS),
    "we": Out(1),
    "re": Out(1),
    "rdata": In(REGISTER_BITS),
})
