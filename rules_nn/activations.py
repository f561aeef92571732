"""jax.nn functions that reach the jaxpr as ``custom_jvp_call``, lowered to one fused TF op.

A ``custom_jvp_call`` is recognised by the *structure* of its primal ``call_jaxpr`` (never
by its ``name`` parameter): with nested ``jit`` calls inlined, its equations must be, op for
op, those of a reference body written here and traced on the same input avals (same
primitives, parameters, literals by dtype and bits, same data flow). Anything else, or a
dtype a rule does not claim, falls back to the generic rule (``rules_lax.control_flow``),
which lowers the primal jaxpr. Gradients stay JAX's: the converted function's gradient
is JAX's VJP jaxpr (the derivative terms of relu's own JVP rule), converted separately;
primal relus inside it are lowered by these rules like any other.

What jax 0.10.2 emits as ``custom_jvp_call`` from jax.nn, and what we do with it
(measured on TF 2.21, CPU, against ``jax.jit``):

- ``relu``, ``relu6`` (also inside ``hard_sigmoid``, ``hard_silu``): mapped to ``Relu`` /
  ``Relu6`` (TFLite RELU / RELU6, TF.js relu / relu6). Both propagate NaN like XLA's
  max/min, in the vectorised and the scalar path alike. But on ``-0.0`` they return
  ``-0.0`` (Eigen's scalar path, so small tensors and loop tails; every f16/bf16 tensor)
  where XLA returns ``+0.0``; an ``Abs`` after them fixes exactly that and nothing else (the
  result is >= 0 or NaN). ``+ 0.0`` would fix it too, but grappler folds ``x + 0`` away.
  Integers need no fix (relu: every integer dtype; relu6 of an integer is a float in JAX
  and its body has a conversion, so it does not match and takes the generic rule).
- ``softmax``, only with ``jax_softmax_custom_jvp=True`` (JAX's default is False: then it is
  plain primitives), ``where=None``, one axis: mapped to ``Softmax`` (TFLite SOFTMAX, a
  TRANSPOSE added for another axis). Rows with NaN or +inf give all-NaN, all -inf rows
  give all-NaN, exactly as JAX. float16/32/64 are within tolerance (f16: at most 2 ulp);
  **bfloat16 is not claimed**: TF's bf16 kernel is up to 4.5 ulp (3.5%) off JAX in
  relative terms on rows of a few thousand, hidden only by the absolute tolerance.
- ``logaddexp`` (``jnp.logaddexp``, and so ``softplus`` = logaddexp(x, 0), ``log_sigmoid``,
  ``mish``): **not mapped**. ``tf.nn.softplus`` matches in TF for f16/f32/f64, but for
  bfloat16 it returns ``x`` already for x > 2.85 (its cut-off is log(eps) + 2), 0.05 off
  near 3; and TFLite's converter rewrites Softplus as log(exp(x) + 1): inf for x >= 89,
  0 for NaN. The primal's own ops (max, abs, exp, log1p, select) export with JAX's
  numbers, so the generic rule is the better lowering. General logaddexp has no TF op.
- ``log1mexp``: no TF op; generic rule.

Plain primitives in jax 0.10.2, so never seen by a ``custom_jvp_call`` rule: sigmoid
(``logistic``), silu/swish, gelu (both forms), elu, selu, celu, leaky_relu, hard_tanh,
log_softmax, softmax (default), standardize, logsumexp, glu, soft_sign, squareplus,
sparse_plus, sparse_sigmoid. (For the record: tf.nn.elu/selu drop the sign of tiny
negative inputs, tf.nn.leaky_relu computes alpha in float32 for f64, tf.nn.gelu differs
for f64.)
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax._src import config as _jax_config
from jax.extend.core import Literal

from core.rule import random_values, case, rule
from rules_lax.elementwise import relu

#: Call primitives whose body is inlined when comparing structures.
_INLINED = frozenset({"jit", "pjit", "closed_call", "core_call"})


# -- recognising a primal body by its structure ---------------------------------------------

class _NoMatch(Exception):
    pass


def _structure(closed) -> tuple:
    """The computation of a jaxpr, nested calls inlined: one ``(primitive, params, inputs)``
    per equation, inputs named by position (``("in", i)``, ``("out", eqn, k)``) or by
    literal dtype and bits, then the outputs. Two jaxprs with equal structures compute the
    same thing op for op."""
    entries: list = []

    def walk(jaxpr, consts, ins):
        if consts or jaxpr.constvars:
            raise _NoMatch
        env = dict(zip(jaxpr.invars, ins))

        def read(a):
            if isinstance(a, Literal):
                dtype = np.dtype(a.aval.dtype)
                return ("lit", dtype.name, np.asarray(a.val, dtype).tobytes())
            return env[a]
        for eqn in jaxpr.eqns:
            args = [read(a) for a in eqn.invars]
            if eqn.primitive.name in _INLINED:
                sub = eqn.params["jaxpr"]
                outs = walk(getattr(sub, "jaxpr", sub), getattr(sub, "consts", ()), args)
            else:
                params = tuple(sorted((k, repr(v)) for k, v in eqn.params.items()))
                entries.append((eqn.primitive.name, params, tuple(args)))
                outs = [("out", len(entries) - 1, k) for k in range(len(eqn.outvars))]
            env.update(zip(eqn.outvars, outs))
        return [read(a) for a in jaxpr.outvars]
    outs = walk(closed.jaxpr, closed.consts, [("in", i) for i in range(len(closed.jaxpr.invars))])
    return tuple(entries), tuple(outs)


@functools.lru_cache(maxsize=256)
def _reference(body, avals: tuple, static: tuple) -> tuple | None:
    """The structure of ``body(*args, *static)`` traced on ``avals`` (None if it does not trace)."""
    specs = [jax.ShapeDtypeStruct(a.shape, a.dtype, weak_type=a.weak_type) for a in avals]
    try:
        return _structure(jax.make_jaxpr(lambda *xs: body(*xs, *static))(*specs))
    except Exception:   # the reference does not apply to these avals (dtype, arity)
        return None


def _matches(eqn, body, *static) -> bool:
    call = eqn.params["call_jaxpr"]
    if eqn.params.get("num_consts", 0):
        return False
    try:
        mine = _structure(call)
    except _NoMatch:
        return False
    return mine == _reference(body, tuple(call.in_avals), static)


def _relu_body(x):
    return jnp.maximum(x, 0)


def _relu6_body(x):
    return jnp.minimum(jnp.maximum(x, 0), 6)


def _softmax_body(x, initial, axis):
    """jax.nn.softmax's custom_jvp body with ``where=None``."""
    unnormalized = jnp.exp(x - jnp.max(x, axis, initial=initial, keepdims=True))
    return unnormalized / jnp.sum(unnormalized, axis, keepdims=True)


