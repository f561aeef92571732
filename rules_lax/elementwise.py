"""Elementwise arithmetic and math: add, sub, mul, div, rem, neg, abs, sign, max, min,
the transcendental functions, rounding, pow/integer_pow, clamp, is_finite and the
complex-number primitives (complex, conj, real, imag).

Where TF and XLA disagree the rule follows XLA (JAX's CPU backend): integer division
truncates and never traps, rem keeps the dividend's sign, max/min propagate NaN and order
-0 below +0, signs of zeros are kept. TF CPU kernels are missing for many ops on bfloat16,
float16 and small/unsigned integers; there the rule computes in a wider type and casts
back, which is what XLA:CPU itself does for half-precision math.
"""
from __future__ import annotations

import inspect
import math

import numpy as np
import tensorflow as tf
import jax.numpy as jnp
from jax import lax

from jax.extend.core import Literal

from core.rule import case, make_rule, rule
from rules_lax.reductions import complex_minmax

nan, inf = float("nan"), float("inf")
_HALF = (tf.bfloat16, tf.float16)


def _no_accuracy(eqn):
    """``accuracy=None`` and ``AccuracyMode.DEFAULT`` are the TF op's own accuracy; a
    ``Tolerance`` or ``HIGHEST`` asks for a bound the lowering does not promise."""
    acc = eqn.params.get("accuracy")
    if acc is not None and acc != lax.AccuracyMode.DEFAULT:
        return (f"accuracy={acc} is not supported: the TF lowering has the default accuracy "
                f"(accuracy=None or lax.AccuracyMode.DEFAULT); drop the accuracy argument")
    return None


def _accuracy_condition(lax_fn):
    """``_no_accuracy`` for the primitives that take ``accuracy=``; None for the others, so
    ``list`` does not show a condition that can never refuse."""
    return _no_accuracy if "accuracy" in inspect.signature(lax_fn).parameters else None


def _f32(fn, *xs):
    """``fn(*xs)`` computed in float32 when ``xs`` are half floats, rounded back: TF CPU
    lacks many half kernels, and XLA:CPU upcasts half-precision math the same way."""
    dt = xs[0].dtype
    if dt not in _HALF:
        return fn(*xs)
    return tf.cast(fn(*[tf.cast(x, tf.float32) for x in xs]), dt)


def _min_of(tf_dtype):
    return tf.constant(tf_dtype.min, tf_dtype)


# -- add, sub, mul, neg -----------------------------------------------------------------------

def _random_pair(fn, shape=(3, 4)):
    return case.random(fn, shapes=[shape, shape])


def _broadcast_pair(fn):
    return case.random(fn, shapes=[(3, 1), (3, 4)], name="broadcast (3,1) with (3,4)")


@rule(["add", "add_any"], dtypes="numeric",
      cases=[_random_pair(lax.add), _broadcast_pair(lax.add),
             case("wraps on overflow", lax.add, [100, 127], [100, 1], dtypes="int8"),
             case("inf and NaN", lax.add, [inf, -inf, nan], [-inf, 1.0, 1.0],
                  dtypes="floating")])
def add(ctx, x, y, **_):
    """Integer addition wraps in both TF and XLA. On target "tf", a float tensor plus a
    vector along its last axis (a dense or conv layer's bias, shaped (1, ..., 1, n)) is a
    BiasAdd: grappler fuses MatMul/Conv2D + BiasAdd (+ Relu) into one kernel only for
    that op, and ``relu`` below uses it to drop its -0.0 fix-up."""
    for a, b in ((x, y), (y, x)):
        folded = _bias_of_matmul(ctx, a, b)
        if folded is not None:
            return folded
        if ctx.target == "tf" and _is_bias(a, b):
            return tf.nn.bias_add(a, tf.reshape(b, [a.shape[-1]]))
    return tf.math.add(x, y)


def _bias_of_matmul(ctx, a, b):
    """``a + b`` added before the reshape when ``a`` is a 2-D MatMul's [m, n] output
    reshaped (a dense layer on a batch of sequences, or into heads: [b, s, h, d] with
    h * d = n) and ``b`` is constant over the leading axes: then it is a bias of the
    MatMul, and grappler fuses MatMul + BiasAdd into one kernel (TFLite's converter folds
    it into FULLY_CONNECTED), where the add after the reshape was one more pass. The same
    sums, element for element."""
    if (tf.executing_eagerly() or a.op.type != "Reshape" or a.op.inputs[0].op.type != "MatMul"
            or not a.dtype.is_floating or not a.shape.is_fully_defined()
            or not b.shape.is_fully_defined() or b.shape.rank != a.shape.rank):
        return None
    m = a.op.inputs[0]
    n = m.shape[-1]
    dims, bdims = a.shape.as_list(), b.shape.as_list()
    for k in range(1, len(dims) + 1):
        if math.prod(dims[-k:]) == n:
            break
    else:
        return None
    if any(d != 1 for d in bdims[:-k]) or bdims[-k:] != dims[-k:]:
        return None
    flat = tf.reshape(b, [n])
    summed = tf.nn.bias_add(m, flat) if ctx.target == "tf" else tf.math.add(m, flat)
    return tf.reshape(summed, dims)


def _is_bias(x, b) -> bool:
    rank = x.shape.rank
    return (x.dtype in (tf.float16, tf.float32, tf.float64) and rank is not None and rank >= 2
            and x.shape[-1] is not None and b.shape.rank == rank
            and b.shape.as_list() == [1] * (rank - 1) + [x.shape[-1]])


def _static(t):
    """The value of ``t`` if it is a constant, possibly reshaped, else None."""
    v = tf.get_static_value(t)
    if v is None and not tf.executing_eagerly() and t.op.type in ("Reshape", "Identity"):
        v = _static(t.op.inputs[0])
        return None if v is None else np.reshape(v, t.shape)
    return v


def relu(x, cap=None, target: str = "tf"):
    """max(x, 0) (or min(max(x, 0), cap)) with XLA's semantics: NaN propagates, +0.0 for
    -0.0. TF's Relu/Relu6 keep the sign of a -0.0 input in the lanes they do not
    vectorise, so in general an Abs follows. When ``x`` is a sum with a constant (a dense
    or conv layer's bias: a BiasAdd on target "tf", an Add elsewhere), the same sum with
    the constant's -0.0 made +0.0 (folded) needs no fix-up: a + b is -0.0 only when both
    are, and the sum is unchanged otherwise. On "tf" that is a Maximum, not a Relu:
    grappler fuses BiasAdd + Relu into the MatMul/Conv2D, whose fused relu turns NaN into
    0 (measured, oneDNN); the separate Maximum costs about what the fused relu does, where
    Relu + Abs took 30% longer on a dense layer. On the export targets it is a Relu, which
    their converters fuse into the convolution or dense op (TFLite: NaN propagates, as the
    cases measure), where the Abs was one more pass over the layer's output."""
    if not x.dtype.is_floating:
        return tf.nn.relu(x) if cap is None else tf.nn.relu6(x)
    summed = _plus_constant(x)
    if summed is None:
        return tf.math.abs(tf.nn.relu(x) if cap is None else tf.nn.relu6(x))
    if target != "tf":
        return tf.nn.relu(summed) if cap is None else tf.nn.relu6(summed)
    out = tf.math.maximum(summed, tf.zeros((), x.dtype))
    return out if cap is None else tf.math.minimum(out, tf.constant(cap, x.dtype))


def _plus_constant(x):
    """``x`` rebuilt with no -0.0 in its addend when it is a BiasAdd, or an Add of a
    constant; else None. A BiasAdd's non-constant bias gets its -0.0 replaced at run
    time (a pass over the bias vector only)."""
    if tf.executing_eagerly():
        return None
    if x.op.type == "Reshape":           # a bias added before a reshape (_bias_of_matmul)
        inner = _plus_constant(x.op.inputs[0])
        return None if inner is None else tf.reshape(inner, x.op.inputs[1])
    if x.op.type not in ("BiasAdd", "AddV2", "Add"):
        return None
    a, b = x.op.inputs
    if x.op.type == "BiasAdd":
        v = _static(b)
        if v is None:
            return tf.nn.bias_add(a, tf.where(tf.equal(b, 0), tf.zeros_like(b), b))
        return x if _no_negative_zero(v) else tf.nn.bias_add(a, _plus_zero(v, b.dtype))
    for y, c in ((a, b), (b, a)):
        v = _static(c)
        if v is not None:
            return x if _no_negative_zero(v) else tf.math.add(y, _plus_zero(v, c.dtype))
    return None


def _no_negative_zero(v) -> bool:
    return not np.signbit(v[v == 0]).any()


def _plus_zero(v, dtype):
    return tf.constant(v + np.zeros((), v.dtype), dtype)        # -0.0 + 0.0 = +0.0


@rule("sub", dtypes="numeric",
      cases=[_random_pair(lax.sub), _broadcast_pair(lax.sub),
             case("unsigned wraps below zero", lax.sub, [0, 3], [1, 200], dtypes="uint8")])
def sub(ctx, x, y, **_):
    return tf.math.subtract(x, y)


def _convert(ctx, x, aval_in, dtype):
    """Convert like lax.convert_element_type. float->float and int->float32/64 casts
    round to nearest even in TF as in XLA; the rest goes through the convert_element_type
    rule, which knows XLA's float->int, complex and half-precision rules."""
    src, dst = np.dtype(aval_in.dtype), np.dtype(dtype)
    if src == dst:
        return x
    same_kind = any(jnp.issubdtype(src, k) and jnp.issubdtype(dst, k)
                    for k in (jnp.floating, jnp.complexfloating))
    int_to_wide = jnp.issubdtype(src, jnp.integer) and dst.itemsize >= 4 and \
        jnp.issubdtype(dst, jnp.inexact)
    if same_kind or int_to_wide:
        return tf.cast(x, ctx.tf_dtype(dst))
    return ctx.lower_fun(lambda a: lax.convert_element_type(a, dst), x, avals=[aval_in])[0]


