"""ONNX -> graph IR -> quantise -> lower -> schedule -> control program + memory image.

``compile_model`` (in :mod:`compiler.driver`) is the entry point; the
``neuflow compile`` and ``neuflow simulate`` commands wrap it.
"""

from .errors import CompileError

__all__ = ["CompileError"]
