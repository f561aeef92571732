"""Cumulative reductions along one axis: cumsum, cumprod, cummax, cummin, cumlogsumexp
(params ``axis`` and ``reverse``).

JAX lowers them as reduce_window ops that XLA's CPU backend evaluates window by window,
after rewriting long scans into chunks of 16 (ReduceWindowRewriter). Float sums, products
and logaddexps are rounded in that order, so inexact scans follow it exactly here
(O(16 n) work, slices + concat: exports to TFLite). Integer cumsum is TF's Cumsum;
integer cumprod, cummax and cummin are Hillis–Steele scans (ceil(log2 n) steps of
shift + combine), exact in any order, with JAX's binary ops: NaN-propagating max/min and
lexicographic complex max/min. cumlogsumexp uses JAX's logaddexp. A symbolic length
(``polymorphic_shapes``) takes the same steps, with their number chosen when the graph runs.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax import lax
from jax import numpy as jnp

from core.rule import case, rule
from rules_lax.reductions import (complex_mul, identity, in_f32, is_complex, is_float, lite_bits,
                                  lite_cases, lite_scalar, lite_unbits, minmax, unsigned_order)

_NAN = float("nan")
_INF = float("inf")


def _take(x, axis: int, start, stop):
    return x[(slice(None),) * axis + (slice(start, stop),)]


def scan(x, n, axis: int, reverse: bool, op):
    """Inclusive scan of ``op`` along ``axis`` (length n: an int, or a TF scalar for a
    symbolic dimension): out[i] = x[0] op ... op x[i], or x[i] op ... op x[n-1] when
    ``reverse``. ``op(earlier, later)``."""
    def step(s, x):
        if reverse:
            y = tf.concat([op(_take(x, axis, 0, n - s), _take(x, axis, s, n)),
                           _take(x, axis, n - s, n)], axis)
        else:
            y = tf.concat([_take(x, axis, 0, s),
                           op(_take(x, axis, 0, n - s), _take(x, axis, s, n))], axis)
        y.set_shape(x.shape)  # the same shape; slicing at run-time bounds hides it from TF
        return y

    if not isinstance(n, int):
        return tf.while_loop(lambda s, _: s < n, lambda s, x: (s * 2, step(s, x)),
                             (tf.constant(1), x))[1]
    s = 1
    while s < n:
        x = step(s, x)
        s *= 2
    return x


#: XLA's CPU backend folds each window of a cumulative reduce_window left to right; scans
#: longer than this are first rewritten by XLA's ReduceWindowRewriter into chunks of this
#: length (scan in chunks, exclusive scan of the chunk totals, combine). Float results are
#: rounded in that order, so inexact scans are computed the same way here.
_BASE = 16


def window_scan(x, n: int, reverse: bool, op, seed=None):
    """Along the last axis, out[i] = x[0] op ... op x[i] folded left to right, or
    x[i] op ... op x[n-1] when ``reverse`` (n-1 steps on shrinking slices). ``seed``
    (optional): applied to the element each window starts from (x[0], or every x[i]
    when ``reverse``), see :func:`xla_scan`."""
    seed = seed or (lambda v: v)
    if not reverse:
        acc = seed(x[..., :1])
        outs = [acc]
        for i in range(1, n):
            acc = op(acc, x[..., i:i + 1])
            outs.append(acc)
        return tf.concat(outs, -1)
    acc = seed(x)
    for k in range(1, n):
        acc = tf.concat([op(acc[..., :n - k], x[..., k:]), acc[..., n - k:]], -1)
    return acc


#: Levels of chunks a symbolic scan length can need: ceil(n / _BASE**7) <= _BASE for any
#: int32 n.
_MAX_LEVELS = 7


def xla_scan(x, batch: list, n, reverse: bool, op, init, levels: int = _MAX_LEVELS,
             seed=None):
    """XLA's order of evaluation of a scan along the last axis (``batch`` = leading shape,
    ``init`` = the monoid's identity as a TF scalar), O(n * _BASE) work. ``n`` is an int,
    or a TF scalar for a symbolic length. ``seed``: ``op(init, x)`` for the element a
    window starts from, where that is not ``x`` itself (a sum: -0.0 becomes +0.0; TF's
    grappler drops a literal ``0 + x``)."""
    if not isinstance(n, int):
        return _symbolic_scan(x, batch, n, reverse, op, init, levels, seed)
    if n <= _BASE:
        return window_scan(x, n, reverse, op, seed) if n > 1 else x
    c = -(-n // _BASE)
    x = tf.concat([x, tf.fill(batch + [c * _BASE - n], init)], -1) if c * _BASE > n else x
    inner = window_scan(tf.reshape(x, batch + [c, _BASE]), _BASE, reverse, op, seed)
    return _across_chunks(inner, batch, n, c, reverse, op, init, levels, seed)


def plus_zero(v):
    """``v + 0.0`` (-0.0 becomes +0.0, in each part of a complex), in a form grappler
    keeps."""
    if v.dtype.is_complex:
        return tf.complex(plus_zero(tf.math.real(v)), plus_zero(tf.math.imag(v)))
    return tf.where(tf.math.equal(v, 0), tf.zeros_like(v), v)


def _across_chunks(inner, batch, n, c, reverse, op, init, levels, seed=None):
    """The rest of XLA's rewrite, given the scans ``inner`` of the c chunks of a length-n
    scan: scan the chunk totals, fold each chunk's scan with the total before it."""
    totals = inner[..., 0] if reverse else inner[..., -1]
    done = xla_scan(totals, batch, c, reverse, op, init, levels, seed)
    edge = tf.fill(batch + [1], init)
    before = tf.concat([done[..., 1:], edge], -1) if reverse else tf.concat([edge, done[..., :-1]], -1)
    out = tf.reshape(op(inner, tf.expand_dims(before, -1)), batch + [c * _BASE])
    return out[..., :n]


