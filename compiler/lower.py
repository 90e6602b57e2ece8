"""Lowering: IR nodes -> dataflow jobs, reading the quantisation stage's
integer weights and mapper choices.

A :class:`ConvJob` is a set of output maps, each the sum of convolutions of
input rectangles (maps, pieces of a kernel larger than K, chunks of a
flattened vector) with k x k kernels, plus bias, then an optional mapper.  A
:class:`StreamJob` is a term-by-term ALU operation and/or a mapper over
rectangles.  How jobs become passes on the grid is :mod:`compiler.schedule`.
"""

from dataclasses import dataclass

import numpy as np

from neuflow_hdl.regs import GEOMETRY_BITS, AluOp, ConvMode, PoolMode, Symmetry

from .errors import CompileError
from .ir import as_conv
from .cost import expected_beats, pass_cycles, predicted_cost
from .layout import KERNEL_WORD, Buffer, MemoryKernel, Rect, chunk_side, conv_geometry
from .quantise import alu_shift
from .schedule import PassShape, chain_latency, chains_per_pass, weight_line

__all__ = ["ConvJob", "StreamJob", "Lowered", "lower_node", "weight_streams", "STREAMED_MIN_OUTPUTS",
           "pool_partials", "partials_key"]


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
    initial: list = None    #: per output: a Rect of output-format words its first chain adds
                            #: as its partial sum (a bias per position), or None
    partials: tuple = None  #: ([Rect per output], write window): where partial sums wait between
                            #: an output's passes when not in its output (a pooled output is smaller)
    frame_groups: list = None   #: per output: only chains of outputs of one group share a pass (their
                                #: kernels read from memory make one weight frame), or None


@dataclass
class StreamJob:
    a: Rect
    out: Rect
    b: Rect = None          #: second ALU operand stream (None: constant or no ALU)
    alu: dict = None        #: ALU configuration, or None (mapper only)
    mapper: dict = None



@dataclass(frozen=True, eq=False)
class Lowered:
    """One node as jobs: ``jobs`` (all ConvJobs or all StreamJobs), report
    ``notes``, useful ``macs``, and ``narrowings``: the most roundings a value
    of the output goes through (one per link of the longest chain)."""
    jobs: tuple
    notes: tuple
    macs: int
    narrowings: int

    @property
    def convolutions(self):
        return bool(self.jobs) and isinstance(self.jobs[0], ConvJob)


def _lowered(jobs, notes):
    convs = [j for j in jobs if isinstance(j, ConvJob)]
    narrowings = max(len(t) for t in convs[0].terms) + (convs[0].initial is not None) if convs else 1
    return Lowered(tuple(jobs), tuple(notes), sum(j.macs for j in convs), narrowings)


def _strips(width_needed, wo, s, kp, max_width):
    """Split ``wo`` output columns into strips whose input rows fit the line buffers."""
    if width_needed(wo) <= max_width:
        return [(0, wo)]
    per = (max_width - kp) // s + 1
    if per < 1:
        raise AssertionError("kernel wider than max_width")
    return [(x0, min(per, wo - x0)) for x0 in range(0, wo, per)]


def _piece_kernels(codes, pieces):
    """Every output's kernel on every input map, per piece of the kernel:
    ``(blocks, nonzero)``: per piece its ``(outputs, inputs, kp, kp)`` codes
    (the piece's ``ph x pw`` in the top-left corner, ``kp`` its larger side),
    and ``(outputs, inputs * pieces)`` whether each kernel has a nonzero code,
    in the order a chain takes its terms (input map, then piece)."""
    blocks = []
    for dy, dx, ph, pw in pieces:
        kp = max(ph, pw)
        block = np.zeros(codes.shape[:2] + (kp, kp), dtype=np.int64)
        block[:, :, :ph, :pw] = codes[:, :, dy:dy + ph, dx:dx + pw]
        blocks.append(block)
    nonzero = np.stack([b.any(axis=(2, 3)) for b in blocks], axis=2)
    return blocks, nonzero.reshape(nonzero.shape[0], -1)


