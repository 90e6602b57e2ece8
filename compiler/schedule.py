"""Scheduling: dataflow jobs -> passes on the grid.

A :class:`Pass` is one configuration of the grid and one set of streamer
transfers.  Each output map is computed by a *chain* of tiles along a snake
path through the grid: tile j convolves input j and adds the partial sum of
tile j-1 (``MAC_PSUM`` through a neighbour link).  When an output needs more
terms than one chain holds, it takes several passes and the partial sum goes
through memory, in place in the output buffer: the next pass's chain head
reads it as its partial-sum stream and the chain tail overwrites it.  Bias
comes with the first pass, the mapper with the last.  Chains of one pass that
use the same inputs share one input stream (the global line forks to every
tile that listens).  :func:`conv_packings` lists the blockings (terms per
chain) that fit; :mod:`compiler.program` chooses one per job with the cost
model.
"""

from dataclasses import dataclass

from neuflow_hdl.alu import alu_latency
from neuflow_hdl.convolver import JOIN_LATENCY, convolver_latency
from neuflow_hdl.grid import LINE_LATENCY, PUSH_LATENCY
from neuflow_hdl.mapper import mapper_latency
from neuflow_hdl.regs import OFFSET, OPPOSITE, ConvMode
from neuflow_hdl.tile import SINK_LATENCY

from .cost import expected_beats
from .layout import MemoryKernel, kernel_words_of

__all__ = ["TileSetup", "Pass", "PassShape", "snake", "weight_line", "conv_latency", "chain_latency", "HOP_LAG",
           "conv_packings", "conv_passes", "pass_shape", "stream_passes", "chains_per_pass"]


@dataclass(slots=True)
class TileSetup:
    """One tile's part of a pass.  Its configurations may be shared with other
    tiles and passes (the scheduler makes each distinct one once): never
    change them in place."""
    tile: int
    routes: dict
    convolver: dict = None
    alu: dict = None
    mapper: dict = None
    weights: bytes = None           #: the k x k kernel to load (:func:`compiler.layout.kernel_words`), a MemoryKernel, or None


@dataclass(slots=True)
class Pass:
    tiles: list                     #: [TileSetup]
    reads: list                     #: [(line, Rect)]  memory -> global_in[line]
    writes: list                    #: [(line, Rect, (window_base, window_size))]
    macs: int = 0
    latency: int = 0                #: pipeline depth of the longest path (estimate)



@dataclass(frozen=True)
class PassShape:
    """What the cost model needs of a pass before it is built
    (:func:`compiler.cost.predicted_cost`)."""
    loads: int              #: kernels its tiles load
    kernel_words: int       #: their words (k x k each)
    streams: tuple          #: words of each data stream
    tiles: int
    latency: int
    beats: float            #: memory-bus beats of the data streams (expected)


def weight_line(config):
    """The global input line weight frames use: the last one, which data never uses."""
    return config.globals_ - 1


def snake(config):
    """Tiles in a path where consecutive tiles are neighbours: row 0 west to
    east, row 1 east to west, ..."""
    order = []
    for r in range(config.rows):
        cols = range(config.columns) if r % 2 == 0 else reversed(range(config.columns))
        order += [r * config.columns + c for c in cols]
    return order


def _direction(config, a, b):
    ra, ca = divmod(a, config.columns)
    rb, cb = divmod(b, config.columns)
    return next(d for d, step in OFFSET.items() if step == (rb - ra, cb - ca))



def conv_latency(config):
    """Cycles from a convolver tile's last input word entering the grid to its
    output leaving it at full rate: the global input line's push, the
    operator-input sink, the convolver and the global output line (measured,
    tests/test_tile.py)."""
    return PUSH_LATENCY + SINK_LATENCY + convolver_latency(config.kernel) + LINE_LATENCY


#: Cycles by which each link of a chain lags the previous one: a convolver
#: fires its windows without waiting for partial sums (they join after its
#: output buffer), so a link waits only for the join's stages and the two
#: FIFOs of the neighbour link, its output's and the next link's partial-sum
#: input (measured on a chain, tests/test_tile.py).  The
#: output buffer holds ``psum_slack`` (64) sums waiting for their partial
#: sums; a link further down than that many cycles of lag takes its input
#: later, and a line that an earlier link also reads would then hold back
#: every reader of the fork, one buffer's worth per lag.  So a tile reading a
#: line further down its chain than the line's first reader takes it through
#: its FIFO bank.
HOP_LAG = JOIN_LATENCY + 2 * SINK_LATENCY