@rule("mul", dtypes="numeric",
      cases=[_random_pair(lax.mul), _broadcast_pair(lax.mul),
             case("wraps on overflow", lax.mul, [100, -128], [3, -1], dtypes="int8"),
             case.random(lambda a, b: lax.mul(a, b, out_dtype=jnp.float32), shapes=[(3,), (3,)],
                         name="out_dtype float32", dtypes=["int16", "bfloat16", "float16"])])
def mul(ctx, x, y, out_dtype=None, **_):
    """``out_dtype``: XLA converts both operands to it, then multiplies."""
    if out_dtype is not None:
        x = _convert(ctx, x, ctx.avals_in[0], out_dtype)
        y = _convert(ctx, y, ctx.avals_in[1], out_dtype)
    return tf.math.multiply(x, y)


@rule("neg", dtypes="numeric",
      cases=[case.random(lax.neg, shapes=[(3, 4)]),
             case("INT_MIN stays INT_MIN", lax.neg, [-128, 5, 0], dtypes="int8"),
             case("unsigned wraps", lax.neg, [0, 1, 255], dtypes="uint8"),
             case("signed zeros", lax.neg, [0.0, -0.0, nan], dtypes="floating")])
def neg(ctx, x, **_):
    """TF has no unsigned Neg kernel (and grappler turns 0 - x into Neg); x * (2^n - 1)
    is -x modulo 2^n, which is XLA's wrap-around."""
    if x.dtype.is_unsigned:
        return tf.math.multiply(x, tf.constant(x.dtype.max, x.dtype))
    return tf.math.negative(x)


def _mulhi_edges(rng, dtype):
    """Extremes of the dtype against each other, -1, 0, 1 and a mid value."""
    info = np.iinfo(dtype)
    vals = np.array([info.min, info.max, 0, 1, info.max // 3, info.min + 1,
                     -1 if info.min < 0 else info.max - 1], dtype)
    return [np.repeat(vals, len(vals)), np.tile(vals, len(vals))]


@rule("mulhi", dtypes="integer", cases=[
    _random_pair(lax.mulhi), _broadcast_pair(lax.mulhi),
    case.custom("extremes against each other", lax.mulhi, _mulhi_edges),
    case.random(lax.mulhi, shapes=[(3, 4), (3, 4)], name="symbolic", dtypes=["int32", "uint8"],
                convert_kw={"polymorphic_shapes": ["(b, 4)", "(b, 4)"]})])
def mulhi(ctx, x, y, **_):
    """The upper half of the double-width product. Up to 32 bits: the product in 64 bits
    (exact), shifted (arithmetically for signed types). 64 bits: JAX's own split into four
    32x32-bit products in uint64, then the signed correction
    ``hi(x*y) = uhi(x*y) - (x<0 ? y : 0) - (y<0 ? x : 0)`` (mod 2^64)."""
    dt = x.dtype
    bits = dt.size * 8
    if bits < 64:
        wide = tf.uint64 if dt.is_unsigned else tf.int64
        prod = tf.cast(x, wide) * tf.cast(y, wide)
        return tf.cast(tf.bitwise.right_shift(prod, tf.constant(bits, wide)), dt)
    u = [tf.cast(v, tf.uint64) for v in (x, y)]
    mask, k32 = tf.constant(0xFFFFFFFF, tf.uint64), tf.constant(32, tf.uint64)
    (x_lo, y_lo), (x_hi, y_hi) = [[tf.bitwise.bitwise_and(v, mask) for v in u],
                                  [tf.bitwise.right_shift(v, k32) for v in u]]
    lo_lo, lo_hi, hi_lo = x_lo * y_lo, x_lo * y_hi, x_hi * y_lo
    cross = (tf.bitwise.bitwise_and(lo_hi, mask) + tf.bitwise.bitwise_and(hi_lo, mask)
             + tf.bitwise.right_shift(lo_lo, k32))
    hi = (x_hi * y_hi + tf.bitwise.right_shift(lo_hi, k32) + tf.bitwise.right_shift(hi_lo, k32)
          + tf.bitwise.right_shift(cross, k32))
    if dt.is_unsigned:
        return hi
    k63 = tf.constant(63, dt)
    return (tf.cast(hi, dt) + tf.bitwise.right_shift(x, k63) * y
            + tf.bitwise.right_shift(y, k63) * x)


# -- div, rem -----------------------------------------------------------------------------------

def _int_div_args(x, y):
    """A divisor that never traps (TF CPU raises on /0 and INT_MIN/-1 is undefined in C),
    and the masks of the two places XLA defines by itself."""
    zero = tf.math.equal(y, tf.zeros_like(y))
    bad = zero
    if not x.dtype.is_unsigned:
        bad = bad | (tf.math.equal(x, _min_of(x.dtype)) & tf.math.equal(y, -tf.ones_like(y)))
    safe_y = tf.where(bad, tf.ones_like(y), y)
    return zero, safe_y


_INT_EDGE_X = [7, -7, 7, -7, 5, -5, 0, -128, -128]
_INT_EDGE_Y = [2, 2, -2, -2, 0, 0, 0, -1, 1]


@rule("div", dtypes="integer",
      cases=[case("truncates; x/0 = -1; INT_MIN/-1 = INT_MIN", lax.div, _INT_EDGE_X, _INT_EDGE_Y,
                  dtypes="signed"),
             case("x/0 is all ones", lax.div, [7, 0, 255], [0, 0, 2], dtypes="unsigned"),
             case.custom("random nonzero divisors", lax.div,
                         lambda rng, dt: [rng.integers(-50 if dt.kind == "i" else 0, 100, (4, 5)).astype(dt),
                                          rng.integers(1, 9, (4, 5)).astype(dt)])])
def div_integer(ctx, x, y, **_):
    """XLA truncates toward zero (TF's // floors), x/0 is all ones (-1, or the maximum
    for unsigned types) and INT_MIN/-1 is INT_MIN."""
    zero, safe_y = _int_div_args(x, y)
    dt = np.dtype(ctx.aval_out.dtype)
    all_ones = ctx.constant(np.iinfo(dt).max if dt.kind == "u" else -1, dt)
    return tf.where(zero, all_ones, tf.truncatediv(x, safe_y))


@rule("div", dtypes="inexact",
      cases=[case("IEEE specials", lax.div, [1.0, -1.0, 0.0, inf, 5.0, -0.0],
                  [0.0, 0.0, 0.0, inf, -inf, 3.0], dtypes="floating"),
             case.random(lax.div, shapes=[(3, 4), (3, 4)]),
             _broadcast_pair(lax.div),
             case("complex infinities, NaN and zeros (found by tests/fuzz.py)", lax.div,
                  np.array([complex(nan, inf), complex(nan, inf), complex(inf, inf), 1 + 1j,
                            complex(inf, 0), complex(-inf, 2), 0j, 1 - 1j, complex(nan, 1)]),
                  np.array([0j, 1j, 2 + 0j, complex(inf, inf), 1 + 1j, complex(0, -0.0),
                            complex(-inf, 1), complex(0, inf), 0j]), dtypes="complex")])
def div_inexact(ctx, x, y, **_):
    if x.dtype.is_complex:
        return _complex_div(x, y)
    return _f32(tf.math.truediv, x, y)


def _complex_div(x, y):
    """TF's complex quotient, and XLA's (:func:`_xla_complex_div`) on the elements where
    TF's is not finite or has a zero part (only those are computed the long way)."""
    q = tf.math.truediv(x, y)
    re, im = tf.math.real(q), tf.math.imag(q)
    where = tf.where(~tf.math.is_finite(re) | ~tf.math.is_finite(im)
                     | tf.math.equal(re, 0) | tf.math.equal(im, 0))
    shape = tf.shape(q)
    pick = lambda t: tf.gather_nd(tf.broadcast_to(t, shape), where)
    return tf.tensor_scatter_nd_update(q, where, _xla_complex_div(pick(x), pick(y)))


def _sign_of(x, mag):
    """|mag| with the sign bit of ``x`` (float32 or float64)."""
    bits = tf.bitcast(x, tf.int32 if x.dtype == tf.float32 else tf.int64)
    return tf.where(bits < 0, -tf.math.abs(mag), tf.math.abs(mag))


def _xla_complex_div(x, y):
    """XLA's complex division: Smith's algorithm; where that gives NaN + NaN*i, C99's
    recoveries (Annex G) for a zero divisor, an infinite dividend over a finite divisor
    and a finite dividend over an infinite one. (TF's kernel gives NaN for a quarter of
    the quotients of infinities and zeros.)"""
    ar, ai, br, bi = tf.math.real(x), tf.math.imag(x), tf.math.real(y), tf.math.imag(y)
    zero, one = tf.zeros_like(ar), tf.ones_like(ar)
    infinity = tf.constant(inf, ar.dtype)
    by_im = tf.math.abs(br) < tf.math.abs(bi)
    ratio = tf.where(by_im, br / bi, bi / br)
    den = tf.where(by_im, bi + br * ratio, br + bi * ratio)
    cr = tf.where(by_im, ar * ratio + ai, ar + ai * ratio) / den
    ci = tf.where(by_im, ai * ratio - ar, ai - ar * ratio) / den
    is_inf, finite, is_nan = tf.math.is_inf, tf.math.is_finite, tf.math.is_nan
    zero_den = tf.math.equal(br, 0) & tf.math.equal(bi, 0) & ~(is_nan(ar) & is_nan(ai))
    inf_num = (is_inf(ar) | is_inf(ai)) & finite(br) & finite(bi)
    inf_den = (is_inf(br) | is_inf(bi)) & finite(ar) & finite(ai)
    unit = lambda v: _sign_of(v, tf.where(is_inf(v), one, zero))
    ur, ui, vr, vi, s = unit(ar), unit(ai), unit(br), unit(bi), _sign_of(br, infinity)

    def recover(c, r1, r2, r3):
        fixed = tf.where(zero_den, r1, tf.where(inf_num, r2, tf.where(inf_den, r3, c)))
        return tf.where(is_nan(cr) & is_nan(ci), fixed, c)
    return tf.complex(
        recover(cr, s * ar, infinity * (ur * br + ui * bi), zero * (ar * vr + ai * vi)),
        recover(ci, s * ai, infinity * (ui * br - ur * bi), zero * (ai * vr - ar * vi)))


