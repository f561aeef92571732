"""Walk a jaxpr and emit TF ops, one registered rule per equation.

``lower_jaxpr`` is the whole algorithm: an environment maps jaxpr variables to TF values;
for each equation the registry selects a rule, the rule runs inside a TF name scope made
from JAX's name stack, and its results are bound to the equation's outputs. Rules that
hold sub-jaxprs (jit, cond, while, scan, custom_jvp_call, ...) call back into it through
``ctx.lower_jaxpr``.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf
from jax.extend import core as jex

from core import dtypes as _dtypes
from core.errors import ConversionError, JaxtfError
from core.registry import Registry
from core.shapes import DimEnv, has_symbolic


@dataclasses.dataclass
class ConversionContext:
    """What stays fixed for one conversion: the rules, the device, the XLA policy and the
    export target."""
    registry: Registry
    device: str = "cpu"
    allow_xla: bool = False
    prefer: dict[str, str] | None = None
    target: str = "tf"
    checker: Any = None          # a core.targets.OpChecker during a target's pre-flight
    origin: Any = None           # the user's equation a rule's decomposition came from
    anchor: Any = None           # a RunTimeZero (target tflite), see constant()
    used: set = dataclasses.field(default_factory=set)   # ids of the rules that ran
    dims: DimEnv = dataclasses.field(default_factory=DimEnv)  # symbolic dimension values

    def rule_context(self, eqn) -> "RuleContext":
        return RuleContext(self, eqn)

    def tf_dtype(self, dtype) -> tf.DType:
        """The TF dtype of the tensors that hold values of JAX's ``dtype`` on this target
        (TF.js: uint32 and key data as int32 bits, see core.targets.Target.carried)."""
        from core.targets import get
        if isinstance(dtype, tf.DType):
            return dtype
        held = get(self.target).carrier(_dtypes.name_of(dtype))
        return tf.as_dtype(held) if held else _dtypes.to_tf(dtype)

    def carry_in(self, x: tf.Tensor, dtype) -> tf.Tensor:
        """An input of JAX's ``dtype`` as this target holds it: on TF.js a uint32 input
        must arrive as ``tf.bitcast(int32_bits, tf.uint32)`` (what core.export_tfjs does),
        whose int32 operand is used; anything else is bitcast (fine in TF, refused by the
        TF.js exporter)."""
        held = self.tf_dtype(dtype)
        if x.dtype == held:
            return x
        if not tf.executing_eagerly() and x.op.type == "Bitcast" \
                and x.op.inputs[0].dtype == held:
            return x.op.inputs[0]
        return tf.bitcast(x, held)


class RuleContext:
    """What a rule receives as ``ctx``: the equation, its abstract values, and helpers."""

    def __init__(self, conv: ConversionContext, eqn):
        self.conversion = conv
        self.eqn = eqn

    # -- the equation --------------------------------------------------------------------
    @property
    def avals_in(self) -> list:
        return [v.aval for v in self.eqn.invars]

    @property
    def avals_out(self) -> list:
        return [v.aval for v in self.eqn.outvars]

    @property
    def aval_out(self):
        return self.eqn.outvars[0].aval

    @property
    def allow_xla(self) -> bool:
        return self.conversion.allow_xla

    @property
    def device(self) -> str:
        return self.conversion.device

    @property
    def target(self) -> str:
        """The export target ("tf", "tflite", "onnx", "tfjs"): a generic rule may pick,
        among exact forms, the one that target's runtime accepts."""
        return self.conversion.target

    # -- helpers ---------------------------------------------------------------------------
    def tf_dtype(self, aval_or_dtype) -> tf.DType:
        """The TF dtype holding values of this aval or dtype (on TF.js, uint32 is int32)."""
        if isinstance(aval_or_dtype, type):       # np.uint32
            aval_or_dtype = np.dtype(aval_or_dtype)
        return self.conversion.tf_dtype(getattr(aval_or_dtype, "dtype", aval_or_dtype))

    def shape(self, aval) -> list:
        """``aval``'s shape with symbolic dimensions evaluated: Python ints where known,
        TF int32 scalars where the dimension is only known when the graph runs. Pass the
        result to ``tf.reshape``/``tf.broadcast_to``/``tf.zeros`` (they accept it), or
        use :meth:`shape_tensor`."""
        return [self.conversion.dims.evaluate(d) for d in self.physical_shape(aval)]

    def shape_tensor(self, aval) -> tf.Tensor | list:
        """The shape as a 1-D int32 TF tensor if any dimension is symbolic, else a list."""
        dims = self.shape(aval)
        if all(isinstance(d, int) for d in dims):
            return dims
        return tf.stack([tf.constant(d, tf.int32) if isinstance(d, int) else d for d in dims])

    def dim(self, d):
        """One dimension (an int or a symbolic expression) as an int or TF scalar."""
        return self.conversion.dims.evaluate(d)

    def is_symbolic(self, aval) -> bool:
        return has_symbolic(aval.shape)

    def physical_shape(self, aval) -> tuple:
        """The shape of the TF value holding ``aval`` (key arrays carry their key data in
        trailing dimensions)."""
        return _dtypes.physical_shape(aval)

    def constant(self, value, aval_or_dtype) -> tf.Tensor:
        """A constant of JAX's dtype; ±inf in it is made at run time where the target's
        converter would turn an inf constant into the largest finite float (TFLite)."""
        dtype = getattr(aval_or_dtype, "dtype", aval_or_dtype)
        return constant(value, dtype, self.conversion.anchor, self.tf_dtype(dtype))

    def loop_outputs(self, outs: Sequence[tf.Tensor], ins: Sequence[tf.Tensor]) -> list:
        """A loop body's outputs, safe to return from ``tf.while_loop``: on a target whose
        loop copies outputs into inputs one by one (LiteRT's WHILE), an output that *is*
        another position's input would read that input already overwritten (measured: a
        body ``(a + c, 2 * a, b)`` gave ``b`` the new ``2 * a``), so such an output is
        copied through a gather by a run-time index the converter cannot fold."""
        from core.targets import get
        if not get(self.target).loop_copies_in_order or self.conversion.anchor is None:
            return list(outs)
        pos = {t.ref(): j for j, t in enumerate(ins)}

        def source(t):                    # what the converter sees once it drops these
            while t.op.type in ("Identity", "EnsureShape"):
                t = t.op.inputs[0]
            return t.ref()
        return [tf.gather(tf.expand_dims(o, 0), self.conversion.anchor.get())
                if pos.get(source(o), k) != k else o for k, o in enumerate(outs)]

    def lower_jaxpr(self, jaxpr, *args: tf.Tensor, consts: Sequence[Any] = ()) -> list[tf.Tensor]:
        """Lower a sub-jaxpr (open or closed) on TF values; returns its outputs."""
        return lower_jaxpr(self.conversion, jaxpr, args, consts)

    def lower_fun(self, fun: Callable, *args: tf.Tensor, avals: Sequence | None = None,
                  **static) -> list[tf.Tensor]:
        """Trace the JAX function ``fun(*args, **static)`` on the avals of ``args`` (default:
        this equation's input avals) and lower the resulting jaxpr here. Lets a rule be
        written as a JAX decomposition into primitives that have rules of their own."""
        import jax
        avals = list(avals if avals is not None else self.avals_in)
        specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=getattr(a, "weak_type", False))
                 for a in avals]
        closed = jax.make_jaxpr(lambda *xs: fun(*xs, **static))(*specs)
        self.conversion.registry.require(closed, self.device, self.allow_xla,
                                         self.conversion.prefer,
                                         what=f"the decomposition of {self.eqn.primitive}",
                                         target=self.target)
        conv = self.conversion
        if conv.origin is None:     # errors point at the user's equation, not at ours
            conv = dataclasses.replace(conv, origin=self.eqn)
        return lower_jaxpr(conv, closed, args)


