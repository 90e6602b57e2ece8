"""Lowering and scheduling: IR nodes -> dataflow jobs -> passes on the grid.

Memory layout.  Every tensor lives in a :class:`Buffer`: C maps stored one
after the other, each with a border of ``pads`` words (zeros for
convolutions, the smallest word for max pooling) that the memory image
initialises and nothing ever writes.  Padding therefore costs nothing at run
time: a padded convolution reads a larger rectangle.  Buffers never overlap.

Jobs.  A :class:`ConvJob` is a set of output maps, each the sum of
convolutions of input rectangles (maps, pieces of a kernel larger than K,
chunks of a flattened vector) with k x k kernels, plus bias, then an optional
mapper.  A :class:`StreamJob` is a term-by-term ALU operation and/or a mapper
over rectangles.

Passes.  A :class:`Pass` is one configuration of the grid and one set of
streamer transfers.  Each output map is computed by a *chain* of tiles along
a snake path through the grid: tile j convolves input j and adds the partial
sum of tile j-1 (``MAC_PSUM`` through a neighbour link).  When an output needs
more terms than one chain holds, it takes several passes and the partial
sum goes through memory, in place in the output buffer: the next pass's chain
head reads it as its partial-sum stream and the chain tail overwrites it.
Bias comes with the first pass, the mapper with the last.  Chains of one
pass that use the same inputs share one input stream (the global line forks
to every tile that listens).  The blocking (terms per chain) is chosen per
layer to minimise the estimated cycles.
"""

import math
from dataclasses import dataclass, field

import numpy as np

from neuflow_hdl.alu import alu_latency
from neuflow_hdl.convolver import convolver_latency
from neuflow_hdl.mapper import MAPPER_LATENCY
from neuflow_hdl.regs import OFFSET, OPPOSITE, AluOp, ConvMode
from neuflow_hdl.stream import FIFO_LATENCY

from .codegen import weight_line
from .errors import CompileError
from .quantise import mapper_for, quantise_kernel

__all__ = ["Rect", "Buffer", "ConvJob", "StreamJob", "TileSetup", "Pass", "Layer", "snake",
           "plan_buffers", "allocate", "chunk_side", "kernel_pieces", "avgpool_weight", "lower_node",
           "conv_packings", "conv_passes", "pass_summary", "stream_passes"]


@dataclass(frozen=True)
class Rect:
    """A 2-D rectangle of words in memory."""
    base: int
    width: int
    height: int
    stride: int

    @property
    def words(self):
        return self.width * self.height


@dataclass
class Buffer:
    tensor: str
    channels: int
    height: int
    width: int
    frac: int
    pads: tuple = (0, 0, 0, 0)          #: top, left, bottom, right
    pad_value: int = 0
    tail: int = 0                       #: extra words after the maps (flat chunk reads)
    base: int = 0

    @property
    def row(self):
        return self.width + self.pads[1] + self.pads[3]

    @property
    def rows(self):
        return self.height + self.pads[0] + self.pads[2]

    @property
    def map_words(self):
        return self.rows * self.row

    @property
    def size(self):
        return self.channels * self.map_words + self.tail

    @property
    def flat(self):
        return not any(self.pads)

    def rect(self, c, top, left, height, width):
        """Rectangle of map ``c`` whose top-left is (``top``, ``left``) relative to
        the interior's origin (negative values reach into the border)."""
        t, l = self.pads[0], self.pads[1]
        if not (0 <= t + top and top + height <= self.height + self.pads[2] and
                0 <= l + left and left + width <= self.width + self.pads[3]):
            raise AssertionError(f"{self.tensor}: rectangle outside the padded map")
        return Rect(self.base + c * self.map_words + (t + top) * self.row + l + left,
                    width, height, self.row)

    def interior(self, c):
        return self.rect(c, 0, 0, self.height, self.width)

    def initial(self):
        """The buffer's words in the memory image: pads set, interior zero."""
        m = np.full((self.channels, self.rows, self.row), self.pad_value, dtype=np.int64)
        t, l = self.pads[0], self.pads[1]
        m[:, t:t + self.height, l:l + self.width] = 0
        return np.concatenate([m.ravel(), np.zeros(self.tail, dtype=np.int64)])

    def scatter(self, codes):
        """Words of the whole buffer holding ``codes`` (C, H, W) in the interior."""
        words = self.initial()
        m = words[:self.channels * self.map_words].reshape(self.channels, self.rows, self.row)
        t, l = self.pads[0], self.pads[1]
        m[:, t:t + self.height, l:l + self.width] = codes
        return words

    def gather(self, words):
        """The interior (C, H, W) of the buffer from its words."""
        m = np.asarray(words[:self.channels * self.map_words]).reshape(
            self.channels, self.rows, self.row)
        t, l = self.pads[0], self.pads[1]
        return m[:, t:t + self.height, l:l + self.width]