def _symbolic_scan(x, batch, n, reverse, op, init, levels, seed=None):
    """:func:`xla_scan` of a length known when the graph runs: both of its forms (one
    window, or chunks) are built from one set of chunk scans, and picked at run time. A
    lone window is padded with ``init`` where no output reads it (after its end, or before
    its start when ``reverse``), so either form gives the static one's numbers."""
    c = tf.maximum(-(-n // _BASE), 1)
    short = n <= _BASE
    pad = c * _BASE - n
    if reverse:   # a lone window's padding goes first (concat, not Pad/Roll: TFLite builtins)
        front = tf.where(short, pad, 0)
        x = tf.concat([tf.fill(batch + [front], init), x, tf.fill(batch + [pad - front], init)], -1)
    else:
        x = tf.concat([x, tf.fill(batch + [pad], init)], -1)
    inner = window_scan(tf.reshape(x, batch + [c, _BASE]), _BASE, reverse, op, seed)
    flat = tf.reshape(inner, batch + [c * _BASE])
    alone = flat[..., c * _BASE - n:] if reverse else flat[..., :n]
    if levels == 0:     # only reached with n <= _BASE
        return alone
    return tf.where(short, alone,
                    _across_chunks(inner, batch, n, c, reverse, op, init, levels - 1, seed))


def _inexact_scan(ctx, x, axis, reverse, op, init, seed=None, seed_single=False):
    """Move ``axis`` last, run :func:`xla_scan` (half floats in f32 per op, like XLA's CPU
    backend), move it back. ``init``: a number, or a TF scalar. ``seed_single``: a scan
    of length 1 is ``seed(x)`` too (else ``x``, as XLA simplifies it)."""
    aval = ctx.avals_in[0]
    shape = ctx.shape(aval)           # ints, or TF scalars for symbolic dimensions
    axis, rank = int(axis), len(shape)
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    y = tf.transpose(x, perm) if axis != rank - 1 else x
    if _half(aval.dtype):
        op = in_f32(op, aval.dtype)
    batch = [shape[p] for p in perm[:-1]]
    if not isinstance(init, tf.Tensor):
        init = ctx.constant(init, aval.dtype)
    if seed_single and isinstance(shape[axis], int) and shape[axis] == 1:
        y = seed(y)
    else:
        y = xla_scan(y, batch, shape[axis], bool(reverse), op, init, seed=seed)
    return tf.transpose(y, perm) if axis != rank - 1 else y


def _logaddexp(x1, x2):
    """jax.lax logaddexp for real floats: NaN (or same-sign infinities) make delta NaN,
    and then the result is x1 + x2."""
    amax = minmax(x1, x2, True, np.float32)
    delta = x1 - x2
    return tf.where(tf.math.is_nan(delta), x1 + x2,
                    amax + tf.math.log1p(tf.exp(-tf.abs(delta))))


def is_inexact(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


def _half(dtype) -> bool:
    return np.dtype(dtype).itemsize == 2 and is_float(dtype)


def _cases(fn, extra=()):
    return [case.random(lambda x: fn(x, axis=0), shapes=[(8, 3)], name="axis 0"),
            case.random(lambda x: fn(x, axis=1, reverse=True), shapes=[(2, 13)],
                        name="axis 1 reverse"),
            case.random(lambda x: fn(x, axis=0), shapes=[(1,)], name="length 1"),
            case.random(lambda x: fn(x, axis=1), shapes=[(2, 40)], name="long"),
            case.random(lambda x: fn(x, axis=0, reverse=True), shapes=[(300, 2)],
                        name="chunks of chunks"),
            case.random(lambda x: fn(x, axis=1), shapes=[(2, 0)], name="empty"),
            case.random(lambda x: fn(x, axis=1, reverse=True), shapes=[(3, 13)],
                        name="symbolic batch", convert_kw={"polymorphic_shapes": ["(b, 13)"]}),
            case.random(lambda x: fn(x, axis=1), shapes=[(2, 7)], name="symbolic length",
                        convert_kw={"polymorphic_shapes": ["(2, n)"]}),
            case.random(lambda x: fn(x, axis=0, reverse=True), shapes=[(300, 2)],
                        name="symbolic length, chunks of chunks",
                        convert_kw={"polymorphic_shapes": ["(n, b)"]}),
            *extra]


_NAN_CASES = [
    case("NaN and infinities", lambda x: lax.cummax(x, 0) + lax.cummin(x, 0, reverse=True),
         [1.0, -_INF, _NAN, 2.0, _INF, -3.0], dtypes="floating"),
    case("-0.0 < 0.0 (found by tests/fuzz.py)",
         lambda x: (lax.cummax(x, 0), lax.cummin(x, 0), lax.cummax(x, 0, reverse=True)),
         [-0.0, 0.0, -0.0, -0.0, 0.0], dtypes="floating"),
    case("complex: a NaN part loses to the next element, XLA's order (found by tests/fuzz.py)",
         lambda x: (lax.cummax(x, 0), lax.cummin(x, 0, reverse=True)),
         [2 + 2j, complex(_NAN, 0), complex(-_INF, 2), complex(-_INF, -1), complex(2, _NAN)] * 4,
         dtypes="complex")]


@rule("cumsum", dtypes="numeric", cases=_cases(lax.cumsum, [
    case("negatives", lambda x: lax.cumsum(x, 0, reverse=True), [3, -5, 7, -1, 0, 2],
         dtypes=["signed", "floating", "complex"]),
    case("-0.0 sums to +0.0 as in XLA (found by tests/fuzz.py)",
         lambda x: (lax.cumsum(x, 0), lax.cumsum(x[:8], 0, reverse=True), lax.cumsum(x[:1], 0)),
         [-0.0] * 20, dtypes=["floating", "complex"])]))
def cumsum(ctx, x, *, axis, reverse, **_):
    """Integers: TF's Cumsum (wrapping like XLA). Floats: XLA's order of additions."""
    dtype = ctx.avals_in[0].dtype
    if is_inexact(dtype):   # XLA keeps a bfloat16 length-1 sum (-0.0 + 0.0), not others
        return _inexact_scan(ctx, x, axis, reverse, tf.add, 0, plus_zero,
                             seed_single=str(dtype) == "bfloat16")
    return tf.math.cumsum(x, axis=int(axis), reverse=bool(reverse))


@rule("cumprod", dtypes="numeric", cases=_cases(lax.cumprod, [
    case("negatives", lambda x: lax.cumprod(x, 0), [2, -1, 3, -2, 1, -1],
         dtypes=["signed", "inexact"]),
    case("complex: signs of zero parts, each window from 1 + 0j (found by tests/fuzz.py)",
         lambda x: (lax.cumprod(x, 0), lax.cumprod(x, 0, reverse=True)),
         [-0.0 - 4j, 1j, -1 + 0j, -0.0 + 0j, -0.0 - 1j] * 8, dtypes="complex")]))
def cumprod(ctx, x, *, axis, reverse, **_):
    """Integers: a Hillis–Steele scan (exact, wrapping). Floats: XLA's order of products."""
    dtype = ctx.avals_in[0].dtype
    if is_complex(dtype):   # a window starts from (1 + 0j) * x: the signs of zero parts
        return _inexact_scan(ctx, x, axis, reverse, tf.multiply, 1,
                             lambda v: complex_mul(tf.ones_like(v), v))
    if is_inexact(dtype):
        return _inexact_scan(ctx, x, axis, reverse, tf.multiply, 1)
    return scan(x, ctx.shape(ctx.avals_in[0])[int(axis)], int(axis), bool(reverse), tf.multiply)


def _extreme_rule(prim_name, is_max):
    def lower(ctx, x, *, axis, reverse, **_):
        aval = ctx.avals_in[0]
        op = lambda a, b: minmax(a, b, is_max, np.dtype(aval.dtype))  # noqa: E731
        if is_complex(aval.dtype):   # a comparison with NaN picks the later operand: XLA's order
            init = ctx.constant(identity("max" if is_max else "min", aval.dtype), aval.dtype)
            return _inexact_scan(ctx, x, axis, reverse, op, init, lambda v: op(init, v))
        return scan(x, ctx.shape(aval)[int(axis)], int(axis), bool(reverse), op)

    return rule(prim_name, dtypes="numeric", cases=_cases(getattr(lax, prim_name), _NAN_CASES),
                name=prim_name,
                doc=f"{prim_name}: a Hillis–Steele scan of lax.{prim_name[3:]} (exact in any "
                    "order; NaN propagates, complex compares lexicographically)")(lower)


cummax = _extreme_rule("cummax", True)
cummin = _extreme_rule("cummin", False)


@rule("cumlogsumexp", dtypes="floating", cases=_cases(lax.cumlogsumexp, [
    case("NaN and infinities", lambda x: lax.cumlogsumexp(x, 0),
         [-_INF, 1.0, -_INF, _INF, 2.0, _NAN, 0.0]),
    case("all -inf", lambda x: lax.cumlogsumexp(x, 0, reverse=True), [-_INF, -_INF, 1.0]),
    case("-0.0 gives +0.0 (found by tests/fuzz.py)",
         lambda x: (lax.cumlogsumexp(x[:1], 0), lax.cumlogsumexp(x, 0, reverse=True)),
         [-0.0, -_INF, -_INF])]))
def cumlogsumexp(ctx, x, *, axis, reverse, **_):
    """JAX's logaddexp, scanned in XLA's order (its reduce_window of logaddexp)."""
    return _inexact_scan(ctx, x, axis, reverse, _logaddexp, -np.inf, plus_zero,
                         seed_single=True)


# -- TFLite builtins ---------------------------------------------------------------------
# The generic rules convert for float32 and int32 (Cumsum, slices, concat, Maximum/Minimum,
# Mul, while loops); uint32 is carried as its int32 bits, which TFLite's Cumsum,
# Maximum/Minimum and slicing take (wrapping sums: the same bits; max/min: on the bits with
# the sign flipped, which order like the unsigned values).
def _lite_case(fn, values):
    return case.custom("uint32 extremes", fn, lambda rng, dt: [np.array(values, dt)])


_U32 = [2 ** 32 - 1, 1, 2 ** 31, 0, 2 ** 31 - 1, 7, 2 ** 32 - 2] + list(range(3, 30))


@rule("cumsum", dtypes=["uint32"], targets="tflite", cases=lite_cases(
    _cases(lax.cumsum, [_lite_case(lambda x: lax.cumsum(x, 0, reverse=True), _U32)])))
def cumsum_tflite(ctx, x, *, axis, reverse, **_):
    """uint32 cumsum as TFLite's int32 Cumsum on the bits (wrapping: the same bits)."""
    return lite_unbits(tf.math.cumsum(lite_bits(x, np.uint32), axis=int(axis),
                                      reverse=bool(reverse)), np.uint32)


def _extreme_tflite(prim_name, is_max):
    def lower(ctx, x, *, axis, reverse, **_):
        key = unsigned_order(lite_bits(x, np.uint32))
        op = tf.maximum if is_max else tf.minimum
        y = scan(key, ctx.shape(ctx.avals_in[0])[int(axis)], int(axis), bool(reverse), op)
        return lite_unbits(unsigned_order(y), np.uint32)

    prim = getattr(lax, prim_name)
    return rule(prim_name, dtypes=["uint32"], targets="tflite",
                cases=lite_cases(_cases(prim, [_lite_case(lambda x: prim(x, 0), _U32)])),
                name=f"{prim_name}_tflite",
                doc=f"uint32 {prim_name} for TFLite: a Hillis–Steele scan on the int32 bits "
                    "with the sign bit flipped (ordered like the unsigned values)")(lower)


cummax_tflite = _extreme_tflite("cummax", True)
cummin_tflite = _extreme_tflite("cummin", False)


@rule("cumlogsumexp", dtypes=["float32"], targets="tflite",
      cases=lite_cases(_cases(lax.cumlogsumexp, [
          case("NaN and infinities", lambda x: lax.cumlogsumexp(x, 0),
               [-_INF, 1.0, -_INF, _INF, 2.0, _NAN, 0.0]),
          *[case.custom(f"-inf across chunks, reverse={r}",
                        lambda x, r=r: lax.cumlogsumexp(x, 1, reverse=r),
                        lambda rng, dt: [np.array([[-_INF] * 40, [-_INF] * 20 + [1.0] * 20], dt)])
            for r in (False, True)]])))
def cumlogsumexp_tflite(ctx, x, *, axis, reverse, **_):
    """The generic cumlogsumexp with its -inf made at run time (the TFLite converter writes
    a -inf constant as -FLT_MAX, and logaddexp(-inf, -FLT_MAX) is not -inf)."""
    return _inexact_scan(ctx, x, axis, reverse, _logaddexp, lite_scalar(-np.inf, x))


# -- ONNX ----------------------------------------------------------------------------------
_WIDE_SUM = {"int8": tf.int32, "int16": tf.int32, "uint8": tf.int32, "uint16": tf.int32,
             "uint32": tf.int64}


@rule("cumsum", dtypes=list(_WIDE_SUM), targets="onnx", cases=_cases(
    lax.cumsum, [case("uint32 extremes", lambda x: lax.cumsum(x, 0, reverse=True), _U32,
                      dtypes="uint32"),
                 case.custom("wrapping at max and min", lambda x: lax.cumsum(x, 0),
                             lambda rng, dt: [np.array([np.iinfo(dt).max] * 20
                                                       + [np.iinfo(dt).min] * 30, dt)])]))
def cumsum_onnx(ctx, x, *, axis, reverse, **_):
    """onnxruntime's CumSum takes no 8/16-bit ints nor uint32: sum in a wider signed type
    (which holds every partial sum) and Cast back, which wraps as XLA's sum does."""
    wide = _WIDE_SUM[np.dtype(ctx.avals_in[0].dtype).name]
    return tf.cast(tf.math.cumsum(tf.cast(x, wide), axis=int(axis), reverse=bool(reverse)),
                   x.dtype)