def _unless(body, what):
    return lambda eqn: None if _matches(eqn, body) else f"the primal is not {what}"


def _softmax_axis(eqn) -> int | None:
    """The axis of a ``softmax(x, axis, where=None)`` body whose ``initial`` is -inf."""
    if len(eqn.invars) != 2:
        return None
    initial = eqn.invars[1]
    if not (isinstance(initial, Literal) and np.isneginf(np.asarray(initial.val, np.float64))):
        return None
    rank = len(eqn.invars[0].aval.shape)
    return next((a for a in range(rank) if _matches(eqn, _softmax_body, a)), None)


def _is_softmax(eqn):
    if _softmax_axis(eqn) is None:
        return ("the primal is not jax.nn.softmax(x, axis) over one axis with where=None "
                "(with jax_softmax_custom_jvp=True)")
    return None


# -- cases ----------------------------------------------------------------------------------

nan, inf = float("nan"), float("inf")
# 15 values: -0.0 both in a vectorised block and in the scalar tail of TF's CPU kernels
_EDGES = [nan, -nan, inf, -inf, -0.0, 0.0, -1.5, 1.5, 5.5, 6.0, 6.5, 1e-7, -6e4, 6e4, -0.0]


def _and_zero_sign(f):
    """``f`` and ``1 / f``: the second output tells +0.0 (inf) from -0.0 (-inf)."""
    def g(x):
        y = f(x)
        return y, 1 / y
    return g


def _edges_at_every_lane(rng, dtype):
    # each edge value at many positions of a 37x9 array: vectorised body and scalar tail
    x = np.resize(np.asarray(_EDGES, dtype), 37 * 9).reshape(37, 9)
    x = np.where(rng.random(x.shape) < 0.5, x, random_values(rng, x.shape, dtype))
    x[-1, -3:] = [-0.0, nan, -0.0]
    return [x]


_BIAS = np.array([-0.0, 0.0, -0.0, nan, 1.0, -1.0, -0.0, 2.0, -0.0])


def _bias_add(act):
    """``act`` of x plus a bias shaped (1, 9) (the form of a dense layer that grappler
    fuses), a constant or an argument, both with -0.0 where x has -0.0 in many lanes, the
    scalar tail included: the sum is -0.0 there."""
    def f(x, *b):
        return _and_zero_sign(act)(x + (b[0] if b else _BIAS.astype(x.dtype))[None, :])
    return f


