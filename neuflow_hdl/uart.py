"""An 8N1 UART: one start bit, eight data bits (least significant first), one
stop bit, the line high when idle.  ``divisor`` is the clock cycles of one bit
(the clock frequency over the baud rate); the host link's two ends agree on it."""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "check_divisor"]


def check_divisor(divisor):
    """``divisor`` if it is a whole number of clock cycles a bit of at least 4
    (the receiver samples mid-bit), ``ValueError`` otherwise."""
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < 4:
        raise ValueError(f"the UART divisor (clock cycles a bit) must be an integer of at least 4, not {divisor!r}")
    return divisor


class UARTTransmitter(wiring.Component):
    """Sends each byte of ``i`` on ``tx``; takes the next once the stop bit is out.

    Members
    -------
    i : In(stream.Signature(8))
    tx : Out(1), idle high
    """

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self._divisor))
        shift = Signal(10, init=1)          # stop bit, data, start bit: sent from bit 0
        bits = Signal(range(11))            # bits left to send
        m.d.comb += [self.tx.eq(shift[0]), self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [shift.eq(Cat(0, self.i.payload, 1)), bits.eq(10), timer.eq(self._divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [shift.eq(Cat(shift[1:], 1)), bits.eq(bits - 1), timer.eq(self._divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m


class UARTReceiver(wiring.Component):
    """Bytes received on ``rx``, one ``o`` word each (``o`` never waits: a byte
    the consumer does not take in its cycle is lost, which the host link's
    framing and checksum catch).  A start bit that is not low at its middle is
    noise and ignored; a byte whose stop bit is low is dropped.

    Members
    -------
    rx : In(1), idle high (synchronised here)
    o : Out(stream.Signature(8))
    """

    def __init__(self, divisor):
        self._divisor = check_divisor(divisor)
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8))})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, rx, init=1)
        timer = Signal(range(self._divisor))
        data = Signal(8)
        bits = Signal(range(9))
        m.d.sync += self.o.valid.eq(0)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(self._divisor - 1), bits.eq(8)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [data.eq(Cat(data[1:], rx)), timer.eq(self._divisor - 1), bits.eq(bits - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(data), self.o.valid.eq(rx)]
                    m.next = "IDLE"
        return m
