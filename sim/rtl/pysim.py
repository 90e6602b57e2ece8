"""Models for Amaranth's Python simulator (the bench and the unit tests)."""

__all__ = ["memory_process"]


def memory_process(bus, memory, rng, beat_words, width=16, ready=0.7, max_latency=6, reads=None):
    """A memory-bus target over the array ``memory`` (changed in place): takes
    commands with probability ``ready`` each cycle and answers reads in order
    after 0 .. ``max_latency`` cycles; appends each beat address read to the
    list ``reads`` (if given)."""
    mask = (1 << width) - 1

    async def process(ctx):
        pending = []            # [cycles left, beat address]
        while True:
            taking = rng.random() < ready
            ctx.set(bus.cmd.ready, taking)
            if pending and pending[0][0] <= 0:
                beat = pending[0][1]
                ctx.set(bus.resp.valid, 1)
                ctx.set(bus.resp.payload, sum((int(memory[beat * beat_words + n]) & mask) << (width * n)
                                              for n in range(beat_words)))
            else:
                ctx.set(bus.resp.valid, 0)
            _, _, cmd_valid, cmd, resp_ready, resp_valid = await ctx.tick().sample(
                bus.cmd.valid, bus.cmd.payload, bus.resp.ready, bus.resp.valid)
            if resp_valid and resp_ready:
                pending.pop(0)
            for entry in pending:
                entry[0] -= 1
            if cmd_valid and taking:
                if cmd.we:
                    for n in range(beat_words):
                        if (cmd.wmask >> n) & 1:
                            memory[cmd.addr * beat_words + n] = (cmd.wdata >> (width * n)) & mask
                else:
                    pending.append([int(rng.integers(0, max_latency + 1)), cmd.addr])
                    if reads is not None:
                        reads.append(int(cmd.addr))
    return process