@rule("rem", dtypes="integer",
      cases=[case("sign of the dividend; x%0 = x; INT_MIN%-1 = 0", lax.rem, _INT_EDGE_X,
                  _INT_EDGE_Y, dtypes="signed"),
             case("x%0 = x", lax.rem, [7, 0, 255], [0, 0, 2], dtypes="unsigned"),
             case.custom("random nonzero divisors", lax.rem,
                         lambda rng, dt: [rng.integers(-50 if dt.kind == "i" else 0, 100, (4, 5)).astype(dt),
                                          rng.integers(1, 9, (4, 5)).astype(dt)])])
def rem_integer(ctx, x, y, **_):
    """C remainder (sign of the dividend; TF's mod floors). TruncateMod lacks most integer
    kernels, so x - trunc(x/y)*y, which is exact in wrap-around arithmetic."""
    zero, safe_y = _int_div_args(x, y)
    return tf.where(zero, x, x - tf.truncatediv(x, safe_y) * safe_y)


_U32_EDGE_X = [7, 0, 255, 2**32 - 1, 2**32 - 1, 2**31, 2**31 + 5, 12345678]
_U32_EDGE_Y = [0, 0, 2, 1, 2**32 - 1, 2**31 + 1, 2**31, 2**32 - 3]


@rule("rem", dtypes="uint32", targets="tflite", cases=[
    case("x%0 = x, operands past 2**31", lax.rem, _U32_EDGE_X, _U32_EDGE_Y),
    case.custom("random", lax.rem,
                lambda rng, dt: [rng.integers(0, 2**32, (4, 5), dtype=np.uint64).astype(dt),
                                 rng.integers(1, 2**32, (4, 5), dtype=np.uint64).astype(dt)])])
def rem_uint32_tflite(ctx, x, y, **_):
    """TFLite has no uint32 division or compare: both operands are exact in int64, whose
    FloorMod it has (truncation, no negatives); x%0 is x, as XLA. (uint32 ``div`` needs an
    int64 FloorDiv, which TFLite lacks: refused.)"""
    a, b = tf.cast(x, tf.int64), tf.cast(y, tf.int64)
    zero = tf.math.equal(b, 0)
    out = tf.where(zero, a, tf.math.floormod(a, tf.where(zero, tf.ones_like(b), b)))
    return tf.cast(out, tf.uint32)


@rule("rem", dtypes="floating",
      cases=[case("C fmod: sign of the dividend", lax.rem,
                  [5.5, -5.5, 5.5, -5.5, 1.0, inf, 1.0, -0.0, -4.0, -1.0],
                  [2.0, 2.0, -2.0, -2.0, 0.0, 1.0, inf, 1.0, 2.0, -inf]),
             case.random(lax.rem, shapes=[(3, 4), (3, 4)])])
def rem_floating(ctx, x, y, **_):
    """fmod(x, y) = sign(x) * floormod(|x|, |y|); floormod of non-negatives is exact and
    exports to TFLite (TruncateMod does not, and lacks half kernels)."""
    def fmod(a, b):
        r = tf.math.floormod(tf.math.abs(a), tf.math.abs(b))
        signed = tf.where(tf.math.less(a, 0), -r, r)
        # a zero result takes the dividend's sign: rem(-4, 2) = -0.0
        return tf.where(tf.math.equal(r, 0), a * 0, signed)
    return _f32(fmod, x, y)


# -- abs, sign ---------------------------------------------------------------------------------

@rule("abs", dtypes=["signed", "inexact"],
      cases=[case.random(lax.abs, shapes=[(3, 4)]),
             case("INT_MIN stays INT_MIN", lax.abs, [-128, -1, 0, 127], dtypes="int8"),
             case("specials", lax.abs, [-0.0, -inf, nan, -2.5], dtypes="floating"),
             case("complex specials", lax.abs, np.array([3 + 4j, complex(inf, nan), -0j]),
                  dtypes="complex")])
def abs_(ctx, x, **_):
    """Complex abs is the real magnitude (TF ComplexAbs, a hypot). XLA gives NaN when
    either part is NaN, where C's hypot gives inf for (inf, NaN)."""
    if x.dtype.is_complex:
        mag = tf.math.abs(x)
        part_nan = tf.math.is_nan(tf.math.real(x)) | tf.math.is_nan(tf.math.imag(x))
        return tf.where(part_nan, tf.constant(nan, mag.dtype), mag)
    return tf.math.abs(x)


@rule("sign", dtypes="numeric",
      cases=[case.random(lax.sign, shapes=[(3, 4)]),
             case("zeros keep their sign, NaN stays", lax.sign, [-0.0, 0.0, nan, -inf, 2.0],
                  dtypes="floating"),
             case("unsigned", lax.sign, [0, 1, 255], dtypes="unsigned"),
             case("signed", lax.sign, [-128, 0, 5], dtypes="signed"),
             case("complex: x/|x|, zero, inf", lax.sign,
                  np.array([3 + 4j, 0j, complex(inf, 1), complex(nan, 1)]), dtypes="complex")])
def sign(ctx, x, **_):
    """Unsigned: 0 or 1 (no TF kernel). Floats: TF gives +0 for -0, XLA keeps -0.
    Complex: XLA divides each part by |x| (sign(inf+1j) = nan+0j; TF gives nan+nanj)."""
    if x.dtype.is_unsigned:
        return tf.cast(tf.math.not_equal(x, 0), x.dtype)
    if x.dtype.is_complex:
        mag = tf.math.abs(x)
        safe = tf.where(tf.math.equal(mag, 0), tf.ones_like(mag), mag)
        out = tf.complex(tf.math.real(x) / safe, tf.math.imag(x) / safe)
        return tf.where(tf.math.equal(mag, 0), tf.zeros_like(x), out)
    if x.dtype.is_floating:
        return tf.where(tf.math.equal(x, 0), x, tf.math.sign(x))
    return tf.math.sign(x)


# -- max, min ----------------------------------------------------------------------------------

_NAN_GRID = ([[nan, nan, nan], [inf, inf, inf], [-inf, -inf, -inf], [0.0, -0.0, 1.0]],
             [[nan, inf, -inf], [nan, inf, -inf], [nan, inf, -inf], [-0.0, 0.0, nan]])


@rule(["max", "min"], dtypes="bool",
      cases=[case("truth table", lax.max, [True, True, False, False], [True, False, True, False]),
             case("truth table", lax.min, [True, True, False, False], [True, False, True, False])])
def minmax_bool(ctx, x, y, **_):
    if ctx.eqn.primitive.name == "max":
        return tf.math.logical_or(x, y)
    return tf.math.logical_and(x, y)


@rule(["max", "min"], dtypes="integer",
      cases=[_random_pair(lax.max), _random_pair(lax.min), _broadcast_pair(lax.max)])
def minmax_integer(ctx, x, y, **_):
    return (tf.math.maximum if ctx.eqn.primitive.name == "max" else tf.math.minimum)(x, y)


@rule(["max", "min"], dtypes="floating",
      cases=[case("NaN wins, -0 < +0", lax.max, *_NAN_GRID),
             case("NaN wins, -0 < +0", lax.min, *_NAN_GRID),
             _random_pair(lax.max), _random_pair(lax.min), _broadcast_pair(lax.min),
             *[case(f"{op.__name__} with constant {k!r}", (lambda op, k: lambda x: op(x, k))(op, k),
                    [nan, -0.0, 0.0, -inf, inf, 1.5, -1.5, 2.0], dtypes="floating")
               for op in (jnp.maximum, jnp.minimum) for k in (0.0, -0.0, 1.5, -inf, inf)],
             case("constant on the left", lambda x: jnp.minimum(-0.0, x), [nan, -0.0, 0.0, -1.0, 1.0],
                  dtypes="floating"),
             *[case(f"{op.__name__} with constant -0.0, the sign of zero by 1/x",
                    (lambda op: lambda x: (op(x, -0.0), 1 / op(x, -0.0)))(op),
                    [nan, -0.0, 0.0, -1.0, 1.0, inf, -inf], dtypes="floating")
               for op in (jnp.maximum, jnp.minimum)]])
def minmax_floating(ctx, x, y, **_):
    """XLA propagates NaN from either side and orders -0 below +0; tf.maximum/minimum
    promise neither (they return the first operand on ties)."""
    is_max = ctx.eqn.primitive.name == "max"
    # Fast path (e.g. relu = max(x, 0.0)): a scalar constant operand that is not NaN
    # needs no NaN check (max/min are commutative in XLA's semantics, so either side).
    for var, c in ((y, x), (x, y)):
        k = _scalar_constant(var, c)
        if k is not None:
            return _fminmax_const(c, var, k, is_max)
    return (_fmax if is_max else _fmin)(x, y)


def _scalar_constant(t, other):
    """The value of a non-NaN constant tensor of one element (a scalar, or shaped (1, 1)
    like jax.random.uniform's bounds, also after a reshape) that broadcasts into
    ``other``'s shape, else None."""
    if t.shape.num_elements() != 1 or t.shape.rank > (other.shape.rank or 0):
        return None
    v = _static(t)
    return None if v is None or np.isnan(v).any() else np.asarray(v).reshape(())


