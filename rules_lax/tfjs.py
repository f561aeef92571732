"""What TF.js computes wrong: exact forms for target ``"tfjs"``.

Measured in @tensorflow/tfjs 4.22's cpu backend (see :mod:`core.export_tfjs`): int32
``Mul``, ``Square``, ``Prod``, ``Pow``, ``MatMul``/``BatchMatMulV2`` multiply in doubles,
so a product past 2**53 loses its low bits before the result is wrapped to int32 (JAX
wraps modulo 2**32); int32 ``Abs`` goes through float32 (wrong past 2**24); float
``Sign(NaN)`` is 0.

What *is* exact there: int32 ``Add``/``Sub``/``Neg`` and a ``Mul`` whose product stays
below 2**53 in magnitude (the double is exact, its store into an Int32Array wraps it
modulo 2**32), and ``FloorDiv`` of an int32 by a power of two. So ``a * b`` is computed
as ``a * lo + (a * hi) * 65536`` with ``b = hi * 65536 + lo``, ``0 <= lo < 65536``: every
product stays below 2**47, each wraps exactly, and the wrapped sums are ``a * b`` modulo
2**32 (:func:`mul32`). integer_pow, square, reduce_prod and dot_general on int32 are
built from it; sums (``Sum`` over fewer than 2**22 terms) are exact as well.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_lax.cumulative import _cases as _scan_cases, scan
from rules_lax.dot import _MATMUL, _dg, _transpose
from rules_lax.elementwise import _int_div_args, _ipow
from rules_lax.reductions import _to_last, tree_reduce

nan, inf = float("nan"), float("inf")
_I32 = np.iinfo(np.int32)
#: int32 edges and values whose products pass 2**53
_EDGES = [_I32.min, _I32.max, -1, 0, 1, 65536, -65536, 65535, 2 ** 30 + 7, -(2 ** 29) - 3,
          123456789, -987654321]
#: a sum of fewer terms than this, each |v| <= 2**31, is exact in doubles
_MAX_TERMS = 2 ** 22


def mul32(a, b):
    """``a * b`` wrapped modulo 2**32 like XLA, from int32 products below 2**47."""
    hi = tf.math.floordiv(b, 65536)
    lo = b - hi * 65536
    return a * lo + (a * hi) * 65536


def _int32_edges(rng, dt):
    x = np.array(_EDGES, np.int32)
    return [x, np.roll(x, 3)]


def _random_int32(*shapes):
    def make(rng, dt):
        return [rng.integers(_I32.min, _I32.max, s, dtype=np.int32, endpoint=True)
                for s in shapes]
    return make


def _all_pairs(rng, dt):
    x = np.array(_EDGES, np.int32)
    return [x[:, None], x[None, :]]


@rule("mul", dtypes="int32", targets="tfjs", polymorphic=True,
      when=lambda eqn: None if eqn.params.get("out_dtype") is None else "out_dtype",
      cases=[case.custom("edges, products past 2**53", lax.mul, _int32_edges),
             case.custom("every pair of edges (broadcast)", lax.mul, _all_pairs),
             case.custom("random full range", lax.mul, _random_int32((3, 4), (3, 4))),
             case.custom("scalar operand", lax.mul, lambda rng, dt: [
                 np.array(_EDGES, np.int32), np.int32(-1640531535)])])
def mul_int32_tfjs(ctx, x, y, **_):
    """TF.js multiplies int32 in doubles: :func:`mul32`."""
    return mul32(x, y)


@rule("square", dtypes="int32", targets="tfjs", polymorphic=True,
      cases=[case("edges", lax.square, _EDGES),
             case.custom("random full range", lax.square, _random_int32((3, 4)))])
def square_int32_tfjs(ctx, x, **_):
    return mul32(x, x)


@rule("integer_pow", dtypes="int32", targets="tfjs", polymorphic=True,
      cases=[*[case(f"edges, y={y}", _ipow(y), _EDGES) for y in (0, 1, 2, 3, 5, 8, 31)],
             case.custom("random full range, y=7", _ipow(7), _random_int32((3, 4)))])
def integer_pow_int32_tfjs(ctx, x, *, y, **_):
    """Square-and-multiply with :func:`mul32` (JAX has no negative integer exponents
    on integers)."""
    if y == 0:
        return tf.ones_like(x)
    n, acc = y, None
    while n > 0:
        if n & 1:
            acc = x if acc is None else mul32(acc, x)
        n >>= 1
        if n > 0:
            x = mul32(x, x)
    return acc


def _trunc_divmod(x, y):
    """Truncated quotient and remainder from FloorDiv (TF.js has no TruncateDiv; its int32
    FloorDiv, ``Math.floor(x / y)`` in doubles, is exact: x / y is never within 2**-32 of
    an integer it is not). ``y`` must be nonzero and not -1 where x is INT_MIN."""
    q = tf.math.floordiv(x, y)
    r = x - q * y                    # |q * y| <= |x| + |y|: exact
    up = tf.math.not_equal(r, 0) & tf.math.not_equal(tf.math.less(x, 0), tf.math.less(y, 0))
    return tf.where(up, q + 1, q), tf.where(up, r - y, r)


_DIV_X = [7, -7, 7, -7, 5, -5, 0, _I32.min, _I32.min, _I32.min, _I32.max, _I32.max, _I32.min,
          _I32.max, -1, 1, 6, -6, _I32.min + 1]
_DIV_Y = [2, 2, -2, -2, 0, 0, 0, -1, 1, _I32.max, _I32.min, -1, _I32.min, _I32.max, _I32.min,
          _I32.max, 3, 3, -1]


def _random_divisors(rng, dt):
    x, y = _random_int32((4, 5), (4, 5))(rng, dt)
    y[0] = rng.integers(-9, 9, 5)
    return [x, np.where(y == 0, 7, y).astype(np.int32)]


def _div_cases(prim):
    return [case("edges: x/0, INT_MIN/-1, INT_MIN and INT_MAX", prim, _DIV_X, _DIV_Y),
            case.custom("random full range", prim, _random_divisors)]


@rule("div", dtypes="int32", targets="tfjs", polymorphic=True, cases=_div_cases(lax.div))
def div_int32_tfjs(ctx, x, y, **_):
    """XLA truncates, x/0 is -1 and INT_MIN/-1 is INT_MIN (as the generic rule)."""
    zero, safe_y = _int_div_args(x, y)
    return tf.where(zero, tf.constant(-1, tf.int32), _trunc_divmod(x, safe_y)[0])


@rule("rem", dtypes="int32", targets="tfjs", polymorphic=True, cases=_div_cases(lax.rem))
def rem_int32_tfjs(ctx, x, y, **_):
    """Sign of the dividend, x%0 = x, INT_MIN%-1 = 0 (as the generic rule)."""
    zero, safe_y = _int_div_args(x, y)
    return tf.where(zero, x, _trunc_divmod(x, safe_y)[1])


@rule("abs", dtypes="int32", targets="tfjs", polymorphic=True,
      cases=[case("edges: INT_MIN stays INT_MIN, past 2**24", lax.abs,
                  _EDGES + [2 ** 24 + 1, -(2 ** 24) - 1, -(2 ** 31 - 1)])])
def abs_int32_tfjs(ctx, x, **_):
    """TF.js's int32 Abs goes through float32; Neg is exact (and wraps INT_MIN)."""
    return tf.where(tf.math.less(x, 0), -x, x)


