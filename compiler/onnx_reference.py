"""Float reference: onnxruntime on the original model, with intermediate tensors."""

import numpy as np
import onnx

__all__ = ["run_onnx"]


def run_onnx(model, x, names=()):
    """Run ``model`` (an ``onnx.ModelProto``) on ``x`` (N, ...) with onnxruntime.

    Returns ``{name: array}`` for the graph output and every tensor in
    ``names`` (intermediate tensors are added as extra graph outputs).
    """
    import onnxruntime as ort
    outputs = model.graph.output
    kept = len(outputs)
    present = {o.name for o in outputs}
    for name in names:
        if name not in present:
            outputs.append(onnx.helper.make_empty_tensor_value_info(name))
            present.add(name)
    try:        # the model with the extra outputs, serialised without a copy of its weights first
        serialised = model.SerializeToString()
    finally:
        del outputs[kept:]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(serialised, options, providers=["CPUExecutionProvider"])
    feed_name = session.get_inputs()[0].name
    feed_type = session.get_inputs()[0].type
    dtype = np.float64 if "double" in feed_type else np.float32
    wanted = [o.name for o in session.get_outputs()]
    batch = session.get_inputs()[0].shape[0]
    batch = batch if isinstance(batch, int) and batch > 0 else x.shape[0]
    results = []
    for start in range(0, x.shape[0], batch):
        chunk = np.asarray(x[start:start + batch], dtype=dtype)
        real = chunk.shape[0]
        if real < batch:                # a model with a fixed batch size: pad with copies
            chunk = np.concatenate([chunk] + [chunk[-1:]] * (batch - real))
        results.append([r[:real] for r in session.run(wanted, {feed_name: chunk})])
    return {name: np.concatenate([r[i] for r in results]) for i, name in enumerate(wanted)}