def _conv_bias(act):
    """``act`` of a 1x1 NHWC convolution plus the constant bias: the form TFLite's
    converter fuses into one CONV_2D with a fused relu (-0.0 sums where x is -0.0 and
    the weight positive, NaN and inf through the fused activation)."""
    w = np.array([1.0, -1.0, 0.5, 2.0, 1.0, -1.0, 1.0, 0.25, -2.0]).reshape(1, 1, 1, 9)

    def f(x):
        y = jax.lax.conv_general_dilated(x, w.astype(x.dtype), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return _and_zero_sign(act)(y + _BIAS.astype(x.dtype).reshape(1, 1, 1, 9))
    return f


def _bias_add_cases(act):
    def with_bias(rng, dtype):
        return [*_edges_at_every_lane(rng, dtype), _BIAS.astype(dtype)]
    return [case.custom("bias add, -0.0 sums, constant bias", _bias_add(act),
                        _edges_at_every_lane, dtypes="floating"),
            case.custom("bias add, -0.0 sums, bias an argument", _bias_add(act), with_bias,
                        dtypes="floating"),
            case("conv and bias, -0.0 sums, NaN, inf", _conv_bias(act),
                 np.array([nan, -0.0, 0.0, np.inf, -np.inf, 1.0, -1.0, 1e-30, 3.0],
                          np.float32).reshape(1, 3, 3, 1), dtypes="float32")]


def _integer_extremes(rng, dtype):
    info = np.iinfo(dtype)
    return [np.array(sorted({info.min, info.min + 1, max(-1, info.min), 0, 1, 6, 7, info.max}),
                     dtype)]


def _hard_silu_net(x):
    return jax.nn.hard_silu(x) + jax.jit(jax.nn.relu6)(x * 2)


def _softmax_flag(f):
    """``f`` traced with jax_softmax_custom_jvp on, so softmax is a custom_jvp_call."""
    def g(*args):
        with _jax_config.softmax_custom_jvp(True):
            return f(*args)
    return g


def _softmax_rows(rng, dtype):
    rows = [[-inf] * 4, [inf, 1, 2, 3], [inf, inf, 0, 0], [nan, 1, 2, 3], [-inf, 0, 1, -inf],
            [-0.0, 0.0, -0.0, 0.0], [60000, 60000, -60000, 1], [-60000] * 4, [20, 0, -20, 0],
            [1e-7, -1e-7, 0, 1]]
    return [np.asarray(rows, dtype)]


# -- rules ----------------------------------------------------------------------------------

@rule("custom_jvp_call", dtypes=["floating", "integer"], priority=1,
      when=_unless(_relu_body, "jax.nn.relu (max(x, 0))"), cases=[
          case("NaN, inf, signed zeros", _and_zero_sign(jax.nn.relu), _EDGES, dtypes="floating"),
          case.custom("edges in every lane", _and_zero_sign(jax.nn.relu), _edges_at_every_lane,
                      dtypes="floating"),
          case.custom("extremes", jax.nn.relu, _integer_extremes, dtypes="integer"),
          *_bias_add_cases(jax.nn.relu),
          case.random(jax.nn.relu, shapes=[(5, 7)]),
          case.random(lambda x: jax.vmap(jax.nn.relu)(x) * 3, shapes=[(2, 3, 4)], name="under vmap"),
          case.random(jax.nn.relu, shapes=[(3, 4)], dtypes="float32", name="symbolic batch",
                      convert_kw=dict(polymorphic_shapes=["(b, 4)"]))])
def relu_fused(ctx, x, **_):
    """jax.nn.relu as Relu, with XLA's +0.0 for -0.0 (``rules_lax.elementwise.relu``)."""
    return [relu(x, target=ctx.target)]


@rule("custom_jvp_call", dtypes="floating", priority=1,
      when=_unless(_relu6_body, "jax.nn.relu6 (min(max(x, 0), 6))"), cases=[
          case("NaN, inf, signed zeros", _and_zero_sign(jax.nn.relu6), _EDGES),
          case.custom("edges in every lane", _and_zero_sign(jax.nn.relu6), _edges_at_every_lane),
          *_bias_add_cases(jax.nn.relu6),
          case.random(jax.nn.relu6, shapes=[(4, 9)]),
          case.random(_hard_silu_net, shapes=[(6, 5)], name="hard_silu and a jitted relu6")])
def relu6_fused(ctx, x, **_):
    """jax.nn.relu6 as Relu6, with XLA's +0.0 for -0.0 (``rules_lax.elementwise.relu``)."""
    return [relu(x, cap=6, target=ctx.target)]


@rule("custom_jvp_call", dtypes=["float16", "float32", "float64"], priority=1,
      when=_is_softmax, cases=[
          case.custom("NaN, inf and -inf rows", _softmax_flag(jax.nn.softmax), _softmax_rows),
          case.custom("over axis 0", _softmax_flag(lambda x: jax.nn.softmax(x, axis=0)),
                      _softmax_rows),
          case.random(_softmax_flag(lambda x: jax.nn.softmax(x, axis=1)), shapes=[(3, 17, 5)],
                      name="middle axis of 3x17x5"),
          case.random(_softmax_flag(jax.nn.softmax), shapes=[(2, 300)]),
          case.random(_softmax_flag(jax.nn.softmax), shapes=[(3, 6)], dtypes="float32",
                      name="symbolic batch", convert_kw=dict(polymorphic_shapes=["(b, 6)"]))])
def softmax_fused(ctx, x, initial, **_):
    """jax.nn.softmax (custom_jvp form, where=None, one axis, initial -inf) as Softmax.

    JAX's row is all NaN when it holds a NaN or +inf or is all -inf (x - max is NaN
    somewhere); TF's Softmax kernel leaves some of those elements at 0 on some CPUs
    (measured on an Intel Xeon, not on an AMD EPYC). ``max - max`` is NaN exactly for
    those rows (TF's reduce_max propagates NaN) and 0 otherwise."""
    axis = _softmax_axis(ctx.eqn)
    m = tf.reduce_max(x, axis=axis, keepdims=True)
    return [tf.nn.softmax(x, axis=axis) + (m - m)]
