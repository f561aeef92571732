"""What tf2onnx + onnxruntime compute wrong: exact forms for target ``"onnx"``.

Measured with tf2onnx 1.17 (opset 18) and onnxruntime 1.32 (see :mod:`core.export_onnx`):

- tf2onnx converts an integer ``FloorDiv`` to ONNX ``Div`` (it truncates) and ``FloorMod``
  to a truncating remainder: ``-7 // 2`` is -3 there. Symbolic dimensions are evaluated
  with them (``ceil(h / s) = -((-h) // s)`` in SAME padding, under ``polymorphic_shapes``),
  so a SAME conv/pool over symbolic sizes came out with a wrong shape, and a pad by such
  amounts padded wrong. :func:`exact_dims` gives a rule a ``ctx`` whose dimensions are
  evaluated with floor division built from ``TruncateDiv`` (exact in ONNX); the generic
  rules run unchanged on it. Only the primitives below get it: any other rule reading a
  shape with such a dimension (e.g. a ``mul`` in the gradient of a SAME pool) still gets a
  truncated one; the lasting fix is exact floor division in ``core.shapes`` for target
  onnx, after which these wrappers can go.
- ``ReduceProd`` of int32/int64 saturates (XLA wraps): the product is folded with ``Mul``,
  which wraps.
- ``Atan2`` loses the signs of zeros and gives NaN for infinities: the angle is taken on
  |x|, |y| with the special values set explicitly, and the quadrant and sign restored.
- A float ``FloorMod`` by an infinite divisor is NaN (C's fmod gives the dividend).
- ``Sign(NaN)`` is 0 for float16.

Not a rule: XLA's CPU backend reads and writes subnormal floats as zero; onnxruntime
keeps them (README's limitations). Its session option ``session.set_denormal_as_zero``
is not used: it leaves flush-to-zero set on the calling thread (JAX and numpy in the same
process then flush too) and misorders sorts of subnormals. ``rem`` reads a subnormal
divisor as zero, as XLA does.
"""
from __future__ import annotations

import copy
import dataclasses

import ml_dtypes
import numpy as np
import tensorflow as tf
from jax import lax

from core.rule import case, rule, rules_of
from core.shapes import eval_expr, is_symbolic
from rules_lax.elementwise import rem_floating, sign
from rules_lax.reductions import reduce_monoid
from rules_lax.structural import pad
from rules_nn.conv import conv_general_dilated
from rules_nn.windows import (reduce_window_max, reduce_window_min, reduce_window_sum,
                              select_and_scatter_add)

nan, inf = float("nan"), float("inf")


# -- symbolic dimensions with exact floor division ---------------------------------------

def floordiv(a, b):
    """Floor division of int32 scalars from ``TruncateDiv`` (tf2onnx's ``FloorDiv``
    truncates): one less where the remainder is nonzero and the signs differ."""
    q = tf.truncatediv(a, b)
    r = a - q * b
    off = ((r < 0) & (b > 0)) | ((r > 0) & (b < 0))
    return q - tf.cast(off, q.dtype)


def _mod(a, b):
    return a - floordiv(a, b) * b


class _ExactDims:
    def __init__(self, dims):
        self.values, self.assertions = dims.values, dims.assertions

    def evaluate(self, d):
        return eval_expr(d, self.values, floordiv, _mod) if is_symbolic(d) else int(d)


def exact_dims(ctx):
    """``ctx`` with its symbolic dimensions evaluated by :func:`floordiv`."""
    exact = copy.copy(ctx)
    exact.conversion = copy.copy(ctx.conversion)
    exact.conversion.dims = _ExactDims(ctx.conversion.dims)
    return exact


def _has_symbolic(eqn):
    if any(is_symbolic(d) for v in (*eqn.invars, *eqn.outvars)
           for d in getattr(v.aval, "shape", ())):
        return None
    return "no symbolic dimensions"


def _on_exact_dims(generic, refused=None, extra=()):
    """The generic rule ``generic`` for target onnx on equations with symbolic dimensions,
    with :func:`exact_dims`; its cases are the generic rule's symbolic ones, less the
    dtypes ``refused[case name]`` whose TF ops (e.g. ``PadV2`` of int8) onnx refuses,
    measured: the pre-flight refuses them for the generic rule too."""
    r, = rules_of(generic)

    def lower(ctx, *args, **params):
        return generic(exact_dims(ctx), *args, **params)
    cases = [dataclasses.replace(c, dtypes=frozenset(
                 d for d in (c.dtypes or r.dtypes) if d not in (refused or {}).get(c.name, ())))
             for c in [*r.cases, *extra] if "symbolic" in c.name]
    cases = [c for c in cases if c.dtypes]
    return rule(r.primitive, dtypes=list(r.dtypes), targets="onnx", when=_has_symbolic,
                cases=cases, name=f"{generic.__name__}_onnx",
                doc=f"{generic.__name__} with symbolic dimensions evaluated exactly in ONNX"
                )(lower)


