"""The numeric contract and the numpy reference, against independent float/int models."""

import numpy as np
import pytest
from hypothesis import given, strategies as st

from neuflow_hdl.numerics import Format, Q8_8, accumulator_width, div_round, narrow, round_shift
from neuflow_hdl.regs import AluOp, CONV_CONFIG, ConvMode, PoolMode, Symmetry, pack_registers, unpack_registers
from sim.golden import reference
from sim.golden.mapper_fit import FUNCTIONS, fit


@given(st.integers(-(1 << 40), 1 << 40), st.integers(0, 20))
def test_round_shift_is_round_half_up(x, s):
    from fractions import Fraction
    exact = Fraction(x, 1 << s)
    assert round_shift(x, s) == int(np.floor(exact + Fraction(1, 2)))


def test_narrow_saturates_never_wraps():
    assert narrow(1 << 30, 0, 16) == Q8_8.max
    assert narrow(-(1 << 30), 0, 16) == Q8_8.min
    assert narrow(np.array([Q8_8.max * 256 + 128]), 8, 16)[0] == Q8_8.max


def test_quantise_matches_neuflow_rule():
    assert Q8_8.quantise(1.0) == 256 and Q8_8.quantise(-0.5 / 256) == 0
    assert Q8_8.quantise(1000.0) == Q8_8.max and Q8_8.quantise(-1000.0) == Q8_8.min
    np.testing.assert_array_equal(Q8_8.dequantise(Q8_8.quantise([0.25, -2.0])), [0.25, -2.0])
    with pytest.raises(ValueError, match="fraction bits"):
        Format(16, 16)


