"""Comparisons (eq ... ge and the total-order eq_to/lt_to/le_to), logic and bitwise ops
(and, or, not, xor), select_n, shifts, population_count and clz.

XLA semantics that plain TF does not share, and how they are kept here:
- shifts by an amount outside [0, bit width) give 0 (sign fill for the arithmetic right
  shift); TF leaves that implementation-defined, so the amount is clamped and patched;
- ``shift_right_logical`` / ``shift_right_arithmetic`` ignore signedness; TF's RightShift
  picks the kind from the dtype, so the operand is bit-cast to the right signedness;
- total-order comparisons order -NaN < -inf < ... < -0 < +0 < ... < inf < +NaN, done by
  comparing the float's bits mapped to a monotone signed integer key.
Narrow operands (bool, 8/16-bit ints, bf16/f16) are compared in int32/f32: exact, and it
keeps the graph exportable (TFLite rejects narrow compares).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax import lax
from jax._src import core as _jcore
from jax._src.lax import lax as _lax_internal

from core.rule import case, rule

_NAN = float("nan")
_INF = float("inf")


# -- helpers ---------------------------------------------------------------------------------
def _np(aval):
    return np.dtype(aval.dtype)


def _widen_for_compare(x, dtype: np.dtype):
    """Cast operands whose compare TFLite rejects to a type that holds them exactly."""
    if dtype == np.bool_ or (dtype.kind in "iu" and dtype.itemsize <= 2):
        return tf.cast(x, tf.int32)
    if dtype.name in ("bfloat16", "float16"):
        return tf.cast(x, tf.float32)
    return x


def _uint(bits: int) -> tf.DType:
    return {8: tf.uint8, 16: tf.uint16, 32: tf.uint32, 64: tf.uint64}[bits]


def _sint(bits: int) -> tf.DType:
    return {8: tf.int8, 16: tf.int16, 32: tf.int32, 64: tf.int64}[bits]


def _bits(dtype: np.dtype) -> int:
    return np.dtype(dtype).itemsize * 8


# -- comparisons -----------------------------------------------------------------------------
_CMP = {"eq": tf.math.equal, "ne": tf.math.not_equal, "lt": tf.math.less,
        "le": tf.math.less_equal, "gt": tf.math.greater, "ge": tf.math.greater_equal}


def _cmp_cases(prim):
    f = getattr(lax, prim)
    return [case.random(f, shapes=[(3, 4), (3, 4)]),
            case.random(f, shapes=[(3, 4), ()], name="scalar rhs"),
            case.custom("bool", f, lambda rng, dt: [np.array([True, True, False, False]),
                                                    np.array([True, False, True, False])],
                        dtypes="bool"),
            case(f"{prim}: NaN, inf and signed zeros", f,
                 [_NAN, 1.0, _NAN, -0.0, _INF, -_INF, 2.0],
                 [_NAN, _NAN, 1.0, 0.0, _INF, _INF, -3.0], dtypes="floating"),
            case.custom(f"{prim}: extremes of the dtype", f, lambda rng, dt: [
                np.array([np.iinfo(dt).min, np.iinfo(dt).max, 0, 1], dt),
                np.array([np.iinfo(dt).max, np.iinfo(dt).min, 0, np.iinfo(dt).max], dt)],
                dtypes="integer")]


def _complex_cases(prim):
    f = getattr(lax, prim)
    return [case.random(f, shapes=[(5,), (5,)], name="complex", dtypes="complex"),
            case(f"{prim}: complex with NaN parts", f, [complex(1, _NAN), 1j, 2 + 1j],
                 [complex(1, _NAN), 1j, 2 - 1j], dtypes="complex")]


@rule("eq", dtypes=["numeric", "bool"], cases=_cmp_cases("eq") + _complex_cases("eq"), polymorphic=True)
@rule("ne", dtypes=["numeric", "bool"], cases=_cmp_cases("ne") + _complex_cases("ne"), polymorphic=True)
@rule("lt", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("lt"), polymorphic=True)
@rule("le", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("le"), polymorphic=True)
@rule("gt", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("gt"), polymorphic=True)
@rule("ge", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("ge"), polymorphic=True)
def compare(ctx, x, y, **_):
    """Elementwise comparison: IEEE semantics for floats (NaN unordered) in JAX and TF."""
    dtype = _np(ctx.avals_in[0])
    # XLA CPU compares f32 (and bf16, via f32) with denormals-are-zero, as TF does; the
    # widening to f32 keeps that (measured on all bf16 bit patterns).
    return _CMP[ctx.eqn.primitive.name](_widen_for_compare(x, dtype),
                                        _widen_for_compare(y, dtype))


def _total_order_key(x, dtype: np.dtype):
    """A signed integer that orders floats as XLA's TOTALORDER comparison does: negative
    floats have their magnitude bits flipped so that larger magnitudes sort lower."""
    if dtype.kind in "iub":
        return _widen_for_compare(x, dtype)
    bits = _bits(dtype)
    k = tf.bitcast(x, _sint(bits))
    if bits == 16:
        k = tf.cast(k, tf.int32)  # exact; the flip below uses the 16-bit mask
    flip = tf.constant((1 << (bits - 1)) - 1, k.dtype)
    return tf.where(k < 0, tf.bitwise.bitwise_xor(k, flip), k)


_TO = {"eq_to": tf.math.equal, "lt_to": tf.math.less, "le_to": tf.math.less_equal}


def _to_cases(prim):
    p = getattr(_lax_internal, prim + "_p")
    f = lambda x, y: p.bind(x, y)  # noqa: E731
    return [case.random(f, shapes=[(3, 4), (3, 4)]),
            case(f"{prim}: NaN, -NaN, inf and signed zeros", f,
                 [_NAN, -_NAN, -0.0, 0.0, -_INF, _NAN, 1.0, -1.0, -_NAN, 0.0],
                 [_NAN, _NAN, 0.0, -0.0, -_NAN, _INF, 1.0, -2.0, -_INF, 0.0],
                 dtypes="floating")]


@rule("eq_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("eq_to"), polymorphic=True)
@rule("lt_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("lt_to"), polymorphic=True)
@rule("le_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("le_to"), polymorphic=True)
def compare_total_order(ctx, x, y, **_):
    """Total-order comparison (used by sort): compare monotone integer keys of the bits."""
    dtype = _np(ctx.avals_in[0])
    return _TO[ctx.eqn.primitive.name](_total_order_key(x, dtype), _total_order_key(y, dtype))


# -- logic and bitwise -----------------------------------------------------------------------
def _bitwise_cases(f, nargs):
    def extremes(rng, dt):
        info = np.iinfo(dt)
        x = np.array([info.min, info.max, 0, 5, info.max // 3], dt)
        y = np.array([info.max, info.max, 3, info.min, info.min + 1], dt)
        return [x, y][:nargs]
    return [case.random(f, shapes=[(3, 4)] * nargs),
            case.custom("extremes of the dtype", f, extremes, dtypes="integer")]


_LOGICAL = {"and": tf.math.logical_and, "or": tf.math.logical_or,
            "xor": tf.math.logical_xor}
_BITWISE = {"and": tf.bitwise.bitwise_and, "or": tf.bitwise.bitwise_or,
            "xor": tf.bitwise.bitwise_xor}


@rule("and", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_and, 2), polymorphic=True)
@rule("or", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_or, 2), polymorphic=True)
@rule("xor", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_xor, 2), polymorphic=True)
def bitwise_binary(ctx, x, y, **_):
    """Logical ops on bool (TF's bitwise ops have no bool kernel), bitwise ops on ints."""
    name = ctx.eqn.primitive.name
    if _np(ctx.avals_in[0]) == np.bool_:
        return _LOGICAL[name](x, y)
    return _BITWISE[name](x, y)


@rule("not", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_not, 1), polymorphic=True)
def bitwise_not(ctx, x, **_):
    """Logical not on bool, bitwise complement on ints."""
    if _np(ctx.avals_in[0]) == np.bool_:
        return tf.math.logical_not(x)
    return tf.bitwise.invert(x)