@dataclass
class ConvJob:
    mode: ConvMode
    stride: int
    shift: int
    inputs: list            #: [(Rect, k)]: the input streams
    outputs: list           #: [Rect]: one per output map
    terms: list             #: per output: [(input index, k x k kernel codes or None)]
    bias: list              #: per output: accumulator-format bias
    mapper: dict = None     #: mapper configuration after the last term, or None
    macs: int = 0           #: useful multiply-accumulates (for utilisation)


@dataclass
class StreamJob:
    a: Rect
    out: Rect
    b: Rect = None          #: second ALU operand stream (None: constant or no ALU)
    alu: dict = None        #: ALU configuration, or None (mapper only)
    mapper: dict = None


@dataclass
class TileSetup:
    tile: int
    routes: dict
    convolver: dict = None
    alu: dict = None
    mapper: dict = None
    weights: np.ndarray = None      #: k*k kernel words to load, or None


@dataclass
class Pass:
    tiles: list                     #: [TileSetup]
    reads: list                     #: [(line, Rect)]  memory -> global_in[line]
    writes: list                    #: [(line, Rect, (window_base, window_size))]
    macs: int = 0
    latency: int = 0                #: pipeline depth of the longest path (estimate)


@dataclass
class Layer:
    """One IR node after lowering: its passes and what the report needs."""
    name: str
    op: str
    output: str
    passes: list = field(default_factory=list)
    macs: int = 0
    shape: tuple = ()
    notes: list = field(default_factory=list)
    error_bound: float = 0.0


# -- Grid geometry ----------------------------------------------------------------

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


# -- Buffers -----------------------------------------------------------------------

def _conv_geometry(node, shapes, K):
    """(kh, kw, stride, pads, pieces, Ho, Wo) of a conv-like node; pieces are
    (dy, dx, ph, pw) blocks of at most K x K."""
    c, h, w = shapes[node.inputs[0]]
    if node.op == "conv":
        kh, kw = node.params["weight"].shape[2:]
    else:
        kh, kw = node.attrs["kernel"]
    sh, sw = node.attrs["stride"]
    if sh != sw:
        raise CompileError(f"strides {sh}x{sw}: the convolver has one stride for both axes", node)
    t, l, b, r = node.attrs["pads"]
    ho, wo = (h + t + b - kh) // sh + 1, (w + l + r - kw) // sw + 1
    return kh, kw, sh, (t, l, b, r), kernel_pieces(kh, kw, K), ho, wo


def kernel_pieces(kh, kw, K):
    """A kh x kw kernel as (dy, dx, ph, pw) blocks of at most K x K, row-major."""
    return [(dy, dx, min(K, kh - dy), min(K, kw - dx))
            for dy in range(0, kh, K) for dx in range(0, kw, K)]


def avgpool_weight(node, channels):
    """The depthwise kernel an average-pooling node is: the mean of its window."""
    kh, kw = node.attrs["kernel"]
    return np.full((channels, 1, kh, kw), 1.0 / (kh * kw))


