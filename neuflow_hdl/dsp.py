"""A signed multiplier with registered inputs and a registered product: the
ECP5's MULT18X18D with its own registers when the target is an ECP5,
registers and ``*`` otherwise (simulation, other targets)."""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Signal, signed

__all__ = ["registered_product", "MULTIPLIER_LATENCY", "is_ecp5"]

#: Cycles from ``take`` to the product on ``p``: the input registers, then
#: the output register (``keep`` a cycle after ``take``).
MULTIPLIER_LATENCY = 2

#: The widest factor a MULT18X18D takes.
_DSP_WIDTH = 18


def is_ecp5(platform):
    """Whether ``platform`` builds for a Lattice ECP5 (an Amaranth Lattice
    platform of the ``ecp5`` family)."""
    return getattr(platform, "family", None) == "ecp5"


def registered_product(m, platform, a, b, take, keep, name):
    """``a * b`` through two registers, added to the module ``m``: the factors
    on a cycle of ``take`` give the returned product ``MULTIPLIER_LATENCY``
    cycles later, when ``keep`` (``take`` a cycle late) has moved the product
    register.  Only that is promised: what it holds at other times is not.

    Elsewhere than an ECP5 (``platform``) the registers are ``m``'s own and
    move only on their enables, so an idle multiplier does no work in
    simulation.  On an ECP5 it is one MULT18X18D (submodule ``name``) with its
    input registers and its output register, which run every cycle: the four
    multipliers of a DSP block share its clock-enable nets, so a block
    holding two tiles' multipliers could not give each its own.  No path
    runs through the block's multiplier from or to the fabric."""
    width = max(len(a), len(b))
    if not 1 <= width <= _DSP_WIDTH:
        raise ValueError(f"factors must be 1 to {_DSP_WIDTH} bits wide, not {width}")
    product = Signal(signed(2 * width), name=f"{name}_p")
    if is_ecp5(platform):
        m.submodules[name] = _mult18x18d(a.as_signed(), b.as_signed(), product)
        return product
    a_q = Signal(signed(len(a)), name=f"{name}_a", reset_less=True)
    b_q = Signal(signed(len(b)), name=f"{name}_b", reset_less=True)
    with m.If(take):
        m.d.sync += [a_q.eq(a), b_q.eq(b)]
    with m.If(keep):
        m.d.sync += product.eq(a_q * b_q)
    return product


def _mult18x18d(a, b, product):
    """A MULT18X18D with its input and output registers on, every cycle."""
    n = _DSP_WIDTH
    full = Signal(2 * n)
    ports = {f"i_A{k}": a[min(k, len(a) - 1)] for k in range(n)}       # sign-extended
    ports.update({f"i_B{k}": b[min(k, len(b) - 1)] for k in range(n)})
    ports.update({f"i_C{k}": Const(0, 1) for k in range(n)})
    ports.update({f"o_P{k}": full[k] for k in range(2 * n)})
    registers = {}
    for name in ("INPUTA", "INPUTB", "OUTPUT"):
        registers.update({f"p_REG_{name}_CLK": "CLK0", f"p_REG_{name}_CE": "CE0", f"p_REG_{name}_RST": "RST0"})
    for name in ("INPUTC", "PIPELINE"):
        registers[f"p_REG_{name}_CLK"] = "NONE"
    m = Module()
    m.submodules.dsp = Instance(
        "MULT18X18D", **registers, p_GSR="DISABLED", p_RESETMODE="SYNC",
        p_SOURCEB_MODE="B_SHIFT", p_MULT_BYPASS="DISABLED", p_CAS_MATCH_REG="FALSE",
        p_HIGHSPEED_CLK="NONE",
        i_SIGNEDA=Const(1, 1), i_SIGNEDB=Const(1, 1), i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
        i_CLK0=ClockSignal(), i_CE0=Const(1, 1), i_RST0=Const(0, 1),
        **{f"i_{pin}": Const(0, 1) for pin in ("CLK1", "CLK2", "CLK3", "CE1", "CE2", "CE3", "RST1", "RST2", "RST3")},
        **ports)
    m.d.comb += product.eq(full[:len(product)].as_signed())
    return m