def _fminmax_const(x, c, k, is_max):
    # max(x, c) = where(x < c, c, x): a NaN x fails the comparison and is kept. Only the
    # zero pair needs care: max(-0, +0) = +0 picks c when c is +0 (so <=), while
    # max(+0, -0) = +0 keeps x when c is -0 (so <). Mirrored for min.
    if np.isinf(k) and (k < 0) == is_max:
        return x  # max(x, -inf) = x and min(x, +inf) = x, NaN and -0 included
    neg = bool(np.signbit(k))
    if is_max:
        take_c = tf.math.less(x, c) if neg else tf.math.less_equal(x, c)
    else:
        take_c = tf.math.greater_equal(x, c) if neg else tf.math.greater(x, c)
    return tf.where(take_c, c, x)


def _fmax(x, y):
    # On NaN and on a pair of zeros, x + y is the answer (-0 + 0 = +0).
    special = (tf.math.is_nan(x) | tf.math.is_nan(y)
               | tf.math.equal(x, 0) & tf.math.equal(y, 0))
    return tf.where(special, x + y, tf.math.maximum(x, y))


def _fmin(x, y):
    # On NaN and on a pair of zeros, -((-x) + (-y)) is the answer (-(0 + -0) = -0).
    special = (tf.math.is_nan(x) | tf.math.is_nan(y)
               | tf.math.equal(x, 0) & tf.math.equal(y, 0))
    return tf.where(special, -((-x) + (-y)), tf.math.minimum(x, y))


@rule(["max", "min"], dtypes="complex",
      cases=[case("lexicographic, NaN picks y", lax.max,
                  np.array([1 + 2j, 1 + 2j, 1 + 2j, complex(nan, 0), complex(0, nan), 1 + 1j]),
                  np.array([1 + 3j, 2 + 0j, 0 + 5j, 1 + 0j, 1j, complex(1, nan)])),
             case("lexicographic, NaN picks y", lax.min,
                  np.array([1 + 2j, 1 + 2j, 1 + 2j, complex(nan, 0), complex(0, nan), 1 + 1j]),
                  np.array([1 + 3j, 2 + 0j, 0 + 5j, 1 + 0j, 1j, complex(1, nan)])),
             _random_pair(lax.max), _broadcast_pair(lax.min)])
def minmax_complex(ctx, x, y, **_):
    """JAX orders complex numbers by real part, then imaginary part; when a comparison
    involves NaN it picks y."""
    return complex_minmax(x, y, ctx.eqn.primitive.name == "max")


@rule("clamp", dtypes=["integer", "floating"],
      cases=[case("scalar bounds, NaN and -0", lax.clamp, 0.0, [-0.0, 0.5, 2.0, -1.0, nan], 1.0,
                  dtypes="floating"),
             case("NaN bound", lax.clamp, nan, [-1.0, 0.5, 2.0], 1.0, dtypes="floating"),
             case("min > max gives max", lax.clamp, 4, [0, 2, 5], 1),
             case.random(lax.clamp, shapes=[(3, 4), (3, 4), ()], name="array min, scalar max"),
             case.random(lax.clamp, shapes=[(), (3, 4), ()], name="scalar bounds")])
def clamp(ctx, lo, x, hi, **_):
    """min(max(x, lo), hi) with XLA's max/min (NaN wins, -0 < +0); lo and hi may be
    scalars, which TF broadcasts."""
    if x.dtype.is_floating:
        return _f32(lambda a, b, c: _fmin(_fmax(a, b), c), x, lo, hi)
    return tf.math.minimum(tf.math.maximum(x, lo), hi)


# -- unary math ----------------------------------------------------------------------------------

_SPECIALS = [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 0.999, -0.999, 2.0, -3.0, 1e-4, -1e-4, 10.0,
             -10.0, inf, -inf, nan]
_COMPLEX_SPECIALS = np.array([0j, 1 + 0j, -1 + 0j, 1j, -1j, 0.5 + 0.5j, -2 + 3j, 3 - 2j,
                              1e-4 + 1e-4j, -10 - 1j, 2 + 0j, -2 - 0j])


def _unary_cases(fn, dtypes):
    out = [case.random(fn, shapes=[(3, 4)]),
           case("special values", fn, _SPECIALS, dtypes="floating")]
    if "complex" in dtypes or "inexact" in dtypes:
        out.append(case("complex values", fn, _COMPLEX_SPECIALS, dtypes="complex"))
    return out


def _exp_times(x, t):
    """exp(x) * t, taken as (exp(x/2) * t) * exp(x/2) where exp(x) alone overflows, as
    XLA does for the parts of a complex exponential."""
    e = tf.math.exp(x)
    half = tf.math.exp(x / 2)
    return tf.where(tf.math.is_inf(e), half * t * half, e * t)


def _exp(z):
    if not z.dtype.is_complex:
        return tf.math.exp(z)
    # TF's complex exp overflows to inf-infj where XLA still has a finite part
    x, y = tf.math.real(z), tf.math.imag(z)
    im = tf.where(tf.math.equal(y, 0), tf.zeros_like(y), _exp_times(x, tf.math.sin(y)))
    return tf.complex(_exp_times(x, tf.math.cos(y)), im)


def _expm1(z):
    if not z.dtype.is_complex:
        return tf.math.expm1(z)
    # TF's complex expm1 is NaN once exp(re) overflows. e^x cos y - 1 is written as
    # expm1(x) cos y - 2 sin^2(y/2) so it stays accurate near 0.
    x, y = tf.math.real(z), tf.math.imag(z)
    s = tf.math.sin(y / 2)
    re = tf.math.expm1(x) * tf.math.cos(y) - 2 * s * s
    im = tf.where(tf.math.equal(y, 0), tf.zeros_like(y), _exp_times(x, tf.math.sin(y)))
    return tf.complex(re, im)


def _log(z):
    if not z.dtype.is_complex:
        return tf.math.log(z)
    # TF's complex log is NaN once |z|^2 overflows (|z| > 1.8e19 in complex64); scale by
    # the larger part: log|z| = log(m) + log1p((s/m)^2) / 2.
    x, y = tf.math.real(z), tf.math.imag(z)
    ax, ay = tf.math.abs(x), tf.math.abs(y)
    m, s = tf.math.maximum(ax, ay), tf.math.minimum(ax, ay)
    safe_m = tf.where(tf.math.equal(m, 0) | tf.math.is_inf(m), tf.ones_like(m), m)
    r = s / safe_m
    re = tf.math.log(m) + 0.5 * tf.math.log1p(r * r)
    re = tf.where(tf.math.equal(m, 0) | tf.math.is_inf(m), tf.math.log(m), re)
    re = tf.where(tf.math.is_nan(x) | tf.math.is_nan(y), tf.constant(nan, x.dtype), re)
    return tf.complex(re, tf.math.atan2(y, x))


def _rsqrt(z):
    if not z.dtype.is_complex:
        return tf.math.rsqrt(z)
    # TF's complex rsqrt overflows for |z| < ~1e-26 (complex64); 1/sqrt(z) does not.
    # At 0, inf and NaN TF's own rsqrt gives XLA's answer.
    inv = tf.math.reciprocal(tf.math.sqrt(z))
    finite = tf.math.is_finite(tf.math.real(inv)) & tf.math.is_finite(tf.math.imag(inv))
    return tf.where(finite, inv, tf.math.rsqrt(z))


def _log1p(x):
    if not x.dtype.is_complex:
        return tf.math.log1p(x)
    # TF's imaginary part is NaN at -1 + 0j; XLA's is atan2(im, 1 + re)
    re, im = tf.math.real(x), tf.math.imag(x)
    return tf.complex(tf.math.real(tf.math.log1p(x)), tf.math.atan2(im, re + 1))


def _atan(x):
    if x.dtype.is_complex:
        return tf.math.atan(x)
    # XLA's own real atan is atan2(x, 1): same numbers, and Atan2 exports to TFLite
    return tf.math.atan2(x, tf.ones_like(x))


def _unary_rule(primitive, tf_fn, dtypes="inexact", complex_extremes=None):
    """One TF op applied elementwise; half floats go through float32."""
    def lower(ctx, x, **_):
        return _f32(tf_fn, x)
    fn = getattr(lax, primitive)
    cases = _unary_cases(fn, dtypes)
    if _accuracy_condition(fn):
        cases.append(case("accuracy=DEFAULT", lambda x: fn(x, accuracy=lax.AccuracyMode.DEFAULT),
                          np.array([0.5, 2.0, 0.0], np.float32), dtypes="float32"))
    if complex_extremes:
        cases.append(case("complex extremes", fn, np.array(complex_extremes), dtypes="complex"))
    return make_rule(primitive, lower, dtypes=dtypes, name=f"unary_{primitive}",
                     doc=f"{primitive}: elementwise TF op (float32 for half types).",
                     when=_accuracy_condition(fn), cases=cases)


RULES = [
    _unary_rule("exp", _exp, complex_extremes=[80 + 1j, -200 + 1j, 1e-20 + 1e-20j]),
    _unary_rule("log", _log, complex_extremes=[1e20 + 1e20j, 3e19 + 1j, -1e30 - 1e-5j,
                                                1e-20 + 1e-20j, 0.6 + 0.8j]),
    _unary_rule("expm1", _expm1, complex_extremes=[100 + 0j, 80 + 1j, 1e-6 + 1e-6j, -1e-7j]),
    _unary_rule("log1p", _log1p),
    _unary_rule("tanh", tf.math.tanh),
    _unary_rule("logistic", tf.math.sigmoid),
    _unary_rule("sqrt", tf.math.sqrt),
    _unary_rule("rsqrt", _rsqrt, complex_extremes=[9.4e-27 + 1e-29j, -4.3e-27 + 8.5e-29j,
                                                    1e-30j, 1e30 + 1e30j]),
    _unary_rule("sin", tf.math.sin),
    _unary_rule("cos", tf.math.cos),
    _unary_rule("tan", tf.math.tan),
    _unary_rule("asin", tf.math.asin),
    _unary_rule("acos", tf.math.acos),
    _unary_rule("atan", _atan),
    _unary_rule("sinh", tf.math.sinh),
    _unary_rule("cosh", tf.math.cosh),
    _unary_rule("asinh", tf.math.asinh),
    _unary_rule("acosh", tf.math.acosh),
    _unary_rule("atanh", tf.math.atanh),
    _unary_rule("floor", tf.math.floor, dtypes="floating"),
    _unary_rule("ceil", tf.math.ceil, dtypes="floating"),
]


