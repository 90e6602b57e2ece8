"""Memory layout: where every tensor lives.

Every tensor lives in a :class:`Buffer`: C maps stored one after the other,
each with a border of ``pads`` words (zeros for convolutions, the smallest
word for max pooling) that the memory image initialises and nothing ever
writes.  Padding therefore costs nothing at run time: a padded convolution
reads a larger rectangle.  Buffers never overlap.  The program and the
cycle-stamp table sit below the buffers, the weight frames above them.

The one exception: the inputs of a ``concat`` are *views* of its output's
buffer, each a run of its channels (``Buffer.view``), so the producers write
the concatenation in place and it costs no pass.  The tensors of one
concatenation (nested ones too) share one border, the largest any of their
consumers needs.
"""

import math
from dataclasses import dataclass

import numpy as np

from .errors import CompileError

__all__ = ["Rect", "MemoryKernel", "KERNEL_WORD", "kernel_words", "kernel_words_of", "Buffer", "DATA_BASE",
           "PROGRAM_WORDS_PER_LAYER", "first_data_base", "ALIGN",
           "STAMP_WORDS", "stamp_address", "stamp_slots", "conv_geometry", "kernel_pieces", "chunk_side", "plan_buffers", "allocate", "align_up",
           "check_memory"]

DATA_BASE = 0x1000          #: the lowest address of the tensors
#: Program words per layer the first placement of the tensors leaves room for
#: (looped programs measured 300 to 2,000 words per layer); a longer program
#: moves the tensors up and is generated again, which was 45 % of VGG-19's
#: compile (19 layers, 38,012 words).  A grid of at least :data:`ROOMY_MEMORY`
#: words leaves :data:`ROOMY_WORDS_PER_LAYER`, a room that costs it nothing.
PROGRAM_WORDS_PER_LAYER = 1536
ROOMY_WORDS_PER_LAYER = 4096
ROOMY_MEMORY = 1 << 24
ALIGN = 64                  #: alignment of the weight frames and of a moved data base
#: Words of a cycle stamp: the 32-bit counter as two 16-bit words, low word first.
STAMP_WORDS = 2


def stamp_address(stamps, slot):
    """Where slot ``slot`` of the cycle-stamp table at ``stamps`` is.  The table
    has a slot per layer (its start), one for the end and a spare (where a
    partitioned run that stops inside a layer stamps): :func:`stamp_slots`."""
    return stamps + STAMP_WORDS * slot


def stamp_slots(layers):
    """The stamp table's slots for ``layers`` layers; the last is the spare."""
    return layers + 2


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


@dataclass(frozen=True)
class MemoryKernel:
    """A kernel that is data: K x K words read at run time, the first at
    ``address`` and each next ``step`` words further (a chunk of a fully
    connected layer's flat input, step 1; or the K x K input maps of a 1 x 1
    convolution at one pixel, step the maps' distance), when weights stream as
    images (see :func:`compiler.lower.weight_streams`)."""
    address: int
    step: int = 1


#: A kernel word as a term keeps it: a term's kernel (:mod:`compiler.lower`) is
#: its k x k codes, row-major, as the bytes of words of this type.
KERNEL_WORD = np.dtype(np.int64)


def kernel_words(kernel):
    """The words of a term's kernel."""
    return np.frombuffer(kernel, dtype=KERNEL_WORD)


