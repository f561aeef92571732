"""Narrow dtypes on targets whose runtime has no arithmetic for them.

TFLite's builtin ops take float16, bfloat16, int8, int16, uint8 and uint16 tensors only in
a few places (Cast, constants, model inputs and outputs): an ``add`` on bfloat16, a
``transpose`` of float16 or a compare of uint16 is refused. For target ``"tflite"`` the
primitives below are lowered in the wide type: operands are cast up (exact), the same
primitive is lowered again on float32/int32 (reaching that type's own rule, generic or
written for the target), and the results are cast back to JAX's dtype.

Why that gives JAX's numbers:
- float16/bfloat16 values are exact in float32, and XLA's CPU backend itself computes
  half-precision elementwise math in float32 and rounds each result back. The rounding is
  done here in int32 arithmetic on the float32 bits (:func:`round_to_narrow`, nearest
  even, overflow to inf, float16 subnormals), not by a Cast: the TFLite converter folds
  a float32 -> float16/bfloat16 -> float32 Cast pair into nothing, which silently keeps
  the excess precision (measured: ``x * 1.01`` twice in float16 gave 1020 where JAX gives
  1019.5). For basic operations float32 has more than 2p+2 bits, so the double rounding
  is exact.
- int8/int16/uint8/uint16 values are exact in int32 (sign- or zero-extended); TFLite's
  Cast back keeps the low bits, so add/sub/mul/neg wrap as XLA's do, and div/rem/min/max/
  compare/bitwise are unchanged by the extension.
- Dot products and convolutions accumulate in float32 and round once: the results agree
  within the per-dtype tolerances of ``core.testkit`` (not bit for bit). Sums and
  products (``reduce_sum``, ``reduce_prod``, ``reduce_window_sum``), which XLA rounds at
  every step in the narrow type, are lowered as the ``reduce``/``reduce_window`` they
  are; those run their computation through the narrow primitives at every step
  (:func:`_wide_computation`), as XLA does: bit for bit where the order is XLA's
  (float16 add/mul reductions over several axes are refused, as for target "tf").
  Cumulative sums and products on float16/bfloat16 are refused.
- Shifts, population_count and clz depend on the bit width: the operand is first
  zero-extended (logical shift, popcount, clz) or sign-extended (arithmetic shift) from
  its own width, so the int32 result has the narrow result in its low bits (clz then
  drops the 32 - w leading zeros the extension added); a shift by the width or more
  leaves no low bit, as JAX defines it.
nextafter and bitcast_convert_type between float16 and bfloat16 need the narrow bit
patterns: :func:`narrow_magnitude` reads them off the float32 value with int32 arithmetic,
:func:`from_narrow_magnitude` builds the value back.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax.numpy as jnp
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule

NARROW = {"float16": jnp.float32, "bfloat16": jnp.float32, "int8": jnp.int32,
          "int16": jnp.int32, "uint8": jnp.int32, "uint16": jnp.int32}

_ELEMENTWISE = [
    "add", "add_any", "sub", "mul", "div", "rem", "neg", "abs", "sign", "max", "min",
    "clamp", "floor", "ceil", "round", "is_finite", "exp", "exp2", "log", "log1p", "expm1",
    "sqrt", "rsqrt", "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh",
    "tanh", "asinh", "acosh", "atanh", "atan2", "logistic", "pow", "integer_pow", "square",
    "erf", "erfc", "erf_inv", "lgamma", "digamma", "eq", "ne", "lt", "le", "gt", "ge",
    "and", "or", "xor", "not", "select_n", "convert_element_type", "igamma", "igammac",
    "igamma_grad_a", "bessel_i0e", "bessel_i1e",
    "regularized_incomplete_beta", "polygamma", "zeta", "reduce_precision",
    "shift_left", "shift_right_logical", "shift_right_arithmetic", "population_count", "clz"]
_STRUCTURAL = [
    "reshape", "broadcast_in_dim", "transpose", "squeeze", "concatenate", "slice",
    "dynamic_slice", "dynamic_update_slice", "rev", "pad", "gather", "split", "copy", "iota",
    "tile"]
_ACCUMULATING = [
    "reduce_sum", "reduce_prod", "reduce_max", "reduce_min", "reduce_and", "reduce_or",
    "reduce_xor", "argmax", "argmin", "cumsum", "cumprod", "cummax", "cummin",
    "cumlogsumexp", "sort", "top_k", "approx_top_k", "dot_general", "conv_general_dilated",
    "reduce_window_sum", "reduce_window_max", "reduce_window_min", "select_and_scatter_add",
    "select_and_gather_add", "scatter", "scatter-add", "scatter-mul", "scatter-min",
    "scatter-max", "cholesky", "triangular_solve"]
#: primitives carrying their own computation (a jaxpr), lowered with it stepwise
_WITH_JAXPR = ["reduce", "reduce_window"]
PRIMITIVES = _ELEMENTWISE + _STRUCTURAL + _ACCUMULATING + _WITH_JAXPR

#: primitives whose results on narrow values are narrow values already (no rounding)
_EXACT = set(_STRUCTURAL) | {
    "max", "min", "clamp", "abs", "neg", "sign", "floor", "ceil", "round", "select_n",
    "is_finite", "eq", "ne", "lt", "le", "gt", "ge", "reduce_max", "reduce_min", "argmax",
    "argmin", "cummax", "cummin", "sort", "top_k", "approx_top_k", "reduce_window_max", "reduce_window_min",
    "convert_element_type", *_WITH_JAXPR}

#: parameters naming a result dtype, widened with the operands
_DTYPE_PARAMS = ("preferred_element_type", "dtype")


def _bit(b, k):
    """Bit ``k`` of int32 ``b`` without BitwiseAnd (arithmetic shifts floor)."""
    return tf.bitwise.right_shift(b, k) - tf.bitwise.right_shift(b, k + 1) * 2


def _drop_bits(b, k):
    """int32 float bits ``b`` rounded to nearest even at bit ``k`` (low k bits cleared)."""
    half = tf.constant((1 << (k - 1)) - 1, tf.int32)
    return tf.bitwise.right_shift(b + half + _bit(b, k), k) * (1 << k)


def round_to_narrow(x, dtype: str):
    """float32 ``x`` rounded to the nearest ``dtype`` (float16 or bfloat16) value, ties to
    even, kept in float32. Integer arithmetic on the bits (sign and magnitude apart), ops
    every TFLite build takes; no float constant inf and no negation, which the converter
    rewrites (inf became the largest float, -0.0 became +0.0 when measured)."""
    b = tf.bitcast(x, tf.int32)
    sign = tf.bitwise.right_shift(b, 31) * (1 << 31)      # 0, or the sign bit (wraps)
    m = b - sign                                          # magnitude bits
    if dtype == "bfloat16":               # same exponent range as float32: drop 16 bits
        rm = _drop_bits(m, 16)
    else:                                 # float16: 11 bits, max 65504, subnormals 2^-24
        normal = _drop_bits(m, 13)
        normal = tf.where(normal > 0x477FE000, tf.constant(0x7F800000, tf.int32), normal)
        # below 2^-14 float16 has the fixed quantum 2^-24: adding 0.5 rounds to it
        tiny = tf.bitcast((tf.bitcast(m, tf.float32) + 0.5) - 0.5, tf.int32)
        rm = tf.where(m < 0x38800000, tiny, normal)
    r = tf.bitcast(rm + sign, tf.float32)
    return tf.where(m > 0x7F800000, x, r)                 # NaN: kept, whatever its payload


#: cumulative float16/bfloat16 ops: XLA rounds every step in the narrow type, a float32
#: scan rounded once is further from it than the tolerance (measured: f16 cumsum)
_STEPWISE = ("cumsum", "cumprod", "cumlogsumexp")


def _narrow_operand(eqn):
    avals = [v.aval for v in eqn.invars] or [v.aval for v in eqn.outvars]
    names = {str(getattr(a, "dtype", "")) for a in avals}
    if eqn.primitive.name in _STEPWISE and names & {"float16", "bfloat16"}:
        return (f"{eqn.primitive.name} on float16/bfloat16 rounds every step in XLA; "
                "not reproduced for tflite (compute it in float32 in the JAX program)")
    if names & set(NARROW):
        return None
    return "no operand of a narrow dtype (float16, bfloat16, int8, int16, uint8, uint16)"


def _wide(dtype):
    return NARROW.get(str(dtype), dtype)


def _bf16(x):
    return np.asarray(x, np.float32).astype(jnp.bfloat16)


def _products(rng, dtype):
    """5x6 values whose window products overflow, round or wrap (and inf, NaN, -0)."""
    if jnp.issubdtype(dtype, jnp.floating):
        x = rng.standard_normal((5, 6)) * 3
        x[0, :4] = [np.inf, np.nan, -0.0, 300.0 if dtype == np.float16 else 3e38]
        x[4, 3:] = [np.inf, -0.0, 1e-7 if dtype == np.float16 else 1e-38]
        return [x.astype(dtype)]
    info = np.iinfo(dtype)
    return [rng.integers(info.min, info.max, (5, 6), endpoint=True).astype(dtype)]


_CASES = [
    case("bf16 add rounds once", lax.add, _bf16([1.0, 256.0, 1e38, -0.0, np.inf]),
         _bf16([2.0 ** -8, 1.0, 1e38, -0.0, -np.inf]), dtypes="bfloat16"),
    case("f16 div, overflow and signed zero", lax.div,
         np.float16([1.0, 6.0e4, -1.0, 0.0, 1.0]), np.float16([3.0, 0.5, np.inf, -2.0, 0.0]),
         dtypes="float16"),
    case("f16 integer_pow rounds every product (found by tests/fuzz.py)",
         lambda x: (lax.integer_pow(x, -2), lax.integer_pow(x, 5), lax.integer_pow(x, 0)),
         np.float16([0.004505, 3.0, -0.0, 300.0, 1e-4, -7.5, np.inf, np.nan]),
         dtypes="float16"),
    case("f16 transcendental", lambda x: jnp.tanh(jnp.sin(x)),
         np.float16([-10.0, -1.0, -0.0, 0.0, 0.5, 11.0, np.nan]), dtypes="float16"),
    case("exp2 as XLA expands it in the narrow type", lax.exp2,
         _bf16([10.0, -3.0, 0.5, 100.0, -200.0, 0.0, np.nan]), dtypes="bfloat16"),
    case("f16 rounds after every op", lambda x: (x * np.float16(1.01)) * np.float16(1.01),
         np.float16([1.5, -2.0, 3.0, 1.2345, 1000.1, 65000, -65500, 6e-8, -3e-8, 1e-5, 0.0,
                     -0.0]), dtypes="float16"),
    case("bf16 rounds after every op", lambda x: (x * jnp.bfloat16(1.01)) * jnp.bfloat16(1.01),
         _bf16([1.5, -2.0, 3.0, 1.2345, 1000.1, 3.3e38, -3.3e38, 1e-38, -0.0, np.nan]),
         dtypes="bfloat16"),
    case("int8 wraps", lambda x, y: (x + y, x * y, -x, x - y),
         np.int8([127, -128, 100, -7]), np.int8([1, -1, 100, 3]), dtypes="int8"),
    case("int8 division as XLA", lambda x, y: (lax.div(x, y), lax.rem(x, y)),
         np.int8([-128, 7, -7, 5]), np.int8([-1, -2, 2, 0]), dtypes="int8"),
    case("uint8 compare and max", lambda x, y: (x < y, jnp.maximum(x, y), x == y),
         np.uint8([0, 255, 128, 7]), np.uint8([255, 0, 127, 7]), dtypes="uint8"),
    case("uint16 wraps", lambda x: x * np.uint16(3) + np.uint16(65535),
         np.uint16([0, 1, 21845, 65535]), dtypes="uint16"),
    case("f16 structure", lambda x: jnp.concatenate([x.T, x[::-1].T], 0)[1:, ::2],
         np.arange(12, dtype=np.float16).reshape(3, 4), dtypes="float16"),
    case("bf16 reduce and argmax", lambda x: (x.sum(1), x.max(0), jnp.argmax(x, 1)),
         _bf16(np.linspace(-3, 5, 24).reshape(4, 6)), dtypes="bfloat16"),
    case.random(lambda x: (lax.reduce_sum(x, (0, 2)), lax.reduce_prod(x[:3, :, :9], (2,))),
                shapes=[(40, 2, 40)],
                name="bf16 long sum and product round every step", dtypes="bfloat16"),
    case.random(lambda x: lax.reduce_window(x, np.array(0, x.dtype), lax.add, (1, 9), (1, 4),
                                            ((0, 0), (2, 1))), shapes=[(2, 40)],
                name="window sums round every step", dtypes=["float16", "bfloat16"]),
    case("bf16 matmul with f32 result",
         lambda a, b: lax.dot(a, b, preferred_element_type=jnp.float32),
         _bf16(np.linspace(-1, 1, 12).reshape(3, 4)), _bf16(np.linspace(2, -2, 8).reshape(4, 2)),
         dtypes="bfloat16"),
    case("f16 select and cast", lambda p, x: lax.select(p, x, -x).astype(jnp.int8),
         np.array([True, False, True]), np.float16([1.5, -2.5, 300.0]), dtypes="float16"),
    case("int16 sort", lambda x: jnp.sort(x), np.int16([3, -32768, 32767, 0, -1]),
         dtypes="int16"),
    case("int8 shifts in their own width",
         lambda x, s: (lax.shift_left(x, s), lax.shift_right_logical(x, s),
                       lax.shift_right_arithmetic(x, s)),
         np.int8([-128, -1, 127, 5, -7, 1, -2, 64]), np.int8([1, 7, 8, 9, 0, -1, 3, 127]),
         dtypes="int8"),
    case("uint16 shifts in their own width",
         lambda x, s: (lax.shift_left(x, s), lax.shift_right_logical(x, s),
                       lax.shift_right_arithmetic(x, s)),
         np.uint16([65535, 32768, 1, 12345, 7]), np.uint16([1, 15, 16, 17, 65535]),
         dtypes="uint16"),
    case("popcount and clz in their own width",
         lambda x: (lax.population_count(x), lax.clz(x)),
         np.int8([-128, -1, 0, 1, 127, -2]), dtypes="int8"),
    case("uint8 popcount and clz", lambda x: (lax.population_count(x), lax.clz(x)),
         np.uint8([0, 1, 128, 255, 17]), dtypes="uint8"),
    case.custom("window products round every step", lambda x: lax.reduce_window(
        x, np.array(2, x.dtype), lax.mul, (2, 2), (1, 1), "VALID"), _products,
        dtypes=["float16", "bfloat16"]),
    case.custom("window products wrap every step", lambda x: lax.reduce_window(
        x, np.array(3, x.dtype), lax.mul, (2, 2), (1, 2), "VALID"), _products,
        dtypes=["int8", "int16", "uint8", "uint16"]),
    case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a * 0.5 + b, (1,)),
                shapes=[(2, 40)], name="reduce in XLA's order, rounded every step",
                dtypes=["float16", "bfloat16"]),
    case.random(lambda x, y: lax.reduce((x, y), (np.array(3, x.dtype), np.array(5, y.dtype)),
                                        lambda a, b: (a[0] + b[0], lax.min(a[1], b[1])), (0,)),
                shapes=[(4, 6), (4, 6)], name="reduce pair: add from 3, min", dtypes=list(NARROW)),
    case.custom("argmax-like window pair with int32 positions", lambda x: lax.reduce_window(
        (x, lax.broadcasted_iota(np.int32, x.shape, 1)), (np.array(1, x.dtype), np.int32(-1)),
        lambda a, b: (lax.max(a[0], b[0]), lax.select(a[0] >= b[0], a[1], b[1])),
        (2, 3), (1, 1), ((0, 1), (1, 0))), _products, dtypes=["bfloat16", "int8"]),
    case.random(lambda x, y: jnp.sin(x) * y + x.T.sum(), shapes=[(4, 4), (4, 4)],
                name="random float chain", dtypes=["float16", "bfloat16"]),
    case.random(lambda x, y: (x * y - x // jnp.maximum(y, 1)).cumsum(0), shapes=[(4, 4), (4, 4)],
                name="random integer chain", dtypes=["int8", "int16", "uint8", "uint16"]),
]


@rule(PRIMITIVES, dtypes=["bool", "integer", "floating"], targets="tflite",
      when=_narrow_operand, cases=_CASES)
def widened(ctx, *xs, **params):
    """The primitive computed in float32/int32 and cast back to JAX's narrow dtype."""
    import jax
    prim = ctx.eqn.primitive
    avals = [jax.ShapeDtypeStruct(a.shape, _wide(a.dtype)) for a in ctx.avals_in]
    ys = [tf.cast(x, ctx.tf_dtype(a.dtype)) if x.dtype != ctx.tf_dtype(a.dtype) else x
          for x, a in zip(xs, avals)]
    if prim.name in _BIT_WIDTH and ctx.avals_in[0].dtype.kind in "iu":
        ys[0] = _extend(ys[0], ctx.avals_in[0].dtype, _BIT_WIDTH[prim.name])
    for name in _DTYPE_PARAMS:
        if params.get(name) is not None and name in params:
            params[name] = _wide(params[name])
    if prim.name in _WITH_JAXPR:
        params.update(_wide_computation(prim.name, params, ctx.avals_in))
    if prim.name in _NARROW_FORM and str(ctx.avals_in[0].dtype) in ("float16", "bfloat16"):
        # XLA computes these in the narrow type from simpler primitives: follow it
        if prim.name in _AS_REDUCE and ctx.is_symbolic(ctx.avals_in[0]):
            raise UnsupportedError(
                f"{prim.name} of {ctx.avals_in[0].dtype} with symbolic dimensions "
                f"{ctx.avals_in[0].shape} for TFLite: XLA rounds every step of it to "
                f"{ctx.avals_in[0].dtype}, which is reproduced only for concrete shapes; "
                "convert with concrete shapes, or sum in float32 in the JAX program.")
        return ctx.lower_fun(lambda *zs: _NARROW_FORM[prim.name](*zs, **params), *xs)
    outs = ctx.lower_fun(lambda *zs: prim.bind(*zs, **params), *ys, avals=avals)
    if prim.name == "clz" and ctx.avals_in[0].dtype.kind in "iu":
        outs[0] = outs[0] - (32 - 8 * ctx.avals_in[0].dtype.itemsize)
    outs = [_back(o, a.dtype, prim.name) for o, a in zip(outs, ctx.avals_out)]
    return outs if prim.multiple_results else outs[0]