def constant(value, dtype, anchor=None, held=None) -> tf.Tensor:
    """A TF constant holding ``value`` as JAX's ``dtype`` (extended dtypes: key data).

    With ``anchor`` (a :class:`RunTimeZero`), infinities and -0.0 are made from their
    bits plus the anchor instead of stored: the TFLite converter rewrites an inf constant,
    and anything it can fold into one, as the largest finite float, silently (measured:
    ``x * inf``, ``1 / 0`` and ``max + max`` all gave 3.4e38 in LiteRT), and a -0.0
    constant as +0.0 (``min(x, -0.0)`` gave +0.0 for x = +0.0, found by the fuzzer).

    ``held``: the TF dtype holding ``dtype`` on the target, when it differs (TF.js holds
    uint32 as int32): the constant has ``value``'s bits in it."""
    from jax import dtypes as jdtypes
    if jdtypes.issubdtype(dtype, jdtypes.extended):
        import jax
        value = np.asarray(jax.random.key_data(value))
        if held is not None and held != _dtypes.to_tf(dtype):
            return tf.constant(value.view(held.as_numpy_dtype))
        return tf.constant(value, dtype=_dtypes.to_tf(dtype))
    arr = np.asarray(value, dtype=dtype)
    if held is not None and held != _dtypes.to_tf(dtype):
        return tf.constant(arr.view(held.as_numpy_dtype))
    if anchor is not None and (arr.dtype.kind == "f" or arr.dtype.name == "bfloat16"):
        wide = arr.astype(np.float32)
        inf = np.isinf(wide)
        if (inf | (wide == 0) & np.signbit(wide)).any():
            # the bits of ±inf (and -0.0, which the converter stores as +0.0) plus a
            # run-time zero, then reinterpreted
            bits = np.where(inf, np.where(wide > 0, 0x7F800000, -0x800000),
                            wide.view(np.int32)).astype(np.int32)
            out = tf.bitcast(tf.constant(bits) + anchor.get(), tf.float32)
            return tf.cast(out, _dtypes.to_tf(dtype)) if arr.dtype != np.float32 else out
    return tf.constant(arr, dtype=_dtypes.to_tf(dtype))