# -- select_n --------------------------------------------------------------------------------
def _select_cases():
    def which_of(n):
        return lambda rng, dt: [rng.integers(-1, n + 1, (3, 4)).astype(np.int32),
                                *[np.full((3, 4), k, dt) for k in range(n)]]
    return [
        case.custom("bool predicate", lax.select_n,
                    lambda rng, dt: [rng.random((3, 4)) < 0.5, np.zeros((3, 4), dt),
                                     np.ones((3, 4), dt)]),
        case.custom("scalar bool predicate", lax.select_n,
                    lambda rng, dt: [np.array(True), np.zeros((2, 3), dt),
                                     np.ones((2, 3), dt)]),
        case.custom("int32 predicate, 5 cases, -1 and 5 out of range", lax.select_n,
                    which_of(5), dtypes="numeric"),
        case.custom("uint8 predicate, 3 cases", lax.select_n,
                    lambda rng, dt: [rng.integers(0, 3, (6,)).astype(np.uint8),
                                     *[np.full((6,), k, dt) for k in range(3)]],
                    dtypes="numeric"),
        case.custom("one case", lambda p, a: lax.select_n(p, a),
                    lambda rng, dt: [np.zeros((4,), np.int32), np.ones((4,), dt)]),
        case.custom("key data", _select_keys,
                    lambda rng, dt: [np.array([True, False, True]),
                                     np.arange(6, dtype=np.uint32).reshape(3, 2),
                                     np.arange(6, 12, dtype=np.uint32).reshape(3, 2)],
                    dtypes="uint32"),
    ]