# (case, dtypes) the pre-flight refuses, measured (PadV2 of narrow ints/bool/half floats,
# Conv2D of float64, complex constants): refused for the generic rules as well.
_CPLX = {"complex64", "complex128"}
_NARROW_INTS = {"int8", "int16", "uint8", "uint16", "uint32", "uint64"}
_HALF = {"float16", "bfloat16"}
_SAME, _DIL, _2X2 = ("symbolic batch and spatial, SAME",
                     "symbolic spatial, dilations, negative padding",
                     "symbolic batch, 2x2 pooling")
_MINMAX = {_SAME: {"bool"} | _NARROW_INTS | _CPLX, _DIL: {"bool"} | _NARROW_INTS | _CPLX | _HALF,
           _2X2: _CPLX | {"int16", "uint16"}}

conv_general_dilated_onnx = _on_exact_dims(conv_general_dilated, {
    c.name: _CPLX | {"float64"} for c in rules_of(conv_general_dilated)[0].cases})
reduce_window_sum_onnx = _on_exact_dims(reduce_window_sum, {
    _SAME: _NARROW_INTS | _CPLX, _DIL: _NARROW_INTS | _CPLX | _HALF, _2X2: _CPLX | {"bfloat16"}})
reduce_window_max_onnx = _on_exact_dims(reduce_window_max, _MINMAX)
reduce_window_min_onnx = _on_exact_dims(reduce_window_min, _MINMAX)
select_and_scatter_add_onnx = _on_exact_dims(select_and_scatter_add, {
    "symbolic batch and spatial, SAME (a max-pool gradient)": {"bool"} | _NARROW_INTS | _HALF,
    _2X2: {"bfloat16", "bool", "int16", "uint16", "uint64"}})


def _edges(rng, dt):
    """A 5x7 operand of the dtype's edge values (NaN, ±inf, -0.0, min/max), a pad value."""
    dt = np.dtype(dt)
    if dt.kind in "fcV":
        fi = ml_dtypes.finfo(dt)
        vals = [nan, inf, -inf, -0.0, fi.max, fi.min, fi.tiny, 1.5, -2.0]
    elif dt.kind == "b":
        vals = [True, False]
    else:
        vals = [np.iinfo(dt).min, np.iinfo(dt).max, 0, 1]
    return [np.resize(np.array(vals, dt), (5, 7)), np.asarray(vals[-1], dt)]