@rule("sign", dtypes="float32", targets="tfjs", polymorphic=True,
      cases=[case("zeros keep their sign, NaN stays", lax.sign,
                  [-0.0, 0.0, nan, -nan, -inf, inf, 2.0, -3.0, 3e38, -1e-30])])
def sign_float32_tfjs(ctx, x, **_):
    """TF.js's Sign(NaN) is 0: NaN and the zeros are kept as they are."""
    keep = tf.math.equal(x, 0) | tf.math.is_nan(x)
    return tf.where(keep, x, tf.math.sign(x))


def _prod(x, axes):
    return lax.reduce_prod(x, axes)


@rule("reduce_prod", dtypes="int32", targets="tfjs", polymorphic=True,
      cases=[case.custom("random full range, axis 1", lambda x: _prod(x, (1,)),
                         _random_int32((3, 7))),
             case.custom("random full range, axes 0 2", lambda x: _prod(x, (0, 2)),
                         _random_int32((3, 4, 5))),
             case("edges", lambda x: _prod(x, (0,)), [_EDGES[:6], _EDGES[6:]]),
             case("empty -> 1", lambda x: _prod(x, (1,)), np.zeros((2, 0), np.int32)),
             case("no axes", lambda x: _prod(x, ()), [[3, -7]]),
             case.custom("symbolic", lambda x: _prod(x, (1,)), _random_int32((3, 9)),
                         convert_kw={"polymorphic_shapes": ["(b, n)"]})])
