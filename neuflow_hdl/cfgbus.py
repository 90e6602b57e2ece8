"""The configuration bus: how the control CPU writes and reads the registers of
the grid's tiles, the grid itself and the streamer's ports.

Every address is a ``CONFIG_ADDRESS`` (:mod:`neuflow_hdl.regs`): tile, unit,
register.  A write is one cycle of ``we`` with ``addr`` and ``wdata``; a read is
one cycle of ``re``, answered on ``rdata`` by the one responder the address
names (every other responder answers 0, so the controller ORs the answers).
Software encodes and decodes addresses with
:func:`neuflow_hdl.regs.config_address`, :func:`neuflow_hdl.regs.streamer_address`
and :func:`neuflow_hdl.regs.decode_address`.

Every responder takes the bus through a register before it decodes it: a
write reaches its registers a cycle later, and a read's ``rdata`` comes
``RESPONDER_READ_LATENCY`` cycles after ``re``.  So no address decode fans
out across the chip from the controller's registers, and since writes and
reads are delayed alike a read still sees every write before it.
"""

from amaranth.hdl import Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .regs import CONFIG_ADDRESS, REGISTER_BITS

__all__ = ["ConfigBus", "RESPONDER_READ_LATENCY", "registered_requests"]

#: The configuration bus, from the controller's side (responders take it ``In``).
ConfigBus = wiring.Signature({
    "addr": Out(CONFIG_ADDRESS),
    "wdata": Out(REGISTER_BITS),
    "we": Out(1),
    "re": Out(1),
    "rdata": In(REGISTER_BITS),
})

#: Cycles from ``re`` on the bus to a responder's ``rdata``: its input
#: register, then its answer register.
RESPONDER_READ_LATENCY = 2


class _Requests:
    def __init__(self, bus):
        self.addr = Signal.like(bus.addr, name="cfg_addr_q")
        self.wdata = Signal.like(bus.wdata, name="cfg_wdata_q")
        self.we = Signal(name="cfg_we_q")
        self.re = Signal(name="cfg_re_q")


def registered_requests(m, bus):
    """A responder's input register: ``addr``, ``wdata``, ``we`` and ``re`` of
    ``bus`` (a responder's ``In(ConfigBus)``) one cycle late."""
    q = _Requests(bus)
    m.d.sync += [q.addr.eq(bus.addr), q.wdata.eq(bus.wdata), q.we.eq(bus.we), q.re.eq(bus.re)]
    return q