@rule("is_finite", dtypes="floating",
      cases=[case("special values", lax.is_finite, _SPECIALS),
             case.random(lax.is_finite, shapes=[(3, 4)])])
def is_finite(ctx, x, **_):
    return tf.math.is_finite(x)


@rule("exp2", dtypes="inexact", when=_no_accuracy,
      cases=[case.random(lax.exp2, shapes=[(3, 4)]),
             case("special values", lax.exp2, _SPECIALS, dtypes="floating")])
def exp2(ctx, x, **_):
    """As JAX lowers it: exp(log(2) * x), the product rounded in x's dtype."""
    log2 = ctx.constant(np.log(2), ctx.avals_in[0].dtype)
    return _f32(_exp, log2 * x)


@rule("cbrt", dtypes="floating", when=_no_accuracy,
      cases=[case.random(lax.cbrt, shapes=[(3, 4)]),
             case("special values", lax.cbrt, [27.0, -8.0, 1e-30, -0.0, 0.0, inf, -inf, nan,
                                               3.0e38, 1e-38])])
def cbrt(ctx, x, **_):
    """TF has no cube root: sign(x) * |x|^(1/3), computed in float64 so that the
    inexact exponent 1/3 costs no float32 accuracy."""
    def f(a):
        wide = tf.cast(a, tf.float64)
        r = tf.math.pow(tf.math.abs(wide), 1.0 / 3.0)
        return tf.cast(tf.where(tf.math.less(wide, 0), -r, tf.where(tf.math.equal(wide, 0),
                                                                     wide, r)), a.dtype)
    if x.dtype == tf.float64:
        r = tf.math.pow(tf.math.abs(x), tf.constant(1.0 / 3.0, tf.float64))
        # one Newton step removes the error of the rounded exponent 1/3 (grows with |log x|)
        safe = tf.where(tf.math.equal(r, 0) | tf.math.is_inf(r), tf.ones_like(r), r)
        r = tf.where(tf.math.equal(r, 0) | tf.math.is_inf(r), r,
                     r - (r - tf.math.abs(x) / (safe * safe)) / 3.0)
        return tf.where(tf.math.less(x, 0), -r, tf.where(tf.math.equal(x, 0), x, r))
    return _f32(f, x)


@rule("round", dtypes="floating",
      cases=[case("away from zero", lambda x: lax.round(x, lax.RoundingMethod.AWAY_FROM_ZERO),
                  [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.49999997, -0.2, 1e8 + 1, inf, nan]),
             case("to nearest even", lambda x: lax.round(x, lax.RoundingMethod.TO_NEAREST_EVEN),
                  [0.5, 1.5, 2.5, -0.5, -2.5, 0.49999997, -0.2, inf, nan]),
             case.random(lambda x: lax.round(x, 0), shapes=[(3, 4)])])
def round_(ctx, x, *, rounding_method, **_):
    """tf.round rounds half to even. Away from zero: truncate, then step away from zero
    when the (exactly computed) fraction is at least 1/2; keeps -0 and infinities."""
    if int(rounding_method) == int(lax.RoundingMethod.TO_NEAREST_EVEN):
        return tf.math.round(x)
    trunc = tf.where(tf.math.less(x, 0), tf.math.ceil(x), tf.math.floor(x))
    half_or_more = tf.math.greater_equal(tf.math.abs(x - trunc), tf.constant(0.5, x.dtype))
    return tf.where(half_or_more, trunc + tf.math.sign(x), trunc)


@rule("atan2", dtypes="floating",
      cases=[case.random(lax.atan2, shapes=[(3, 4), (3, 4)]), _broadcast_pair(lax.atan2),
             case("signed zeros and infinities", lax.atan2,
                  [0.0, -0.0, 0.0, -0.0, 1.0, -1.0, inf, inf, nan],
                  [0.0, 0.0, -0.0, -0.0, -inf, -inf, inf, -inf, 1.0])])
def atan2(ctx, x, y, **_):
    return _f32(tf.math.atan2, x, y)


@rule("atan2", dtypes="float64", targets="tflite",
      cases=[_broadcast_pair(lax.atan2),
             case("shrunk by tests/fuzz.py", lax.atan2, np.array([[0.0], [-0.0], [nan]]),
                  np.array([[-1.0, 5e-324, inf, -0.0]]))])
def atan2_f64_tflite(ctx, x, y, **_):
    """LiteRT's float64 Atan2 does not broadcast (the converter fails to legalize it):
    operands of another shape are broadcast first, as their int64 bits."""
    from rules_lax.structural import as_bits
    shape = ctx.shape(ctx.aval_out)
    x, y = (v if a.shape == ctx.aval_out.shape else as_bits(lambda b: tf.broadcast_to(b, shape), v)
            for v, a in zip((x, y), ctx.avals_in))
    return tf.math.atan2(x, y)


# -- powers -----------------------------------------------------------------------------------

def _ipow(y):
    return lambda x: lax.integer_pow(x, y)


@rule("integer_pow", dtypes="numeric",
      cases=[*[case.random(_ipow(y), shapes=[(3, 4)], name=f"y={y}")
               for y in (0, 1, 2, 3, 5, 8)],
             *[case.random(_ipow(y), shapes=[(3, 4)], name=f"y={y}",
                           dtypes="inexact") for y in (-1, -2, -3)],
             case("overflow wraps", _ipow(5), [100, -7, 3], dtypes="int8"),
             case("zero to a negative power", _ipow(-3), [0.0, -0.0, 2.0],
                  dtypes="floating")])
def integer_pow(ctx, x, *, y, **_):
    """Square-and-multiply in JAX's order (so floats round identically); a negative
    exponent is 1/x^|y|. Integer overflow wraps in both."""
    if y == 0:
        return tf.ones_like(x)
    acc = square_and_multiply(tf.math.multiply, x, abs(y))
    return _f32(lambda a: 1 / a, acc) if y < 0 else acc


def square_and_multiply(mul, x, n: int):
    """x^n for n >= 1 by ``mul``, in the order of JAX's integer_pow lowering."""
    acc = None
    while n > 0:
        if n & 1:
            acc = x if acc is None else mul(acc, x)
        n >>= 1
        if n > 0:
            x = mul(x, x)
    return acc


@rule("square", dtypes="numeric",
      cases=[case.random(lax.square, shapes=[(3, 4)]),
             case("complex near the diagonal", lax.square,
                  np.array([1.0000001 + 1j, 1e20 + 1e20j, 3 + 4j]), dtypes="complex")])
def square(ctx, x, **_):
    """Complex: XLA computes the real part as (re - im) * (re + im), which does not
    overflow or cancel the way re*re - im*im does."""
    if x.dtype.is_complex:
        re, im = tf.math.real(x), tf.math.imag(x)
        return tf.complex((re - im) * (re + im), 2 * re * im)
    return tf.math.multiply(x, x)


def _pow_base_inexact(eqn):
    # the exponent may be an integer; the base must be inexact (JAX's own type rule)
    base = eqn.invars[0].aval.dtype
    return None if jnp.issubdtype(base, jnp.inexact) else f"pow of a {base} base"


def _complex_pow(x, y):
    """XLA's complex power: |x|^c * exp(-d*arg x) * cis(c*arg x + d*log|x|) for
    y = c + di, with 0^0 = 1, 0^y = 0 for real y > 0 and NaN for other y at x = 0.
    (TF's pow, exp(y*log x), is further from XLA's numbers and gives 0^0 = NaN.)"""
    a, b, c, d = tf.math.real(x), tf.math.imag(x), tf.math.real(y), tf.math.imag(y)
    r = tf.math.abs(x)
    arg = tf.math.atan2(b, a)
    q = c * arg + d * tf.math.log(r)
    mag = tf.math.pow(r, c) * tf.math.exp(-d * arg)
    out = tf.complex(mag * tf.math.cos(q), mag * tf.math.sin(q))
    zero_x = tf.math.equal(a, 0) & tf.math.equal(b, 0)
    zero_y = tf.math.equal(c, 0) & tf.math.equal(d, 0)
    at_zero = tf.where(zero_y, tf.ones_like(out),
                       tf.where(tf.math.greater(c, 0) & tf.math.equal(d, 0), tf.zeros_like(out),
                                tf.complex(tf.constant(nan, a.dtype), tf.constant(nan, a.dtype))
                                * tf.ones_like(out)))
    return tf.where(zero_x, at_zero, out)


@rule("pow", dtypes=["inexact", "integer"], when=_pow_base_inexact,
      cases=[case.random(lax.pow, shapes=[(3, 4), (3, 4)], dtypes="inexact"),
             case("specials", lax.pow, [0.0, -0.0, -1.0, 1.0, -inf, -8.0, 2.0, nan, -2.0],
                  [-inf, -1.0, inf, nan, 3.0, 1 / 3, 0.5, 0.0, 0.5], dtypes="floating"),
             case.custom("integer exponent", lax.pow,
                         lambda rng, dt: [np.array([2.0, 0.0, -2.0, 0.0, 1.5]).astype(dt),
                                          np.array([-3, -1, 3, 0, 7], np.int32)],
                         dtypes="inexact"),
             case("complex zeros", lax.pow, np.array([0j, 0j, 0j, 0j, 2 + 1j, -1 + 0j]),
                  np.array([2 + 1j, -1 + 1j, 0j, 1e-30 + 0j, 0.5 + 0j, 0.5 + 0j]),
                  dtypes="complex")])
