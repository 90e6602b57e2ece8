"""Train the demo ConvNet on scikit-learn's 8x8 handwritten digits and export it to ONNX.

    .venv/bin/python models/train_digits.py        # writes models/digits.onnx

The network (NeuFlow-style: convolutions, non-linear mappings, pooling, a
classifier) is small enough for the ``tiny`` grid:

    input 1x8x8 (pixel / 16)
    conv 3x3, 6 maps, pad 1, tanh  -> 6x8x8
    max pool 2x2                    -> 6x4x4
    conv 3x3, 12 maps, pad 1, relu -> 12x4x4
    max pool 2x2                    -> 12x2x2
    fully connected 48 -> 10 (logits)

Training is plain numpy (im2col convolutions, Adam, fixed seed), so the
project needs no deep-learning framework.  The split is the one the demo
uses: :func:`split` (the last 20% of a seeded permutation is the test set).
The demo does not run this script; the exported model is committed.
"""

from pathlib import Path

import numpy as np

SEED = 0
TEST_FRACTION = 0.2
HERE = Path(__file__).resolve().parent


def split():
    """(x_train, y_train, x_test, y_test): images (N, 1, 8, 8) in 0 .. 1, labels."""
    from sklearn.datasets import load_digits
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(SEED).permutation(len(y))
    cut = int(len(y) * (1 - TEST_FRACTION))
    train, test = order[:cut], order[cut:]
    return x[train], y[train], x[test], y[test]


# -- numpy layers ------------------------------------------------------------------

def im2col(x, k, pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.reshape(n, c * k * k, h * w)


def col2im(cols, shape, k, pad):
    n, c, h, w = shape
    cols = cols.reshape(n, c, k, k, h, w)
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=cols.dtype)
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + h, j:j + w] += cols[:, :, i, j]
    return xp[:, :, pad:pad + h, pad:pad + w]


def conv_forward(x, w, b):
    cols = im2col(x, w.shape[2], 1)
    out = np.einsum("ok,nkp->nop", w.reshape(w.shape[0], -1), cols) + b[None, :, None]
    return out.reshape(x.shape[0], w.shape[0], x.shape[2], x.shape[3]), cols


def conv_backward(dout, x_shape, cols, w):
    n, o = dout.shape[:2]
    d = dout.reshape(n, o, -1)
    dw = np.einsum("nop,nkp->ok", d, cols).reshape(w.shape)
    db = d.sum(axis=(0, 2))
    dcols = np.einsum("ok,nop->nkp", w.reshape(o, -1), d)
    return col2im(dcols, x_shape, w.shape[2], 1), dw, db


def pool_forward(x):
    n, c, h, w = x.shape
    r = x.reshape(n, c, h // 2, 2, w // 2, 2)
    out = r.max(axis=(3, 5))
    mask = r == out[:, :, :, None, :, None]
    mask = mask / mask.sum(axis=(3, 5), keepdims=True)
    return out, mask


def pool_backward(dout, mask):
    n, c, h2, _, w2, _ = mask.shape
    return (mask * dout[:, :, :, None, :, None]).reshape(n, c, h2 * 2, w2 * 2)


def init(rng):
    def he(shape, fan_in):
        return (rng.normal(0, 1, shape) * np.sqrt(2.0 / fan_in)).astype(np.float64)
    return {"w1": he((6, 1, 3, 3), 9), "b1": np.zeros(6),
            "w2": he((12, 6, 3, 3), 54), "b2": np.zeros(12),
            "w3": he((10, 48), 48), "b3": np.zeros(10)}


def forward(p, x, cache=None):
    a1, c1 = conv_forward(x, p["w1"], p["b1"])
    h1 = np.tanh(a1)
    p1, m1 = pool_forward(h1)
    a2, c2 = conv_forward(p1, p["w2"], p["b2"])
    h2 = np.maximum(a2, 0)
    p2, m2 = pool_forward(h2)
    f = p2.reshape(x.shape[0], -1)
    logits = f @ p["w3"].T + p["b3"]
    if cache is not None:
        cache.update(x=x, c1=c1, h1=h1, m1=m1, p1=p1, c2=c2, a2=a2, m2=m2, f=f, p2=p2)
    return logits


def backward(p, cache, dlogits):
    g = {"w3": dlogits.T @ cache["f"], "b3": dlogits.sum(axis=0)}
    dp2 = (dlogits @ p["w3"]).reshape(cache["p2"].shape)
    da2 = pool_backward(dp2, cache["m2"]) * (cache["a2"] > 0)
    dp1, g["w2"], g["b2"] = conv_backward(da2, cache["p1"].shape, cache["c2"], p["w2"])
    da1 = pool_backward(dp1, cache["m1"]) * (1 - cache["h1"] ** 2)
    _, g["w1"], g["b1"] = conv_backward(da1, cache["x"].shape, cache["c1"], p["w1"])
    return g


def train(epochs=40, batch=32, lr=2e-3):
    x_train, y_train, x_test, y_test = split()
    rng = np.random.default_rng(SEED)
    p = init(rng)
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(len(y_train))
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            cache = {}
            logits = forward(p, x_train[idx].astype(np.float64), cache)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            prob = e / e.sum(axis=1, keepdims=True)
            prob[np.arange(len(idx)), y_train[idx]] -= 1
            grads = backward(p, cache, prob / len(idx))
            step += 1
            for k in p:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                p[k] -= lr * (m[k] / (1 - 0.9 ** step)) / (np.sqrt(v[k] / (1 - 0.999 ** step)) + 1e-8)
        acc = (forward(p, x_test.astype(np.float64)).argmax(axis=1) == y_test).mean()
        print(f"epoch {epoch + 1:2}: test accuracy {100 * acc:.2f}%")
    return p, acc


def export(p, path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    f32 = lambda a: numpy_helper.from_array(np.asarray(a, dtype=np.float32), name=None)
    inits = []
    for name in ("w1", "b1", "w2", "b2", "w3", "b3"):
        t = f32(p[name])
        t.name = name
        inits.append(t)
    shape = numpy_helper.from_array(np.array([1, 48], dtype=np.int64), name="flat_shape")
    nodes = [
        helper.make_node("Conv", ["image", "w1", "b1"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["conv1"], ["tanh1"], name="tanh1"),
        helper.make_node("MaxPool", ["tanh1"], ["pool1"], name="pool1", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "w2", "b2"], ["conv2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Reshape", ["pool2", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="classifier", transB=1),
    ]
    graph = helper.make_graph(nodes, "digits", [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
        inits + [shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="neuflow models/train_digits.py")
    onnx.checker.check_model(model)
    onnx.save(model, path)


if __name__ == "__main__":
    params, accuracy = train()
    out = HERE / "digits.onnx"
    export(params, out)
    print(f"wrote {out}: float test accuracy {100 * accuracy:.2f}% on {len(split()[3])} images")
