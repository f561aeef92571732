"""``convert``: a JAX function in, a TensorFlow function out."""
from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Sequence

import numpy as np
import tensorflow as tf

from core import dtypes as _dtypes
from core import targets as _targets
from core.errors import InputError, JaxtfError
from core.interpreter import ConversionContext, lower_jaxpr
from core.registry import Registry, default_registry
from core.shapes import Constrained, DimEnv, symbolic_avals

_UNSET = object()


def convert(fun_jax: Callable, *, polymorphic_shapes=None, polymorphic_constraints=(),
            with_gradient: bool = True, enable_xla=_UNSET, native_serialization=_UNSET,
            native_serialization_platforms=(), native_serialization_disabled_checks=(),
            allow_xla: bool = False, device: str = "cpu", target: str = "tf",
            registry: Registry | None = None, rules: Sequence = (),
            disable_rules: Sequence[str] = (), prefer: dict[str, str] | None = None) -> Callable:
    """Convert ``fun_jax`` into a TensorFlow function built from plain TF ops.

    Call-compatible with ``jax.experimental.jax2tf.convert``. The result takes TF tensors,
    numpy arrays, Python scalars, or pytrees of them (the same structure ``fun_jax`` takes),
    and returns ``fun_jax``'s output pytree with tf.Tensor leaves. It works eagerly and
    inside ``tf.function``; the jaxpr is traced once per input signature and cached.

    :param allow_xla: allow rules that emit XLA-only TF ops (``Xla*``). Off by default:
        the output then loads in TFLite, TF.js and tf2onnx. ``enable_xla`` is accepted as
        jax2tf's name for the same switch.
    :param device: the device the graph will run on ("cpu", "gpu" or "tpu"); it selects
        among rules with device constraints.
    :param target: where the graph is exported to: ``"tf"`` (default; TensorFlow, TF
        Serving), ``"tflite"`` (LiteRT/TFLite with builtin ops only), ``"onnx"`` (tf2onnx
        at opset 18, onnxruntime) or ``"tfjs"`` (TensorFlow.js). Rules written for
        the target are preferred, and on the first call on an input signature every op
        the program is lowered to is checked against what the target's runtime accepts
        (``core/target_ops``); refused ops raise one :class:`~core.errors.TargetError`
        naming each equation, its source line and the op.
    :param registry: the rule registry; default: built-in rules plus installed plugins.
    :param rules: extra rules (``@rule`` functions or Rule objects) for this conversion.
    :param disable_rules: ids (``module:function``) of rules not to use in this conversion.
    :param prefer: ``{primitive: rule id}``: try this rule first for that primitive (the
        others remain as fallbacks when it does not apply).
    :param polymorphic_shapes: jax2tf's shape specs (``"(b, 28, 28)"``): the program is
        traced once with symbolic dimensions, solved from the inputs' shapes at run time.
    :param polymorphic_constraints: constraints on those dimensions (``"b >= 16"``,
        ``"c == 2 * b"``), as in jax2tf: JAX's shape reasoning relies on them while
        tracing, and inputs that break them raise at run time.
    :param native_serialization: jaxtf never serializes StableHLO (no ``XlaCallModule``);
        ``True`` raises, ``False`` is what jaxtf does anyway.
        ``native_serialization_platforms`` and ``native_serialization_disabled_checks``
        have no effect here: any other value than the default gives a warning.
    :param with_gradient: with True (default) the result carries a TF custom gradient
        computed from JAX's VJP of ``fun_jax`` (custom_jvp/custom_vjp rules included),
        converted by the same machinery. With False, asking for a gradient raises.
    """
    if not callable(fun_jax):
        raise TypeError(f"convert expects a callable JAX function, got {type(fun_jax).__name__}")
    if enable_xla is not _UNSET:
        allow_xla = bool(enable_xla)
    if native_serialization is not _UNSET and native_serialization:
        raise JaxtfError("jaxtf never emits XlaCallModule (native serialization); it lowers "
                         "each primitive to plain TF ops. For native serialization use "
                         "jax.experimental.jax2tf.convert, or drop native_serialization=True.")
    for name, value in (("native_serialization_platforms", native_serialization_platforms),
                        ("native_serialization_disabled_checks",
                         native_serialization_disabled_checks)):
        if value:
            import warnings
            warnings.warn(f"convert: {name}={value!r} has no effect in jaxtf, which never "
                          "serializes StableHLO (it lowers each primitive to TF ops)",
                          stacklevel=2)
    if polymorphic_shapes is not None and _all_none(polymorphic_shapes):
        polymorphic_shapes = None
    if isinstance(polymorphic_constraints, str):
        polymorphic_constraints = (polymorphic_constraints,)
    if polymorphic_constraints:
        if polymorphic_shapes is None:
            raise ValueError(f"polymorphic_constraints={list(polymorphic_constraints)!r} "
                             "need symbolic dimensions to constrain: give polymorphic_shapes")
        polymorphic_shapes = Constrained(polymorphic_shapes, tuple(polymorphic_constraints))
    if device not in ("cpu", "gpu", "tpu"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'tpu', got {device!r}")
    _targets.get(target)                      # an unknown target fails here, by name
    registry = registry or default_registry()
    if rules or disable_rules:
        registry = registry.with_overrides(add=rules, disable=disable_rules)
    for prim, rid in (prefer or {}).items():
        if rid not in {r.id for r in registry.rules(prim)}:
            raise ValueError(f"prefer: no rule {rid!r} lowers {prim!r}; candidates: "
                             f"{[r.id for r in registry.rules(prim)]}")
    conv = _Converted(fun_jax, with_gradient, ConversionContext(
        registry, device, allow_xla, dict(prefer) if prefer else None, target),
        polymorphic_shapes)
    # Copy the name and docs, but not __wrapped__: tf.function would follow it to
    # fun_jax's signature and pass its default arguments in as (string, ...) inputs.
    for attr in ("__name__", "__qualname__", "__doc__", "__module__"):
        if hasattr(fun_jax, attr):
            setattr(conv, attr, getattr(fun_jax, attr))
    return conv


def _all_none(spec) -> bool:
    import jax
    return all(s is None for s in jax.tree_util.tree_leaves(spec, is_leaf=lambda x: x is None))


class _Converted:
    """The converted function: flattens inputs, looks up (or traces) the jaxpr for their
    signature, lowers it with the interpreter, rebuilds the output pytree."""

    def __init__(self, fun_jax: Callable, with_gradient: bool, conv: ConversionContext,
                 polymorphic_shapes=None):
        self.fun_jax = fun_jax
        self.polymorphic_shapes = polymorphic_shapes
        self.with_gradient = with_gradient
        self.conv = conv
        self._cache: dict[Any, tuple] = {}
        self._lock = threading.Lock()

    @tf.autograph.experimental.do_not_convert   # our Python is not for AutoGraph to rewrite
    def __call__(self, *args, **kwargs):
        import jax
        leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
        tensors, avals = [], []
        for i, leaf in enumerate(leaves):
            t, aval = _to_input(i, leaf, allow_unknown=self.polymorphic_shapes is not None)
            tensors.append(t)
            avals.append(aval)
        if self.polymorphic_shapes is not None:
            avals = symbolic_avals(args, kwargs, self.polymorphic_shapes, avals)
        avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
        key = (in_tree, tuple((str(a.shape), a.dtype) for a in avals), _x64_enabled())
        with self._lock:
            entry = self._cache.get(key)
            if entry is None:
                entry = self._cache[key] = self._trace(in_tree, avals)
        tensors = [self._cast_input(i, t, a) for i, (t, a) in enumerate(zip(tensors, avals))]
        if _targets.get(self.conv.target).carried:   # before any wrapping hides a bitcast
            tensors = [self.conv.carry_in(t, a.dtype) for t, a in zip(tensors, avals)]
        outs = self._run(entry, tensors, in_tree)
        return jax.tree_util.tree_unflatten(entry.out_tree, outs)

    def _cast_input(self, i: int, t, aval):
        """Input ``t`` in JAX's dtype for it (float64 -> float32 with x64 off). A complex
        narrowing must be a Cast the export target accepts, else a TargetError naming it
        (LiteRT has no complex128 -> complex64 Cast, and the converter failed on it); the
        real ones are mapped by every target's export (TF.js feeds int64 as int32)."""
        from core.errors import TargetError
        want = _dtypes.to_tf(aval.dtype)
        if t.dtype == want:
            return t
        target, sig = _targets.get(self.conv.target), f"{t.dtype.name}->{want.name}"
        if (t.dtype.is_complex and target.accepted is not None
                and not _targets.preflight_disabled()
                and sig not in target.accepted.get("Cast", ())):
            raise TargetError(
                f"input {i} of {_fun_name(self.fun_jax)} is {t.dtype.name}, which JAX "
                f"computes as {want.name} (jax_enable_x64 is off); the Cast({sig}) this "
                f"takes is not accepted by {target.description}. Pass {want.name} arrays "
                f"(x.astype(np.{want.name})), or use target='tf'.")
        return tf.cast(t, want)

    def trace(self, *args, **kwargs):
        """Trace and pre-flight the program for these inputs (arrays, tensors or
        ``jax.ShapeDtypeStruct``s) without running it; returns the ClosedJaxpr. Raises
        NoRuleError / TargetError as a call would."""
        import jax
        leaves, in_tree = jax.tree_util.tree_flatten((args, kwargs))
        avals = [jax.ShapeDtypeStruct(tuple(np.shape(x) if not hasattr(x, "shape") else x.shape),
                                      _dtypes.canonical(getattr(x.dtype, "as_numpy_dtype",
                                                                x.dtype)))
                 for x in leaves]
        if self.polymorphic_shapes is not None:
            avals = symbolic_avals(args, kwargs, self.polymorphic_shapes, avals)
            avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
        closed = self._trace(in_tree, avals).closed
        self._preflight(closed, in_tree)
        return closed

    def _trace(self, in_tree, avals):
        import jax
        out_tree_box = []

        def flat_fun(*flat):
            a, kw = jax.tree_util.tree_unflatten(in_tree, list(flat))
            out = self.fun_jax(*a, **kw)
            out_leaves, out_tree = jax.tree_util.tree_flatten(out)
            out_tree_box.append(out_tree)
            return out_leaves

        try:
            closed = jax.make_jaxpr(flat_fun)(*avals)
        except JaxtfError:
            raise
        self.conv.registry.require(closed, self.conv.device, self.conv.allow_xla,
                                   self.conv.prefer, what=_fun_name(self.fun_jax),
                                   target=self.conv.target)
        self._check_signature(closed)
        return _Traced(closed, out_tree_box[-1], flat_fun)

    def _op_checker(self):
        """A new OpChecker for the target's pre-flight (None: no pre-flight)."""
        target = _targets.get(self.conv.target)
        if target.table is None or _targets.preflight_disabled():
            return None
        return _targets.OpChecker(target)

    def _check_signature(self, closed) -> None:
        """The target's pre-flight of the inputs and outputs: sizes and dtypes it holds."""
        from core.errors import TargetError
        target = _targets.get(self.conv.target)
        if target.table is None or _targets.preflight_disabled():
            return
        empty = [f"{kind} {i} has shape {tuple(a.shape)}"
                 for kind, avals in (("input", closed.in_avals), ("output", closed.out_avals))
                 for i, a in enumerate(avals) if 0 in tuple(a.shape)]
        if empty and not target.zero_size:
            raise TargetError(
                f"{_fun_name(self.fun_jax)} cannot be exported to target {target.name!r}: "
                f"{target.description} models cannot hold zero-size tensors, and "
                f"{'; '.join(empty)}. Drop the empty arrays from the function's inputs and "
                f"outputs (they carry no data), or use target='tf'.")
        if target.dtypes is not None:
            foreign = [f"{kind} {i} is {_dtypes.name_of(a.dtype)}"
                       for kind, avals in (("input", closed.in_avals),
                                           ("output", closed.out_avals))
                       for i, a in enumerate(avals)
                       if _dtypes.name_of(a.dtype) not in target.dtypes
                       and not target.carrier(_dtypes.name_of(a.dtype))]
            if foreign:
                raise TargetError(
                    f"{_fun_name(self.fun_jax)} cannot be exported to target "
                    f"{target.name!r}: {target.description} holds only "
                    f"{', '.join(sorted(target.dtypes))}, and {'; '.join(foreign)}. Cast "
                    f"those inputs/outputs to one of these dtypes in the function, or use "
                    f"another target.")

    def _preflight(self, closed, in_tree) -> None:
        """The target's pre-flight of the ops, in a scratch graph (see ``_run`` for the one
        done in the lowering itself): one TargetError for every refusal."""
        checker = self._op_checker()
        if checker is not None:
            self._raise_refusals(self.lower_checked(closed, in_tree, checker))

    def _raise_refusals(self, checker) -> None:
        from core.errors import TargetError
        if checker.refusals:
            raise TargetError(_targets.format_refusals(
                checker.refusals, checker.target, _fun_name(self.fun_jax)), checker.refusals)

    def lower_checked(self, closed, in_tree, checker):
        """Lower ``closed`` once into a scratch graph (placeholders, None for symbolic
        dimensions) with ``checker`` seeing every equation's ops; returns the checker."""
        from tensorflow.python.framework import func_graph
        graph = func_graph.FuncGraph(f"jaxtf_check_{self.conv.target}")
        with graph.as_default():
            xs = [tf.compat.v1.placeholder(
                self.conv.tf_dtype(a.dtype), [d if isinstance(d, int) else None
                                              for d in _dtypes.physical_shape(a)])
                  for a in closed.in_avals]
            self._lower(closed, xs, in_tree, dataclasses.replace(
                self.conv, checker=checker, used=set()))
        return checker

    def _lower(self, closed, xs, in_tree, conv=None) -> list[tf.Tensor]:
        conv = conv or self.conv
        dims = DimEnv.solve(closed.in_avals, xs, in_tree)
        conv = dataclasses.replace(conv, dims=dims) if dims.values else conv
        if _targets.get(conv.target).inf_at_run_time:
            from core.interpreter import RunTimeZero
            conv = dataclasses.replace(conv, anchor=RunTimeZero(xs))
        if _targets.get(conv.target).carried:
            xs = [conv.carry_in(x, a.dtype) for x, a in zip(xs, closed.in_avals)]
        if dims.assertions:
            with tf.control_dependencies(dims.assertions):
                xs = [tf.identity(x) for x in xs]
        return lower_jaxpr(conv, closed, xs)

    def _run(self, entry: "_Traced", tensors: Sequence[tf.Tensor], in_tree) -> list[tf.Tensor]:
        closed = entry.closed
        # The target's op pre-flight, once per signature: while tracing, the lowering
        # itself is checked (its ops are the exported ones); run eagerly, where no op is
        # kept to look at, a scratch graph is lowered first.
        checker = None if entry.checked else self._op_checker()
        if checker is not None and tf.executing_eagerly():
            self._raise_refusals(self.lower_checked(closed, in_tree, checker))
            entry.checked, checker = True, None

        def lower(xs):
            conv = None if checker is None else dataclasses.replace(self.conv, checker=checker)
            outs = self._lower(closed, xs, in_tree, conv)
            if checker is not None:
                self._raise_refusals(checker)
                entry.checked = True
            return outs

        if not tensors:
            return lower(tensors)
        name = _fun_name(self.fun_jax)

        @tf.custom_gradient
        def with_grad(*xs):
            outs = lower(xs)

            def grad(*dys, **_):
                if not self.with_gradient:
                    # An assertion that fails when the gradient runs (at once when eager):
                    # saving a SavedModel traces gradient functions, and must still work.
                    fail = tf.debugging.Assert(tf.constant(False), [
                        f"{name} was converted with with_gradient=False, so it has no "
                        "gradient; convert it with with_gradient=True (the default) to "
                        "differentiate it in TensorFlow."])
                    with tf.control_dependencies([fail]):
                        return [tf.zeros_like(x) for x in xs]
                return self._gradient(entry, xs, dys, outs)
            return outs, grad

        return list(with_grad(*tensors))

    def _gradient(self, entry: "_Traced", xs: Sequence[tf.Tensor],
                  dys: Sequence[tf.Tensor | None], outs: Sequence[tf.Tensor]):
        """The TF gradient: JAX's VJP of the same function at the same signature, converted
        by the same machinery (and itself differentiable, for higher orders)."""
        import jax
        in_avals, out_avals = entry.closed.in_avals, entry.closed.out_avals
        diff_in = [_differentiable(a.dtype) for a in in_avals]
        diff_out = [_differentiable(a.dtype) for a in out_avals]
        if entry.vjp is None:
            fun = entry.flat_fun    # re-traced, so symbolic dims live in the VJP's own scope

            def vjp(primals, cts):
                # differentiate with respect to the float inputs only: integer and bool
                # inputs would get float0 cotangents, which TF has no type for
                def fun_of_diff(*diff_primals):
                    it = iter(diff_primals)
                    return fun(*[next(it) if d else p for p, d in zip(primals, diff_in)])
                _, pullback = jax.vjp(fun_of_diff,
                                      *[p for p, d in zip(primals, diff_in) if d])
                cts = iter(cts)
                full = [next(cts) if d else np.zeros(a.shape, jax.dtypes.float0)
                        for a, d in zip(out_avals, diff_out)]
                return list(pullback(full))
            # the VJP takes (primals, cotangents): the same dimension variables apply to
            # the primals, and the cotangents have the outputs' shapes
            poly = None
            if self.polymorphic_shapes is not None:
                poly = ([_spec(a) for a in in_avals],
                        [_spec(a) for a, d in zip(out_avals, diff_out) if d])
                if isinstance(self.polymorphic_shapes, Constrained):    # keep them
                    poly = Constrained(poly, self.polymorphic_shapes.constraints)
            entry.vjp = _Converted(vjp, self.with_gradient, self.conv, poly)
        cts = [tf.zeros_like(y) if dy is None else tf.cast(dy, y.dtype)
               for dy, y, d in zip(dys, outs, diff_out) if d]
        grads = iter(entry.vjp(list(xs), cts))
        return [next(grads) if d else None for d in diff_in]

@dataclasses.dataclass
class _Traced:
    """What is cached per input signature: the jaxpr, the output tree, the flat function
    that was traced, and its converted VJP (made on the first gradient request)."""
    closed: Any
    out_tree: Any
    flat_fun: Callable
    vjp: Any = None
    checked: bool = False   # the target's op pre-flight passed


def _spec(aval) -> str:
    """A polymorphic_shapes spec that re-creates ``aval``'s (symbolic) shape."""
    return "(" + ", ".join(str(d) for d in aval.shape) + ("," if len(aval.shape) == 1 else "") + ")"


def _differentiable(dtype) -> bool:
    import jax
    return bool(jax.dtypes.issubdtype(dtype, np.inexact))


def _x64_enabled() -> bool:
    import jax
    return bool(jax.config.jax_enable_x64)


def _fun_name(f) -> str:
    return getattr(f, "__name__", None) or type(f).__name__


def _to_input(i: int, leaf, allow_unknown: bool = False) -> tuple[tf.Tensor, Any]:
    """A TF tensor and the JAX aval (ShapeDtypeStruct) for one flattened input."""
    import jax
    if isinstance(leaf, (tf.Tensor, tf.Variable)):
        t = tf.convert_to_tensor(leaf)
        np_dtype = t.dtype.as_numpy_dtype
    else:
        try:
            arr = np.asarray(leaf)
        except Exception as exc:
            raise InputError(f"input #{i} ({type(leaf).__name__}) cannot be converted to an "
                             f"array: {exc}") from None
        if arr.dtype == object or arr.dtype.kind in "USV":
            raise InputError(f"input #{i} ({type(leaf).__name__}) is not an array, tensor "
                             "or number; pass arrays, tf.Tensors or pytrees of them")
        np_dtype = arr.dtype
        t = tf.constant(arr)
    shape = t.shape
    if shape.rank is None:
        raise InputError(f"input #{i} has unknown rank; give tf.function an input_signature "
                         "with the rank known, e.g. tf.TensorSpec([None, 28, 28])")
    if not allow_unknown and any(d is None for d in shape.as_list()):
        raise InputError(
            f"input #{i} has shape {shape} with unknown dimensions; name them with "
            "polymorphic_shapes (e.g. convert(f, polymorphic_shapes=['(b, 28, 28)'])) or "
            "give tf.function an input_signature with concrete shapes")
    dtype = _dtypes.canonical(np_dtype)
    return t, _Spec(tuple(shape.as_list()), dtype)


class _Spec:
    """Shape and dtype of an input (the shape may hold None until made symbolic)."""
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype

    def __repr__(self):
        return f"{self.dtype}{list(self.shape)}"