def pow_(ctx, x, y, **_):
    """An integer exponent is converted to x's dtype first, as JAX lowers it."""
    if y.dtype != x.dtype:
        y = tf.cast(y, x.dtype)
    if x.dtype.is_complex:
        return _complex_pow(x, y)
    return _f32(tf.math.pow, x, y)


# -- complex numbers --------------------------------------------------------------------------

@rule("complex", dtypes=["float32", "float64"],
      cases=[case.random(lax.complex, shapes=[(3, 4), (3, 4)]),
             case.random(lax.complex, shapes=[(3, 1), (3, 4)], name="broadcast")])
def complex_(ctx, x, y, **_):
    shape = ctx.shape(ctx.aval_out)
    return tf.complex(tf.broadcast_to(x, shape), tf.broadcast_to(y, shape))


@rule("conj", dtypes=["float32", "float64", "complex"],
      cases=[case.random(lax.conj, shapes=[(3, 4)])])
def conj(ctx, x, **_):
    """On a real input JAX's conj returns a complex result with zero imaginary part."""
    if x.dtype.is_complex:
        return tf.math.conj(x)
    return tf.complex(x, tf.zeros_like(x))


@rule(["real", "imag"], dtypes="complex",
      cases=[case.random(lax.real, shapes=[(3, 4)]), case.random(lax.imag, shapes=[(3, 4)])])
def real_imag(ctx, x, **_):
    return (tf.math.real if ctx.eqn.primitive.name == "real" else tf.math.imag)(x)


# -- TFLite forms (float32) ---------------------------------------------------------------------
# The TFLite converter and the LiteRT kernels (XNNPACK) differ from XLA in ways measured
# with the converter of TF 2.21 and ai-edge-litert: an inf constant becomes FLT_MAX; Asin,
# Acos, Tan, Sinh, Cosh, Asinh, Acosh, Atanh have no builtin; Exp gives 0 at NaN and
# overflows from x = 88.38 (XLA: 88.72); Log is inf above 2^127; Sqrt/Rsqrt are wrong above
# 2^126 and Rsqrt(0) is NaN; Logistic is NaN for |x| > ~1e26; Neg(+0) and Sin(-0) are +0;
# Expm1/Log1p are expanded to exp(x)-1 / log(1+x), which lose all relative precision near 0.
# The forms below use builtin ops only and keep every branch finite where it is not taken
# (a select may later become arithmetic, e.g. in ONNX), except where noted.

_F32_MAX = float(np.finfo(np.float32).max)
_E = float(np.float32(np.e))
_LN2 = math.log(2.0)


def _inf(x):
    """+inf shaped like ``x``, made at run time (an inf constant would become FLT_MAX)."""
    return _F32_MAX * (2.0 + tf.cast(tf.math.is_nan(x), x.dtype))


def _keep_nan(x):
    """0 where ``x`` is a number, NaN where it is NaN (added to a result to propagate it)."""
    return 0.0 * tf.math.sign(x)


def _nan_where(mask, like):
    """A factor: NaN where ``mask``, else 1 (a NaN constant in a select would be an
    operand that is not finite where it is not taken)."""
    return 1.0 + tf.math.sqrt(-tf.cast(mask, like.dtype))


def _is_inf(x):
    """|x| is inf (TFLite's IsInf compares with an inf constant, which becomes FLT_MAX)."""
    return tf.math.greater(tf.math.abs(x), _F32_MAX)


def _negate(x):
    """-x with -0 for +0 (TFLite's Neg gives +0)."""
    return x * -1.0


def _clip(x, lo, hi):
    return tf.math.minimum(tf.math.maximum(x, lo), hi)


def _signbit(x):
    return tf.math.less(tf.bitcast(x, tf.int32), 0)


def _copysign(r, x):
    """|r| with the sign bit of ``x`` (r >= 0 or NaN)."""
    return tf.where(_signbit(x), _negate(r), r)


def _near_zero(x, fx, bound=2.0 ** -12):
    """f(x) = x below ``bound``: keeps -0 and subnormals, which TFLite's kernels flush."""
    return tf.where(tf.math.less(tf.math.abs(x), bound), _clip(x, -bound, bound), fx)


def _scaled(x, big, small_scale, add):
    """(x * m, offset): m = ``small_scale`` where ``big``, else 1."""
    return x * tf.where(big, small_scale, 1.0), tf.where(big, add, 0.0)


def _pow2(k):
    """2^k for integral float ``k`` in [-126, 127], built from its exponent bits."""
    return tf.bitcast((tf.cast(k, tf.int32) + 127) * (1 << 23), tf.float32)


def _exp_f32(x):
    # TFLite's Exp is off by up to 60 ulp near its overflow (and overflows at 88.38): take
    # x = k log 2 + r (Cody-Waite, |r| <= log(2)/2, where Exp is accurate) and scale by
    # 2^k in two halves, so that 2^k itself never overflows. NaN is put back at the end.
    xc = _clip(x, -104.0, 89.0)
    k = tf.math.round(xc * (1 / _LN2))
    r = (xc - k * 0.693359375) - k * -2.12194440e-4
    k1 = tf.math.floor(k * 0.5)
    return tf.math.exp(r) * _pow2(k1) * _pow2(k - k1) + _keep_nan(x)


def _log_f32(x):
    # TFLite's Log loses relative precision near 1 and is inf above 2^127: on [1/2, 2]
    # log1p(x - 1) (x - 1 is exact there), above 2^100 log(x 2^-64) + 64 log 2.
    # (Subnormals: TFLite's Log takes them as 0, as XLA:CPU does on arrays.)
    # XNNPACK's LOG on some CPUs (measured: AMD EPYC, AVX2) gives 88.4 for +inf and NaN:
    # x itself where it is not <= FLT_MAX (+inf, NaN), one compare and select.
    m, add = _scaled(x, tf.math.greater(x, 2.0 ** 100), 2.0 ** -64, 64 * _LN2)
    near_1 = tf.math.logical_and(tf.math.greater_equal(x, 0.5), tf.math.less_equal(x, 2.0))
    out = tf.where(near_1, _log1p_small(_clip(x, 0.5, 2.0) - 1.0), tf.math.log(m) + add)
    return tf.where(tf.math.less_equal(x, _F32_MAX), out, x)


def _sqrt_f32(x):
    m, _ = _scaled(x, tf.math.greater(x, 2.0 ** 100), 2.0 ** -64, 0.0)
    return tf.math.sqrt(m) * tf.where(tf.math.greater(x, 2.0 ** 100), 2.0 ** 32, 1.0)


def _atanh_series(z):
    """atanh(z) for |z| <= 1/3: z (1 + z^2/3 + z^4/5 + ...), to float32 precision."""
    z2 = z * z
    p = tf.constant(1.0 / 17, z.dtype)
    for k in range(7, -1, -1):
        p = p * z2 + 1.0 / (2 * k + 1)
    return z * p


def _log1p_small(y):
    """log1p(y) for y in [-0.5, 1]: 2 atanh(y / (2 + y))."""
    return 2.0 * _atanh_series(y / (2.0 + y))


def _log1p_f32(x):
    small = tf.math.less_equal(tf.math.abs(x), 0.5)
    return tf.where(small, _log1p_small(_clip(x, -0.5, 0.5)), _log_f32(1.0 + x))


def _expm1_f32(x):
    # |x| < 1/2: 2t / (1 - t) with t = tanh(x/2), exact near 0
    small = tf.math.less(tf.math.abs(x), 0.5)
    t = tf.math.tanh(_clip(x, -0.5, 0.5) * 0.5)
    return tf.where(small, 2.0 * t / (1.0 - t), _exp_f32(x) - 1.0)


def _exp_half(a):
    """e^a / 2 for a >= 1, finite until e^a / 2 overflows (a - 1 is exact)."""
    return _exp_f32(a - 1.0) * (_E / 2)


def _sinh_f32(x):
    a = tf.math.abs(x)
    small = tf.math.less(a, 1.0)
    e = _expm1_f32(_clip(x, -1.0, 1.0))
    h = _exp_half(tf.math.maximum(a, 1.0))
    big = _copysign(h - 0.25 / h, x)
    return tf.where(small, 0.5 * (e + e / (e + 1.0)), big)


def _cosh_f32(x):
    a = tf.math.abs(x)
    h = _exp_f32(a - 1.0) * (_E / 2)     # a - 1 rounds for a < 1/2: 3e-8 relative
    return h + 0.25 / h


def _asinh_f32(x):
    a = tf.math.abs(x)
    s = _clip(a, 0.0, 0.5)
    small = _log1p_small(s + s * s / (1.0 + _sqrt_f32(1.0 + s * s)))
    mid_a = _clip(a, 0.5, 4096.0)
    mid = _log_f32(mid_a + _sqrt_f32(mid_a * mid_a + 1.0))
    r = tf.where(tf.math.less_equal(a, 0.5), small,
                 tf.where(tf.math.less_equal(a, 4096.0), mid,
                          _log_f32(tf.math.maximum(a, 4096.0)) + _LN2))
    return _copysign(r, x)


