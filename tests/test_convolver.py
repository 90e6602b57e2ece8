"""Convolver on Amaranth's simulator against the numpy reference."""

import numpy as np
import pytest
from amaranth.hdl import ResetInserter, Signal

from cases import conv_expected, conv_job, frame_flags
from helpers import activate, flat_words, frame_words, simulate, stream_put
from neuflow_hdl.convolver import Convolver, KernelBank
from neuflow_hdl.numerics import Q8_8
from neuflow_hdl.regs import ConvMode

K, MAX_WIDTH = 3, 12


@pytest.fixture(scope="module")
def dut():
    return Convolver(kernel=K, max_width=MAX_WIDTH)


def conv_config(width, height, k, stride, mode, shift=8, bias=0):
    return {"width": width, "height": height, "k": k, "stride": stride,
            "mode": mode, "shift": shift, "bias": bias}


def random_job(rng, **kw):
    return conv_job(rng, K, MAX_WIDTH, **kw)


def run_frames(dut, jobs, *, rng, gap=0.0, stall=0.0):
    """Run (config, image, kernel, psum) jobs back to back; return outputs per job."""
    results = []

    async def bench(ctx):
        for cfg, image, kernel, psum in jobs:
            ctx.set(dut.config, cfg)
            await activate(ctx, dut, dut.i)
            await stream_put(ctx, dut.weights, flat_words(kernel.ravel()))
            want = conv_expected(cfg, image, kernel, psum)
            results.append((want, await _run_one(ctx, dut, image, psum, cfg, want.size,
                                                 rng, gap, stall)))

    simulate(dut, bench, cycles=1_000_000)
    return results


async def _run_one(ctx, dut, image, psum, cfg, count, rng, gap, stall, weights=(), then=()):
    """Feed one frame (and partial sums) while collecting ``count`` outputs;
    ``weights`` (words) stream in at the same time, with gaps; ``then``: more
    (image, psum) frames right behind it."""
    frames = [(image, psum), *then]
    words_in = [w for image, _ in frames for w in frame_words(image)]
    words_psum = [w for _, psum in frames for w in frame_words(psum)] if cfg["mode"] is ConvMode.MAC_PSUM else []
    out, n_in, n_psum, n_w = [], 0, 0, 0
    i_valid = p_valid = False
    while len(out) < count or n_in < len(words_in) or n_w < len(weights):
        if not i_valid and n_in < len(words_in) and rng.random() >= gap:
            ctx.set(dut.i.payload, dict(zip(("data", "eol", "eof"), words_in[n_in])))
            i_valid = True
        if not p_valid and n_psum < len(words_psum) and rng.random() >= gap:
            ctx.set(dut.psum.payload, dict(zip(("data", "eol", "eof"), words_psum[n_psum])))
            p_valid = True
        w_valid = n_w < len(weights) and rng.random() >= gap
        if w_valid:     # the weights stream is always ready
            ctx.set(dut.weights.payload, dict(zip(("data", "eol", "eof"), weights[n_w])))
            n_w += 1
        ctx.set(dut.weights.valid, w_valid)
        ctx.set(dut.i.valid, i_valid)
        ctx.set(dut.psum.valid, p_valid)
        ready = rng.random() >= stall
        ctx.set(dut.o.ready, ready)
        _, _, i_ready, p_ready, o_valid, o_payload = await ctx.tick().sample(
            dut.i.ready, dut.psum.ready, dut.o.valid, dut.o.payload)
        if i_valid and i_ready:
            n_in += 1
            i_valid = False
        if p_valid and p_ready:
            n_psum += 1
            p_valid = False
        if o_valid and ready:
            out.append((o_payload.data, o_payload.eol, o_payload.eof))
    ctx.set(dut.i.valid, 0)
    ctx.set(dut.psum.valid, 0)
    ctx.set(dut.weights.valid, 0)
    ctx.set(dut.o.ready, 0)
    assert n_psum == len(words_psum), "partial sums left unconsumed"
    return out


def preload_frame(rng, kernel, skip, compact=False):
    """A broadcast weight frame: ``skip`` other words, ``kernel`` (its own k x k
    words when ``compact``, else padded to K x K, bottom-right), other words
    after it.  ``kernel`` None: only other words."""
    words = list(rng.integers(-600, 600, skip))
    if kernel is not None:
        k = kernel.shape[0]
        padded = np.zeros((K, K), dtype=np.int64)
        padded[K - k:, K - k:] = kernel
        words += list((kernel if compact else padded).ravel())
        words += list(rng.integers(-600, 600, int(rng.integers(0, 2 * K * K))))
    return flat_words(words)