def _term_sources(job):
    """Per output, the input of each of its terms."""
    return _kept(job, "_term_sources", lambda: [[src for src, _ in t] for t in job.terms])


def _pack(job, config, chain_length, ports):
    """Chains ``[(output, group, terms)]`` of each pass, with at most
    ``chain_length`` terms per chain, packed greedily in order (every output's
    first group, then every second group, ...; only outputs of one of the
    job's ``frame_groups`` in a pass); None when a single chain does not fit.
    A pass is limited by tiles, ``ports`` and global lines (the last input
    line is kept for weight frames, see :mod:`compiler.codegen`).

    Consecutive outputs that read the same maps in the same order (and are in
    one frame group) are alike (:func:`_alike`): once one of them starts a
    pass, that pass and each next one hold as many of their chains as the
    first fits (:func:`chains_per_pass`), so the greedy packing takes them a
    pass at a time; the others join or start passes chain by chain."""
    tiles, lines_in, lines_out = config.tiles, weight_line(config), config.globals_
    terms = job.terms
    groups = [-(-len(t) // chain_length) for t in terms]
    reads = _term_sources(job)
    frame_groups = job.frame_groups
    alike = _alike(job)
    passes, current = [], []
    sources, members, psums, used = set(), set(), 0, 0
    for g in range(max(groups)):
        start, stop = g * chain_length, (g + 1) * chain_length
        psum = 1 if g > 0 or job.initial else 0
        o = 0
        while o < len(terms):
            if g >= groups[o]:
                o += 1
                continue
            window = reads[o][start:stop]
            links = len(window)
            new = set(window) - sources
            n_in = len(sources) + len(new) + psums + psum
            if current and not (o in members or used + links > tiles or
                                n_in + len(current) + 1 > ports or n_in > lines_in or
                                len(current) + 1 > lines_out or
                                frame_groups is not None and frame_groups[o] != frame_groups[current[0][0]]):
                current.append((o, g, terms[o][start:stop]))       # joins the pass
                sources |= new
                members.add(o)
                psums += psum
                used += links
                o += 1
                continue
            new = set(window)                                       # starts a pass
            n_in = len(new) + psum
            if links > tiles or n_in + 1 > ports or n_in > lines_in:
                return None
            if current:
                passes.append(current)
            fit = chains_per_pass(len(new), links, psum, tiles, ports, lines_in, lines_out)
            end = alike[o]
            for first in range(o, end, fit):
                if first > o:
                    passes.append(current)
                current = [(p, g, terms[p][start:stop]) for p in range(first, min(first + fit, end))]
            sources, members = new, {p for p, _, _ in current}
            psums, used = psum * len(current), links * len(current)
            o = end
    if current:
        passes.append(current)
    return passes, groups


def _alike(job):
    """Per output ``o``: the end of the run of outputs from ``o`` on that read
    the same input maps in the same order as ``o`` (in the same frame group)."""
    def ends():
        reads, frame_groups = _term_sources(job), job.frame_groups
        found, end = [0] * len(reads), len(reads)
        for o in reversed(range(len(reads))):
            if o + 1 < len(reads) and (reads[o + 1] != reads[o] or
                                       frame_groups is not None and frame_groups[o + 1] != frame_groups[o]):
                end = o + 1
            found[o] = end
        return found
    return _kept(job, "_alike", ends)


def chains_per_pass(inputs, links, psum, tiles, ports, lines_in, lines_out):
    """How many chains of ``links`` links, all reading the same ``inputs``
    maps (and each a partial sum when ``psum``), one pass holds: each takes
    its tiles, an output line and port, and a line and port for its partial
    sum (0 when not even one fits)."""
    fit = 0
    while (fit + 1) * links <= tiles and inputs + (fit + 1) * (psum + 1) <= ports and \
            inputs + (fit + 1) * psum <= lines_in and fit + 1 <= lines_out:
        fit += 1
    return fit


def _pack_shared(job, config, ports, longest):
    """Chains of at most ``longest`` terms of each pass, built pass by pass for
    a sparse connection table: each next chain is the output whose remaining
    terms fill the most tiles per port, taking first the terms on input maps
    the pass already reads (free) and then new maps.  Same limits as
    :func:`_pack`; an output's chains are its groups in pass order.  Returns
    ``(passes, groups)``."""
    tiles, lines_in, lines_out = config.tiles, weight_line(config), config.globals_
    remaining = {o: list(t) for o, t in enumerate(job.terms)}
    groups = [0] * len(job.terms)
    passes = []
    sources_of = {o: {src for src, _ in t} for o, t in remaining.items()}     # an output reads a map once
    readers = {}                    # input map -> the outputs that read it
    for o, maps in sources_of.items():
        for src in maps:
            readers.setdefault(src, []).append(o)
    while remaining:
        chains, sources, used, n_ports, psums = [], set(), 0, 0, 0
        in_pass = set()
        shared = dict.fromkeys(remaining, 0)        # |sources_of[o] & sources|
        while len(chains) < lines_out:
            best = None
            room = min(tiles - used, longest)
            for o, terms in remaining.items():
                if o in in_pass:
                    continue
                psum = 1 if groups[o] or job.initial else 0
                room_ports = ports - n_ports - 1 - psum
                room_lines = lines_in - len(sources) - psums - psum
                if room_ports < 0 or room_lines < 0:
                    continue
                n_shared = shared[o]
                n_free = min(n_shared, room)
                n_new = min(len(terms) - n_shared, room - n_free, room_ports, room_lines)
                if n_free + n_new == 0:
                    continue
                score = (n_free + n_new) / (1 + psum + n_new)
                if best is None or score > best[0]:
                    best = (score, o, n_free, n_new, psum)
            if best is None:
                break
            _, o, n_free, n_new, psum = best
            chain = ([t for t in remaining[o] if t[0] in sources][:n_free] +
                     [t for t in remaining[o] if t[0] not in sources][:n_new])
            chains.append((o, groups[o], chain))
            in_pass.add(o)
            groups[o] += 1
            new = {src for src, _ in chain} - sources
            sources |= new
            for src in new:
                for reader in readers[src]:
                    if reader in remaining and src in sources_of[reader]:
                        shared[reader] += 1
            used += len(chain)
            n_ports += 1 + psum + len(new)
            psums += psum
            taken = {id(t) for t in chain}
            remaining[o] = [t for t in remaining[o] if id(t) not in taken]
            sources_of[o] -= {src for src, _ in chain}
            if not remaining[o]:
                del remaining[o]
        if not chains:
            return None
        passes.append(chains)
    return passes, groups

def _kept(job, name, make):
    """``make()``, computed once per job and kept on it (the blocking search asks often)."""
    if name not in job.__dict__:
        job.__dict__[name] = make()
    return job.__dict__[name]


def _rect_costs(rects, config):
    """(words, expected beats) of each rectangle of ``rects``."""
    return [(r.words, expected_beats(r.width, r.height, config.beat_words, r.stride)) for r in rects]


def _stream_costs(job, config):
    """``(inputs, outputs)``: (words, expected beats) of each input and output
    rectangle of ``job``."""
    return _kept(job, "_stream_costs", lambda: (_rect_costs((r for r, _ in job.inputs), config),
                                                _rect_costs(job.outputs, config)))


def _partial_costs(job, config):
    """(words, expected beats) of each output's partial sums between passes."""
    if job.partials is None:
        return _stream_costs(job, config)[1]
    return _kept(job, "_partial_costs", lambda: _rect_costs(job.partials[0], config))


def pass_shape(job, chains, config, groups=None):
    """The :class:`PassShape` of the pass made of ``chains`` (before it is built);
    ``groups``: each output's number of chains (by default each chain is its
    output's last)."""
    inputs, outputs = _stream_costs(job, config)
    partials = _partial_costs(job, config)
    memory_words = config.kernel ** 2
    sources = set()
    loads = kernel_words = tiles = longest = 0
    sums, ends, mapped = [], [], False
    for o, g, terms in chains:
        tiles += len(terms)
        longest = max(longest, len(terms))
        for src, kernel in terms:
            sources.add(src)
            if kernel is not None:
                loads += 1
                kernel_words += memory_words if type(kernel) is MemoryKernel else kernel_words_of(kernel)
        if g > 0 or job.initial:
            sums.append(partials[o] if g > 0 else outputs[o])
        last = groups is None or g == groups[o] - 1
        ends.append(outputs[o] if last else partials[o])
        mapped = mapped or last
    streams = [inputs[src] for src in sources] + sums + ends
    return PassShape(loads, kernel_words, tuple(w for w, _ in streams), tiles,
                     _chain_latency(job, longest, config, mapped), sum(b for _, b in streams))


def chain_latency(config, links):
    """Pipeline depth of a chain of ``links`` convolver links: the head
    convolver, then HOP_LAG per further link."""
    return conv_latency(config) + HOP_LAG * (links - 1)


def _chain_latency(job, longest, config, mapped):
    """Pipeline depth of a pass whose longest chain has ``longest`` links
    (:func:`chain_latency`), then (``mapped``: a chain of the pass ends its
    output's sum) the mapper and its input FIFO."""
    return chain_latency(config, longest) + (_mapper_latency(job) if mapped else 0)


def _pooling(job):
    """Whether the job's chains end in the mapper's pool stage."""
    return job.mapper is not None and "pool" in job.mapper


def _mapper_latency(job):
    """The mapper (and its pool stage) behind an operator and its input FIFO (0 without a mapper)."""
    if job.mapper is None:
        return 0
    return SINK_LATENCY + mapper_latency(_pooling(job))


def _stream_latency(job, config):
    """Pipeline depth of a StreamJob's tile: the global input line's push,
    input FIFO, ALU (DIV is the slow path), mapper, global output line."""
    alu = 0 if job.alu is None else SINK_LATENCY + alu_latency(job.alu["op"], config.fmt.width)
    return PUSH_LATENCY + alu + _mapper_latency(job) + LINE_LATENCY


def _weight_port(job):
    """1 when passes keep a streamer port for the next pass's weight frame: when
    the job has two or more distinct kernels.  With one kernel (pooling), the
    tiles keep it from pass to pass, and a tile that still needs it gets it
    before the pass's data streams (see :mod:`compiler.codegen`); with kernels
    read from memory (streamed weights), the frame is short beside the pass's
    streams, which take every port instead."""
    first = None
    for terms in job.terms:
        for _, kernel in terms:
            if kernel is None:
                continue
            if isinstance(kernel, MemoryKernel):
                return 0
            if first is None:
                first = kernel
            elif kernel != first:
                return 1
    return 0


#: Outputs form a connection table when each reads on average at most this
#: share of the input maps its group of outputs reads (scene parsing's read a
#: half); a dense or grouped layer whose few kernels rounded to zero reads
#: nearly all of them.
SPARSE_READS = 0.75


def _overlapping_inputs(job):
    """Whether outputs read different but overlapping sets of input maps (a
    connection table, :data:`SPARSE_READS`), where chains that share inputs
    pay: not when all read (nearly) the same maps, nor when the sets fall into
    disjoint groups that each read (nearly) all of their group's maps
    (grouped convolutions, whose outputs in order already share them)."""
    distinct = {frozenset(src for src, _ in t) for t in job.terms}
    if len(distinct) < 2:
        return False
    parent = {}

    def root(src):
        while parent.setdefault(src, src) != src:
            src = parent[src]
        return src

    for reads in distinct:
        first = root(next(iter(reads)))
        for src in reads:
            parent[root(src)] = first
    groups = {}
    for reads in distinct:
        groups.setdefault(root(next(iter(reads))), []).append(reads)
    for sets in groups.values():
        union = len(frozenset().union(*sets))
        if len(sets) > 1 and sum(map(len, sets)) <= SPARSE_READS * union * len(sets):
            return True
    return False


#: A job of more terms than this tries chains of at least half the longest
#: length only (shorter chains only add partial-sum round trips there).
LONG_SEARCH_TERMS = 20_000


def conv_packings(job, config):
    """Every blocking of a ConvJob that fits the grid (of a large job, see
    :data:`LONG_SEARCH_TERMS`): ``{chain length: (passes, groups)}``, and ``("shared", chain length)`` (:func:`_pack_shared`) for
    the whole grid and for a half, a third and a quarter of it when the
    outputs read overlapping sets of input maps (:func:`_overlapping_inputs`;
    shorter chains drain sooner and, sharing inputs, leave ports for partial
    sums)."""
    longest = max(len(t) for t in job.terms)
    ports = config.ports - _weight_port(job)
    result = {}
    top = min(longest, config.tiles)
    shortest = 1 if sum(map(len, job.terms)) <= LONG_SEARCH_TERMS else -(-top // 2)
    for length in range(shortest, top + 1):
        packed = _pack(job, config, length, ports)
        if packed is not None:
            result[length] = packed
    if job.frame_groups is None and _overlapping_inputs(job):
        for length in sorted({-(-config.tiles // n) for n in range(1, 5)}):
            packed = _pack_shared(job, config, ports, min(length, longest))
            if packed is not None:
                result["shared", length] = packed
    return result


def conv_passes(job, config, window, packing):
    """Passes for a ConvJob blocked as ``packing`` (from :func:`conv_packings`)."""
    chains_of_passes, groups = packing
    path = snake(config)
    hops = [_direction(config, a, b) for a, b in zip(path, path[1:])]
    total_terms = sum(len(t) for t in job.terms)
    return [_conv_pass(job, chains, groups, path, hops, window, total_terms, config)
            for chains in chains_of_passes]


def _link_inputs(hops):
    """Per position on the path after the first: the sink of the partial sum
    from the previous tile (the neighbour link it comes in on)."""
    return [f"{OPPOSITE[hop]}_in" for hop in hops]


def _conv_pass(job, chains, groups, path, hops, window, total_terms, config):
    # line: input map -> its global line, in order of first use.  A global line
    # forks to every tile reading it, and a word moves only when all of them
    # take it; a tile j links down a chain may consume it up to HOP_LAG * j
    # cycles after the head, so one that lags the line's earliest reader
    # (earliest: its least link index) takes the line through its FIFO bank
    # (see :data:`HOP_LAG`).
    line, earliest = {}, {}
    for _, _, terms in chains:
        for j, (src, _) in enumerate(terms):
            if src not in line:
                line[src] = len(line)
                earliest[src] = j
            elif j < earliest[src]:
                earliest[src] = j
    reads = [(n, job.inputs[src][0]) for src, n in line.items()]
    writes = []
    tiles = []
    pos = 0
    next_line = len(line)
    max_mode = job.mode == ConvMode.MAX
    link_in = _kept(job, "_link_inputs", lambda: _link_inputs(hops))
    configs = _kept(job, "_conv_configs", dict)
    inputs, mapper = job.inputs, job.mapper
    mac, mac_psum = ConvMode.MAC, ConvMode.MAC_PSUM
    # A link inside a chain: its convolver configuration by input (no bias, MAX or MAC_PSUM).
    inner = _kept(job, "_inner_configs", dict)
    for ol, (o, g, terms) in enumerate(chains):
        last_group = g == groups[o] - 1
        psum_line = None
        if g > 0 or job.initial:
            psum_line = next_line
            next_line += 1
            reads.append((psum_line, _partial(job, o) if g > 0 else job.initial[o]))
        end = len(terms) - 1
        for j, (src, kernel) in enumerate(terms):
            if j > 0:
                psum_from = link_in[pos - 1]
            else:
                psum_from = None if psum_line is None else f"global_in_{psum_line}"
            pooling = j == end and last_group and mapper is not None
            out = None if j == end else hops[pos]
            key = (j > earliest[src], line[src], psum_from, out, ol, pooling)
            routes = _ROUTES.get(key) or _routes(*key)
            conv = inner.get(src) if 0 < j < end else None
            if conv is None:
                rect, k = inputs[src]
                if max_mode:
                    mode = ConvMode.MAX
                elif j == 0 and psum_line is None:
                    mode = mac
                else:
                    mode = mac_psum
                key = (rect.width, rect.height, k, mode, job.bias[o] if (j == 0 and g == 0) else 0)
                conv = configs.get(key) or _conv_config(job, configs, *key)
                if 0 < j < end:
                    inner[src] = conv
            tiles.append(TileSetup(path[pos], routes, conv, None, mapper if pooling else None, kernel))
            pos += 1
        if last_group or job.partials is None:
            writes.append((ol, job.outputs[o], window))
        else:
            writes.append((ol, job.partials[0][o], job.partials[1]))
    macs = 0
    if job.macs:
        macs = job.macs * sum(len(t) for _, _, t in chains) // max(total_terms, 1)
    longest = max(len(t) for _, _, t in chains)
    mapped = any(g == groups[o] - 1 for o, g, _ in chains)
    return Pass(tiles, reads, writes, macs, latency=_chain_latency(job, longest, config, mapped))


_ROUTES = {}


def _routes(through_fifo, line, psum_from, out, ol, mapper):
    """A chain link's routes (one dict per distinct set, shared): its input from
    global ``line`` (through FIFO 0 when it lags the line's first reader), its
    partial sum from ``psum_from``, its sum to the neighbour ``out`` or, at the
    chain's end, to global output ``ol`` (through the mapper with ``mapper``)."""
    key = (through_fifo, line, psum_from, out, ol, mapper)
    routes = _ROUTES.get(key)
    if routes is None:
        if through_fifo:
            routes = {"fifo_0_in": f"global_in_{line}", "convolver_in": "fifo_0"}
        else:
            routes = {"convolver_in": f"global_in_{line}"}
        if psum_from is not None:
            routes["convolver_psum"] = psum_from
        if out is not None:
            routes[f"{out}_out"] = "convolver"
        elif mapper:
            routes["mapper_in"] = "convolver"
            routes[f"global_out_{ol}"] = "mapper"
        else:
            routes[f"global_out_{ol}"] = "convolver"
        routes = _ROUTES[key] = routes
    return routes


def _conv_config(job, configs, width, height, k, mode, bias):
    """A link's convolver configuration (one dict per distinct one in the job,
    shared in ``configs``)."""
    key = (width, height, k, mode, bias)
    conv = configs.get(key)
    if conv is None:
        conv = configs[key] = {"width": width, "height": height, "k": k, "stride": job.stride, "mode": mode,
                               "shift": 0 if mode == ConvMode.MAX else job.shift, "bias": bias}
    return conv


def _partial(job, o):
    """Where output ``o``'s partial sums wait between its passes: its own
    rectangle, or the job's partial-sum buffer."""
    return job.outputs[o] if job.partials is None else job.partials[0][o]


def stream_passes(jobs, config, window):
    """Passes for StreamJobs: one tile each, as many per pass as ports and lines allow."""
    path = snake(config)
    passes, current = [], []

    def need(jobs_):
        ins = sum(2 if j.b is not None else 1 for j in jobs_)
        return ins, len(jobs_)

    for job in jobs:
        ins, outs = need(current + [job])
        if current and (ins + outs > config.ports or ins > weight_line(config) or
                        outs > config.globals_ or len(current) + 1 > len(path)):
            passes.append(current)
            current = []
        current.append(job)
    if current:
        passes.append(current)
    result = []
    for group in passes:
        tiles, reads, writes = [], [], []
        line = 0
        for n, job in enumerate(group):
            routes = {}
            if job.alu is not None:
                routes["alu_a"] = f"global_in_{line}"
                reads.append((line, job.a))
                line += 1
                if job.b is not None:
                    routes["alu_b"] = f"global_in_{line}"
                    reads.append((line, job.b))
                    line += 1
                src = "alu"
            else:
                src = None
                reads.append((line, job.a))
                routes["mapper_in"] = f"global_in_{line}"
                line += 1
            if job.mapper is not None and src is not None:
                routes["mapper_in"] = src
            routes[f"global_out_{n}"] = "mapper" if job.mapper is not None else src
            writes.append((n, job.out, window))
            tiles.append(TileSetup(path[n], routes, alu=job.alu, mapper=job.mapper))
        result.append(Pass(tiles, reads, writes, 0,
                           latency=max(_stream_latency(job, config) for job in group)))
    return result
