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
2**32 (:func:`mul32`). integer_pow, square, reduce_prod, cumprod, reduce and
reduce_window with a multiplication are built from it. dot_general and
conv_general_dilated run the generic MatMul forms three times on 16-bit halves
(:func:`split_bilinear`): products below 2**32, so their double sums are exact below
2**21 terms (more, or a symbolic number, is refused).

TF.js has no ``TruncateDiv`` (int32 div/rem are made from its exact ``FloorDiv``) and no
bool ``NotEqual``. Left as they are: subnormals, which TF.js does not flush (XLA does).
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_lax.cumulative import _cases as _scan_cases, scan
from rules_lax.dot import _MATMUL, _dg, dot_general_by_matmul
from rules_lax.elementwise import _int_div_args, _ipow, square_and_multiply
from rules_lax.reductions import _recognize_monoids, _to_last, reduce_monoid, tree_reduce
from rules_nn.conv import conv_cases, conv_general_dilated
from rules_nn.windows import MONOIDS, fold_reducer_windows, single_monoid

nan, inf = float("nan"), float("inf")
_I32 = np.iinfo(np.int32)
#: int32 edges and values whose products pass 2**53
_EDGES = [_I32.min, _I32.max, -1, 0, 1, 65536, -65536, 65535, 2 ** 30 + 7, -(2 ** 29) - 3,
          123456789, -987654321]
#: a sum of fewer terms than this, each |v| < 2**32, is exact in doubles
_MAX_TERMS = 2 ** 21


def _halves(x):
    hi = tf.math.floordiv(x, 65536)
    return x - hi * 65536, hi


def mul32(a, b):
    """``a * b`` wrapped modulo 2**32 like XLA, from int32 products below 2**47."""
    lo, hi = _halves(b)
    return a * lo + (a * hi) * 65536


def split_bilinear(f, a, b):
    """``f(a, b)`` modulo 2**32 for a bilinear ``f`` (a dot, a convolution) that TF.js sums
    in doubles: ``f(lo_a, lo_b) + (f(hi_a, lo_b) + f(lo_a, hi_b)) * 65536``. Each product
    is below 2**32 in magnitude, so each sum is exact for fewer than 2**21 terms; the
    ``hi * hi`` part is 0 modulo 2**32. Written with subtractions: the converter's
    grappler turns ``Add(MatMul, MatMul)`` into a BiasAdd and then fails on its rank."""
    (lo_a, hi_a), (lo_b, hi_b) = _halves(a), _halves(b)
    cross = f(hi_a, lo_b) - f(-lo_a, hi_b)
    return f(lo_a, lo_b) - cross * -65536


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


@rule("mul", dtypes="int32", targets="tfjs",
      when=lambda eqn: None if eqn.params.get("out_dtype") is None else "out_dtype",
      cases=[case.custom("edges, products past 2**53", lax.mul, _int32_edges),
             case.custom("every pair of edges (broadcast)", lax.mul, _all_pairs),
             case.custom("random full range", lax.mul, _random_int32((3, 4), (3, 4))),
             case.custom("scalar operand", lax.mul, lambda rng, dt: [
                 np.array(_EDGES, np.int32), np.int32(-1640531535)])])
def mul_int32_tfjs(ctx, x, y, **_):
    """TF.js multiplies int32 in doubles: :func:`mul32`."""
    return mul32(x, y)


@rule("square", dtypes="int32", targets="tfjs",
      cases=[case("edges", lax.square, _EDGES),
             case.custom("random full range", lax.square, _random_int32((3, 4)))])
def square_int32_tfjs(ctx, x, **_):
    return mul32(x, x)


@rule("integer_pow", dtypes="int32", targets="tfjs",
      cases=[*[case(f"edges, y={y}", _ipow(y), _EDGES) for y in (0, 1, 2, 3, 5, 8, 31)],
             case.custom("random full range, y=7", _ipow(7), _random_int32((3, 4)))])