def test_preload_during_the_previous_frame(dut):
    """Kernels stream into the preload bank, behind other tiles' words, while
    the previous frame streams, and take effect at the next start; a start with
    nothing preloaded keeps the kernel."""
    rng = np.random.default_rng(4)
    jobs = [random_job(rng, max_height=8) for _ in range(40)]
    for n in range(1, len(jobs)):
        if rng.random() < 0.3 and jobs[n][0]["k"] == jobs[n - 1][0]["k"]:
            jobs[n] = jobs[n][:2] + (jobs[n - 1][2],) + jobs[n][3:]      # the same kernel
    skips = [int(rng.integers(0, 3 * K * K)) for _ in jobs]
    # Each kernel comes compact (its k x k words, preload_k = k) or padded to
    # K x K (preload_k 0 or K).
    compact = [bool(rng.random() < 0.5) for _ in jobs]
    results = []

    def preloading(cfg, skip, n):
        """``cfg`` preloading job ``n``'s kernel (None: nothing) after ``skip`` words."""
        size = jobs[n][2].shape[0] if n is not None and compact[n] else int(rng.choice([0, K]))
        return dict(cfg, preload=1, weight_skip=skip, preload_k=size)

    async def bench(ctx):
        ctx.set(dut.config, preloading(jobs[0][0], skips[0], 0))     # prologue: the first kernel
        await activate(ctx, dut)
        await stream_put(ctx, dut.weights, preload_frame(rng, jobs[0][2], skips[0], compact[0]), rng, 0.3)
        for n, (cfg, image, kernel, psum) in enumerate(jobs):
            following = n + 1 if n + 1 < len(jobs) and jobs[n + 1][2] is not kernel else None
            ctx.set(dut.config, preloading(cfg, skips[n], following))
            await activate(ctx, dut, dut.i)
            frame = preload_frame(rng, None if following is None else jobs[following][2], skips[n],
                                  following is not None and compact[following])
            want = conv_expected(cfg, image, kernel, psum)
            results.append((want, await _run_one(ctx, dut, image, psum, cfg, want.size, rng,
                                                 0.3, 0.4, weights=frame)))

    simulate(dut, bench, cycles=1_000_000)
    check(results)


def check(results):
    for want, got in results:
        oh, ow = want.shape
        assert [g[0] for g in got] == want.ravel().tolist()
        assert [(g[1], g[2]) for g in got] == frame_flags(want.shape)


def test_random_frames_with_gaps_and_backpressure(dut):
    rng = np.random.default_rng(1)
    jobs = [random_job(rng, max_height=10) for _ in range(150)]
    check(run_frames(dut, jobs, rng=rng, gap=0.3, stall=0.4))


def test_corners(dut):
    """Extreme words and biases (saturation), k = 1 and k = K, stride > 1, rows of max_width."""
    rng = np.random.default_rng(2)
    jobs = [random_job(rng, k=1, extreme=True), random_job(rng, k=K, extreme=True),
            random_job(rng, k=K, stride=3, width=MAX_WIDTH, extreme=True),
            random_job(rng, k=2, stride=2, width=MAX_WIDTH, mode=ConvMode.MAX, extreme=True),
            random_job(rng, k=K, mode=ConvMode.MAC_PSUM, width=MAX_WIDTH, extreme=True)]
    check(run_frames(dut, jobs, rng=rng, gap=0.2, stall=0.5))


def test_full_rate_latency(dut):
    """With no gaps and no back-pressure a W x H frame takes W*H + latency cycles."""
    rng = np.random.default_rng(3)
    cfg, image, kernel, psum = random_job(rng, k=K, stride=1, mode=ConvMode.MAC,
                                          width=MAX_WIDTH, height=6)
    h, w = image.shape
    timing = {}

    async def bench(ctx):
        ctx.set(dut.config, cfg)
        await activate(ctx, dut)
        await stream_put(ctx, dut.weights, flat_words(kernel.ravel()))
        ctx.set(dut.o.ready, 1)
        words = frame_words(image)
        cycle, n_in, n_out = 0, 0, 0
        want = conv_expected(cfg, image, kernel, psum).size
        while n_out < want:
            if n_in < len(words):
                ctx.set(dut.i.payload, dict(zip(("data", "eol", "eof"), words[n_in])))
                ctx.set(dut.i.valid, 1)
            else:
                ctx.set(dut.i.valid, 0)
            _, _, i_ready, o_valid = await ctx.tick().sample(dut.i.ready, dut.o.valid)
            if n_in < len(words):
                assert i_ready, f"input stalled at word {n_in} with the output always ready"
                n_in += 1
            n_out += o_valid
            cycle += 1
        timing["cycles"] = cycle

    simulate(dut, bench, cycles=10_000)
    assert timing["cycles"] == w * h + dut.latency