def kernel_words_of(kernel):
    """How many words a term's kernel has."""
    return len(kernel) // KERNEL_WORD.itemsize


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
    view: tuple = None                  #: (tensor, first channel): maps of that tensor's buffer
    codes: np.ndarray = None            #: a constant tensor's words (C, H, W), in the memory image,
                                        #: or a view of them whose shape splits H and W (see place)
    holds: tuple = None                 #: ("weights" or "bias", layer output) of a streamed layer

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

    def place_initial(self, words):
        """Write the buffer's words in the memory image into ``words``: pads set,
        interior zero (a constant's: its codes)."""
        self.place(0 if self.codes is None else self.codes, words)

    def scatter(self, codes):
        """Words of the whole buffer holding ``codes`` (C, H, W) in the interior."""
        words = np.empty(self.size, dtype=np.int64)
        self.place(codes, words)
        return words

    def place(self, codes, words):
        """Write the whole buffer holding ``codes`` (C, H, W) in the interior
        into ``words`` (its ``size`` words, an array or a view of one).
        ``codes`` may also be shaped (C, H1, H2, W1, W2) with H = H1 * H2 and
        W = W1 * W2: a transposed view of a layer's weights is written into
        the image as it is read, never copied whole first."""
        words[self.channels * self.map_words:] = 0
        m = words[:self.channels * self.map_words].reshape(self.channels, self.rows, self.row)
        if not self.flat:
            m[...] = self.pad_value
        t, l = self.pads[0], self.pads[1]
        interior = m[:, t:t + self.height, l:l + self.width]
        if np.ndim(codes) == 5:
            interior = interior.reshape(np.shape(codes))    # splits H and W: a view
        interior[...] = codes

    def gather(self, words):
        """The interior (C, H, W) of the buffer from its words."""
        m = np.asarray(words[:self.channels * self.map_words]).reshape(
            self.channels, self.rows, self.row)
        t, l = self.pads[0], self.pads[1]
        return m[:, t:t + self.height, l:l + self.width]


def conv_geometry(node, shapes, K):
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


def first_data_base(layers, memory_words):
    """Where the tensors go first for a network of ``layers`` layers on a grid of
    ``memory_words``: above :data:`PROGRAM_WORDS_PER_LAYER` words of program per
    layer (:data:`ROOMY_WORDS_PER_LAYER` in a memory of :data:`ROOMY_MEMORY`)."""
    per_layer = ROOMY_WORDS_PER_LAYER if memory_words >= ROOMY_MEMORY else PROGRAM_WORDS_PER_LAYER
    return align_up(DATA_BASE + per_layer * layers, ALIGN)


def kernel_pieces(kh, kw, K):
    """A kh x kw kernel as (dy, dx, ph, pw) blocks of at most K x K, row-major."""
    return [(dy, dx, min(K, kh - dy), min(K, kw - dx))
            for dy in range(0, kh, K) for dx in range(0, kw, K)]


def _consumer_pads(node, graph, config):
    """(top, left, bottom, right, pad value kind) that ``node`` needs around its input."""
    K = config.kernel
    if node.op in ("conv", "avgpool", "maxpool"):
        kh, kw, s, (t, l, b, r), pieces, ho, wo = conv_geometry(node, graph.shapes, K)
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


def _concat_groups(graph):
    """``{tensor: root}``: each tensor of a concatenation and the outermost
    concatenation's output it lives in (``{}`` without concatenations)."""
    root = {}
    for node in graph.nodes:
        if node.op != "concat":
            continue
        for t in node.inputs:
            if t in root:
                raise CompileError(f"tensor {t!r} is an input of two concatenations; each input is a "
                                   "part of its concatenation's memory", node)
            root[t] = node.output
    for t in list(root):
        while root[t] in root:
            root[t] = root[root[t]]
    for t in set(root.values()):
        root[t] = t
    return root


