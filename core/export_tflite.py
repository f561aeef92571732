"""The TFLite/LiteRT runtime of target ``"tflite"`` (see :mod:`core.export`).

    f_tf = convert(f, target="tflite")
    model = tflite_model(f_tf, [tf.TensorSpec([1, 28, 28, 1], tf.float32)])   # bytes
    outputs = run_tflite(model, [x])                                          # numpy

The model is made with ``TFLiteConverter`` restricted to builtin ops
(``supported_ops=[TFLITE_BUILTINS]``, no Flex), and run with the LiteRT interpreter
(``ai-edge-litert``) when it is installed, else ``tf.lite.Interpreter``.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def tflite_model(fn: Callable, input_signature: Sequence[Any], *,
                 optimizations: Sequence[Any] = ()) -> bytes:
    """A TFLite flatbuffer of ``fn`` (a converted function, or any TF function) traced on
    ``input_signature`` (``tf.TensorSpec``s). TFLite models cannot take bfloat16 inputs:
    a bfloat16 input becomes a float32 input of the model, cast to bfloat16 inside (exact
    for every bfloat16 value; feed ``x.astype(np.float32)``)."""
    import tensorflow as tf
    specs = list(input_signature)
    if any(s.dtype == tf.bfloat16 for s in specs):
        inner, dtypes = fn, [s.dtype for s in specs]

        def fn(*xs):
            return inner(*[tf.cast(x, d) if d != x.dtype else x for x, d in zip(xs, dtypes)])
        specs = [tf.TensorSpec(s.shape, tf.float32) if s.dtype == tf.bfloat16 else s
                 for s in specs]
    concrete = fn.get_concrete_function(*specs) if hasattr(fn, "get_concrete_function") \
        else tf.function(fn, autograph=False).get_concrete_function(*specs)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], concrete)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    converter.optimizations = list(optimizations)
    return converter.convert()


def interpreter(model: bytes, num_threads: int | None = None):
    """A LiteRT interpreter for ``model`` (``tf.lite.Interpreter`` without ai-edge-litert)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the test extra installs ai-edge-litert
        import tensorflow as tf
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=model, num_threads=num_threads)


def interpreter_name() -> str:
    try:
        import ai_edge_litert  # noqa: F401
        return "ai-edge-litert"
    except ImportError:  # pragma: no cover
        return "tf.lite.Interpreter"


def runtime_name() -> str:
    import tensorflow as tf
    return f"{interpreter_name()} (TFLiteConverter of TF {tf.__version__}, builtins only)"


def check_installed() -> None:
    """TFLite needs nothing beyond TensorFlow (LiteRT is preferred when installed)."""


def export(fn: Callable, input_signature: Sequence[Any]) -> bytes:
    return tflite_model(fn, input_signature)


def export_graphs(graphs) -> list:
    """For the probe: each (v1 graph, feeds, outputs) as a model, or the exception."""
    import tensorflow as tf
    out = []
    for g, ins, outs in graphs:
        try:
            with tf.compat.v1.Session(graph=g) as sess:
                conv = tf.compat.v1.lite.TFLiteConverter.from_session(sess, ins, outs)
                conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
                out.append(conv.convert())
        except Exception as exc:
            out.append(exc)
    return out


def save(model: bytes, path: str) -> list[str]:
    from core.export import save_bytes
    return save_bytes(model, path, ".tflite")


def run(model: bytes, args: Sequence[Any]) -> list:
    return run_tflite(model, args)


def benchmark(model: bytes, args: Sequence[Any]) -> float:
    """Milliseconds per call of the interpreter (tensors set, invoke), median."""
    from core.export import ms_per_call
    it = interpreter(model)
    ins = it.get_input_details()
    for d, a in zip(ins, args):
        if tuple(d["shape"]) != np.shape(a):
            it.resize_tensor_input(d["index"], np.shape(a))
    it.allocate_tensors()

    def call():
        for d, a in zip(ins, args):
            it.set_tensor(d["index"], np.asarray(a, dtype=d["dtype"]))
        it.invoke()
    return ms_per_call(call)


def run_many(items) -> list:
    """Each (model, args) run; its outputs or the exception."""
    from core.export import each_or_error
    return each_or_error(run_tflite, items)


def run_ones(models: list[bytes]) -> list[str]:
    """For the probe: run each model on ones in a child process (restarted after a
    crash): "ok", "error ...", or "crash ..."."""
    from core.export import run_ones_in_children
    return run_ones_in_children(models, "core.export_tflite", ".tflite")


def ones_once(path: str) -> None:
    """Run the model at ``path`` on ones (unknown dimensions 1); raises on failure."""
    with open(path, "rb") as f:
        it = interpreter(f.read())
    for d in it.get_input_details():
        it.resize_tensor_input(d["index"], [max(int(s), 1) for s in d["shape_signature"]])
    it.allocate_tensors()
    for d in it.get_input_details():
        it.set_tensor(d["index"], np.ones(d["shape"], d["dtype"]))
    it.invoke()


def run_tflite(model: bytes, args: Sequence[Any], num_threads: int | None = None) -> list:
    """Run a TFLite model on ``args`` (in the order of the function's inputs); returns its
    outputs as numpy arrays, in the order of the function's outputs."""
    it = interpreter(model, num_threads)
    ins = it.get_input_details()
    if len(ins) != len(args):
        raise ValueError(f"the model takes {len(ins)} inputs, got {len(args)}")
    for d, a in zip(ins, args):
        a = np.asarray(a)
        if tuple(d["shape"]) != a.shape:
            it.resize_tensor_input(d["index"], a.shape)
    it.allocate_tensors()
    for d, a in zip(ins, args):
        it.set_tensor(d["index"], np.asarray(a, dtype=d["dtype"]))
    it.invoke()
    return [np.array(it.get_tensor(d["index"])) for d in it.get_output_details()]