def _terms(reads, kernels, o):
    """Output ``o``'s chain: ``(input index, kernel)`` of each term whose kernel
    is not all zero (it adds nothing), but at least one term (the bias).  A
    kernel is its kp x kp codes, row-major, as the bytes of kernel words
    (:func:`compiler.layout.kernel_words`): the code generator keys weight
    frames by them, and millions of them cost less than as arrays."""
    blocks, nonzero = kernels
    P = len(blocks)
    kept = np.flatnonzero(nonzero[o]).tolist() or [0]
    rows = [_kernel_bytes(block, o) for block in blocks]
    sizes = [block.shape[2] * block.shape[3] * KERNEL_WORD.itemsize for block in blocks]
    return [(reads[n], rows[n % P][sizes[n % P] * (n // P):sizes[n % P] * (n // P + 1)]) for n in kept]


def _kernel_bytes(block, o):
    """Output ``o``'s kernels in ``block`` (outputs, inputs, kp, kp) as one
    bytes object of kernel words."""
    return np.ascontiguousarray(block[o], dtype=KERNEL_WORD).tobytes()


def _mapper(quant):
    """(mapper configuration or None, report notes) of a node's activation."""
    choice = quant.mapper
    if choice is None:
        return None, []
    return choice.config, [f"mapper {choice.name}: max error {choice.max_error:.4g}"]


POOL_NAMES = {"avg": "average", "max": "max"}


def _pooling_mapper(mapper, pool, height, width, config):
    """The mapper configuration that ends a chain with a 2 x 2 pool of its
    ``height x width`` maps (an identity mapping when the layer has no
    activation): the average is the window's sum narrowed by 2 bits."""
    if mapper is None:
        identity = {"bound": config.fmt.min, "slope": 1, "offset": 0}
        mapper = {"symmetry": Symmetry.NONE, "shift": 0, "segments": [identity] * config.segments}
    mode, shift = (PoolMode.SUM, 2) if pool == "avg" else (PoolMode.MAX, 0)
    return dict(mapper, pool={"mode": mode, "shift": shift, "width": width, "height": height})


def lower_conv(node, graph, buffers, config, quant):
    """A convolution-like node (conv, avgpool, affine, maxpool) as ConvJobs."""
    if _streams_weights(node, buffers):
        return _lower_pixel_streamed(node, graph, buffers, config, quant)
    K = config.kernel
    x, y = buffers[node.inputs[0]], buffers[node.output]
    fi, fo = x.frac, y.frac
    is_max = node.op == "maxpool"
    if not is_max:
        node = as_conv(node, graph)
    weight = None if is_max else node.params["weight"]
    kh, kw, s, (t, l, _, _), pieces, ho, wo = conv_geometry(node, graph.shapes, K)
    cin = x.channels
    groups = cin if is_max else node.attrs.get("groups", 1)
    cout = y.channels
    cin_g = cin // groups
    per_group_out = cout // groups
    in_perm = node.attrs.get("in_perm") or range(cin)       # the order it reads its input maps in
    mapper, notes = _mapper(quant)
    if is_max:
        codes, bias_codes, shift = None, [0] * cout, 0
        if fi != fo:
            raise AssertionError("max pooling changes no format")
    else:
        codes, bias_codes, shift = quant.kernel.codes, quant.kernel.bias, quant.kernel.shift
    # Useful work: only (output, input) pairs with a kernel (a connection table
    # is a dense convolution with zero kernels, which the chains skip).
    connected = 0 if is_max else int(np.count_nonzero(np.any(weight != 0, axis=(2, 3))))
    kmax = max(max(ph, pw) for _, _, ph, pw in pieces)
    strips = _strips(lambda n: (n - 1) * s + kmax, wo, s, kmax, config.max_width)
    pool = node.attrs.get("pool")
    if pool:
        if len(strips) > 1:
            raise AssertionError("a pooled convolution's rows fit a line buffer (passes.fuse_pools)")
        mapper = _pooling_mapper(mapper, pool, ho, wo, config)
        notes = notes + [f"{POOL_NAMES[pool]} 2x2 pooling in the mapper's pool stage"]
    kernels = None if is_max else _piece_kernels(codes, pieces)
    jobs = []
    for x0, wn in strips:
        inputs = []                 # input map c's piece p is input c * len(pieces) + p
        for c in range(cin):
            for p, (dy, dx, ph, pw) in enumerate(pieces):
                kp = max(ph, pw)
                rect = x.rect(c, dy - t, dx + x0 * s - l, (ho - 1) * s + kp, (wn - 1) * s + kp)
                inputs.append((rect, kp))
        outputs, terms, group_reads = [], [], {}
        for o in range(cout):
            outputs.append(y.rect(o, 0, x0 // 2, ho // 2, wn // 2) if pool else y.rect(o, 0, x0, ho, wn))
            g = o // per_group_out if not is_max else o
            reads = group_reads.get(g)
            if reads is None:       # the inputs of group g's outputs, in the order they read them
                maps = np.asarray(in_perm[g * cin_g:(g + 1) * cin_g], dtype=np.int64)
                reads = group_reads[g] = (maps[:, None] * len(pieces) + np.arange(len(pieces))).ravel().tolist()
            terms.append([(i, None) for i in reads] if is_max else _terms(reads, kernels, o))
        macs = 0 if is_max else ho * wn * kh * kw * connected
        job = ConvJob(ConvMode.MAX if is_max else ConvMode.MAC, s, shift, inputs, outputs,
                      terms, [int(b) for b in bias_codes], mapper, macs)
        if pool:
            scratch = buffers[partials_key(node)]
            job.partials = ([scratch.rect(o, 0, 0, ho, wo) for o in range(cout)], (scratch.base, scratch.size))
        jobs.append(job)
    return _lowered(jobs, notes)


def partials_key(node):
    """The buffer where a pooled convolution's partial sums wait between passes."""
    return f"{node.output}:partials"


def pool_partials(graph, buffers, config):
    """``buffers`` with one for each pooled convolution's partial sums: its
    unpooled maps in the output's format (an output whose chain takes several
    passes adds each pass's sums there; the last pass pools them)."""
    buffers = dict(buffers)
    for node in graph.nodes:
        if node.attrs.get("pool"):
            *_, ho, wo = conv_geometry(node, graph.shapes, config.kernel)
            y = buffers[node.output]
            buffers[partials_key(node)] = Buffer(partials_key(node), y.channels, ho, wo, y.frac,
                                                 holds=("partials", node.output))
    return buffers


#: A fully connected layer with at least this many outputs (and a flat input
#: of at least K x K features) streams its weights as images (:func:`weight_streams`).
STREAMED_MIN_OUTPUTS = 8


def _stream_keys(node):
    return f"{node.output}:weights", f"{node.output}:bias"


def _streams_weights(node, buffers):
    """Whether :func:`weight_streams` gave ``node`` buffers of weight images."""
    return getattr(buffers.get(_stream_keys(node)[0]), "holds", None) == ("weights", node.output)


def _may_stream(node, buffers, n_out, fmt):
    """Whether a layer of ``n_out`` outputs may stream its weights as images: at
    least :data:`STREAMED_MIN_OUTPUTS` outputs, no tensor already named as its
    weights' and bias's buffers, and its bias (the first chain's partial sum,
    in the output's format) not saturating."""
    return (n_out >= STREAMED_MIN_OUTPUTS and not any(k in buffers for k in _stream_keys(node)) and
            not np.any(fmt.saturated(node.params["bias"], buffers[node.output].frac)))


def _streamed_shape(node, buffers, config, fmt):
    """``(rows, m)``: the outputs of fully connected ``node`` as a rows x m map whose
    weights stream as images, or None when it keeps them as kernels."""
    K = config.kernel
    x, y = buffers[node.inputs[0]], buffers[node.output]
    n_out, features = node.params["weight"].shape
    if not (x.flat and y.flat and y.map_words == 1 and chunk_side(features, K) == K and
            _may_stream(node, buffers, n_out, fmt)):
        return None
    m = max(d for d in range(1, config.max_width // K + 1) if n_out % d == 0)
    return n_out // m, m


#: A 1 x 1 convolution streams its weights per output pixel (:func:`weight_streams`)
#: when the cost model predicts that schedule at most this share of the
#: cycles of its kernels'.  The two predictions are rough (of the layers
#: predicted 0.8 to 1.0 across the model zoo, estimated as emitted at
#: 041fbf8, per pixel ran from 0.67 to 1.03 of the kernels' cycles; the
#: networks' totals 1 % faster or 0.2 % slower): no margin.
PIXEL_STREAM_SHARE = 1.0
#: Rows of an image a convolver takes (its geometry registers).
MAX_IMAGE_ROWS = (1 << GEOMETRY_BITS) - 1


def _pixel_candidate(node, buffers, fmt):
    """Whether a 1 x 1 convolution may stream its weights per output pixel: no
    groups, pads or fused pool; an input of its own (not a view into a
    concatenation, whose maps another tensor's words follow) and
    :func:`_may_stream`."""
    if node.op != "conv" or node.attrs.get("pool") or node.attrs.get("groups", 1) != 1:
        return False
    n_out, _, kh, kw = node.params["weight"].shape
    x = buffers[node.inputs[0]]
    return ((kh, kw) == (1, 1) and not any(node.attrs["pads"]) and x.view is None and
            _may_stream(node, buffers, n_out, fmt))


def _predicted_pass(config, links, chains, streams, beats):
    """Predicted cycles of a pass of ``chains`` chains of ``links`` links whose
    tiles load 1 x 1 kernels or K x K kernels from memory (``streams``: words of
    each data stream; ``beats``: their bus beats)."""
    K = config.kernel
    shape = PassShape(loads=links * chains, kernel_words=links * K * K, streams=tuple(streams),
                      tiles=links * chains, latency=chain_latency(config, links),
                      beats=beats)
    return pass_cycles(predicted_cost(shape, config, first=False))


def _kernel_schedule_cycles(n_out, cin, in_rect, pixels, config):
    """Predicted cycles of a 1 x 1 convolution as kernels, by the cheapest
    chain length: the grid's tiles in chains of ``links`` links, the chains of
    a pass reading the same input maps (each a map of ``in_rect`` (height,
    width) words; partial sums and outputs ``pixels`` words), as
    :func:`compiler.schedule.conv_packings` packs a dense layer."""
    h, w = in_rect
    best = None
    for links in range(1, min(cin, config.tiles) + 1):
        # a port for the weight frame; the last input line kept for it
        chains = min(n_out, chains_per_pass(links, links, 1, config.tiles, config.ports - 1, weight_line(config),
                                            config.globals_))
        if chains < 1:
            continue
        streams = [h * w] * links + [pixels, pixels] * chains
        beats = (links * expected_beats(w, h, config.beat_words, w) +     # a map without borders
                 2 * chains * expected_beats(pixels, 1, config.beat_words))
        cycles = (-(-n_out // chains) * -(-cin // links) *
                  _predicted_pass(config, links, chains, streams, beats))
        best = cycles if best is None else min(best, cycles)
    return best


def _pixel_blocks(n_out, chunks, config):
    """``(cycles per pixel, blocks, rows, chains)`` of the cheapest split of a
    1 x 1 convolution's ``n_out`` outputs into blocks of ``rows`` (an image of
    ``rows * K`` rows each, at most :data:`MAX_IMAGE_ROWS`) when its weights
    stream per pixel, ``chains`` of them in a pass, predicted by the cost
    model for one chain length: every chunk of K x K inputs in one chain where
    the grid holds it."""
    K, tiles = config.kernel, config.tiles
    links = min(chunks, tiles)
    # chains per pass: each takes its links' images and its partial sums on
    # input lines (the last kept for weight frames), and a port for its output
    per_pass = max(1, min(tiles // links, weight_line(config) // (links + 1), config.ports // (links + 2)))
    fewest = -(-n_out * K // MAX_IMAGE_ROWS)
    best = None
    for blocks in range(fewest, max(fewest, per_pass) * 2 + 1):
        rows = -(-n_out // blocks)
        if rows * K > MAX_IMAGE_ROWS:
            continue
        chains = min(blocks, per_pass)
        streams = [rows * K * K] * (links * chains) + [rows, rows] * chains
        beats = (links * chains * expected_beats(K, rows * K, config.beat_words, K) + 2 * chains * rows +
                 expected_beats(1, links * K * K, config.beat_words))
        passes = -(-chunks // links) * -(-blocks // chains)
        cycles = passes * _predicted_pass(config, links, chains, streams, beats)
        if best is None or cycles < best[0]:
            best = (cycles, blocks, rows, chains)
    return best


def _streams_per_pixel(node, graph, buffers, config, fmt):
    """Whether 1 x 1 convolution ``node`` streams its weights per output pixel
    (:func:`weight_streams`): when the cost model predicts that schedule at
    most :data:`PIXEL_STREAM_SHARE` of the kernels' and its bias fits the
    output's format."""
    if not _pixel_candidate(node, buffers, fmt):
        return False
    K = config.kernel
    n_out, cin = node.params["weight"].shape[:2]
    _, _, s, _, _, ho, wo = conv_geometry(node, graph.shapes, K)
    per_pixel = _pixel_blocks(n_out, -(-cin // (K * K)), config)[0]
    kernels = _kernel_schedule_cycles(n_out, cin, ((ho - 1) * s + 1, (wo - 1) * s + 1), ho * wo, config)
    return ho * wo * per_pixel <= PIXEL_STREAM_SHARE * kernels


def _stream_buffers(buffers, node, images, weight_frac, bias):
    """Add the buffers of a layer whose weights stream: its ``images`` (C, H1,
    H2, W1, W2 codes, a view written into the memory image as it is read) and
    its ``bias`` (1, H, W codes in the output's format)."""
    w_key, b_key = _stream_keys(node)
    chunks, h1, h2, w1, w2 = images.shape
    buffers[w_key] = Buffer(w_key, chunks, h1 * h2, w1 * w2, weight_frac, codes=images,
                            holds=("weights", node.output))
    buffers[b_key] = Buffer(b_key, *bias.shape, buffers[node.output].frac, codes=bias,
                            holds=("bias", node.output))


def _padded_codes(codes, chunks, K, fmt, columns=None):
    """A layer's ``(N, F)`` weight codes in the narrowest integers that hold a
    word, padded to whole chunks of K x K (``columns``: where each of the F
    goes, by default in order)."""
    padded = np.zeros((codes.shape[0], chunks * K * K), dtype=np.int16 if fmt.width <= 16 else np.int32)
    padded[:, slice(0, codes.shape[1]) if columns is None else columns] = codes
    return padded


def _stream_fully_connected(node, buffers, quant, config, rows, m):
    """The weight images and bias of a fully connected layer whose N outputs
    are a ``rows`` x ``m`` map (:func:`weight_streams`)."""
    K, fmt = config.kernel, config.fmt
    codes = quant.kernel.codes
    chunks = -(-codes.shape[1] // (K * K))
    # (chunks, rows, K, m, K): each chunk's image with its rows and columns split into blocks.
    images = _padded_codes(codes, chunks, K, fmt).reshape(rows, m, chunks, K, K).transpose(2, 0, 3, 1, 4)
    bias = fmt.quantise(node.params["bias"], buffers[node.output].frac).reshape(1, rows, m)
    _stream_buffers(buffers, node, images, quant.kernel.weight_frac, bias)


def _stream_per_pixel(node, buffers, quant, config):
    """The weight images and bias of a 1 x 1 convolution whose weights stream
    per output pixel (:func:`weight_streams`), the images by the order its
    input's buffer stores the maps (``in_perm`` undone); the input's tail
    covers the last chunk's maps past its end."""
    K, fmt = config.kernel, config.fmt
    codes = quant.kernel.codes.reshape(quant.kernel.codes.shape[:2])
    n_out, cin = codes.shape
    chunks = -(-cin // (K * K))
    perm = node.attrs.get("in_perm")
    padded = _padded_codes(codes, chunks, K, fmt, None if perm is None else np.asarray(perm, dtype=np.int64))
    images = padded.reshape(n_out, 1, chunks, K, K).transpose(2, 0, 3, 1, 4)
    x = buffers[node.inputs[0]]
    x.tail = max(x.tail, (chunks * K * K - x.channels) * x.map_words)
    bias = fmt.quantise(node.params["bias"], buffers[node.output].frac).reshape(1, n_out, 1)
    _stream_buffers(buffers, node, images, quant.kernel.weight_frac, bias)


def weight_streams(graph, buffers, quantisation, config):
    """``buffers`` with those of the layers whose weights stream as data.

    A fully connected layer of N outputs over C chunks of K x K input features
    computes its outputs as one rows x m map (N = rows * m, K * m words per
    row at most a line buffer), each chunk c an image of K*rows x K*m weights
    (output ``r*m + q``'s K x K weights of that chunk at block (r, q))
    convolved at stride K with the chunk as its kernel (a
    :class:`~compiler.layout.MemoryKernel`, loaded from the input at run
    time), and the bias, in the output format, the first chain's partial sum.
    Every weight is read once, as a data stream: each pass's tiles take one
    word a cycle, where kernels would take a frame each per output.

    A 1 x 1 convolution on small maps, where a pass per kernel would stream a
    few dozen words and wait out the chain's latency, computes each output
    pixel as such a layer (:func:`_streams_per_pixel`): its N outputs at that
    pixel are maps of rows x 1 (images of ``K * rows`` x K words), the kernel
    of chunk c the K x K input maps ``c K^2 ..`` at that pixel (a
    :class:`~compiler.layout.MemoryKernel` whose words are a map apart)."""
    buffers = dict(buffers)
    for node in graph.nodes:
        quant = quantisation.nodes[node.output]
        if node.op == "gemm":
            shape = _streamed_shape(node, buffers, config, config.fmt)
            if shape is not None:
                _stream_fully_connected(node, buffers, quant, config, *shape)
        elif node.op == "conv" and _streams_per_pixel(node, graph, buffers, config, config.fmt):
            _stream_per_pixel(node, buffers, quant, config)
    return buffers


def _lower_streamed(node, x, y, weights, bias, config, quant):
    """A fully connected layer whose weights stream (:func:`weight_streams`): one
    job of one rows x m output map, a chain term per chunk of its input."""
    K = config.kernel
    used = np.flatnonzero(np.any(weights.codes != 0, axis=tuple(range(1, weights.codes.ndim))))
    chain = [(int(c), MemoryKernel(x.base + int(c) * K * K)) for c in used] or [(0, MemoryKernel(x.base))]
    mapper, notes = _mapper(quant)
    notes = [f"weights streamed: {weights.channels} images of {weights.height}x{weights.width}, "
             "input chunks as kernels"] + notes
    n_out, features = quant.kernel.codes.shape
    job = ConvJob(ConvMode.MAC, K, quant.kernel.shift, [(weights.interior(c), K) for c in range(weights.channels)],
                  [Rect(y.base, bias.width, bias.height, bias.width)], [chain], [0], mapper,
                  n_out * features, initial=[bias.interior(0)])
    return _lowered([job], notes)


def _lower_pixel_streamed(node, graph, buffers, config, quant):
    """A 1 x 1 convolution whose weights stream per output pixel
    (:func:`weight_streams`): one job whose outputs are each pixel's blocks of
    output maps, a chain term per chunk of input maps, the bias the first
    chain's partial sum.  Only chains of one pixel share a pass (their
    kernels, read from memory, make one weight frame).  The outputs go pixel
    by pixel when a pass holds all of a pixel's blocks, else block by block,
    so that every pass loads a frame: passes alike in their waits roll into
    one loop (:mod:`compiler.rolling`)."""
    K = config.kernel
    x, y = buffers[node.inputs[0]], buffers[node.output]
    w_key, b_key = _stream_keys(node)
    weights, bias = buffers[w_key], buffers[b_key]
    _, _, s, _, _, ho, wo = conv_geometry(node, graph.shapes, K)
    n_out, chunks = y.channels, weights.channels
    _, blocks, rows, chains = _pixel_blocks(n_out, chunks, config)
    spans = [(b * rows, min(rows, n_out - b * rows)) for b in range(blocks)]
    inputs = [(weights.rect(c, first * K, 0, n * K, K), K) for c in range(chunks) for first, n in spans]
    initial = [bias.rect(0, first, 0, n, 1) for first, n in spans]
    step = x.map_words
    kernels = [[MemoryKernel(x.rect(0, r * s, q * s, 1, 1).base + c * K * K * step, step) for c in range(chunks)]
               for r in range(ho) for q in range(wo)]
    order = [(pixel, b) for pixel in range(ho * wo) for b in range(blocks)]
    if chains < blocks:
        order.sort(key=lambda o: o[1])
    outputs, terms, groups, starts = [], [], [], []
    for pixel, b in order:
        first, n = spans[b]
        outputs.append(Rect(y.rect(first, *divmod(pixel, wo), 1, 1).base, 1, n, y.map_words))
        terms.append([(c * blocks + b, kernel) for c, kernel in enumerate(kernels[pixel])])
        groups.append(pixel)
        starts.append(initial[b])
    mapper, notes = _mapper(quant)
    notes = [f"weights streamed per output pixel: {chunks} images of {weights.height}x{weights.width} "
             f"in {blocks} block{'s' if blocks > 1 else ''}, {K}x{K} input maps at each pixel as kernels"] + notes
    connected = int(np.count_nonzero(node.params["weight"]))     # (output, input) pairs: 1 x 1 kernels
    job = ConvJob(ConvMode.MAC, K, quant.kernel.shift, inputs, outputs, terms, [0] * len(outputs), mapper,
                  ho * wo * connected, initial=starts, frame_groups=groups)
    return _lowered([job], notes)


def lower_gemm(node, graph, buffers, config, quant):
    """A fully connected layer as a convolution over chunks of its flat input
    (streamed when :func:`weight_streams` gave it its weight images)."""
    K = config.kernel
    x, y = buffers[node.inputs[0]], buffers[node.output]
    if _streams_weights(node, buffers):
        w_key, b_key = _stream_keys(node)
        return _lower_streamed(node, x, y, buffers[w_key], buffers[b_key], config, quant)
    w = node.params["weight"]
    n_out, features = w.shape
    codes, bias_codes, shift = quant.kernel.codes, quant.kernel.bias, quant.kernel.shift
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
    mapper, notes = _mapper(quant)
    padded = np.zeros((n_out, len(inputs) * k * k), dtype=np.int64)
    padded[:, :features] = codes
    blocks = padded.reshape(n_out, len(inputs), k, k)
    kernels = ([blocks], blocks.any(axis=(2, 3)))
    reads = list(range(len(inputs)))
    outputs = [y.interior(n) for n in range(n_out)]
    terms = [_terms(reads, kernels, n) for n in range(n_out)]
    return _lowered([ConvJob(ConvMode.MAC, 1, shift, inputs, outputs, terms,
                             [int(b) for b in bias_codes], mapper, n_out * features)], notes)


def _maps(buffers_, tensor_shape):
    """Per-map interior rectangles of every buffer (a buffer of one map gives
    that map to every map of the others), or one rectangle each when all are
    flat and of the same size."""
    c, h, w = tensor_shape
    if all(b.flat and b.channels == c for b in buffers_):
        return [[Rect(b.base, w, c * h, w) for b in buffers_]]
    return [[b.interior(m if b.channels == c else 0) for b in buffers_] for m in range(c)]


def lower_stream(node, graph, buffers, config, quant):
    """Term-by-term layers: ALU operations and stand-alone activations."""
    fmt = config.fmt
    y = buffers[node.output]
    mapper, notes = _mapper(quant)
    if node.op == "act":
        x = buffers[node.inputs[0]]
        return _lowered([StreamJob(a, out, mapper=mapper) for a, out in
                         _maps([x, y], graph.shapes[node.output])], notes)
    a_buf, b_buf = buffers[node.inputs[0]], buffers[node.inputs[1]]
    op = node.attrs["op"]
    fa, fb, fo = a_buf.frac, b_buf.frac, y.frac
    shift = alu_shift(op, fa, fb, fo)
    if op in ("add", "sub", "max", "min") and not fa == fb == fo:
        raise AssertionError("tied formats differ")
    if not 0 <= shift <= fmt.width:
        raise CompileError(f"operand formats Q.{fa} and Q.{fb} give an output shift of {shift}, "
                           f"outside 0 .. {fmt.width}", node)
    alu_op = {"add": AluOp.ADD, "sub": AluOp.SUB, "mul": AluOp.MUL, "div": AluOp.DIV,
              "max": AluOp.MAX, "min": AluOp.MIN}[op]
    if op == "mul" and node.inputs[0] == node.inputs[1]:
        alu = {"op": AluOp.SQUARE, "b_const": 1, "shift": shift, "const": 0}
        return _lowered([StreamJob(a, out, alu=alu, mapper=mapper) for a, out in
                         _maps([a_buf, y], graph.shapes[node.output])], notes)
    alu = {"op": alu_op, "b_const": 0, "shift": shift, "const": 0}
    return _lowered([StreamJob(a, out, b=b, alu=alu, mapper=mapper) for a, b, out in
                     _maps([a_buf, b_buf, y], graph.shapes[node.output])], notes)


def lower_node(node, graph, buffers, config, quantisation):
    """The lowering stage for one IR node: a :class:`Lowered`."""
    quant = quantisation.nodes[node.output]
    if node.op in ("conv", "avgpool", "affine", "maxpool"):
        return lower_conv(node, graph, buffers, config, quant)
    if node.op == "gemm":
        return lower_gemm(node, graph, buffers, config, quant)
    if node.op in ("eltwise", "act"):
        return lower_stream(node, graph, buffers, config, quant)
    if node.op == "concat":         # its inputs wrote its buffer already
        return Lowered((), ("concatenated in place: each input is a view of this buffer",), 0, 0)
    raise CompileError(f"no lowering for IR operator {node.op}", node)