def _integer_pow(x, *, y, **_):
    """Square-and-multiply in the narrow type, each product rounded, then 1/x^|y| (JAX's
    lowering; rules_lax.elementwise.integer_pow keeps its order)."""
    from rules_lax.elementwise import square_and_multiply
    if y == 0:
        return lax.full_like(x, 1)
    acc = square_and_multiply(lax.mul, x, abs(y))
    return lax.div(np.array(1, x.dtype), acc) if y < 0 else acc


#: float16/bfloat16 sums and products XLA's CPU backend rounds at every step, in its own
#: order: as the reduce/reduce_window they are (from 0 or 1), each step of which meets
#: this rule again (see _wide_computation). A float32 sum rounded once differs beyond the
#: tolerance on long axes (measured in TFLite: a bfloat16 sum of 1600 values gave -74.5
#: where JAX gives -72). Refused over symbolic dimensions (no TFLite form there).
#: (The computations are lambdas: given lax.add itself, JAX would make them reduce_sum.)
_AS_REDUCE = {
    "reduce_sum": lambda x, *, axes, **_: lax.reduce(
        x, np.array(0, x.dtype), lambda a, b: a + b, axes) if axes else x,
    "reduce_prod": lambda x, *, axes, **_: lax.reduce(
        x, np.array(1, x.dtype), lambda a, b: a * b, axes) if axes else x,
    "reduce_window_sum": lambda x, *, window_dimensions, window_strides, padding,
    base_dilation, window_dilation: lax.reduce_window(
        x, np.array(0, x.dtype), lambda a, b: a + b, window_dimensions, window_strides,
        padding, base_dilation, window_dilation)}