def plan_buffers(graph, formats, config):
    """A :class:`Buffer` per tensor, with the borders its consumers need (the
    tensors of a concatenation: the largest any of them needs) and the views
    of the concatenations' inputs."""
    buffers = {}
    fmt = config.fmt
    tensors = [graph.input] + list(graph.constants) + [n.output for n in graph.nodes]
    root = _concat_groups(graph)
    needs = {}                  # group (a root, or a lone tensor) -> [pads, kind, who]
    for t in tensors:
        need = needs.setdefault(root.get(t, t), [[0, 0, 0, 0], None, None])
        for user in graph.consumers(t):
            p = _consumer_pads(user, graph, config)
            if any(p[:4]):
                if need[1] is not None and p[4] != need[1]:
                    raise CompileError(f"input {t!r} is padded with zeros for {need[2]!r} and with the "
                                       "smallest word for this node; one buffer cannot hold both",
                                       user)
                need[1], need[2] = p[4], user.name
                need[0] = [max(a, b) for a, b in zip(need[0], p[:4])]
    for t in tensors:
        c, h, w = graph.shapes[t]
        pads, kind, _ = needs[root.get(t, t)]
        buffers[t] = Buffer(t, c, h, w, formats[t], tuple(pads), fmt.min if kind == "min" else 0)
        if t in graph.constants:
            buffers[t].codes = fmt.quantise(graph.constants[t], formats[t])
        for user in graph.consumers(t):
            if user.op == "gemm":       # read flat in k x k chunks (see lower_gemm)
                k = chunk_side(c * h * w, config.kernel)
                buffers[t].tail = max(buffers[t].tail, -(-(c * h * w) // (k * k)) * k * k - c * h * w)
    for node in graph.nodes:
        if node.op != "concat":
            continue
        first = 0
        for t in node.inputs:
            if buffers[t].tail:
                raise CompileError(f"tensor {t!r} is read flat by a fully connected layer and is a part "
                                   "of a concatenation; flatten the concatenation instead", node)
            buffers[t].view = (node.output, first)
            first += buffers[t].channels
    return buffers


def chunk_side(features, K):
    """Side of the k x k chunks a fully connected layer reads its flat input in."""
    return min(K, math.isqrt(features - 1) + 1)


def align_up(address, align):
    """The first multiple of ``align`` at or after ``address``."""
    return -(-address // align) * align


def allocate(buffers, start, align=16):
    """Give every buffer its own memory (no overlaps), and every view its place
    in its tensor's buffer; returns the first free address."""
    address = start
    for b in buffers.values():
        if b.view is None:
            address = align_up(address, align)
            b.base = address
            address += b.size

    def place(b):
        if b.view is not None:
            parent = buffers[b.view[0]]
            place(parent)
            b.base = parent.base + b.view[1] * parent.map_words

    for b in buffers.values():
        place(b)
    return address



def _weight_words(node, config):
    """Words of distinct kernels ``node`` stores, each k x k in the weight frames
    (kernels equal before rounding counted once; kernels that only become
    equal after rounding counted apart); a fully connected layer's weights
    padded to whole K x K chunks."""
    K = config.kernel
    if node.op == "conv":
        w = node.params["weight"]
        words = 0
        for dy, dx, ph, pw in kernel_pieces(*w.shape[2:], K):
            rows = w[:, :, dy:dy + ph, dx:dx + pw].reshape(-1, ph * pw)
            rows = np.ascontiguousarray(rows[np.any(rows != 0, axis=1)]) + 0.0     # -0.0 is 0.0
            words += len(np.unique(rows.view(np.dtype((np.void, rows.strides[0]))))) * max(ph, pw) ** 2
        return words
    if node.op == "gemm":
        n_out, features = node.params["weight"].shape
        k = chunk_side(features, K)
        return n_out * -(-features // (k * k)) * K * K
    return 0


def check_memory(graph, buffers, config, grid):
    """Stop before code generation when tensors and kernels cannot fit the memory,
    naming the first layer whose output or kernels overflow it (a layer whose
    weights stream counts the buffers that hold them)."""
    own = lambda t: 0 if buffers[t].view else buffers[t].size      # a view is counted in its tensor
    streamed = {}               # layer output -> words of its streamed weights' and bias's buffers
    for b in buffers.values():
        if b.holds is not None and b.holds[0] in ("weights", "bias"):
            streamed[b.holds[1]] = streamed.get(b.holds[1], 0) + b.size
    used = DATA_BASE + own(graph.input) + sum(own(t) for t in graph.constants)
    for node in graph.nodes:
        weights = streamed[node.output] if node.output in streamed else _weight_words(node, config)
        used += own(node.output) + ALIGN + weights
        if used > config.memory_words:
            raise CompileError(f"tensors and kernels up to this layer need {used} words; grid "
                               f"{grid} has {config.memory_words} words of memory", node)