def _pad_by_negative_floordiv(x, v):
    """Edge amounts from floor division / modulo of negatives (for a 5x7 operand: rows
    +1/+0, columns -2/+2, where truncating division would give +1/+1 and -1/-1)."""
    a, n = x.shape
    return lax.pad(x, v, ((1, (-a) // 3 + 2, 0), ((-n) // 2 + 2, (-n) % 3, 0)))


# The generic pad case (the gradient of a SAME sum-pool) fails in onnxruntime in a Mul
# whose operand shapes other rules evaluated with tf2onnx's truncating FloorDiv: left out.
pad_onnx = _on_exact_dims(pad, {
    "symbolic edge amounts (gradient of a SAME sum-pool)": {"float32"},
    "symbolic amounts: floor division of negatives, edge values":
        {"bool"} | _NARROW_INTS | _CPLX | _HALF}, extra=[case.custom(
    "symbolic amounts: floor division of negatives, edge values", _pad_by_negative_floordiv,
    _edges, convert_kw={"polymorphic_shapes": ["(a, n)", None]})])


# -- reduce_prod of integers -------------------------------------------------------------

def _int_extremes(rng, dt):
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max, (3, 6), dtype=dt, endpoint=True)
    x[0, :3], x[1, :3], x[2, :2] = info.max, info.min, -1
    x[2, 2:] = [3, 65537, 2 ** 16 + 1, -(2 ** 15) - 1][:x.shape[1] - 2]
    return [x]


@rule("reduce_prod", dtypes=["int32", "int64"], targets="onnx",
      cases=[case.custom("wraps: extremes, axis 1", lambda x: lax.reduce_prod(x, (1,)),
                         _int_extremes),
             case.custom("wraps: extremes, axes 0 1", lambda x: lax.reduce_prod(x, (0, 1)),
                         _int_extremes),
             case.random(lambda x: lax.reduce_prod(x, (0, 2)),
                         shapes=[(3, 4, 5)], name="axes 0 2"),
             case.random(lambda x: lax.reduce_prod(x, (1,)),
                         shapes=[(3, 20)], name="symbolic",
                         convert_kw={"polymorphic_shapes": ["(b, n)"]})])
def reduce_prod_int_onnx(ctx, x, *, axes, **_):
    """ONNX's ReduceProd saturates: fold with Mul (it wraps), from the init value 1."""
    dtype = ctx.avals_in[0].dtype
    return reduce_monoid(ctx, x, ctx.avals_in[0], ctx.aval_out, axes, "mul",
                         init=ctx.constant(np.ones((), dtype), dtype))


# -- atan2, rem, sign ---------------------------------------------------------------------

def _wide(v):
    """float16/bfloat16 as float32 (exact; onnxruntime lacks their IsInf/IsNan)."""
    return v if v.dtype in (tf.float32, tf.float64) else tf.cast(v, tf.float32)


def _negative(v):
    """v < 0, -0.0 included (1 / -0.0 = -inf)."""
    return tf.math.less(v, 0) | (tf.math.equal(v, 0) & tf.math.less(1 / v, 0))


_ATAN2_X = [0.0, -0.0, 0.0, -0.0, 1.0, -1.0, inf, inf, nan, -inf, -inf, 2.0, -2.0, 0.0,
            -0.0, inf, -inf, 1.0, -1.0, 0.0, nan, 3.0, -1e-30, 1e30, 65504.0]
_ATAN2_Y = [0.0, 0.0, -0.0, -0.0, -inf, -inf, inf, -inf, 1.0, inf, -inf, 0.0, -0.0, 2.0,
            -2.0, 5.0, -5.0, inf, inf, nan, nan, -4.0, 1e30, -1e-30, -1.0]


@rule("atan2", dtypes=["float16", "bfloat16", "float32"], targets="onnx",
      cases=[case("signed zeros and infinities", lax.atan2, _ATAN2_X, _ATAN2_Y),
             case.random(lax.atan2, shapes=[(3, 4), (3, 4)])])
def atan2_onnx(ctx, x, y, **_):
    """The angle of (|y|, |x|) in [0, pi/2], zeros and infinities set explicitly (tf2onnx's
    Atan2 loses them), then pi - angle for a negative (or -0.0) y, and x's sign."""
    x, y = _wide(x), _wide(y)
    wide = x.dtype
    shape = ctx.shape(ctx.aval_out)
    x, y = tf.broadcast_to(x, shape), tf.broadcast_to(y, shape)
    ax, ay = tf.math.abs(x), tf.math.abs(y)
    x_inf, y_inf = tf.math.is_inf(ax), tf.math.is_inf(ay)
    pi = np.pi
    t = tf.math.atan2(ax, ay)
    t = tf.where(x_inf & y_inf, tf.constant(pi / 4, wide),
                 tf.where(x_inf | (tf.math.equal(ay, 0) & tf.math.greater(ax, 0)),
                          tf.constant(pi / 2, wide),
                          tf.where(y_inf | tf.math.equal(ax, 0), tf.zeros_like(t), t)))
    t = tf.where(_negative(y), tf.constant(pi, wide) - t, t)
    t = tf.where(_negative(x), -t, t)
    t = tf.where(tf.math.is_nan(x) | tf.math.is_nan(y), x + y, t)
    return tf.cast(t, ctx.tf_dtype(ctx.aval_out))


@rule("rem", dtypes="floating", targets="onnx",
      cases=[case("C fmod: infinite divisors give the dividend", lax.rem,
                  [5.5, -5.5, 5.5, -5.5, 1.0, inf, 1.0, -0.0, -4.0, -1.0, 0.0, -inf, nan, 3e38],
                  [2.0, 2.0, -2.0, -2.0, 0.0, 1.0, inf, inf, 2.0, -inf, -inf, inf, inf, -inf]),
             case("subnormal divisors are zero (found by tests/fuzz.py)", lax.rem,
                  np.float32([-392.25, 5.877472e-39, 3.0, 1.4e-45, -2.0]),
                  np.float32([1.1e-38, 5.877472e-39, 1.4e-45, 3.0, -0.0]), dtypes="float32"),
             case.random(lax.rem, shapes=[(3, 4), (3, 4)])])
def rem_onnx(ctx, x, y, **_):
    """The generic fmod, but x where the divisor is infinite and x finite (fmod(x, ±inf)
    is NaN in onnxruntime), and NaN where it is zero or subnormal: onnxruntime's Mod is C's
    fmod, which reads a subnormal divisor as itself, XLA's CPU backend as zero."""
    r, x, y = _wide(rem_floating(ctx, x, y)), _wide(x), _wide(y)
    keep = tf.math.is_inf(y) & tf.math.is_finite(x)
    tiny = tf.constant(np.finfo(r.dtype.as_numpy_dtype).tiny, r.dtype)
    r = tf.where(tf.math.less(tf.math.abs(y), tiny), tf.constant(np.nan, r.dtype), r)
    return tf.cast(tf.where(keep, x, r), ctx.tf_dtype(ctx.aval_out))


@rule("sign", dtypes=["float16", "bfloat16"], targets="onnx",
      cases=[case("zeros keep their sign, NaN stays", lax.sign,
                  [-0.0, 0.0, nan, -nan, -inf, inf, 2.0, -3.0, -1e-30, 65504.0])])
def sign_onnx(ctx, x, **_):
    """The generic sign in float32 (onnxruntime's float16 Sign(NaN) is 0; exact: the
    result is -1, ±0, 1 or NaN)."""
    return tf.cast(sign(ctx, _wide(x)), x.dtype)
