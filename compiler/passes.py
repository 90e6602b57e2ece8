"""Graph transformations, each small, named and unit-tested.

``run_passes`` applies them in order; each takes and returns a
:class:`~compiler.ir.Graph` (rewriting it in place).
"""

import numpy as np

from .errors import CompileError

__all__ = ["fold_affine_into_conv", "fuse_activations", "fold_shuffles", "shuffle_order", "host_softmax",
           "remove_flatten", "run_passes", "PASSES", "fuse_pools", "POOL_FUSED"]


def _single_consumer(graph, tensor):
    users = graph.consumers(tensor)
    return users[0] if len(users) == 1 and tensor != graph.output else None


def _merge(graph, first, second):
    """``second`` (the only consumer of ``first``) disappears into ``first``."""
    first.output = second.output
    first.onnx_outputs = first.onnx_outputs + second.onnx_outputs
    graph.nodes.remove(second)


def fold_affine_into_conv(graph):
    """A per-channel scale and shift (a folded BatchNormalization, or Mul/Add by
    constants) right after a convolution or a fully connected layer becomes part
    of its weights and bias."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("conv", "gemm") or node.attrs.get("act") is not None:
                continue
            nxt = _single_consumer(graph, node.output)
            if nxt is None or nxt.op != "affine" or nxt.attrs.get("act") is not None:
                continue
            scale, shift = nxt.params["scale"], nxt.params["shift"]
            w = node.params["weight"]
            node.params["weight"] = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            node.params["bias"] = node.params["bias"] * scale + shift
            _merge(graph, node, nxt)
            changed = True
            break
    return graph


def fuse_activations(graph):
    """An activation right after an operator with a free mapper moves into that
    operator's tile (NeuFlow's "non-linear mapping of a sum of convolutions")."""
    changed = True
    while changed:
        changed = False
        for node in list(graph.nodes):
            if node.op not in ("conv", "gemm", "avgpool", "eltwise", "affine") or \
                    node.attrs.get("act") is not None:
                continue
            nxt = _single_consumer(graph, node.output)
            if nxt is None or nxt.op != "act":
                continue
            node.attrs["act"] = nxt.attrs["act"]
            _merge(graph, node, nxt)
            changed = True
            break
    return graph


#: The pooling the mapper's pool stage does: IR operator -> the node's ``pool`` attribute.
POOL_FUSED = {"avgpool": "avg", "maxpool": "max"}


def _pool_stage_takes(node):
    """Whether pooling ``node`` is the 2 x 2, stride 2, unpadded window the pool stage computes."""
    return (node.op in POOL_FUSED and tuple(node.attrs["kernel"]) == (2, 2) and
            tuple(node.attrs["stride"]) == (2, 2) and not any(node.attrs["pads"]) and
            node.attrs.get("act") is None and not node.attrs.get("in_perm"))


def _pool_stage_fits(node, graph, config):
    """Whether convolution ``node`` can end in the pool stage: one kernel piece
    per input map, its input rows (so its output rows) within a line buffer."""
    kh, kw = node.params["weight"].shape[2:]
    _, _, w = graph.shapes[node.inputs[0]]
    _, left, _, right = node.attrs["pads"]
    return max(kh, kw) <= config.kernel and w + left + right <= config.max_width


def fuse_pools(graph, config):
    """A 2 x 2, stride 2 average or max pooling right after a convolution moves
    into the mapper's pool stage at the end of that convolution's chains
    (``attrs['pool']``), so its maps are written once, pooled, and never read
    back (:func:`_pool_stage_fits`); partial sums of outputs whose chains take
    several passes wait unpooled in a buffer of their own
    (:func:`compiler.lower.pool_partials`)."""
    for node in list(graph.nodes):
        if node.op != "conv" or node.attrs.get("pool") or not _pool_stage_fits(node, graph, config):
            continue
        nxt = _single_consumer(graph, node.output)
        c, h, w = graph.shapes[node.output]
        if nxt is None or not _pool_stage_takes(nxt) or h < 2 or w < 2:
            continue
        node.attrs["pool"] = POOL_FUSED[nxt.op]
        _merge(graph, node, nxt)
    return graph


def host_softmax(graph):
    """A Softmax that produces the network's output runs on the host; anywhere
    else it is an error."""
    for node in list(graph.nodes):
        if node.op != "softmax":
            continue
        if node.output != graph.output:
            raise CompileError(f"node {node.name!r} (Softmax): only a final Softmax is supported "
                               "(it runs on the host)")
        c, h, w = graph.shapes[node.inputs[0]]
        if (h, w) != (1, 1) or node.attrs["axis"] != 1:
            raise CompileError(f"node {node.name!r} (Softmax): only a Softmax over the features of "
                               "a flat vector is supported")
        graph.output = node.inputs[0]
        graph.host_softmax = True
        graph.nodes.remove(node)
    return graph


def remove_flatten(graph):
    """Flatten / Reshape to (N, features) is a view: a fully connected layer reads
    its input flat in (C, H, W) order, which is how maps are stored."""
    for node in list(graph.nodes):
        if node.op != "flatten":
            continue
        for user in graph.consumers(node.output):
            if user.op != "gemm":
                raise CompileError(f"node {node.name!r} ({node.onnx_op}): a flattened tensor may "
                                   f"only feed fully connected layers, not {user.onnx_op} "
                                   f"{user.name!r}")
            user.inputs = [node.inputs[0] if t == node.output else t for t in user.inputs]
        if graph.output == node.output:
            graph.output = node.inputs[0]
        graph.nodes.remove(node)
    return graph


def lower_lrn(graph):
    """LRN as NeuFlow built its normalisation, from operators: square (ALU),
    sum over the channel window (a 1x1 convolution), ``(bias + alpha/size *
    sum) ** -beta`` (the mapper), then the product (ALU)."""
    from .ir import Node
    for node in list(graph.nodes):
        if node.op != "lrn":
            continue
        x = node.inputs[0]
        c = graph.shapes[x][0]
        a = node.attrs
        size = a["size"]
        band = np.zeros((c, c, 1, 1))
        for o in range(c):
            lo, hi = max(0, o - (size - 1) // 2), min(c - 1, o + size // 2)
            band[o, lo:hi + 1] = 1.0
        base = node.output
        sq, total = f"{base}/square", f"{base}/sum"
        for t in (sq, total):
            graph.shapes[t] = graph.shapes[x]
        index = graph.nodes.index(node)
        power = ("power", a["bias"], a["alpha"] / size, -a["beta"])
        new = [
            Node("eltwise", node.name, node.onnx_op, [x, x], sq, {"op": "mul", "act": None}),
            Node("conv", node.name, node.onnx_op, [sq], total,
                 {"stride": (1, 1), "pads": (0, 0, 0, 0), "groups": 1, "act": power},
                 {"weight": band, "bias": np.zeros(c)}),
            Node("eltwise", node.name, node.onnx_op, [x, total], base, {"op": "mul", "act": None},
                 onnx_outputs=list(node.onnx_outputs)),
        ]
        graph.nodes[index:index + 1] = new
    return graph


def shuffle_order(channels, groups):
    """A channel shuffle's order: output map ``k`` is input map ``order[k]``."""
    k = np.arange(channels)
    return (k % groups) * (channels // groups) + k // groups


#: The operators that read their input maps through ``in_perm`` (see :func:`compiler.lower.lower_conv`).
READS_PERMUTED = ("conv", "avgpool", "maxpool", "affine")


def fold_shuffles(graph):
    """A channel shuffle is a permutation of buffer order: it disappears into its
    consumers, which read their input maps in the shuffled order (``in_perm``:
    input map ``k`` of the consumer is map ``in_perm[k]`` of the unshuffled
    tensor)."""
    for node in [n for n in graph.nodes if n.op == "shuffle"]:
        x, out = node.inputs[0], node.output
        if out == graph.output:
            raise CompileError(f"node {node.name!r} ({node.onnx_op}): a channel shuffle as the network's "
                               "output is not supported")
        order = shuffle_order(graph.shapes[x][0], node.attrs["groups"])
        for user in graph.consumers(out):
            if user.op not in READS_PERMUTED:
                raise CompileError(f"node {user.name!r} ({user.onnx_op}): reads a channel shuffle; only "
                                   "convolutions, pooling and per-channel maps read one")
            user.attrs["in_perm"] = tuple(int(k) for k in order)
            user.inputs = [x]
        graph.nodes.remove(node)
    return graph


PASSES = (host_softmax, remove_flatten, lower_lrn, fold_affine_into_conv, fuse_activations, fold_shuffles)


def run_passes(graph):
    for p in PASSES:
        graph = p(graph)
    leftover = [n for n in graph.nodes if n.op in ("lrn", "softmax", "flatten", "shuffle")]
    if leftover:
        n = leftover[0]
        raise CompileError(f"node {n.name!r} ({n.onnx_op}): not lowered")
    return graph
