"""The compiler's one error type: a one-line message naming the node and the limit."""

__all__ = ["CompileError"]


class CompileError(Exception):
    """Bad or unsupported input; the message is one line, names the ONNX node
    (``node 'conv3' (Conv)``) and the limit it breaks.  The CLI prints it and
    exits with code 2."""

    def __init__(self, message, node=None):
        if node is not None:
            message = f"node {node.name!r} ({node.onnx_op}): {message}"
        super().__init__(message)
