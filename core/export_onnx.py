"""The ONNX runtime of target ``"onnx"`` (see :mod:`core.export`).

    f_tf = convert(f, target="onnx")
    model = export(f_tf, [tf.TensorSpec([1, 28, 28, 1], tf.float32)])   # ModelProto bytes
    outputs = run(model, [x])                                            # numpy, onnxruntime

The TF graph is converted by tf2onnx at opset 18 (the steps of
``tf2onnx.convert.from_function``) and run by onnxruntime on the CPU
(``pip install 'jaxtf[onnx]'``).

tf2onnx writes a model even when it could not convert some TF ops (it logs "Unsupported
ops" or "Failed to convert node" and leaves the TF node in the ONNX graph). :func:`export`
captures tf2onnx's log and raises :class:`OnnxExportError` naming those ops instead; it
also refuses a model holding any op ONNX does not define, a model ``onnx.checker``
rejects, and one onnxruntime cannot load.

Two ways tf2onnx + onnxruntime give wrong numbers without an error are closed here:
tf2onnx converts bfloat16 as float16 (bfloat16 is kept, see :func:`_converting`), and a
float ``Select``/``SelectV2`` becomes ``c*a + (1-c)*b`` in tf2onnx and a ``Where`` that
loses -0.0 in onnxruntime (see :func:`_select`); a loop writing TensorArray items in
another order than its iterations (a reverse scan) is refused (see :func:`_while`).

bfloat16 at the model's edges: onnxruntime takes no bfloat16 numpy arrays, so a bfloat16
input becomes a float32 input of the model, cast to bfloat16 inside (exact for every
bfloat16 value; feed ``x.astype(np.float32)``), and a bfloat16 output is cast to float32
inside (exact); :func:`run` gives it back as bfloat16. The model records which inputs and
outputs are such stand-ins in its ``metadata_props`` (``jaxtf.bfloat16_inputs`` and
``jaxtf.bfloat16_outputs``, comma-separated positions).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Sequence

import numpy as np

from core.errors import JaxtfError, MissingDependency

#: The ONNX opset tf2onnx converts to.
OPSET = 18
_INSTALL = "pip install 'jaxtf[onnx]'"
_BF16_IN, _BF16_OUT = "jaxtf.bfloat16_inputs", "jaxtf.bfloat16_outputs"


class OnnxExportError(JaxtfError, ValueError):
    """tf2onnx could not convert the graph (unsupported TF ops, a failed handler), or the
    model it wrote is not one ONNX/onnxruntime accepts. The message names the TF ops."""

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = list(ops)


def check_installed() -> None:
    """Raise MissingDependency unless tf2onnx, onnx and onnxruntime import."""
    missing = []
    for mod in ("tf2onnx", "onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError as exc:
            missing.append(f"{mod} ({exc})")
    if missing:
        raise MissingDependency(
            f"target 'onnx' needs tf2onnx, onnx and onnxruntime; missing: "
            f"{', '.join(missing)}. Install them with: {_INSTALL}")


def runtime_name() -> str:
    check_installed()
    import onnxruntime
    import tf2onnx
    return (f"onnxruntime {onnxruntime.__version__} (tf2onnx {tf2onnx.__version__}, "
            f"opset {OPSET})")


# ---------------------------------------------------------------------------------------
# conversion


class _Errors(logging.Handler):
    """Collects the ERROR records tf2onnx logs while it converts."""

    def __init__(self):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@contextlib.contextmanager
def _converting():
    """While tf2onnx converts: capture its ERROR log records (and keep its INFO/WARNING
    chatter quiet), and map TF's bfloat16 to ONNX's BFLOAT16. tf2onnx 1.17 maps bfloat16
    to FLOAT16 (``tf_utils.TF_TO_ONNX_DTYPE``): a cast to bfloat16 became a cast to
    float16 and bfloat16 arithmetic ran in float16, silently wrong (300000 -> inf). With
    BFLOAT16, what onnxruntime cannot compute in bfloat16 is refused when it loads the
    model (it has bfloat16 kernels for Cast and comparisons, not for arithmetic)."""
    import onnx
    from tensorflow.core.framework import types_pb2
    from tf2onnx import tf_utils
    from tf2onnx.optimizer import back_to_back_optimizer as b2b
    log = logging.getLogger("tf2onnx")
    handler, level = _Errors(), log.level
    table = tf_utils.TF_TO_ONNX_DTYPE
    bf16 = table.get(types_pb2.DT_BFLOAT16)
    log.addHandler(handler)
    log.setLevel(logging.ERROR)
    table[types_pb2.DT_BFLOAT16] = onnx.TensorProto.BFLOAT16
    cast_pairs = b2b._func_map[("Cast",)]
    b2b._func_map[("Cast",)] = _keep_rounding_casts(cast_pairs)
    try:
        yield handler.records
    finally:
        b2b._func_map[("Cast",)] = cast_pairs
        table[types_pb2.DT_BFLOAT16] = bf16
        log.removeHandler(handler)
        log.setLevel(level)


def _keep_rounding_casts(optimize_cast):
    """tf2onnx's back-to-back optimizer drops a float cast followed by another cast
    (``float32 -> float16 -> float32`` becomes nothing: "high information type, ok to
    eliminate"), so a value rounded to float16/bfloat16 between two float32 steps was not
    rounded (a float16 reduction with XLA's per-step rounding came out 2 ulps off, silently).
    A cast to a half type is kept."""
    import onnx
    half = {onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}

    def guarded(g, node, consumer_nodes):
        if node.get_attr("to").i in half:
            return []
        return optimize_cast(g, node, consumer_nodes)
    return guarded


def _raise_for(records, model, what: str) -> None:
    """An OnnxExportError if tf2onnx logged errors, or the model holds ops ONNX lacks."""
    import onnx
    unsupported: dict[str, None] = {}
    failed: dict[str, None] = {}
    other: list[str] = []
    for r in records:
        msg = r.getMessage()
        if msg.startswith("Tensorflow op [") and "is not supported" in msg:
            unsupported[msg.split(": ", 1)[1].split("]", 1)[0]] = None
        elif msg.startswith("Unsupported ops:"):
            continue                          # the summary of the lines above
        elif msg.startswith("Failed to convert node"):
            exc = r.exc_info[1] if r.exc_info else None
            node = msg.split("\n")[0].removeprefix("Failed to convert node ").split(" (fct")[0]
            failed[node + (f": {type(exc).__name__}: {str(exc)[:300]}" if exc else "")] = None
        else:
            other.append(msg.split("\n")[0][:300])
    foreign = {}
    if model is not None:
        for node in _all_nodes(model.graph):
            if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
                foreign[node.op_type] = None
    left = [op for op in foreign if op not in unsupported]
    ops = [*unsupported, *left]
    if not (ops or failed or other):
        return
    lines = [f"tf2onnx (opset {OPSET}) could not convert {what}:"]
    for f in failed:
        lines.append(f"  a conversion failed: {f}")
    if unsupported:
        lines.append(f"  TF ops tf2onnx has no conversion for: {', '.join(unsupported)}")
    if left:
        lines.append(f"  TF ops left unconverted: {', '.join(left)}")
    for o in other:
        lines.append(f"  tf2onnx error: {o}")
    lines.append("  Ways out: use target='tf' or 'tflite', or register a rule written for "
                 "target='onnx' (a plugin, see docs/writing_rules.md).")
    raise OnnxExportError("\n".join(lines), ops)


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def _finish(model, records, what: str, bf16_in=(), bf16_out=()) -> bytes:
    """Check the converted ModelProto (tf2onnx's log, ONNX's checker, an onnxruntime
    session) and serialize it."""
    import onnx
    _raise_for(records, model, what)
    for key, pos in ((_BF16_IN, bf16_in), (_BF16_OUT, bf16_out)):
        if pos:
            onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props},
                                                key: ",".join(map(str, pos))})
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxExportError(f"ONNX's checker rejects the model tf2onnx made of {what}: "
                              f"{exc}") from exc
    data = model.SerializeToString()
    _session(data)                            # onnxruntime must load it, else raise
    return data


def _select(ctx, node, name, args):
    """tf2onnx's handler for Select/SelectV2, made exact for floats.

    tf2onnx writes a float select as ``c*a + (1-c)*b`` (faster in onnxruntime, it says):
    NaN where the branch not taken is inf or NaN, +0.0 where it should be -0.0. Asked
    (``handles_nan``) it writes ONNX ``Where``, but onnxruntime's CPU ``Where`` on floats
    (1.32) computes ``where(c, a, 0)`` and ``where(c, 0, b)`` and merges them by ``x != 0 ?
    x : y``, so a -0.0 taken from ``a`` comes out +0.0. Hence, for floats, unless ``a``
    (or, swapping the branches, ``b``) is a constant without -0.0:
    ``r = Where(c, a, b)``; ``s = Where(c, 1/a, 1/b)`` (-inf exactly where the selected
    value is -0.0); result ``Where(r != 0 or s >= 0, r, -0.0)``: a -0.0 comes from the
    exact second branch, and NaN payloads, infinities and subnormals are copied.
    (No ``Not`` feeds a ``Where``: onnxruntime's NotWhereFusion would swap it back.)"""
    from onnx import TensorProto
    from tf2onnx import utils
    from tf2onnx.onnx_opset.controlflow import Select
    dtype = ctx.get_dtype(node.output[0])
    np_type = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64,
               TensorProto.FLOAT16: np.float16}.get(dtype)
    if np_type is not None:           # integers: c*a + (1-c)*b is exact (and onnxruntime
        node.set_attr("handles_nan", True)     # has no Where for bool, int16, uint16...)
    Select.version_9(ctx, node)
    if np_type is None or node.type != "Where":
        return
    c, a, b = node.input

    def has_neg_zero(t):
        if not ctx.get_node_by_output(t).is_const():
            return True
        v = ctx.get_tensor_value(t, as_list=False)
        return bool(np.any((v == 0) & np.signbit(v)))

    def op(typ, *ins, dt=dtype, like=node.output[0]):
        return ctx.make_node(typ, list(ins), op_name_scope=node.name, dtypes=[dt],
                             shapes=[ctx.get_shape(like)]).output[0]

    def const(value):
        return ctx.make_const(utils.make_name(node.name), np.array(value)).output[0]
    boolean = TensorProto.BOOL
    if not has_neg_zero(a):
        return
    if not has_neg_zero(b):         # (Xor, not Not: onnxruntime fuses Not into Where)
        ctx.replace_inputs(node, [op("Xor", c, const(True), dt=boolean, like=c), b, a])
        return
    zero = const(np_type(0))
    r = op("Where", c, a, b)
    s = op("Where", c, op("Reciprocal", a, like=a), op("Reciprocal", b, like=b))
    keep = op("Or", op("Not", op("Equal", r, zero, dt=boolean), dt=boolean),
              op("GreaterOrEqual", s, zero, dt=boolean), dt=boolean)
    ctx.replace_inputs(node, [keep, r, const(np_type(-0.0))])


def _floor_int(ctx, node, name, args):
    """tf2onnx's FloorDiv/FloorMod, made exact for integers: it writes an integer
    FloorDiv as ONNX ``Div`` (which truncates: -7 // 2 gave -3) and FloorMod from it (-7 %
    2 gave -1), silently wrong for operands of different signs. Here FloorMod is ONNX
    ``Mod`` with ``fmod=0`` (the divisor's sign, as TF), and FloorDiv is the truncated
    quotient minus 1 where the division is inexact and the signs differ (no
    intermediate overflows)."""
    from onnx import TensorProto, helper
    from tf2onnx import utils
    from tf2onnx.onnx_opset.math import FloorDiv
    dtype = ctx.get_dtype(node.input[0])
    floating = dtype in (TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16)
    if floating and node.type == "FloorDiv":        # Floor(Div(a, b)), as TF computes it
        return FloorDiv.version_6(ctx, node)
    a, b = node.input
    shape = ctx.get_shape(node.output[0])
    boolean = TensorProto.BOOL

    def op(typ, *ins, dt=boolean, **attr):
        return ctx.make_node(typ, list(ins), attr=attr, op_name_scope=node.name,
                             dtypes=[dt], shapes=[shape]).output[0]
    zero = ctx.make_const(utils.make_name(node.name),
                          np.zeros((), helper.tensor_dtype_to_np_dtype(dtype))).output[0]
    if node.type == "FloorMod" and not floating:
        node.type = "Mod"
        node.set_attr("fmod", 0)
        return
    if node.type == "FloorMod":     # TF: r = fmod(a, b), plus b where r != 0 has not b's
        r = op("Mod", a, b, dt=dtype, fmod=1)   # sign (tf2onnx's a - floor(a/b)*b rounds
        fix = op("And", op("Not", op("Equal", r, zero)),            # and loses -0.0)
                 op("Xor", op("Less", r, zero), op("Less", b, zero)))
        node.type = "Where"
        ctx.replace_inputs(node, [fix, op("Add", r, b, dt=dtype), r])
        return
    inexact = op("Not", op("Equal", op("Mod", a, b, dt=dtype, fmod=1), zero))
    differ = op("Xor", op("Less", a, zero), op("Less", b, zero))
    fix = op("Cast", op("And", inexact, differ), dt=dtype, to=dtype)
    node.type = "Sub"
    ctx.replace_inputs(node, [op("Div", a, b, dt=dtype), fix])


def _while(ctx, node, name, args):
    """tf2onnx's handler for While/StatelessWhile, refusing what it would get wrong.

    tf2onnx turns each ``TensorListSetItem`` (a TensorArray write) in a loop body into a
    scan output of the ONNX ``Loop``, in iteration order, and ignores the index written
    to: a loop writing item ``length - 1 - i`` (a reverse scan) came out reversed, with
    no error. A write is accepted when its index is the loop's own counter, or a loop
    variable that starts at constant 0 and gains 1 each iteration."""
    from tf2onnx.onnx_opset.controlflow import While
    from tf2onnx.tf_loader import find_function
    body = find_function(node.get_attr_str("body"))
    ins = body.input_names

    def source(t, g):
        n = g.get_node_by_output(t)
        while n is not None and n.type == "Identity":
            t, n = n.input[0], n.inputs[0]
        return t

    def counts_from_zero(k):
        start = ctx.get_node_by_output(source(node.input[k], ctx))
        if not (start is not None and start.is_const() and np.all(start.get_tensor_value(as_list=False) == 0)):
            return False
        step = body.get_node_by_output(source(body.outputs[k], body))
        if step is None or step.type not in ("Add", "AddV2"):
            return False
        srcs = [source(t, body) for t in step.input]
        return ins[k] in srcs and any(
            body.get_node_by_output(t) is not None and body.get_node_by_output(t).is_const()
            and np.all(body.get_node_by_output(t).get_tensor_value(as_list=False) == 1)
            for t in srcs if t != ins[k])

    for item in body.get_nodes():
        if item.type != "TensorListSetItem":
            continue
        index = source(item.input[1], body)
        if index == ins[0] or (index in ins[2:] and counts_from_zero(ins.index(index))):
            continue
        raise ValueError(
            f"the loop {node.name} writes TensorArray items at an index that is not its "
            f"iteration count (as a reverse scan does); tf2onnx {_tf2onnx_version()} "
            f"writes them in iteration order, so the result would be wrong")
    While.version_7(ctx, node)


def _tf2onnx_version() -> str:
    import tf2onnx
    return tf2onnx.__version__


_HANDLERS = {"Select": (_select, []), "SelectV2": (_select, []),
             "FloorDiv": (_floor_int, []), "FloorMod": (_floor_int, []),
             "While": (_while, []), "StatelessWhile": (_while, [])}


def export(fn: Callable, input_signature: Sequence[Any]) -> bytes:
    """A serialized ONNX ModelProto of ``fn`` (a converted function, or any TF function)
    traced on ``input_signature`` (``tf.TensorSpec``s, ``None`` for unknown dimensions),
    made by tf2onnx at opset 18 and checked to load in onnxruntime. Outputs are the
    flattened outputs of ``fn``; bfloat16 inputs and outputs are float32 at the model's
    edges (see the module docstring)."""
    check_installed()
    import tensorflow as tf
    import tf2onnx
    specs = list(input_signature)
    in_dtypes = [s.dtype for s in specs]
    bf16_in = [i for i, d in enumerate(in_dtypes) if d == tf.bfloat16]
    inner = fn if hasattr(fn, "get_concrete_function") else tf.function(fn, autograph=False)
    out_dtypes = [t.dtype for t in tf.nest.flatten(
        inner.get_concrete_function(*specs).structured_outputs)]
    bf16_out = [i for i, d in enumerate(out_dtypes) if d == tf.bfloat16]

    def edges(*xs):
        xs = [tf.cast(x, d) if d != x.dtype else x for x, d in zip(xs, in_dtypes)]
        outs = tf.nest.flatten(inner(*xs))
        return [tf.cast(o, tf.float32) if o.dtype == tf.bfloat16 else o for o in outs]

    specs = [tf.TensorSpec(s.shape, tf.float32, name=f"x{i}") if s.dtype == tf.bfloat16
             else tf.TensorSpec(s.shape, s.dtype, name=f"x{i}") for i, s in enumerate(specs)]
    concrete = tf.function(edges, autograph=False).get_concrete_function(*specs)
    ins = [t.name for t in concrete.inputs if t.dtype != tf.resource]
    outs = [t.name for t in concrete.outputs if t.dtype != tf.resource]
    # tf2onnx.convert.from_function, with the optimizers run as in _tf2onnx
    with tf.device("/cpu:0"):
        frozen = tf2onnx.tf_loader.from_function(concrete, ins, outs)
    with tf.Graph().as_default() as g:
        tf.import_graph_def(frozen, name="")
        model, records = _tf2onnx(
            g, ins, outs, f"converted from {concrete.name}",
            tensors_to_rename=tf2onnx.convert.tensor_names_from_structed(concrete, ins, outs))
    return _finish(model, records, f"function {getattr(fn, '__name__', fn)!s}",
                   bf16_in, bf16_out)


def export_graphs(graphs) -> list:
    """For the probe: each (v1 graph, feeds, outputs) as a model, or the exception.
    The graph is converted as it is (no grappler pass, which could fold the op away),
    then tf2onnx's ONNX optimizers run as in :func:`export`."""
    check_installed()
    out = []
    for g, ins, outs in graphs:
        try:
            model, records = _tf2onnx(g, [t.name for t in ins], [t.name for t in outs],
                                      "jaxtf probe")
            out.append(_finish(model, records, f"a graph of one {outs[0].op.type} op"))
        except Exception as exc:
            out.append(exc)
    return out


def _tf2onnx(g, ins: list[str], outs: list[str], name: str, **kw):
    """tf2onnx's conversion of the TF graph ``g`` (as tf2onnx.convert's ``_convert_common``
    does it) and the ERROR records it logged. tf2onnx runs each ONNX optimizer on a deep
    copy of the graph, to skip an optimizer that fails: that copying was most of the time
    of an export (12 s of 13 for a 200 kB model), so the optimizers run in place first,
    and only after a failure again as tf2onnx does it."""
    from tf2onnx import optimizer, tfonnx
    for catch_errors in (False, True):
        try:
            with _converting() as records:
                onnx_graph = tfonnx.process_tf_graph(
                    tf_graph=g, continue_on_error=True, opset=OPSET, input_names=ins,
                    output_names=outs, custom_op_handlers=dict(_HANDLERS), **kw)
                onnx_graph = optimizer.optimize_graph(onnx_graph, catch_errors=catch_errors)
                return onnx_graph.make_model(name), records
        except Exception:
            if catch_errors:
                raise


# ---------------------------------------------------------------------------------------
# running

_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
    "tensor(int8)": np.int8, "tensor(int16)": np.int16, "tensor(int32)": np.int32,
    "tensor(int64)": np.int64, "tensor(uint8)": np.uint8, "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32, "tensor(uint64)": np.uint64, "tensor(bool)": np.bool_,
    "tensor(complex64)": np.complex64, "tensor(complex128)": np.complex128,
}
_last: list = [None, None]                    # (model bytes, its session): export, then run


def _session(model: bytes):
    if _last[0] is model:
        return _last[1]
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4              # its errors are raised, not logged
    try:
        sess = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise OnnxExportError(f"onnxruntime cannot load the model: "
                              f"{str(exc).strip()[:1500]}") from exc
    _last[:] = [model, sess]
    return sess


def _positions(sess, key: str) -> set[int]:
    value = sess.get_modelmeta().custom_metadata_map.get(key, "")
    return {int(p) for p in value.split(",") if p}


def run(model: bytes, args: Sequence[Any]) -> list:
    """Run a model made by :func:`export` on ``args`` (in the order of the function's
    inputs) in onnxruntime; its outputs as numpy arrays in the graph's dtypes (bfloat16
    outputs, float32 in the model, come back as ``ml_dtypes.bfloat16``)."""
    sess = _session(model)
    ins = sess.get_inputs()
    if len(ins) != len(args):
        raise ValueError(f"the model takes {len(ins)} inputs, got {len(args)}")
    feeds = {i.name: np.asarray(a, dtype=_ORT_TYPES.get(i.type)) for i, a in zip(ins, args)}
    outs = sess.run(None, feeds)
    bf16 = _positions(sess, _BF16_OUT)
    if bf16:
        import ml_dtypes
        outs = [o.astype(ml_dtypes.bfloat16) if i in bf16 else o for i, o in enumerate(outs)]
    return [np.asarray(o) for o in outs]


def run_many(items) -> list:
    """Each (model, args) run; its outputs or the exception."""
    from core.export import each_or_error
    return each_or_error(run, items)


def save(model: bytes, path: str) -> list[str]:
    from core.export import save_bytes
    return save_bytes(model, path, ".onnx")


def run_ones(models: list[bytes]) -> list[str]:
    """For the probe: run each model on ones in a child process (restarted after a
    crash): "ok", "error ...", or "crash ..."."""
    from core.export import run_ones_in_children
    return run_ones_in_children(models, "core.export_onnx", ".onnx")


def ones_once(path: str) -> None:
    """Run the model at ``path`` on ones (unknown dimensions 1); raises on failure. When
    that fails, unknown dimensions 2 are tried too: onnxruntime checks indices, and an
    index op fed ones (index 1) into a dimension of 1 is out of bounds, not refused."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 4
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])

    def feeds(unknown):
        return {i.name: np.ones([d if isinstance(d, int) and d >= 0 else unknown
                                 for d in i.shape], _ORT_TYPES[i.type])
                for i in sess.get_inputs()}
    try:
        sess.run(None, feeds(1))
    except Exception:
        if all(isinstance(d, int) and d >= 0 for i in sess.get_inputs() for d in i.shape):
            raise
        sess.run(None, feeds(2))