def integer_pow_int32_tfjs(ctx, x, *, y, **_):
    """Square-and-multiply with :func:`mul32` (JAX has no negative integer exponents
    on integers)."""
    return tf.ones_like(x) if y == 0 else square_and_multiply(mul32, x, y)


def _trunc_divmod(x, y):
    """Truncated quotient and remainder from FloorDiv (TF.js has no TruncateDiv; its int32
    FloorDiv, ``Math.floor(x / y)`` in doubles, is exact: x / y is never within 2**-32 of
    an integer it is not). ``y`` must be nonzero and not -1 where x is INT_MIN."""
    q = tf.math.floordiv(x, y)
    r = x - q * y                    # |q * y| <= |x| + |y|: exact
    up = tf.math.not_equal(r, 0) & tf.math.logical_xor(tf.math.less(x, 0), tf.math.less(y, 0))
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


@rule("div", dtypes="int32", targets="tfjs", cases=_div_cases(lax.div))
def div_int32_tfjs(ctx, x, y, **_):
    """XLA truncates, x/0 is -1 and INT_MIN/-1 is INT_MIN (as the generic rule)."""
    zero, safe_y = _int_div_args(x, y)
    return tf.where(zero, tf.constant(-1, tf.int32), _trunc_divmod(x, safe_y)[0])


@rule("rem", dtypes="int32", targets="tfjs", cases=_div_cases(lax.rem))
def rem_int32_tfjs(ctx, x, y, **_):
    """Sign of the dividend, x%0 = x, INT_MIN%-1 = 0 (as the generic rule)."""
    zero, safe_y = _int_div_args(x, y)
    return tf.where(zero, x, _trunc_divmod(x, safe_y)[1])


@rule("abs", dtypes="int32", targets="tfjs",
      cases=[case("edges: INT_MIN stays INT_MIN, past 2**24", lax.abs,
                  _EDGES + [2 ** 24 + 1, -(2 ** 24) - 1, -(2 ** 31 - 1)])])
def abs_int32_tfjs(ctx, x, **_):
    """TF.js's int32 Abs goes through float32; Neg is exact (and wraps INT_MIN)."""
    return tf.where(tf.math.less(x, 0), -x, x)


@rule("sign", dtypes="float32", targets="tfjs",
      cases=[case("zeros keep their sign, NaN stays", lax.sign,
                  [-0.0, 0.0, nan, -nan, -inf, inf, 2.0, -3.0, 3e38, -1e-30])])
def sign_float32_tfjs(ctx, x, **_):
    """TF.js's Sign(NaN) is 0: NaN and the zeros are kept as they are."""
    keep = tf.math.equal(x, 0) | tf.math.is_nan(x)
    return tf.where(keep, x, tf.math.sign(x))


def _prod(x, axes):
    return lax.reduce_prod(x, axes)