def _acosh_f32(x):
    t = _clip(x - 1.0, 0.0, 0.25)
    small = _log1p_small(t + _sqrt_f32(2.0 * t + t * t))
    mid_x = _clip(x, 1.25, 4096.0)
    mid = _log_f32(mid_x + _sqrt_f32((mid_x - 1.0) * (mid_x + 1.0)))
    r = tf.where(tf.math.less(x, 1.25), small,
                 tf.where(tf.math.less_equal(x, 4096.0), mid,
                          _log_f32(tf.math.maximum(x, 4096.0)) + _LN2))
    return r * _nan_where(tf.math.less(x, 1.0), x) + _keep_nan(x)


def _atanh_f32(x):
    small = tf.math.less_equal(tf.math.abs(x), 1.0 / 3)
    return tf.where(small, _atanh_series(_clip(x, -1.0 / 3, 1.0 / 3)),
                    0.5 * _log_f32((1.0 + x) / (1.0 - x)))


def _asin_f32(x):
    return tf.math.atan2(x, _sqrt_f32((1.0 - x) * (1.0 + x)))


def _acos_f32(x):
    return tf.math.atan2(_sqrt_f32((1.0 - x) * (1.0 + x)), x)


# pi/2 in three parts (Cephes): j * _PIO2[0] is exact for |j| < 2^16
_PIO2 = (1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8)


def _tan_f32(x):
    """tan(r) or -cot(r) after reducing x by multiples of pi/2 (|r| <= pi/4, where
    TFLite's Sin and Cos are accurate); Cephes' reduction, accurate for |x| < 8192."""
    j = tf.math.round(x * (2 / math.pi))
    r = ((x - j * _PIO2[0]) - j * _PIO2[1]) - j * _PIO2[2]
    odd = tf.math.equal(tf.math.floormod(j, 2.0), 1.0)
    s, c = tf.math.sin(r), tf.math.cos(r)
    return _near_zero(x, tf.where(odd, c, s) / tf.where(odd, _negate(s), c))


def _tfl_unary(primitive, fn, extra=(), edges=None):
    def lower(ctx, x, **_):
        return fn(x)
    lax_fn = getattr(lax, primitive)
    cases = [case.random(lax_fn, shapes=[(3, 4)]),
             case("special values", lax_fn, _SPECIALS + (_TFL_EDGES if edges is None else edges)),
             *[case(name, lax_fn, vals) for name, vals in extra]]
    return make_rule(primitive, lower, dtypes="float32", targets="tflite",
                     name=f"tflite_{primitive}", when=_accuracy_condition(lax_fn), cases=cases,
                     doc=f"{primitive} in float32 TFLite builtins (see the notes above _inf).")


_TFL_SMALL = [1e-45, -1e-45, 1e-39, -3e-39, 2.0 ** -13, -2.0 ** -13]
_TFL_EDGES = _TFL_SMALL + [3e38, -3e38, 1e30, 1e20]
# TFLite's Sin and Cos are wrong beyond |x| ~ 1e5 (no Payne-Hanek reduction), tan beyond
# ~1.6e4 (Cephes reduction): not covered.
_TRIG_EDGES = _TFL_SMALL + [1000.0, -5000.0, 8000.0]
_OVERFLOW = [88.0, 88.3, 88.5, 88.72, 88.73, 89.0, 89.4, 89.42, -89.4, -88.72, -103.0]
_AROUND_HALF = [0.4999, 0.5, 0.5001, -0.4999, -0.5, -0.5001, 0.9999, 1.0001, -1.0001,
                3e-8, -3e-8, 1e-5, -1e-5]

RULES += [
    _tfl_unary("exp", _exp_f32, [("overflow", _OVERFLOW)]),
    _tfl_unary("expm1", _expm1_f32, [("overflow", _OVERFLOW), ("near 0", _AROUND_HALF)]),
    _tfl_unary("log", _log_f32, [("large", [2.0 ** 126, 2.0 ** 127, 1.7e38, 2.4e38])]),
    _tfl_unary("log1p", _log1p_f32, [("near 0", _AROUND_HALF), ("large", [2.4e38, 1e10])]),
    _tfl_unary("sqrt", _sqrt_f32, [("large", [2.0 ** 126, 2.0 ** 127, 1.7e38, 2.4e38])]),
    _tfl_unary("rsqrt", lambda x: 1.0 / _sqrt_f32(x), [("large", [2.0 ** 127, 2.4e38])]),
    _tfl_unary("logistic", lambda x: tf.math.sigmoid(_clip(x, -100.0, 100.0)) + _keep_nan(x),
               [("large", [1e26, -1e26, 1e30, -1e30, 100.0, -100.0, 88.0, -88.0])]),
    _tfl_unary("sin", lambda x: _near_zero(x, tf.math.sin(x)), edges=_TRIG_EDGES),
    _tfl_unary("tan", _tan_f32, [("near poles", [1.5707963, -1.5707964, 4.712389, 7.8539815,
                                                 100.0, 1000.5, 8000.0, 0.7853982])],
               edges=_TRIG_EDGES),
    _tfl_unary("asin", _asin_f32, [("near +-1", [0.9999999, -0.9999999, 1.0000001])]),
    _tfl_unary("acos", _acos_f32, [("near +-1", [0.9999999, -0.9999999, 1.0000001])]),
    _tfl_unary("sinh", _sinh_f32, [("overflow", _OVERFLOW), ("near 0", _AROUND_HALF)]),
    _tfl_unary("cosh", _cosh_f32, [("overflow", _OVERFLOW), ("near 0", _AROUND_HALF)]),
    _tfl_unary("asinh", _asinh_f32, [("near 0", _AROUND_HALF),
                                     ("branches", [4096.0, 4097.0, -5000.0, 1e19, 2e19])]),
    _tfl_unary("acosh", _acosh_f32, [("near 1", [1.0, 1.0000001, 1.2499, 1.25, 1.2501,
                                                 0.9999999, 4096.0, 4097.0, 1e20, -5.0])]),
    _tfl_unary("atanh", _atanh_f32, [("near 0 and +-1", _AROUND_HALF + [0.33333, 0.33334,
                                                                       0.9999999, -0.9999999])]),
]



# -- ONNX forms ---------------------------------------------------------------------------------
# ONNX has no Log1p or Expm1 op (tf2onnx refuses both). The forms below keep full relative
# precision near 0 with Log, Exp and arithmetic, and every select has finite branches.

def _log1p_onnx(x):
    """Goldberg's log(u) * x / (u - 1), u = 1 + x: the rounding error of u cancels. u and
    x are capped at 2^60 in the ratio (it is 1 to working precision long before), so it
    stays finite at x = inf (the Minimum also keeps grappler from folding (1 + x) - 1
    into x); where u == 1, log(u) = 0 and the ratio's divisor is 1, then x is added."""
    cap = tf.constant(2.0 ** 60, x.dtype)
    u = 1.0 + x
    u_1 = tf.math.minimum(u, cap) - 1.0
    at_1 = tf.math.equal(u_1, 0.0)
    xc = tf.math.minimum(x, cap)
    ratio = xc / tf.where(at_1, tf.ones_like(x), u_1)
    return tf.math.log(u) * ratio + tf.where(at_1, xc, tf.zeros_like(x))


def _expm1_onnx(x):
    """Kahan's (u - 1) * x / log(u), u = exp(x), for |x| < 1/2 (on x clipped there, so it
    stays finite elsewhere); exp(x) - 1 beyond, where it loses no precision."""
    half = tf.constant(0.5, x.dtype)
    xs = tf.clip_by_value(x, -half, half)
    us = tf.math.exp(xs)
    log_us = tf.math.log(us)
    at_1 = tf.math.equal(log_us, 0.0)
    small = (us - 1.0) * (xs / tf.where(at_1, tf.ones_like(x), log_us))
    small = small + tf.where(at_1, xs, tf.zeros_like(x))
    return tf.where(tf.math.less(tf.math.abs(x), half), small, tf.math.exp(x) - 1.0)


_NEAR_0 = [1e-7, -1e-7, 3e-8, -3e-8, 6e-8, 1e-20, -1e-20, 1e-30, 1e-38, 1e-40, -1e-45,
           2.0 ** -24, -2.0 ** -25, 1e-3, -1e-3, 0.4999, 0.5, 0.5001, -0.4999, -0.5, -0.5001]


def _onnx_unary(primitive, fn, extra):
    def lower(ctx, x, **_):
        return _f32(fn, x)
    lax_fn = getattr(lax, primitive)
    cases = [case.random(lax_fn, shapes=[(3, 4)]),
             case("special values", lax_fn, _SPECIALS),
             case("near 0", lax_fn, _NEAR_0),
             case("large", lax_fn, extra)]
    return make_rule(primitive, lower, dtypes=["bfloat16", "float16", "float32"],
                     targets="onnx", name=f"onnx_{primitive}",
                     when=_accuracy_condition(lax_fn), cases=cases,
                     doc=f"{primitive} in ONNX-convertible ops (see the notes above _log1p_onnx).")


RULES += [
    _onnx_unary("log1p", _log1p_onnx, [-1.0, -0.9999999, -1.5, -inf, 1e10, 2.0 ** 60,
                                       1.2e18, 3e38, 2.0 ** 24, 16777215.0]),
    _onnx_unary("expm1", _expm1_onnx, [88.0, 88.72, 88.73, 89.0, -17.0, -20.0, -88.0,
                                       -104.0, -1e10, 1e10]),
]


_TINY = float(np.finfo(np.float32).tiny)


def _daz(x):
    """Subnormals as (signed) zeros: XLA:CPU computes with denormals-are-zero."""
    return x * tf.cast(tf.math.greater_equal(tf.math.abs(x), _TINY) | tf.math.is_nan(x),
                       x.dtype)


@rule("neg", dtypes="float32", targets="tflite",
      cases=[case("signed zeros", lax.neg, [0.0, -0.0, nan, inf, -inf, 1e-45, 2.5])])
def neg_tflite(ctx, x, **_):
    """x * -1: TFLite's Neg gives +0 for +0."""
    return _negate(x)