def reduce_prod_int32_tfjs(ctx, x, *, axes, **_):
    """Pairwise halving with :func:`mul32` (the order is free: products modulo 2**32
    commute)."""
    aval_in = ctx.avals_in[0]
    axes = sorted(int(a) for a in axes)
    if not axes:
        return x
    if any(aval_in.shape[a] == 0 for a in axes):
        return tf.ones(ctx.shape(ctx.aval_out), tf.int32)
    y, n = _to_last(x, ctx.shape(aval_in), axes)
    return tree_reduce([y], n, lambda a, b, _: [mul32(a[0], b[0])])[0]


@rule("cumprod", dtypes="int32", targets="tfjs", polymorphic=True, cases=_scan_cases(
    lax.cumprod, [case.custom("random full range", lambda x: lax.cumprod(x, 1, reverse=True),
                              _random_int32((3, 11))),
                  case("edges", lambda x: lax.cumprod(x, 0), _EDGES)]))
def cumprod_int32_tfjs(ctx, x, *, axis, reverse, **_):
    """The generic Hillis–Steele scan with :func:`mul32`."""
    return scan(x, ctx.shape(ctx.avals_in[0])[int(axis)], int(axis), bool(reverse), mul32)


def _all_int32(eqn):
    dts = {np.dtype(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)}
    return None if dts == {np.dtype(np.int32)} else "only int32 operands and result"


@rule("dot_general", dtypes="int32", targets="tfjs", when=_all_int32, polymorphic=True,
      cases=[case.custom("matmul, full range", _dg(_MATMUL), _random_int32((3, 5), (5, 2))),
             case.custom("x @ y.T", _dg((((1,), (1,)), ((), ()))),
                         _random_int32((3, 4), (2, 4))),
             case.custom("two contracting dims, batch", _dg((((2, 1), (1, 2)), ((0,), (0,)))),
                         _random_int32((2, 3, 4), (2, 4, 3))),
             case.custom("batch dims in different positions",
                         _dg((((4, 3), (3, 2)), ((0, 1), (1, 0)))),
                         _random_int32((2, 3, 1, 2, 4), (3, 2, 2, 4, 2))),
             case.custom("outer", _dg((((), ()), ((), ()))), _random_int32((3,), (2, 2))),
             case("edges (vdot)", _dg((((0,), (0,)), ((), ()))), _EDGES, _EDGES[::-1]),
             case("empty contraction gives zeros", _dg(_MATMUL),
                  np.zeros((2, 0), np.int32), np.zeros((0, 2), np.int32)),
             case.custom("symbolic batch", _dg(_MATMUL), _random_int32((3, 4), (4, 2)),
                         convert_kw={"polymorphic_shapes": ["(b, 4)", None]})])
def dot_general_int32_tfjs(ctx, lhs, rhs, *, dimension_numbers, **_):
    """TF.js's int32 MatMul multiplies in doubles: the products by :func:`mul32` on
    operands laid out as [batch, lhs free, 1.., contract] x [batch, 1.., rhs free,
    contract], then one exact Sum over the contracting axes."""
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = ([int(d) for d in ds] for ds in (lc, rc, lb, rb))
    ls, rs = (ctx.avals_in[i].shape for i in (0, 1))
    k = math.prod(ls[d] for d in lc) if lc else 1
    if not isinstance(k, int) or k >= _MAX_TERMS:
        raise UnsupportedError(
            f"int32 dot_general over {k} terms for TF.js: its int32 sums are exact only "
            f"below {_MAX_TERMS} terms of a static size; use target='tf'.")
    lf = [d for d in range(len(ls)) if d not in lb and d not in lc]
    rf = [d for d in range(len(rs)) if d not in rb and d not in rc]
    a = _transpose(lhs, lb + lf + lc)
    b = _transpose(rhs, rb + rf + rc)
    nb, nc = len(lb), len(lc)
    a = _expand(a, nb + len(lf), len(rf))     # [batch, lf, 1 * len(rf), contract]
    b = _expand(b, nb, len(lf))               # [batch, 1 * len(lf), rf, contract]
    prod = mul32(a, b)
    return tf.reduce_sum(prod, list(range(-nc, 0))) if nc else prod


def _expand(x, at, count):
    for _ in range(count):
        x = tf.expand_dims(x, at)
    return x