@rule("reduce_prod", dtypes="int32", targets="tfjs",
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
    return _prod32(ctx, x, ctx.avals_in[0], ctx.aval_out, axes)


def _prod32(ctx, x, aval_in, aval_out, axes):
    axes = sorted(int(a) for a in axes)
    if not axes:
        return x
    if any(aval_in.shape[a] == 0 for a in axes):
        return tf.ones(ctx.shape(aval_out), tf.int32)
    y, n = _to_last(x, ctx.shape(aval_in), axes)
    return tree_reduce([y], n, lambda a, b, _: [mul32(a[0], b[0])])[0]


def _int32_mul_reduce(eqn):
    kinds = _recognize_monoids(eqn.params["jaxpr"]) or []
    k = len(eqn.invars) // 2
    if any(kd == "mul" and np.dtype(v.aval.dtype) == np.int32
           for kd, v in zip(kinds, eqn.invars[:k])):
        return None
    return "only reductions with an int32 multiplication"


@rule("reduce", dtypes=["int32", "float32", "bool"], targets="tfjs",
      when=_int32_mul_reduce,
      cases=[case.custom("mul from an init value, full range",
                         lambda x: lax.reduce(x, np.int32(-1640531535), lax.mul, (1,)),
                         _random_int32((3, 9)), dtypes="int32"),
             case.custom("mul and add together", lambda x: lax.reduce(
                 (x, x), (np.int32(3), np.int32(5)),
                 lambda a, b: (lax.mul(a[0], b[0]), lax.add(a[1], b[1])), (0,)),
                 _random_int32((7, 2)), dtypes="int32"),
             case("empty axis gives the init value", lambda x: lax.reduce(
                 x, np.int32(_I32.min), lax.mul, (0,)), np.zeros((0, 3), np.int32),
                 dtypes="int32")])
def reduce_int32_mul_tfjs(ctx, *args, jaxpr, dimensions, **_):
    """A reduce whose computation is a known monoid: int32 products by :func:`_prod32`
    times the init value, the other operands as the generic rule does."""
    k = len(args) // 2
    kinds = _recognize_monoids(jaxpr)
    out = []
    for x, init, aval, aout, kind in zip(args[:k], args[k:], ctx.avals_in, ctx.avals_out, kinds):
        if kind == "mul" and np.dtype(aval.dtype) == np.int32:
            out.append(mul32(init, _prod32(ctx, x, aval, aout, dimensions)))
        else:
            out.append(reduce_monoid(ctx, x, aval, aout, [int(a) for a in dimensions], kind,
                                     init))
    return out


def _int32_mul_window(eqn):
    inner = getattr(eqn.params["jaxpr"], "jaxpr", eqn.params["jaxpr"])
    if (np.dtype(eqn.invars[0].aval.dtype) == np.int32
            and single_monoid(inner, len(eqn.invars) // 2) is MONOIDS["mul"]):
        return None
    return "only an int32 reduce_window of one multiplication"


def _window_mul(*params):
    return lambda x: lax.reduce_window(x, np.int32(-1640531535), lax.mul, *params)


@rule("reduce_window", dtypes="int32", targets="tfjs", when=_int32_mul_window,
      cases=[case.custom("full range, padding, base dilation",
                         _window_mul((2, 2), (1, 1), ((1, 0), (0, 1)), (2, 1), (1, 1)),
                         _random_int32((3, 4))),
             case.custom("full range, strides, window dilation",
                         _window_mul((2, 3), (2, 1), "VALID", (1, 1), (1, 2)),
                         _random_int32((5, 7))),
             case.custom("symbolic sizes",
                         _window_mul((2, 2), (1, 1), ((1, 0), (0, 1)), (2, 1), (1, 1)),
                         _random_int32((3, 4)), convert_kw={"polymorphic_shapes": ["(b, w)"]})])
def reduce_window_int32_mul_tfjs(ctx, x, init, *, window_dimensions, window_strides, padding,
                                 base_dilation, window_dilation, **_):
    """The generic fold of the window slices, its products by :func:`mul32`."""
    return fold_reducer_windows(ctx, [x], [init], lambda acc, el: [mul32(acc[0], el[0])],
                                window_dimensions=window_dimensions,
                                window_strides=window_strides, padding=padding,
                                base_dilation=base_dilation, window_dilation=window_dilation)


@rule("cumprod", dtypes="int32", targets="tfjs", cases=_scan_cases(
    lax.cumprod, [case.custom("random full range", lambda x: lax.cumprod(x, 1, reverse=True),
                              _random_int32((3, 11))),
                  case("edges", lambda x: lax.cumprod(x, 0), _EDGES)]))
def cumprod_int32_tfjs(ctx, x, *, axis, reverse, **_):
    """The generic Hillis–Steele scan with :func:`mul32`."""
    return scan(x, ctx.shape(ctx.avals_in[0])[int(axis)], int(axis), bool(reverse), mul32)


def _all_int32(eqn):
    dts = {np.dtype(v.aval.dtype) for v in (*eqn.invars, *eqn.outvars)}
    return None if dts == {np.dtype(np.int32)} else "only int32 operands and result"


@rule("dot_general", dtypes="int32", targets="tfjs", when=_all_int32,
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
def dot_general_int32_tfjs(ctx, lhs, rhs, *, dimension_numbers, **kw):
    """The generic MatMul form on 16-bit halves (:func:`split_bilinear`)."""
    (lc, _), _ = dimension_numbers
    shape = ctx.avals_in[0].shape
    _check_terms("dot_general", math.prod(shape[int(d)] for d in lc))
    return split_bilinear(
        lambda a, b: dot_general_by_matmul(ctx, a, b, dimension_numbers=dimension_numbers,
                                           **kw), lhs, rhs)


def _check_terms(what, k):
    if not isinstance(k, int) or k >= _MAX_TERMS:
        raise UnsupportedError(
            f"int32 {what} summing {k} products per result for TF.js: its int32 sums are "
            f"exact only for fewer than {_MAX_TERMS} terms, of a static number; use "
            f"target='tf'.")


def _full_range(cases):
    """The generic cases with int32 operands over the whole range."""
    return [case.custom(c.name, c.fn, (lambda c: lambda rng, dt: [
        rng.integers(_I32.min, _I32.max, np.shape(a), dtype=np.int32, endpoint=True)
        for a in c.make_args(rng, dt)])(c), dtypes="int32", convert_kw=c.convert_kw)
        for c in cases if c.applies_to("int32") and "symbolic input features" not in c.name]


# (a symbolic number of input features is refused: the sums' length must be known)
@rule("conv_general_dilated", dtypes="int32", targets="tfjs", when=_all_int32,
      cases=_full_range(conv_cases()))
def conv_int32_tfjs(ctx, lhs, rhs, *, dimension_numbers, feature_group_count=1, **kw):
    """The generic convolution (a BatchMatMulV2 over window slices for integers) on
    16-bit halves (:func:`split_bilinear`)."""
    rhs_spec = [int(d) for d in dimension_numbers[1]]
    shape = ctx.avals_in[1].shape
    _check_terms("conv_general_dilated", math.prod(shape[d] for d in rhs_spec[1:]))
    return split_bilinear(
        lambda a, b: conv_general_dilated(ctx, a, b, dimension_numbers=dimension_numbers,
                                          feature_group_count=feature_group_count, **kw),
        lhs, rhs)


# -- uint32, held as int32 bits (core.targets: Target.carried) ------------------------------
# TF.js has no uint32 and no bitwise ops (BitwiseAnd converts but fails when run), so
# uint32 values (PRNG key data, random bits) travel as int32 tensors holding the same bits.
# Adds, subtracts, equalities and data movement are the same on the bits (the generic rules
# run, see core.targets.BIT_AGNOSTIC); everything that reads a value as a number is here,
# in the arithmetic TF.js does exactly: int32 Add/Sub wrap, FloorDiv/FloorMod by powers of
# two are exact, products stay below 2**53 (mul32). Where no arithmetic form exists (and,
# or, xor) the bits are taken byte by byte and looked up in a table.

_MIN32 = np.int32(_I32.min)


def bits_of(v) -> np.int32:
    """A uint32 value (or 2**k, k <= 32) as the int32 with its bits (2**32 -> 0)."""
    return np.int32(np.uint32(v % 2 ** 32).view(np.int32))


#: 2**k as int32 bits, for k = 0..32 (2**31 is INT_MIN, 2**32 is 0)
_POW2 = np.array([bits_of(2 ** k) for k in range(33)], np.int32)


def u32_shift_right(x, s):
    """Logical right shift of int32 bits by ``s`` (a tensor or int; >= 32 or negative, as
    an unsigned amount, gives 0): ``floor(x / 2**s)`` in two exact FloorDivs by at most
    2**16, plus ``2**(32 - s)`` where x is negative (its unsigned value is x + 2**32)."""
    if isinstance(s, int):
        if not 0 <= s < 32:
            return tf.zeros_like(x)
        if s == 0:
            return x
        q = tf.math.floordiv(tf.math.floordiv(x, 2 ** (s // 2)), 2 ** (s - s // 2))
        return q + tf.where(x < 0, tf.constant(_POW2[32 - s]), tf.constant(0))
    ok = (s >= 0) & (s < 32)
    sc = tf.where(ok, s, tf.zeros_like(s))
    half = tf.math.floordiv(sc, 2)
    q = tf.math.floordiv(tf.math.floordiv(x, tf.gather(_POW2, half)), tf.gather(_POW2, sc - half))
    q = q + tf.where(x < 0, tf.gather(_POW2, 32 - sc), tf.zeros_like(x))
    return tf.where(ok, q, tf.zeros_like(x))


def u32_shift_left(x, s):
    """``x << s`` on int32 bits (0 for amounts outside [0, 32)): a wrapping product by
    2**s (:func:`mul32`)."""
    if isinstance(s, int):
        return mul32(x, tf.constant(_POW2[s])) if 0 <= s < 32 else tf.zeros_like(x)
    ok = (s >= 0) & (s < 32)
    p = tf.gather(_POW2, tf.where(ok, s, tf.zeros_like(s)))
    return tf.where(ok, mul32(x, p), tf.zeros_like(x))


def u32_rotl(x, r: int):
    """Rotate left by a constant: the two parts share no bit, so ``+`` is ``|``."""
    return u32_shift_left(x, r) + u32_shift_right(x, 32 - r)


_BYTE = np.arange(256)
#: a & b, a | b and a ^ b of every pair of bytes, at a * 256 + b
_BYTE_TABLES = {op: f(_BYTE[:, None], _BYTE[None, :]).astype(np.int32).ravel()
                for op, f in (("and", np.bitwise_and), ("or", np.bitwise_or),
                              ("xor", np.bitwise_xor))}
_BYTE_PLACES = np.array([1, 2 ** 8, 2 ** 16, 2 ** 24], np.int32)


def _bytes(x):
    """The four bytes of int32 bits along a new last axis, 0..255 (floor division and
    modulo by powers of two: exact, also for negative x)."""
    return tf.math.floormod(tf.math.floordiv(tf.expand_dims(x, -1), _BYTE_PLACES), 256)


def u32_bitwise(op: str, a, b):
    """``a & b``, ``a | b`` or ``a ^ b`` of int32 bits of one shape, byte by byte: one
    lookup per pair of bytes in the op's 256x256 table, the bytes put back in place by
    products below 2**32 (which wrap as TF.js stores int32) and a sum: 4 lookups where
    taking the 31 bits one by one cost 31 planes of arithmetic (threefry does 20 xors per
    hash; a sampler's TF.js graph lost 16% of its nodes)."""
    table = tf.constant(_BYTE_TABLES[op])
    picked = tf.gather(table, _bytes(a) * 256 + _bytes(b))
    return tf.reduce_sum(picked * _BYTE_PLACES, axis=-1)


def u32_xor(a, b):
    return u32_bitwise("xor", a, b)


def u32_flip(x):
    """x with its top bit flipped: signed order of the result is unsigned order of x."""
    return x + tf.constant(_MIN32)


def u32_to_float32(x):
    """The unsigned value as float32, rounded once: 65536 * high half + low half."""
    hi = u32_shift_right(x, 16)
    lo = tf.math.floormod(x, 65536)
    return tf.cast(hi, tf.float32) * 65536.0 + tf.cast(lo, tf.float32)


def u32_rem(x, y):
    """Unsigned x % y of int32 bits (x % 0 = x, as XLA). For y >= 2**31 (negative bits):
    x - y where x >= y unsigned, else x. Otherwise FloorMod of the signed value, plus
    2**32 % y where x is negative, each sum of two values below y reduced without
    overflow."""
    zero = tf.equal(y, 0)
    big = y < 0
    ys = tf.where(zero | big, tf.ones_like(y), y)

    def add_mod(a, b):            # (a + b) % ys for 0 <= a, b < ys
        return tf.where(a >= ys - b, a - (ys - b), a + b)
    t = tf.math.floormod(-tf.math.floormod(tf.fill(tf.shape(ys), _MIN32), ys), ys)  # 2**31 % y
    wrap = add_mod(t, t)                                                           # 2**32 % y
    small = tf.math.floormod(x, ys)
    small = tf.where(x < 0, add_mod(small, wrap), small)
    large = tf.where(u32_flip(x) >= u32_flip(y), x - y, x)
    return tf.where(zero, x, tf.where(big, large, small))


_U32_EDGES = np.array([0, 1, 2, 3, 7, 9, 16, 31, 32, 33, 65535, 65536, 2 ** 31 - 1, 2 ** 31,
                       2 ** 31 + 1, 2 ** 32 - 1, 2 ** 32 - 2, 0x9E3779B9, 0x3F800000,
                       123456789], np.uint32)


def _u32_pairs(rng, dt):
    x = _U32_EDGES
    return [x[:, None], x[None, :]]


def _u32_random(*shapes):
    def make(rng, dt):
        return [rng.integers(0, 2 ** 32, s, dtype=np.uint64).astype(np.uint32) for s in shapes]
    return make


def _u32_cases(prim, nargs=2):
    pairs = _u32_pairs if nargs == 2 else lambda rng, dt: [_U32_EDGES]
    return [case.custom("every pair of edges" if nargs == 2 else "edges", prim, pairs,
                        dtypes="uint32"),
            case.custom("random full range", prim, _u32_random(*[(3, 4)] * nargs),
                        dtypes="uint32")]


def _shift_args(rng, dt):
    x = _U32_EDGES[:, None]
    s = np.array([0, 1, 9, 16, 23, 31, 32, 33, 2 ** 31, 2 ** 32 - 1], np.uint32)[None, :]
    return [x.astype(dt), s.astype(dt) if dt == np.uint32 else s.view(np.int32).astype(dt)]


def _shift_cases(prim):
    return [case.custom(f"{prim.__name__}: edges by amounts in and out of range", prim,
                        _shift_args),
            case.custom(f"{prim.__name__}: by a constant 9",
                        lambda x: prim(x, np.array(9, x.dtype)),
                        lambda rng, dt: [_U32_EDGES.astype(dt)])]


@rule("shift_right_logical", dtypes=["int32", "uint32"], targets="tfjs",
      cases=_shift_cases(lax.shift_right_logical))
@rule("shift_left", dtypes=["int32", "uint32"], targets="tfjs",
      cases=_shift_cases(lax.shift_left))
def shift_tfjs(ctx, x, s, **_):
    """A constant amount takes the short form; a tensor one looks its powers of two up."""
    shift = u32_shift_left if ctx.eqn.primitive.name == "shift_left" else u32_shift_right
    shape = ctx.shape(ctx.aval_out)
    k = tf.get_static_value(s)
    return shift(tf.broadcast_to(x, shape), int(k) if k is not None and np.ndim(k) == 0
                 else tf.broadcast_to(s, shape))


def _bitwise_case_args(rng, dt):
    x, y = _u32_pairs(rng, dt)
    return [x.astype(dt), y.astype(dt)] if dt == np.uint32 else [x.view(np.int32), y.view(np.int32)]


@rule("and", dtypes=["int32", "uint32"], targets="tfjs",
      cases=[case.custom("every pair of edges", lax.bitwise_and, _bitwise_case_args)])
@rule("or", dtypes=["int32", "uint32"], targets="tfjs",
      cases=[case.custom("every pair of edges", lax.bitwise_or, _bitwise_case_args)])
@rule("xor", dtypes=["int32", "uint32"], targets="tfjs",
      cases=[case.custom("every pair of edges", lax.bitwise_xor, _bitwise_case_args)])
def bitwise_tfjs(ctx, x, y, **_):
    """Byte by byte through a table (TF.js has no bitwise ops, :func:`u32_bitwise`);
    ``x | c`` for a constant c takes all 4 bytes too: it is the PRNG's float-making step,
    once per sample."""
    shape = ctx.shape(ctx.aval_out)
    return u32_bitwise(ctx.eqn.primitive.name, tf.broadcast_to(x, shape),
                       tf.broadcast_to(y, shape))


@rule("not", dtypes=["int32", "uint32"], targets="tfjs",
      cases=[case.custom("edges", lax.bitwise_not, lambda rng, dt: [_U32_EDGES.astype(dt)
                                                                    if dt == np.uint32 else
                                                                    _U32_EDGES.view(np.int32)])])
def bitwise_not_tfjs(ctx, x, **_):
    return tf.constant(np.int32(-1)) - x


@rule("mul", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.mul))
def mul_uint32_tfjs(ctx, x, y, **_):
    """The low 32 bits of the product do not depend on signedness: :func:`mul32`."""
    return mul32(x, y)


@rule("rem", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.rem))
def rem_uint32_tfjs(ctx, x, y, **_):
    return u32_rem(x, y)


@rule("lt", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.lt))
@rule("le", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.le))
@rule("gt", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.gt))
@rule("ge", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.ge))
def compare_uint32_tfjs(ctx, x, y, **_):
    op = {"lt": tf.less, "le": tf.less_equal, "gt": tf.greater,
          "ge": tf.greater_equal}[ctx.eqn.primitive.name]
    return op(u32_flip(x), u32_flip(y))


@rule("max", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.max))
@rule("min", dtypes="uint32", targets="tfjs", cases=_u32_cases(lax.min))
def max_min_uint32_tfjs(ctx, x, y, **_):
    shape = ctx.shape(ctx.aval_out)
    x, y = tf.broadcast_to(x, shape), tf.broadcast_to(y, shape)
    pick_x = tf.greater(u32_flip(x), u32_flip(y))
    if ctx.eqn.primitive.name == "min":
        pick_x = tf.logical_not(pick_x)
    return tf.where(pick_x, x, y)