@rule("sign", dtypes="float32", targets="tflite",
      cases=[case("zeros keep their sign, subnormals are zeros", lax.sign,
                  [-0.0, 0.0, nan, -inf, inf, 2.0, -3.0, 1e-45, -1e-39, 1.2e-38]),
             case("a scalar -0.0 (found by tests/fuzz.py)", lax.sign, -0.0),
             case("a scalar subnormal", lax.sign, -1e-40)])
def sign_tflite(ctx, x, **_):
    """XLA gives -0 for -0 and treats subnormals as zeros (TFLite's Sign: +0 and +-1).
    The signed zero is x * 1e-30 (which underflows): the converter folds x * 0.0 to +0
    in a scalar model."""
    tiny = tf.math.less(tf.math.abs(x), _TINY)
    return tf.where(tiny, x * 1e-30, tf.math.sign(x))


@rule(["max", "min"], dtypes="float32", targets="tflite",
      cases=[*[case(f"{op.__name__} with constant {k!r}", (lambda op, k: lambda x: op(x, k))(op, k),
                    [nan, -0.0, 0.0, -inf, inf, 1.5, -3e38])
               for op in (jnp.maximum, jnp.minimum) for k in (-inf, inf)],
             *[case(f"{op.__name__} with constant {k!r} and the sign of zero",
                    (lambda op, k: lambda x: (op(x, k), 1 / op(x, k)))(op, k),
                    [nan, -0.0, 0.0, -inf, inf, 1.5, -1.5])
               for op in (jnp.maximum, jnp.minimum) for k in (-0.0, 0.0)],
             case("NaN wins, -0 < +0", lax.max, *_NAN_GRID),
             *[case("NaN wins, -0 < +0, the sign of zero",
                    (lambda op: lambda x, y: (op(x, y), 1 / op(x, y)))(op), *_NAN_GRID)
               for op in (lax.max, lax.min)]])
def minmax_tflite(ctx, x, y, **_):
    """As the generic rule, but max(x, +inf) and min(x, -inf) make their inf at run time
    (an inf constant becomes FLT_MAX in TFLite)."""
    is_max = ctx.eqn.primitive.name == "max"
    for var, c, v in ((y, x, ctx.eqn.invars[1]), (x, y, ctx.eqn.invars[0])):
        k = _scalar_constant(var, c)
        if k is None and isinstance(v, Literal) and np.ndim(v.val) == 0 \
                and not np.isnan(v.val) and var.shape.rank <= c.shape.rank:
            k = np.asarray(v.val)   # inf and -0.0 literals are made at run time on TFLite
        if k is not None and np.isinf(k) and (k > 0) == is_max:
            inf_ = _inf(c)
            return (inf_ if is_max else _negate(inf_)) + _keep_nan(c)
        if k is not None and k == 0:
            # The converter fuses where(c >= k, k, c) into MINIMUM (and the max form into
            # MAXIMUM), which keeps c on a tie of zeros: min(+0, -0) gave +0. A tie takes
            # the constant when it is the answer (max with +0, min with -0), asked apart.
            strict = tf.math.less(c, var) if is_max else tf.math.greater(c, var)
            tie = tf.math.equal(c, var) if is_max != bool(np.signbit(k)) else None
            return tf.where(strict if tie is None else tf.math.logical_or(strict, tie), var, c)
    if not is_max:
        # _fmin's -((-x) + (-y)) for a pair of zeros: the converter drops the negations
        # (min(+0, -0) gave +0); the zero with the sign bit is the one whose 1/x is < 0
        special = (tf.math.is_nan(x) | tf.math.is_nan(y)
                   | tf.math.equal(x, 0) & tf.math.equal(y, 0))
        zeros = tf.where(tf.math.less(1 / x, 0), x, y)
        return tf.where(special, tf.where(tf.math.is_nan(x + y), x + y, zeros),
                        tf.math.minimum(x, y))
    return minmax_floating(ctx, x, y)


@rule("exp2", dtypes="float32", targets="tflite", when=_no_accuracy,
      cases=[case("special values", lax.exp2, _SPECIALS + [127.5, 127.9, 128.0, -150.0])])
def exp2_tflite(ctx, x, **_):
    """exp(log(2) * x) as JAX lowers it, with the float32 TFLite exp."""
    return _exp_f32(np.float32(np.log(2)) * x)


@rule("cbrt", dtypes="float32", targets="tflite", when=_no_accuracy,
      cases=[case.random(lax.cbrt, shapes=[(3, 4)]),
             case("special values", lax.cbrt, [27.0, -8.0, 1e-30, -0.0, 0.0, inf, -inf, nan,
                                               3.0e38, -3.0e38, 1e-38, 0.001, -1e-45])])
def cbrt_tflite(ctx, x, **_):
    """|x|^(1/3) in float32, one Newton step (2r + a/r^2)/3, the sign of x put back."""
    a = tf.math.abs(x)
    r = tf.math.pow(a, np.float32(1 / 3))
    done = tf.math.equal(r, 0.0) | _is_inf(r)
    safe_r, safe_a = tf.where(done, 1.0, r), tf.where(done, 1.0, a)
    r = tf.where(done, r, (2.0 * safe_r + safe_a / (safe_r * safe_r)) * np.float32(1 / 3))
    return _copysign(r, x)


@rule("atan2", dtypes="float32", targets="tflite",
      cases=[_broadcast_pair(lax.atan2),
             case("signed zeros, infinities, subnormals", lax.atan2,
                  [0.0, -0.0, 0.0, -0.0, 1.0, -1.0, inf, inf, nan, 1e-39, 1.0, -1e-45],
                  [0.0, 0.0, -0.0, -0.0, -inf, -inf, inf, -inf, 1.0, 1.0, -1e-39, -1.0])])
def atan2_tflite(ctx, x, y, **_):
    """Operands broadcast first (TFLite's Atan2 does not broadcast). XLA:CPU takes a
    subnormal as zero in arithmetic but not in its comparisons: atan2 of two nonzero
    subnormals is NaN there, and a subnormal x over a zero y is +-pi/2."""
    shape = ctx.shape(ctx.aval_out)
    x, y = tf.broadcast_to(x, shape), tf.broadcast_to(y, shape)
    sub_x, sub_y = (tf.math.not_equal(_daz(v), v) for v in (x, y))
    both = tf.math.logical_and(sub_x, sub_y)
    return tf.math.atan2(x, _daz(y)) * _nan_where(both, x)


@rule("rem", dtypes="float32", targets="tflite",
      cases=[case("C fmod: sign of the dividend; subnormal divisors are zeros", lax.rem,
                  [5.5, -5.5, 5.5, -5.5, 1.0, inf, 1.0, -0.0, -4.0, -1.0, 3.0, 1e-39],
                  [2.0, 2.0, -2.0, -2.0, 0.0, 1.0, inf, 1.0, 2.0, -inf, 1e-39, 1.0])])
def rem_tflite(ctx, x, y, **_):
    """The generic fmod on operands with subnormals as zeros (XLA's denormals-are-zero)."""
    return rem_floating(ctx, _daz(x), _daz(y))


# -- uint32 in TFLite: Add, Mul, BitwiseXor, Bitcast, Cast and SelectV2 take uint32; Sub,
# NotEqual, Maximum and Minimum do not.

def _u32_key(x):
    """int32 with the order of the uint32 ``x`` (the top bit flipped)."""
    return tf.bitcast(tf.bitwise.bitwise_xor(x, tf.constant(2 ** 31, tf.uint32)), tf.int32)


def _u32_max(x, y, is_max=True):
    pick_x = (tf.math.greater if is_max else tf.math.less)(_u32_key(x), _u32_key(y))
    return tf.where(pick_x, x, y)


_U32_EDGES = [0, 1, 2 ** 31, 2 ** 32 - 1, 7, 2 ** 31 - 1]


@rule("sub", dtypes="uint32", targets="tflite",
      cases=[case("wraps", lax.sub, _U32_EDGES, [1, 0, 2 ** 32 - 1, 2 ** 31, 9, 2 ** 31]),
             _broadcast_pair(lax.sub)])
def sub_uint32_tflite(ctx, x, y, **_):
    """x + y * (2^32 - 1): the product is -y modulo 2^32."""
    return x + y * tf.constant(2 ** 32 - 1, tf.uint32)


@rule("sign", dtypes="uint32", targets="tflite",
      cases=[case("0 or 1", lax.sign, _U32_EDGES)])
def sign_uint32_tflite(ctx, x, **_):
    return tf.cast(tf.math.not_equal(tf.bitcast(x, tf.int32), 0), tf.uint32)


@rule(["max", "min"], dtypes="uint32", targets="tflite",
      cases=[case("top bit", lax.max, _U32_EDGES, [2 ** 31 - 1, 2 ** 31, 1, 0, 7, 2 ** 32 - 1]),
             case("top bit", lax.min, _U32_EDGES, [2 ** 31 - 1, 2 ** 31, 1, 0, 7, 2 ** 32 - 1]),
             _broadcast_pair(lax.max), _broadcast_pair(lax.min)])
def minmax_uint32_tflite(ctx, x, y, **_):
    """Compared as int32 keys with the top bit flipped."""
    return _u32_max(x, y, ctx.eqn.primitive.name == "max")


@rule("clamp", dtypes="uint32", targets="tflite",
      cases=[case("min > max gives max", lax.clamp, 4, [0, 2, 5, 2 ** 32 - 1], 1),
             case("top bit", lax.clamp, 2 ** 31 - 1, _U32_EDGES, 2 ** 31 + 5),
             case.random(lax.clamp, shapes=[(3, 4), (3, 4), ()], name="array min, scalar max")])
def clamp_uint32_tflite(ctx, lo, x, hi, **_):
    return _u32_max(_u32_max(x, lo), hi, is_max=False)