def _consumer_pads(node, graph, config):
    """(top, left, bottom, right, pad value kind) that ``node`` needs around its input."""
    K = config.kernel
    if node.op in ("conv", "avgpool", "maxpool"):
        kh, kw, s, (t, l, b, r), pieces, ho, wo = _conv_geometry(node, graph.shapes, K)
        _, h, w = graph.shapes[node.inputs[0]]
        if node.op == "maxpool":
            if kh != kw or kh > K:
                raise CompileError(f"max pooling window {kh}x{kw}: the convolver's window max "
                                   f"needs a square window of at most {K}x{K}", node)
        bottom = right = 0
        for dy, dx, ph, pw in pieces:
            kp = max(ph, pw)
            bottom = max(bottom, dy + (ho - 1) * s + kp - (t + h))
            right = max(right, dx + (wo - 1) * s + kp - (l + w))
        return (t, l, max(bottom, 0), max(right, 0), "min" if node.op == "maxpool" else "zero")
    return (0, 0, 0, 0, None)


def plan_buffers(graph, formats, config):
    """A :class:`Buffer` per tensor, with the borders its consumers need."""
    buffers = {}
    fmt = config.fmt
    tensors = [graph.input] + [n.output for n in graph.nodes]
    for t in tensors:
        c, h, w = graph.shapes[t]
        pads, kind, who = [0, 0, 0, 0], None, None
        for user in graph.consumers(t):
            p = _consumer_pads(user, graph, config)
            if any(p[:4]):
                if kind is not None and p[4] != kind:
                    raise CompileError(f"input {t!r} is padded with zeros for {who!r} and with the "
                                       "smallest word for this node; one buffer cannot hold both",
                                       user)
                kind, who = p[4], user.name
                pads = [max(a, b) for a, b in zip(pads, p[:4])]
        buffers[t] = Buffer(t, c, h, w, formats[t], tuple(pads),
                            fmt.min if kind == "min" else 0)
        for user in graph.consumers(t):
            if user.op == "gemm":       # read flat in k x k chunks (see lower_gemm)
                k = chunk_side(c * h * w, config.kernel)
                buffers[t].tail = max(buffers[t].tail, -(-(c * h * w) // (k * k)) * k * k - c * h * w)
    return buffers


def chunk_side(features, K):
    """Side of the k x k chunks a fully connected layer reads its flat input in."""
    return min(K, math.isqrt(features - 1) + 1)


def allocate(buffers, start, align=16):
    """Give every buffer its own memory (no overlaps); returns the first free address."""
    address = start
    for b in buffers.values():
        address = -(-address // align) * align
        b.base = address
        address += b.size
    return address


# -- Lowering ----------------------------------------------------------------------

def _strips(width_needed, wo, s, kp, max_width):
    """Split ``wo`` output columns into strips whose input rows fit the line buffers."""
    if width_needed(wo) <= max_width:
        return [(0, wo)]
    per = (max_width - kp) // s + 1
    if per < 1:
        raise AssertionError("kernel wider than max_width")
    return [(x0, min(per, wo - x0)) for x0 in range(0, wo, per)]


def _nonzero(chain):
    """Drop all-zero kernels (they add nothing) but keep at least one term (the bias)."""
    kept = [t for t in chain if t[1] is None or t[1].any()]
    return kept or chain[:1]


def _mapper(node, frac, config):
    """(mapper configuration or None, report notes) of ``node``'s activation on
    words of ``frac`` fraction bits."""
    act = node.attrs.get("act")
    if act is None:
        return None, []
    choice = mapper_for(act, frac, config.fmt, config.segments, node=node)
    return choice.config, [f"mapper {choice.name}: max error {choice.max_error:.4g}"]


def lower_conv(node, graph, buffers, config, weight):
    """A convolution-like node (conv, avgpool, affine, maxpool) as ConvJobs."""
    K, fmt = config.kernel, config.fmt
    x, y = buffers[node.inputs[0]], buffers[node.output]
    fi, fo = x.frac, y.frac
    kh, kw, s, (t, l, _, _), pieces, ho, wo = _conv_geometry(node, graph.shapes, K)
    cin = x.channels
    is_max = node.op == "maxpool"
    groups = cin if is_max else node.attrs.get("groups", 1)
    cout = y.channels
    cin_g = cin // groups
    per_group_out = cout // groups
    mapper, notes = _mapper(node, fo, config)
    if is_max:
        codes, bias_codes, shift = None, [0] * cout, 0
        if fi != fo:
            raise AssertionError("max pooling changes no format")
    else:
        codes, bias_codes, _, shift = quantise_kernel(weight, fi, fo, fmt, node=node,
                                                      bias=node.params["bias"])
    # Useful work: only (output, input) pairs with a kernel (a connection table
    # is a dense convolution with zero kernels, which the chains skip).
    connected = 0 if is_max else int(np.count_nonzero(np.any(weight != 0, axis=(2, 3))))
    kmax = max(max(ph, pw) for _, _, ph, pw in pieces)
    strips = _strips(lambda n: (n - 1) * s + kmax, wo, s, kmax, config.max_width)
    jobs = []
    for x0, wn in strips:
        inputs, index = [], {}
        for c in range(cin):
            for p, (dy, dx, ph, pw) in enumerate(pieces):
                kp = max(ph, pw)
                rect = x.rect(c, dy - t, dx + x0 * s - l, (ho - 1) * s + kp, (wn - 1) * s + kp)
                index[c, p] = len(inputs)
                inputs.append((rect, kp))
        outputs, terms = [], []
        for o in range(cout):
            outputs.append(y.rect(o, 0, x0, ho, wn))
            g = o // per_group_out if not is_max else o
            chain = []
            for ci in range(cin_g):
                c = g * cin_g + ci
                for p, (dy, dx, ph, pw) in enumerate(pieces):
                    if is_max:
                        chain.append((index[c, p], None))
                        continue
                    kp = max(ph, pw)
                    kern = np.zeros((kp, kp), dtype=np.int64)
                    kern[:ph, :pw] = codes[o, ci, dy:dy + ph, dx:dx + pw]
                    chain.append((index[c, p], kern))
            terms.append(_nonzero(chain))
        macs = 0 if is_max else ho * wn * kh * kw * connected
        jobs.append(ConvJob(ConvMode.MAX if is_max else ConvMode.MAC, s, shift, inputs, outputs,
                            terms, [int(b) for b in bias_codes], mapper, macs))
    return jobs, notes


def lower_gemm(node, graph, buffers, config):
    """A fully connected layer as a convolution over chunks of its flat input."""
    K, fmt = config.kernel, config.fmt
    x, y = buffers[node.inputs[0]], buffers[node.output]
    w = node.params["weight"]
    n_out, features = w.shape
    codes, bias_codes, _, shift = quantise_kernel(w, x.frac, y.frac, fmt, node=node,
                                                  bias=node.params["bias"])
    if not x.flat:
        # Stored with borders for another consumer: one term per map.
        if not (x.height == x.width and x.height <= K):
            raise CompileError(f"input {node.inputs[0]!r} is stored with borders and its "
                               f"{x.height}x{x.width} maps exceed the {K}x{K} kernel; a fully "
                               "connected layer reads it flat", node)
        k = x.height
        inputs = [(x.interior(c), k) for c in range(x.channels)]
    else:
        # Flat: the densest k x k chunks (fewest terms, most MACs per word).
        k = chunk_side(features, K)
        chunks = -(-features // (k * k))
        inputs = [(Rect(x.base + c * k * k, k, k, k), k) for c in range(chunks)]
    mapper, notes = _mapper(node, y.frac, config)
    padded = np.zeros((n_out, len(inputs) * k * k), dtype=np.int64)
    padded[:, :features] = codes
    outputs, terms = [], []
    for n in range(n_out):
        outputs.append(y.interior(n))
        terms.append(_nonzero([(c, padded[n, c * k * k:(c + 1) * k * k].reshape(k, k))
                               for c in range(len(inputs))]))
    return [ConvJob(ConvMode.MAC, 1, shift, inputs, outputs, terms,
                    [int(b) for b in bias_codes], mapper, n_out * features)], notes


def _maps(buffers_, tensor_shape):
    """Per-map interior rectangles of every buffer, or one rectangle each when all are flat."""
    c, h, w = tensor_shape
    if all(b.flat for b in buffers_):
        return [[Rect(b.base, w, c * h, w) for b in buffers_]]
    return [[b.interior(m) for b in buffers_] for m in range(c)]


def lower_stream(node, graph, buffers, config):
    """Term-by-term layers: ALU operations and stand-alone activations."""
    fmt = config.fmt
    y = buffers[node.output]
    mapper, notes = _mapper(node, y.frac, config)
    if node.op == "act":
        x = buffers[node.inputs[0]]
        return [StreamJob(a, out, mapper=mapper) for a, out in
                _maps([x, y], graph.shapes[node.output])], notes
    a_buf, b_buf = buffers[node.inputs[0]], buffers[node.inputs[1]]
    op = node.attrs["op"]
    fa, fb, fo = a_buf.frac, b_buf.frac, y.frac
    shift = {"mul": fa + fb - fo, "div": fo - fa + fb}.get(op, 0)
    if op in ("add", "sub", "max", "min") and not fa == fb == fo:
        raise AssertionError("tied formats differ")
    if not 0 <= shift <= fmt.width:
        raise CompileError(f"operand formats Q.{fa} and Q.{fb} give an output shift of {shift}, "
                           f"outside 0 .. {fmt.width}", node)
    alu_op = {"add": AluOp.ADD, "sub": AluOp.SUB, "mul": AluOp.MUL, "div": AluOp.DIV,
              "max": AluOp.MAX, "min": AluOp.MIN}[op]
    if op == "mul" and node.inputs[0] == node.inputs[1]:
        alu = {"op": AluOp.SQUARE, "b_const": 1, "shift": shift, "const": 0}
        return [StreamJob(a, out, alu=alu, mapper=mapper) for a, out in
                _maps([a_buf, y], graph.shapes[node.output])], notes
    alu = {"op": alu_op, "b_const": 0, "shift": shift, "const": 0}
    return [StreamJob(a, out, b=b, alu=alu, mapper=mapper) for a, b, out in
            _maps([a_buf, b_buf, y], graph.shapes[node.output])], notes


def lower_node(node, graph, buffers, config):
    """Jobs and report notes for one IR node."""
    if node.op == "conv":
        return lower_conv(node, graph, buffers, config, node.params["weight"])
    if node.op == "avgpool":
        c = graph.shapes[node.inputs[0]][0]
        lowered = type(node)("conv", node.name, node.onnx_op, node.inputs, node.output,
                             dict(node.attrs, groups=c),
                             {"weight": avgpool_weight(node, c), "bias": np.zeros(c)})
        return lower_conv(lowered, graph, buffers, config, lowered.params["weight"])
    if node.op == "affine":
        c = graph.shapes[node.inputs[0]][0]
        lowered = type(node)("conv", node.name, node.onnx_op, node.inputs, node.output,
                             {"stride": (1, 1), "pads": (0, 0, 0, 0), "groups": c,
                              "act": node.attrs.get("act")},
                             {"weight": node.params["scale"].reshape(c, 1, 1, 1),
                              "bias": node.params["shift"]})
        return lower_conv(lowered, graph, buffers, config, lowered.params["weight"])
    if node.op == "maxpool":
        return lower_conv(node, graph, buffers, config, None)
    if node.op == "gemm":
        return lower_gemm(node, graph, buffers, config)
    if node.op in ("eltwise", "act"):
        return lower_stream(node, graph, buffers, config)
    raise CompileError(f"no lowering for IR operator {node.op}", node)


# -- Passes ------------------------------------------------------------------------

def conv_latency(config):
    """Cycles from a convolver tile's last input word to its output leaving the
    tile at full rate: the operator-input FIFO, the convolver and the
    tile-output FIFO (measured, tests/test_tile.py)."""
    return FIFO_LATENCY + convolver_latency(config.kernel) + FIFO_LATENCY


#: Cycles by which each link of a chain lags the previous one: a convolver
#: fires its windows without waiting for partial sums (they join after its
#: output buffer), so a link waits only for the two join stages and the FIFOs
#: of the neighbour link (measured on a chain, tests/test_tile.py).  The
#: output buffer holds ``psum_slack`` (64) sums waiting for their partial
#: sums; a link further down than that many cycles of lag takes its input
#: later, and a line that an earlier link also reads would then hold back
#: every reader of the fork, one buffer's worth per lag.  So a tile reading a
#: line further down its chain than the line's first reader takes it through
#: its FIFO bank.
HOP_LAG = 6


def _pack(job, config, chain_length, ports):
    """Chains ``[(output, group, terms)]`` of each pass, with at most
    ``chain_length`` terms per chain, packed greedily in order (every output's
    first group, then every second group, ...); None when a single chain does
    not fit.  A pass is limited by tiles, ``ports`` and global lines (the last
    input line is kept for weight frames, see :mod:`compiler.codegen`)."""
    tiles, lines_in, lines_out = config.tiles, weight_line(config), config.globals_
    groups = [-(-len(t) // chain_length) for t in job.terms]
    passes, current = [], []
    sources, outputs, psums, used = set(), set(), 0, 0
    for g in range(max(groups)):
        for o, terms in enumerate(job.terms):
            if g >= groups[o]:
                continue
            chain = terms[g * chain_length:(g + 1) * chain_length]
            new = {src for src, _ in chain} - sources
            psum = 1 if g > 0 else 0
            n_in = len(sources) + len(new) + psums + psum
            if current and (o in outputs or used + len(chain) > tiles or
                            n_in + len(current) + 1 > ports or n_in > lines_in or
                            len(current) + 1 > lines_out):
                passes.append(current)
                current, sources, outputs, psums, used = [], set(), set(), 0, 0
                new = {src for src, _ in chain}
                n_in = len(new) + psum
            if len(chain) > tiles or n_in + 1 > ports or n_in > lines_in:
                return None
            current.append((o, g, chain))
            sources |= new
            outputs.add(o)
            psums += psum
            used += len(chain)
    if current:
        passes.append(current)
    return passes, groups


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
    while remaining:
        chains, sources, used, n_ports, psums = [], set(), 0, 0, 0
        while len(chains) < lines_out:
            best = None
            for o, terms in remaining.items():
                if any(c[0] == o for c in chains):
                    continue
                psum = 1 if groups[o] else 0
                room_ports = ports - n_ports - 1 - psum
                room_lines = lines_in - len(sources) - psums - psum
                if room_ports < 0 or room_lines < 0:
                    continue
                n_shared = len(sources_of[o] & sources)
                room = min(tiles - used, longest)
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
            groups[o] += 1
            new = {src for src, _ in chain} - sources
            sources |= new
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


def pass_summary(job, chains, config):
    """What the cycle estimate needs of a pass before it is built: (weight loads,
    weight words, stream lengths, tiles, latency)."""
    sources = {src for _, _, terms in chains for src, _ in terms}
    streams = [job.inputs[src][0].words for src in sources]
    streams += [job.outputs[o].words for o, g, _ in chains if g > 0]
    streams += [job.outputs[o].words for o, _, _ in chains]
    loads = words = tiles = 0
    for _, _, terms in chains:
        tiles += len(terms)
        for src, k in terms:
            if k is not None:
                loads += 1
                words += job.inputs[src][1] ** 2
    return loads, words, streams, tiles, _latency(job, chains, config)


def _latency(job, chains, config):
    """Pipeline depth of a pass's longest path: the head convolver, HOP_LAG per
    further link of the longest chain, then the mapper and its input FIFO."""
    return (conv_latency(config) + HOP_LAG * (max(len(t) for _, _, t in chains) - 1) +
            _mapper_latency(job))


def _mapper_latency(job):
    """The mapper behind an operator and its input FIFO (0 without a mapper)."""
    if job.mapper is None:
        return 0
    return FIFO_LATENCY + MAPPER_LATENCY


def _stream_latency(job, config):
    """Pipeline depth of a StreamJob's tile: input FIFO, ALU (DIV is the slow
    path), mapper, output FIFO."""
    alu = 0 if job.alu is None else FIFO_LATENCY + alu_latency(job.alu["op"], config.fmt.width)
    return alu + _mapper_latency(job) + FIFO_LATENCY


def _weight_port(job):
    """1 when passes keep a streamer port for the next pass's weight frame: when
    the job has two or more distinct kernels.  With one kernel (pooling), the
    tiles keep it from pass to pass, and a tile that still needs it gets it
    before the pass's data streams (see :mod:`compiler.codegen`)."""
    first = None
    for terms in job.terms:
        for _, kernel in terms:
            if kernel is None:
                continue
            if first is None:
                first = kernel
            elif kernel.shape != first.shape or np.any(kernel != first):
                return 1
    return 0


def conv_packings(job, config):
    """Every blocking of a ConvJob that fits the grid: ``{chain length: (passes,
    groups)}``, and ``("shared", chain length)`` (:func:`_pack_shared`) for
    the whole grid and for a half, a third and a quarter of it when the
    outputs read different input maps (shorter chains drain sooner and,
    sharing inputs, leave ports for partial sums)."""
    longest = max(len(t) for t in job.terms)
    ports = config.ports - _weight_port(job)
    result = {}
    for length in range(1, min(longest, config.tiles) + 1):
        packed = _pack(job, config, length, ports)
        if packed is not None:
            result[length] = packed
    if len({frozenset(src for src, _ in t) for t in job.terms}) > 1:
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


def _conv_pass(job, chains, groups, path, hops, window, total_terms, config):
    sources = []
    for _, _, terms in chains:
        for src, _ in terms:
            if src not in sources:
                sources.append(src)
    line = {src: n for n, src in enumerate(sources)}
    reads = [(line[src], job.inputs[src][0]) for src in sources]
    # A global line forks to every tile reading it, and a word moves only when all
    # of them take it; a tile j links down a chain may consume it up to
    # HOP_LAG * j cycles after the head, so one that lags the line's earliest
    # reader takes the line through its FIFO bank (see :data:`HOP_LAG`).
    earliest = {}
    for _, _, terms in chains:
        for j, (src, _) in enumerate(terms):
            earliest[src] = min(earliest.get(src, j), j)
    writes = []
    tiles = []
    pos = 0
    next_line = len(sources)
    for ol, (o, g, terms) in enumerate(chains):
        last_group = g == groups[o] - 1
        psum_line = None
        if g > 0:
            psum_line = next_line
            next_line += 1
            reads.append((psum_line, job.outputs[o]))
        for j, (src, kernel) in enumerate(terms):
            tile = path[pos]
            rect, k = job.inputs[src]
            if j > earliest[src]:
                routes = {"fifo_0_in": f"global_in_{line[src]}", "convolver_in": "fifo_0"}
            else:
                routes = {"convolver_in": f"global_in_{line[src]}"}
            if job.mode == ConvMode.MAX:
                mode = ConvMode.MAX
            elif j == 0 and g == 0:
                mode = ConvMode.MAC
            else:
                mode = ConvMode.MAC_PSUM
            if j > 0:
                routes["convolver_psum"] = f"{OPPOSITE[hops[pos - 1]]}_in"
            elif g > 0:
                routes["convolver_psum"] = f"global_in_{psum_line}"
            mapper = None
            if j < len(terms) - 1:
                routes[f"{hops[pos]}_out"] = "convolver"
            elif last_group and job.mapper is not None:
                routes["mapper_in"] = "convolver"
                routes[f"global_out_{ol}"] = "mapper"
                mapper = job.mapper
            else:
                routes[f"global_out_{ol}"] = "convolver"
            conv = {"width": rect.width, "height": rect.height, "k": k, "stride": job.stride,
                    "mode": mode, "shift": 0 if mode == ConvMode.MAX else job.shift,
                    "bias": job.bias[o] if (j == 0 and g == 0) else 0}
            weights = None if kernel is None else np.asarray(kernel).ravel()
            tiles.append(TileSetup(tile, routes, convolver=conv, mapper=mapper, weights=weights))
            pos += 1
        writes.append((ol, job.outputs[o], window))
    macs = 0
    if job.macs:
        macs = job.macs * sum(len(t) for _, _, t in chains) // max(total_terms, 1)
    return Pass(tiles, reads, writes, macs, latency=_latency(job, chains, config))


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