def test_quantise_of_a_large_array_is_the_rule_value_by_value():
    """Arrays larger than a chunk (rounded a chunk at a time) give every value
    the rule's code, hand-computed with exact fractions, in their shape and
    whatever their order in memory or float type."""
    from fractions import Fraction
    from neuflow_hdl.numerics import QUANTISE_CHUNK
    rng = np.random.default_rng(3)
    fmt = Format(12, 4)
    x = rng.normal(0, 40, (3, QUANTISE_CHUNK // 2 + 7)) * rng.choice([1.0, 1e-3, 1e3], (3, QUANTISE_CHUNK // 2 + 7))
    x[0, :4] = [2.5 / 32, -2.5 / 32, 1e9, -1e9]         # ties round up; saturation both ways
    for values, frac in ((x, 5), (x.T, -1), (x.astype(np.float32), 9)):
        codes = fmt.quantise(values, frac)
        assert codes.shape == values.shape and codes.dtype == np.int64
        flat, got = np.ravel(values), np.ravel(codes)
        for i in rng.choice(flat.size, 400, replace=False).tolist() + [0, 1, 2, 3]:
            exact = Fraction(float(flat[i])) * Fraction(2) ** frac + Fraction(1, 2)
            expected = min(max(exact.numerator // exact.denominator, fmt.min), fmt.max)
            assert got[i] == expected, (i, flat[i], frac)


@given(st.integers(Q8_8.min, Q8_8.max), st.integers(Q8_8.min, Q8_8.max), st.integers(0, 16))
def test_div_round_against_fractions(a, b, s):
    from fractions import Fraction
    got = int(div_round(np.array([a]), np.array([b]), s, 16)[0])
    if b == 0:
        assert got == (Q8_8.max if a > 0 else Q8_8.min if a < 0 else 0)
    else:
        q = int(np.floor(Fraction(a * (1 << s), b) + Fraction(1, 2)))
        assert got == min(max(q, Q8_8.min), Q8_8.max)


def test_accumulator_never_overflows():
    """Worst case sum of K*K products + bias + shifted partial sum fits."""
    for width in (8, 16, 24):
        for k in (1, 3, 10, 15):
            worst = k * k * (1 << (2 * width - 2)) + (1 << 31) + (1 << (2 * width - 1))
            assert worst < (1 << (accumulator_width(width, k) - 1))


def test_conv2d_against_float_loops():
    rng = np.random.default_rng(0)
    for _ in range(50):
        k, s = int(rng.integers(1, 8)), int(rng.integers(1, 4))
        h, w = int(rng.integers(k, 20)), int(rng.integers(k, 20))
        x = rng.integers(Q8_8.min, Q8_8.max + 1, (h, w))
        kern = rng.integers(-300, 300, (k, k))
        bias, shift = int(rng.integers(-1 << 20, 1 << 20)), int(rng.integers(0, 17))
        got = reference.conv2d(x, kern, stride=s, bias=bias, shift=shift)
        oh, ow = (h - k) // s + 1, (w - k) // s + 1
        for oy in range(oh):
            for ox in range(ow):
                acc = int(sum(int(kern[i, j]) * int(x[oy * s + i, ox * s + j])
                              for i in range(k) for j in range(k))) + bias
                assert got[oy, ox] == narrow(acc, shift, 16)


def test_conv2d_float_meaning():
    """Q8.8 image * Q8.8 kernel >> 8 approximates the float convolution."""
    rng = np.random.default_rng(1)
    xf, kf = rng.uniform(-1, 1, (9, 9)), rng.uniform(-0.5, 0.5, (3, 3))
    got = Q8_8.dequantise(reference.conv2d(Q8_8.quantise(xf), Q8_8.quantise(kf), shift=8))
    want = np.array([[np.sum(xf[y:y + 3, x:x + 3] * kf) for x in range(7)] for y in range(7)])
    assert np.max(np.abs(got - want)) < 9 * 2 / 256


def test_window_max_and_psum():
    x = np.arange(16).reshape(4, 4)
    np.testing.assert_array_equal(reference.window_max(x, 2, stride=2), [[5, 7], [13, 15]])
    psum = np.full((3, 3), 10)
    got = reference.conv2d(x, np.zeros((2, 2), int), psum=psum, shift=4)
    np.testing.assert_array_equal(got, psum)


def test_reference_rejects_bad_input():
    with pytest.raises(ValueError, match="word range"):
        reference.conv2d(np.full((3, 3), 1 << 20), np.ones((3, 3), int))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        reference.window_max(np.zeros((2, 2), int), 3)
    with pytest.raises(ValueError, match="shift"):
        reference.alu(AluOp.ADD, [1], [2], shift=17)


@pytest.mark.parametrize("op", list(AluOp))
def test_alu_against_python_ints(op):
    rng = np.random.default_rng(int(op.value))
    a = rng.integers(Q8_8.min, Q8_8.max + 1, 500)
    b = rng.integers(Q8_8.min, Q8_8.max + 1, 500)
    shift = 8 if op in (AluOp.MUL, AluOp.SQUARE, AluOp.DIV) else 0
    got = reference.alu(op, a, b, shift=shift)
    py = {AluOp.ADD: lambda x, y: x + y, AluOp.SUB: lambda x, y: x - y, AluOp.MUL: lambda x, y: x * y,
          AluOp.MAX: max, AluOp.MIN: min, AluOp.SQUARE: lambda x, y: x * x, AluOp.ABS: lambda x, y: abs(x)}
    for x, y, g in zip(a.tolist(), b.tolist(), got.tolist()):
        if op is AluOp.DIV:
            continue        # covered by test_div_round_against_fractions
        assert g == narrow(py[op](x, y), shift, 16)


def test_mapper_segments_and_symmetry():
    bounds, slopes, offsets = [0, 256, 512], [256, 0, 128], [0, 256, 0]
    x = np.array([-300, 0, 100, 256, 300, 600])
    none = reference.mapper(x, bounds, slopes, offsets, shift=8)
    np.testing.assert_array_equal(none, [-300, 0, 100, 256, 256, 300])   # -300: segment 0
    odd = reference.mapper(x, bounds, slopes, offsets, symmetry=Symmetry.ODD, shift=8)
    assert odd[0] == -256
    even = reference.mapper(x, bounds, slopes, offsets, symmetry=Symmetry.EVEN, shift=8)
    assert even[0] == 256



def test_pool_by_hand():
    """2 x 2 windows at stride 2, the last odd row and column dropped; the sum
    narrowed (average: shift 2, rounding half up), the maximum as is, saturated."""
    x = np.array([[1, 2, 3, 4, 9],
                  [5, 6, 7, 9, 9],
                  [-8, -3, 0, 0, 9],
                  [-1, -2, 0, 1, 9],
                  [9, 9, 9, 9, 9]])
    assert reference.pool(x, PoolMode.SUM, shift=2).tolist() == [[4, 6], [-3, 0]]     # 14/4, 23/4, -14/4, 1/4
    assert reference.pool(x, PoolMode.MAX).tolist() == [[6, 9], [-1, 1]]
    assert reference.pool(x, PoolMode.NONE).tolist() == x.tolist()
    big = np.full((2, 2), Q8_8.max)
    assert reference.pool(big, PoolMode.SUM, shift=1).tolist() == [[Q8_8.max]]
    with pytest.raises(ValueError):
        reference.pool(np.zeros((1, 4), dtype=np.int64), PoolMode.MAX)

@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_mapper_fits(name):
    """The fit's reported error is what the reference really makes, and small."""
    result = fit(name)
    codes = np.arange(Q8_8.min, Q8_8.max + 1)
    real = np.max(np.abs(result(codes) * Q8_8.step - FUNCTIONS[name][0](codes * Q8_8.step)))
    assert real == pytest.approx(result.max_error)
    bound = {"tanh": 0.01, "sigmoid": 0.015, "relu": 0.0, "abs": Q8_8.step, "sqrt": 0.1,
             "identity": 0.0}[name]
    assert result.max_error <= bound


def test_register_packing_round_trips():
    words = pack_registers(CONV_CONFIG, {"width": 320, "height": 240, "k": 7, "stride": 1,
                                         "shift": 8, "bias": -5})
    assert words[0] == 320 | (240 << 12) | (7 << 24) | (1 << 28)
    assert CONV_CONFIG.from_bits(unpack_registers(words)).bias == -5


def test_fast_packing_matches_amaranth():
    """pack_bits (plain Python, used by the compiler) == layout.const().as_bits()."""
    from neuflow_hdl.regs import STREAM_PORT, mapper_config_layout, pack_bits
    rng = np.random.default_rng(3)
    layout = mapper_config_layout(16, 8)
    for _ in range(50):
        conv = {"width": int(rng.integers(0, 1 << 12)), "height": int(rng.integers(0, 1 << 12)),
                "k": int(rng.integers(0, 16)), "mode": ConvMode(int(rng.integers(0, 3))),
                "shift": int(rng.integers(0, 64)), "bias": int(rng.integers(-2**31, 2**31))}
        mapper = {"symmetry": Symmetry(int(rng.integers(0, 3))), "shift": int(rng.integers(0, 64)),
                  "segments": [{"bound": int(rng.integers(-2**31, 2**31)),
                                "slope": int(rng.integers(-2**31, 2**31)),
                                "offset": int(rng.integers(-2**31, 2**31))} for _ in range(8)]}
        port = {"base": int(rng.integers(0, 2**32)), "width": 5, "write": 1, "line": 3}
        for lay, values in ((CONV_CONFIG, conv), (layout, mapper), (STREAM_PORT, port)):
            assert pack_bits(lay, values) == lay.const(values).as_bits()
    with pytest.raises(ValueError, match="field k"):
        pack_bits(CONV_CONFIG, {"k": 16})