class RunTimeZero:
    """An int32 scalar 0 that the graph computes from its first input, so no converter
    can fold what is built from it into a constant (0 also without inputs). Made on
    first use, once per graph (a loop body gets its own, from the captured input), so a
    program without infinities pays nothing."""

    def __init__(self, xs: Sequence[tf.Tensor]):
        self.xs = list(xs)
        self._made: dict[int, tuple] = {}

    def get(self) -> tf.Tensor:
        g = tf.compat.v1.get_default_graph()
        hit = self._made.get(id(g))
        if hit is not None and hit[0] is g:
            return hit[1]
        # a float32/int32/bool input when there is one: other dtypes are cast first,
        # which TFLite takes for every dtype it can hold
        xs = sorted(self.xs, key=lambda x: x.dtype not in (tf.float32, tf.int32, tf.bool))
        if xs:
            x = xs[0] if xs[0].dtype in (tf.float32, tf.int32, tf.bool) else tf.cast(
                xs[0], tf.float32)
            flat = tf.reshape(x, [-1])[:1]
            count = tf.reduce_sum(tf.cast(tf.equal(flat, flat), tf.int32))    # 0 or 1
            zero = tf.bitwise.right_shift(count, 1)
        else:
            zero = tf.constant(0)
        self._made[id(g)] = (g, zero)
        return zero


_SCOPE_BAD = re.compile(r"[^A-Za-z0-9_.\-/>]")


def scope_name(eqn) -> str:
    """A TF name scope for an equation: JAX's name stack, then the primitive."""
    stack = str(getattr(eqn.source_info, "name_stack", "") or "")
    name = f"{stack}/{eqn.primitive.name}" if stack else eqn.primitive.name
    name = _SCOPE_BAD.sub("_", name).strip("/")
    return name if name[:1].isalnum() or name[:1] == "." else "p_" + name


def lower_jaxpr(conv: ConversionContext, jaxpr, args: Sequence[tf.Tensor],
                consts: Sequence[Any] = ()) -> list[tf.Tensor]:
    """Emit TF ops for each equation of ``jaxpr`` (a Jaxpr or ClosedJaxpr), in order."""
    if isinstance(jaxpr, jex.ClosedJaxpr):
        consts = [constant(c, v.aval.dtype, conv.anchor, conv.tf_dtype(v.aval.dtype))
                  if not isinstance(c, (tf.Tensor, tf.Variable)) else c
                  for c, v in zip(jaxpr.consts, jaxpr.jaxpr.constvars)]
        jaxpr = jaxpr.jaxpr
    env: dict[Any, tf.Tensor] = {}

    def read(atom) -> tf.Tensor:
        if isinstance(atom, jex.Literal):
            return constant(atom.val, atom.aval.dtype, conv.anchor,
                            conv.tf_dtype(atom.aval.dtype))
        return env[atom]

    def write(var, value) -> None:
        if not isinstance(var, jex.DropVar):
            env[var] = value

    if len(args) != len(jaxpr.invars):
        raise ConversionError(f"internal: jaxpr takes {len(jaxpr.invars)} inputs, "
                              f"got {len(args)}")
    for var, value in zip([*jaxpr.constvars, *jaxpr.invars], [*consts, *args]):
        write(var, value)
    registry, checker = conv.registry, conv.checker
    for eqn in jaxpr.eqns:
        rule = registry.select(eqn, conv.device, conv.allow_xla, conv.prefer, conv.target)
        conv.used.add(rule.id)
        try:
            mark = checker.start() if checker else None
            with tf.name_scope(scope_name(eqn)):
                out = rule.fn(conv.rule_context(eqn), *map(read, eqn.invars), **eqn.params)
            if checker:
                checker.finish(mark, eqn, rule.id, conv.origin)
        except JaxtfError:
            raise
        except Exception as exc:
            from core.registry import where
            raise ConversionError(
                f"rule {rule.id} ({rule.package}) failed on {eqn.primitive.name} "
                f"{' '.join(str(v.aval) for v in eqn.invars)} at {where(eqn)}: "
                f"{type(exc).__name__}: {exc}") from exc
        outs = out if eqn.primitive.multiple_results else [out]
        if len(outs) != len(eqn.outvars):
            raise ConversionError(f"rule {rule.id} returned {len(outs)} values for "
                                  f"{eqn.primitive.name}, which has {len(eqn.outvars)} results")
        for var, value in zip(eqn.outvars, outs):
            write(var, value)
    return [read(v) for v in jaxpr.outvars]