def test_invalid_config_accepts_nothing(dut):
    async def bench(ctx):
        for bad in [conv_config(8, 8, K + 1, 1, ConvMode.MAC), conv_config(8, 8, 0, 1, ConvMode.MAC),
                    conv_config(MAX_WIDTH + 1, 8, 3, 1, ConvMode.MAC),
                    conv_config(8, 8, 3, 0, ConvMode.MAC), conv_config(2, 8, 3, 1, ConvMode.MAC),
                    conv_config(8, 8, 3, 1, ConvMode.MAC, shift=Q8_8.width + 1)]:
            ctx.set(dut.config, bad)
            ctx.set(dut.i.valid, 1)
            _, _, ready, error = await ctx.tick().sample(dut.i.ready, dut.error)
            assert (ready, error) == (0, 1), bad
        ctx.set(dut.i.valid, 0)

    simulate(dut, bench, cycles=100)


def test_wrong_geometry_flags_raise_error(dut):
    """A frame whose eol flags disagree with the configured width sets error."""
    rng = np.random.default_rng(4)
    cfg, image, kernel, psum = random_job(rng, k=2, stride=1, mode=ConvMode.MAX, width=6, height=4)

    async def bench(ctx):
        ctx.set(dut.config, cfg)
        await activate(ctx, dut)
        wrong = frame_words(image.reshape(8, 3))       # 3-word rows, configured 6
        ctx.set(dut.o.ready, 1)
        await stream_put(ctx, dut.i, wrong)
        assert ctx.get(dut.error)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        assert ctx.get(dut.error)           # the rewind's cycle clears it
        await ctx.tick()
        assert not ctx.get(dut.error)

    simulate(dut, bench, cycles=1000)


def test_frames_without_start_and_after_a_flush():
    """Frames of one configuration follow each other without ``start`` (two
    of them streamed back to back), and a flush (the tile's reset of the
    operator) between two of them keeps the kernel and the configuration: the
    next frame needs no ``start`` either.  k = 1 windows start at a frame's
    first word, so this covers the window test at the origin after a frame's
    end and after a reset."""
    rng = np.random.default_rng(6)
    conv = Convolver(kernel=K, max_width=MAX_WIDTH)
    flush = Signal()
    dut = ResetInserter({"sync": flush})(conv)
    jobs = [random_job(rng, k=k, stride=stride, max_height=6)
            for k, stride in [(1, 1), (1, 2), (2, 1), (3, 2), (1, 3), (3, 1)]]
    results = []

    def another(cfg, image, kernel, psum):
        image = rng.integers(-600, 600, size=image.shape)
        psum = rng.integers(Q8_8.min, Q8_8.max + 1, size=psum.shape)
        return image, psum, conv_expected(cfg, image, kernel, psum)

    async def bench(ctx):
        for cfg, image, kernel, psum in jobs:
            ctx.set(conv.config, cfg)
            await activate(ctx, conv, conv.i)
            await stream_put(ctx, conv.weights, flat_words(kernel.ravel()))
            first, second = another(cfg, image, kernel, psum), another(cfg, image, kernel, psum)
            got = await _run_one(ctx, conv, *first[:2], cfg, 2 * first[2].size, rng, 0.0, 0.4,
                                 then=[second[:2]])
            results.extend([(first[2], got[:first[2].size]), (second[2], got[first[2].size:])])
            ctx.set(flush, 1)
            await ctx.tick()
            ctx.set(flush, 0)
            image, psum, want = another(cfg, image, kernel, psum)
            results.append((want, await _run_one(ctx, conv, image, psum, cfg, want.size, rng, 0.3, 0.4)))

    simulate(dut, bench, cycles=100_000)
    check(results)


@pytest.mark.parametrize("words_before", [0, 1, 3])
def test_kernel_bank_word_on_the_start_cycle(words_before):
    """A preloaded kernel whose last word the bank takes ``words_before``
    cycles before the tile's ``start`` (0: on that cycle) is the kernel in
    use after it: a word lands in the bank a cycle after it is taken, and
    the bank is read two cycles after ``start``."""
    bank = KernelBank(kernel=K, width=Q8_8.width)
    kernel = np.random.default_rng(words_before).integers(-600, 600, (K, K))
    got = []

    async def bench(ctx):
        ctx.set(bank.config, {"k": K, "preload": 1, "weight_skip": 0, "preload_k": 0})
        await activate(ctx, bank)
        for n, word in enumerate(kernel.ravel()):
            ctx.set(bank.weights.payload, {"data": int(word), "eol": 0, "eof": 0})
            ctx.set(bank.weights.valid, 1)
            ctx.set(bank.start, words_before == 0 and n == K * K - 1)
            await ctx.tick()
        ctx.set(bank.weights.valid, 0)
        for _ in range(words_before):
            await ctx.tick()
        if words_before:
            await activate(ctx, bank)
        else:
            ctx.set(bank.start, 0)
            await ctx.tick()
        await ctx.tick()
        got.append([[ctx.get(bank.kernel[r][c]) for c in range(K)] for r in range(K)])

    simulate(bank, bench, cycles=200)
    assert got == [kernel.tolist()]
