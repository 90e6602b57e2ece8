"""The model zoo of the benchmark: the nine network structures the ``onnx``
package ships (``onnx/backend/test/data/light``: AlexNet, ZFNet-512, VGG-19,
GoogLeNet (Inception v1), Inception v2, ResNet-50, SqueezeNet, ShuffleNet,
DenseNet-121; 224 x 224 inputs) with weights a network could have.

The structures make every parameter with ``ConstantOfShape`` (0.02
everywhere), so activations grow or vanish by orders of magnitude from layer
to layer and no fixed-point format holds them.  :func:`zoo_model` replaces
each such constant by seeded random values of the same shape, scaled by the
parameter's role: He-scaled convolution and fully connected weights
(``sqrt(2 / fan-in)``), small biases, batch-normalisation scales near 1 and
variances near 1 (also when spelled ``Unsqueeze``/``Mul``/``Add``, and also
when a structure keeps them as initialisers, as DenseNet does).
"""

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

__all__ = ["ZOO", "zoo_path", "zoo_model"]

#: The nine structures, smallest compile first.
ZOO = ("light_squeezenet", "light_shufflenet", "light_bvlc_alexnet", "light_zfnet512",
       "light_resnet50", "light_inception_v1", "light_inception_v2", "light_densenet121",
       "light_vgg19")


def zoo_path(name):
    """Where the ``onnx`` package keeps the structure ``name``."""
    from onnx.backend.test.loader import __file__ as loader
    return Path(loader).parent.parent / "data" / "light" / f"{name}.onnx"


def _role(graph, tensor):
    """How the value ``tensor`` is used: (operator, input index) of a
    ``BatchNormalization`` that takes it, else of its first consumer, looking
    through ``Unsqueeze`` to the ``Mul`` or ``Add`` it feeds."""
    users = [node for node in graph.node if tensor in node.input]
    for node in sorted(users, key=lambda n: n.op_type != "BatchNormalization"):
        if node.op_type == "Unsqueeze":
            return _role(graph, node.output[0])
        return node.op_type, list(node.input).index(tensor)
    return None, None


def _values(role, shape, rng):
    op, index = role
    if op == "Conv" and index == 1:                     # (O, I / groups, kh, kw)
        fan_in = int(np.prod(shape[1:]))
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if op == "Gemm" and index == 1:                     # (N, F) or (F, N): the smaller is N here
        return rng.normal(0.0, np.sqrt(1.0 / max(shape)), shape)
    if op == "BatchNormalization" and index == 1 or op == "Mul":
        return rng.uniform(0.8, 1.2, shape)             # scale
    if op == "BatchNormalization" and index == 4:
        return rng.uniform(0.5, 1.5, shape)             # variance
    return rng.normal(0.0, 0.05, shape)                 # biases, means, shifts


def zoo_model(name, seed=0):
    """The structure ``name`` with its ``ConstantOfShape`` parameters replaced by
    initialisers of seeded random values (see the module's description)."""
    model = onnx.load(zoo_path(name))
    graph = model.graph
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in graph.initializer}
    kept, drawn = [], set()
    for node in graph.node:
        if node.op_type != "ConstantOfShape" or node.input[0] not in inits:
            kept.append(node)
            continue
        shape = tuple(int(d) for d in numpy_helper.to_array(inits[node.input[0]]))
        values = _values(_role(graph, node.output[0]), shape, rng).astype(np.float32)
        graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
        drawn.add(node.output[0])
        if model.ir_version < 4:                        # old graphs list their initialisers as inputs
            graph.input.append(onnx.helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT,
                                                                  shape))
    del graph.node[:]
    graph.node.extend(kept)
    # DenseNet keeps its batch normalisations' parameters as initialisers, with
    # variances down to 1e-45 (scales of 316): those are drawn by role too.
    for node in graph.node:
        if node.op_type != "BatchNormalization":
            continue
        for index, name in enumerate(node.input[1:5], 1):
            if name in inits and name not in drawn:
                shape = tuple(inits[name].dims)
                values = _values(("BatchNormalization", index), shape, rng).astype(np.float32)
                inits[name].CopyFrom(numpy_helper.from_array(values, name))
    return model