#: primitives XLA expands in the narrow type itself (each step rounded there), rather
#: than computing in float32: exp2(x) is exp(log(2) * x) with log(2) and the product
#: rounded to the narrow type (measured: bfloat16 exp2(10) is 1000, not 1024);
#: integer_pow is a chain of products (measured: float16 0.0045^-2 is 49216, not 49280);
#: the sums and products of _AS_REDUCE
_NARROW_FORM = {"exp2": lambda x, **_: lax.exp(x * np.array(np.log(2), x.dtype)),
                "integer_pow": _integer_pow, **_AS_REDUCE}


def _wide_computation(name: str, params: dict, avals_in) -> dict:
    """The computation of a reduce/reduce_window on wide scalars: its operands cast to
    their narrow dtypes, the narrow computation, its results cast back. Lowered, each of
    its primitives meets this rule again, so every step is rounded (or wrapped) to the
    narrow type, as XLA's CPU backend computes it (a float32 product of a 2x2 window
    rounded once is not always XLA's)."""
    import jax
    from jax.extend import core as jex
    closed = params["jaxpr"]
    if name == "reduce_window":
        closed = jex.ClosedJaxpr(closed, list(params["consts"]))
    else:   # XLA keeps float16 add/mul reductions in its own order over several axes
        from rules_lax.reductions import _recognize_monoids, _refuse_f16_multi_axis
        for kind, aval in zip(_recognize_monoids(closed) or (), avals_in):
            if kind in ("add", "mul") and aval.dtype == np.float16:
                _refuse_f16_multi_axis(aval, params["dimensions"], kind)
    fun = jex.jaxpr_as_fun(closed)
    narrow = [a.dtype for a in avals_in[len(avals_in) // 2:]] * 2   # (accumulators, elements)

    def wide(*zs):
        outs = fun(*[z.astype(d) for z, d in zip(zs, narrow)])
        return [o.astype(_wide(o.dtype)) for o in outs]
    new = jax.make_jaxpr(wide)(*[jax.ShapeDtypeStruct((), _wide(d)) for d in narrow])
    if name == "reduce":
        return {"jaxpr": new, "computation": wide}
    return {"jaxpr": new.jaxpr, "consts": tuple(new.consts)}


#: primitives that see the operand's bits: how to extend it from its own width to int32
_BIT_WIDTH = {"shift_right_logical": "zero", "population_count": "zero", "clz": "zero",
              "shift_right_arithmetic": "sign"}


def _extend(y, dtype, how: str):
    """int32 ``y`` holding a ``dtype`` value, zero- or sign-extended from its width (the
    cast already sign-extends signed and zero-extends unsigned types)."""
    w = 8 * dtype.itemsize
    if how == "zero" and dtype.kind == "i":
        return tf.math.floormod(y, 1 << w)
    if how == "sign" and dtype.kind == "u":
        return tf.where(y >= (1 << (w - 1)), y - (1 << w), y)
    return y


def _back(o, dtype, primitive: str):
    name = str(dtype)
    if name in ("float16", "bfloat16") and primitive not in _EXACT:
        o = round_to_narrow(tf.cast(o, tf.float32), name)
    target = tf.as_dtype(jnp.dtype(dtype)) if name != "bfloat16" else tf.bfloat16
    return tf.cast(o, target) if o.dtype != target else o


# -- the bit patterns of float16/bfloat16 values held in float32 --------------------------
def _sign_term(b):
    """The sign bit of int32 ``b`` alone: 0, or -2^31."""
    return tf.bitwise.right_shift(b, 31) * (1 << 31)


def narrow_magnitude(x, dtype: str):
    """(sign, magnitude) of the ``dtype`` (float16/bfloat16) pattern of float32 ``x``, a
    ``dtype`` value: the int32 sign bit (0 or -2^31) and the pattern's 15 low bits
    (exponent and mantissa; NaN payloads kept, float16 subnormals from the value)."""
    b = tf.bitcast(x, tf.int32)
    sign = _sign_term(b)
    m = b - sign
    if dtype == "bfloat16":
        return sign, tf.bitwise.right_shift(m, 16)
    top = tf.bitwise.right_shift(m, 13)         # float32 exponent, 10 mantissa bits
    normal = tf.where(m >= 0x7F800000, top - (0xFF - 0x1F << 10), top - (127 - 15 << 10))
    tiny = tf.cast(tf.bitcast(m, tf.float32) * 2.0 ** 24, tf.int32)   # below 2^-14: k 2^-24
    return sign, tf.where(m < 0x38800000, tiny, normal)


def from_narrow_magnitude(sign, mag, dtype: str):
    """The float32 value of the ``dtype`` pattern with ``sign`` and ``mag`` (the inverse
    of :func:`narrow_magnitude`)."""
    if dtype == "bfloat16":
        bits = mag * (1 << 16)
    else:
        tiny = tf.bitcast(tf.cast(mag, tf.float32) * 2.0 ** -24, tf.int32)
        bits = tf.where(mag >= 0x7C00, mag + (0xFF - 0x1F << 10), mag + (127 - 15 << 10))
        bits = tf.where(mag < 0x400, tiny, bits * (1 << 13))
    return tf.bitcast(bits + sign, tf.float32)


def _halves(eqn):
    pair = {str(eqn.invars[0].aval.dtype), np.dtype(eqn.params["new_dtype"]).name}
    return None if pair == {"float16", "bfloat16"} else "only float16 <-> bfloat16 here"


def _half_bits(rng, dtype):
    bits = rng.integers(0, 2 ** 16, 200).astype(np.uint16)
    # zeros, infinities, subnormals, the largest finite values, NaN (bfloat16 inputs reach
    # the model as float32, so a signalling bfloat16 NaN is quieted there, as in TF)
    bits[:14] = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7F80, 0xFF80, 0x0001, 0x83FF, 0x0400,
                 0x7BFF, 0x7F7F, 0x7FC0, 0x7E00, 0xFE01]
    return [bits.view(jnp.bfloat16 if dtype == "bfloat16" else np.float16)]


@rule("bitcast_convert_type", dtypes=["float16", "bfloat16"], targets="tflite", priority=1,
      when=_halves, cases=[
          case.custom("every kind of pattern", lambda x: lax.bitcast_convert_type(
              x, jnp.bfloat16 if x.dtype == np.float16 else np.float16), _half_bits)])
def bitcast_halves(ctx, x, *, new_dtype, **_):
    """float16 <-> bfloat16: the pattern read off the source value and built into the other
    type's value, in int32 arithmetic (TFLite holds bfloat16 as float32: no Bitcast)."""
    sign, mag = narrow_magnitude(tf.cast(x, tf.float32), str(ctx.avals_in[0].dtype))
    return tf.cast(from_narrow_magnitude(sign, mag, np.dtype(new_dtype).name),
                   ctx.tf_dtype(new_dtype))


def _nextafter_cases():
    from rules_lax.conversion import _NEXTAFTER_CASES
    half = [0.0, -0.0, 6e-8, -6e-8, 1.2e-7, 6.1e-5, 6.0e-5, -6.1e-5, 65504.0, -65504.0,
            np.inf, 1e-39, 2e-39, 1e-39, 3e38, 1.0, -1.0, np.nan]
    toward = [-0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 1.0, 0.0, np.inf, 0.0, 0.0, 2e-39, 1e-39,
              -1e-39, np.inf, 1.0, np.inf, 0.0]
    with np.errstate(over="ignore"):        # 3e38 is inf in float16
        half16, toward16 = np.float16(half), np.float16(toward)
    return _NEXTAFTER_CASES + [
        case("subnormals, the normal boundary, the largest finite", lax.nextafter,
             _bf16(half), _bf16(toward), dtypes="bfloat16"),
        case("subnormals, the normal boundary, the largest finite", lax.nextafter,
             half16, toward16, dtypes="float16")]


@rule("nextafter", dtypes=["float16", "bfloat16"], targets="tflite",
      cases=_nextafter_cases())
def nextafter_narrow(ctx, x, y, **_):
    """XLA's nextafter (see rules_lax.conversion) on the narrow patterns of the float32
    values: the magnitude +-1 (towards zero when the signs differ or |x| > |y|), from +-0
    the smallest subnormal signed like y, y when x == y (bfloat16 compares in float32,
    which treats subnormals as zero, float16's subnormals are float32 normals), NaN when
    either is NaN."""
    dtype = str(ctx.avals_in[0].dtype)
    shape = ctx.shape(ctx.aval_out)
    x, y = (tf.broadcast_to(tf.cast(v, tf.float32), shape) for v in (x, y))
    (xs, xm), (ys, ym) = narrow_magnitude(x, dtype), narrow_magnitude(y, dtype)
    shrink = tf.math.logical_or(tf.math.greater(xm, ym), tf.math.not_equal(xs, ys))
    mag = xm + tf.where(shrink, tf.constant(-1), tf.constant(1))
    from_zero = tf.math.equal(xm, 0)
    out = from_narrow_magnitude(tf.where(from_zero, ys, xs),
                                tf.where(from_zero, tf.ones_like(xm), mag), dtype)
    if dtype == "bfloat16":
        from rules_lax.comparison import flush_subnormals
        out = tf.where(tf.math.equal(flush_subnormals(x), flush_subnormals(y)), y, out)
    else:
        out = tf.where(tf.math.equal(x, y), y, out)
    nan = tf.math.logical_or(tf.math.is_nan(x), tf.math.is_nan(y))
    return tf.cast(tf.where(nan, tf.constant(np.nan, tf.float32), out), ctx.tf_dtype(ctx.aval_out))