def _u32_convert(eqn):
    src, dst = (np.dtype(v.aval.dtype).name for v in (eqn.invars[0], eqn.outvars[0]))
    if "uint32" not in (src, dst):
        return "no uint32 operand or result"
    other = dst if src == "uint32" else src
    if other not in ("uint32", "int32", "bool") and not (src == "uint32" and other == "float32"):
        return f"{src} -> {dst} (TF.js holds uint32 as int32 bits: to/from int32, bool, " \
               f"and to float32 only)"
    return None


def _convert_args(rng, dt):
    return [_U32_EDGES if dt == np.uint32 else _U32_EDGES.view(np.int32)]


@rule("convert_element_type", dtypes=["uint32", "int32", "bool", "float32"], targets="tfjs",
      when=_u32_convert, cases=[
          case.custom(f"{a} -> {b}", lambda x, b=b: lax.convert_element_type(x, b),
                      lambda rng, dt, a=a: [_U32_EDGES.astype(a) if a != "int32" else
                                            _U32_EDGES.view(np.int32)], dtypes=a)
          for a, b in [("uint32", "int32"), ("int32", "uint32"), ("uint32", "float32"),
                       ("uint32", "bool"), ("bool", "uint32")]])
def convert_uint32_tfjs(ctx, x, *, new_dtype, **_):
    """Same bits for int32 <-> uint32; the unsigned value for float32 (:func:`u32_to_float32`)
    and bool."""
    src = np.dtype(ctx.avals_in[0].dtype).name
    dst = np.dtype(new_dtype).name
    if dst == "float32":
        return u32_to_float32(x)
    if dst == "bool":
        return tf.not_equal(x, 0)
    if src == "bool":
        return tf.cast(x, tf.int32)
    return x