def _select_keys(p, k1, k2):
    import jax
    keys = lax.select_n(p, jax.random.wrap_key_data(k1), jax.random.wrap_key_data(k2))
    return jax.random.key_data(keys)


@rule("select_n", dtypes=["all", "key"], cases=_select_cases(), polymorphic=True)
def select_n(ctx, which, *cases, **_):
    """``cases[which]``: a bool predicate picks between two; an integer one is resolved by
    the same binary tree of ``which < mid`` selects that JAX emits, so out-of-range values
    pick the first or last case exactly as XLA does."""
    if len(cases) == 1:
        return tf.identity(cases[0])
    w_aval = ctx.avals_in[0]
    # Key arrays carry trailing key-data dims that the predicate must broadcast over.
    phys_ndim = len(_jcore.physical_aval(ctx.aval_out).shape)
    if w_aval.ndim and phys_ndim > w_aval.ndim:
        which = tf.reshape(which, ctx.shape(w_aval) + [1] * (phys_ndim - w_aval.ndim))
    if np.dtype(w_aval.dtype) == np.bool_:
        return tf.where(which, cases[1], cases[0])
    w_dtype = np.dtype(w_aval.dtype)
    which = _widen_for_compare(which, w_dtype)

    def pick(offset, cs):
        if len(cs) == 1:
            return cs[0]
        mid = len(cs) // 2
        below = tf.math.less(which, tf.constant(offset + mid, which.dtype))
        return tf.where(below, pick(offset, cs[:mid]), pick(offset + mid, cs[mid:]))
    return pick(0, list(cases))


# -- shifts ----------------------------------------------------------------------------------
def _shift_cases(f):
    def args(rng, dt):
        bits = _bits(dt)
        info = np.iinfo(dt)
        x = np.array([info.min, info.max, 1, 5, info.max // 3, 0, info.min + 1, 7, 3, 9], dt)
        if info.min < 0:
            x[5] = -3
            s = np.array([0, 1, bits - 1, bits, bits + 1, -1, 2, -bits, bits * 4 - 1, 3], dt)
        else:
            s = np.array([0, 1, bits - 1, bits, bits + 1, info.max, 2, info.max - 1,
                          bits * 4 - 1, 3], dt)
        return [x, s]
    return [case.custom("amounts out of range and extremes", f, args),
            case.random(f, shapes=[(3, 4), (3, 4)])]


def _shift_amount_ok(ctx, s):
    """(in_range, clamped_amount): XLA takes the amount as unsigned, so negative amounts are
    out of range too."""
    dtype = _np(ctx.avals_in[1])
    bits = _bits(dtype)
    s_u = tf.bitcast(s, _uint(bits)) if dtype.kind == "i" else s
    in_range = tf.math.less(s_u, tf.constant(bits, s_u.dtype))
    return in_range, tf.where(in_range, s, tf.zeros_like(s))


def _bcast(ctx, x, s):
    shape = ctx.shape(ctx.aval_out)
    return tf.broadcast_to(x, shape), tf.broadcast_to(s, shape)


@rule("shift_left", dtypes="integer", cases=_shift_cases(lax.shift_left), polymorphic=True)
def shift_left(ctx, x, s, **_):
    """x << s, and 0 where s is outside [0, bit width)."""
    x, s = _bcast(ctx, x, s)
    in_range, s = _shift_amount_ok(ctx, s)
    return tf.where(in_range, tf.bitwise.left_shift(x, s), tf.zeros_like(x))


@rule("shift_right_logical", dtypes="integer", cases=_shift_cases(lax.shift_right_logical), polymorphic=True)
def shift_right_logical(ctx, x, s, **_):
    """Zero-filling right shift whatever the signedness; 0 for amounts out of range."""
    x, s = _bcast(ctx, x, s)
    in_range, s = _shift_amount_ok(ctx, s)
    dtype = _np(ctx.avals_in[0])
    if dtype.kind == "i":
        u = _uint(_bits(dtype))
        out = tf.bitcast(tf.bitwise.right_shift(tf.bitcast(x, u), tf.bitcast(s, u)), x.dtype)
    else:
        out = tf.bitwise.right_shift(x, s)
    return tf.where(in_range, out, tf.zeros_like(x))


@rule("shift_right_arithmetic", dtypes="integer",
      cases=_shift_cases(lax.shift_right_arithmetic), polymorphic=True)
def shift_right_arithmetic(ctx, x, s, **_):
    """Sign-filling right shift of the bit pattern (also for unsigned dtypes); amounts out
    of range fill with the sign bit."""
    x, s = _bcast(ctx, x, s)
    in_range, s = _shift_amount_ok(ctx, s)
    dtype = _np(ctx.avals_in[0])
    bits = _bits(dtype)
    xs = tf.bitcast(x, _sint(bits)) if dtype.kind == "u" else x
    ss = tf.bitcast(s, _sint(bits)) if dtype.kind == "u" else s
    out = tf.where(in_range, tf.bitwise.right_shift(xs, ss),
                   tf.bitwise.right_shift(xs, tf.constant(bits - 1, xs.dtype)))
    return tf.bitcast(out, x.dtype) if dtype.kind == "u" else out


# -- bit counting ----------------------------------------------------------------------------
def _count_cases(f):
    return [case.random(f, shapes=[(3, 4)]),
            case.custom("extremes", f, lambda rng, dt: [np.array(
                [np.iinfo(dt).min, np.iinfo(dt).max, 0, 1, 2, 255 % (np.iinfo(dt).max + 1),
                 np.iinfo(dt).max // 2 + 1], dt)], dtypes="integer")]


@rule("population_count", dtypes="integer", cases=_count_cases(lax.population_count), polymorphic=True)
def population_count(ctx, x, **_):
    """TF's PopulationCount returns uint8; JAX keeps the operand's dtype."""
    return tf.cast(tf.raw_ops.PopulationCount(x=x), x.dtype)


@rule("clz", dtypes="integer", cases=_count_cases(lax.clz), polymorphic=True)
def count_leading_zeros(ctx, x, **_):
    """No TF op: binary search on the unsigned bit pattern (halve the window each step)."""
    dtype = _np(ctx.avals_in[0])
    bits = _bits(dtype)
    u = tf.bitcast(x, _uint(bits)) if dtype.kind == "i" else x
    n = tf.zeros_like(u)
    step = bits // 2
    while step >= 1:
        top_clear = tf.math.equal(tf.bitwise.right_shift(u, tf.constant(bits - step, u.dtype)),
                                  tf.zeros_like(u))
        n = tf.where(top_clear, n + tf.constant(step, u.dtype), n)
        u = tf.where(top_clear, tf.bitwise.left_shift(u, tf.constant(step, u.dtype)), u)
        step //= 2
    # After the search the top bit is set unless x was 0: one more for x == 0.
    n = n + tf.cast(tf.math.equal(u, tf.zeros_like(u)), u.dtype)
    return tf.bitcast(n, x.dtype) if dtype.kind == "i" else n
