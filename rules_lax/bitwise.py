"""The bitwise family: logic and bitwise ops (and, or, not, xor), shifts, population_count
and clz, with their TFLite, ONNX and TF.js forms and the 32-bit bit helpers other families
use (srl32, and32, or32).

XLA semantics that plain TF does not share, and how they are kept here:
- shifts by an amount outside [0, bit width) give 0 (sign fill for the arithmetic right
  shift); TF leaves that implementation-defined, so the amount is clamped and patched;
- ``shift_right_logical`` / ``shift_right_arithmetic`` ignore signedness; TF's RightShift
  picks the kind from the dtype, so the operand is bit-cast to the right signedness.
"""
from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf
from jax import lax

from core.dtypes import signed_of, unsigned_of
from core.rule import case, rule


def _np(aval):
    return np.dtype(aval.dtype)


def _bits(dtype: np.dtype) -> int:
    return np.dtype(dtype).itemsize * 8


def _poly_case(f, nargs):
    return case.random(f, shapes=[(3, 4)] * nargs, name="symbolic batch dimension",
                       convert_kw={"polymorphic_shapes": ["(b, 4)"] * nargs})


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


@rule("and", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_and, 2))
@rule("or", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_or, 2))
@rule("xor", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_xor, 2))
def bitwise_binary(ctx, x, y, **_):
    """Logical ops on bool (TF's bitwise ops have no bool kernel), bitwise ops on ints."""
    name = ctx.eqn.primitive.name
    if _np(ctx.avals_in[0]) == np.bool_:
        return _LOGICAL[name](x, y)
    if (name in ("or", "xor") and x.dtype in (tf.int32, tf.uint32)
            and (_known_zeros(x) | _known_zeros(y)) == _MASK32):
        return x + y    # no common bit (the exponent of jax.random.uniform's floats): fast
    return _BITWISE[name](x, y)


@rule("not", dtypes=["integer", "bool"], cases=_bitwise_cases(lax.bitwise_not, 1))
def bitwise_not(ctx, x, **_):
    """Logical not on bool, bitwise complement on ints."""
    if _np(ctx.avals_in[0]) == np.bool_:
        return tf.math.logical_not(x)
    return tf.bitwise.invert(x)


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
    def by_constants(x):
        # every amount a static scalar (one op each), in and out of range, negative too
        bits = _bits(x.dtype)
        amounts = [0, 1, 9 % bits, bits - 1, bits, bits + 5, 2 * bits - 1]
        if np.issubdtype(x.dtype, np.signedinteger):
            amounts.append(-1)
        return [f(x, np.array(k, x.dtype)) for k in amounts]

    def extremes(rng, dt):
        return [args(rng, dt)[0]]
    return [case.custom("amounts out of range and extremes", f, args),
            case.custom("static amounts", by_constants, extremes),
            case.random(f, shapes=[(3, 4), (3, 4)])]


def _shift_amount_ok(ctx, s):
    """(in_range, clamped_amount): XLA takes the amount as unsigned, so negative amounts are
    out of range too."""
    dtype = _np(ctx.avals_in[1])
    bits = _bits(dtype)
    s_u = tf.bitcast(s, unsigned_of(bits)) if dtype.kind == "i" else s
    in_range = tf.math.less(s_u, tf.constant(bits, s_u.dtype))
    return in_range, tf.where(in_range, s, tf.zeros_like(s))


def shr_u32(x, k: int):
    """Logical ``x >> k`` of uint32 words by a constant, as floor(x * 2**-k) in float64
    (exact: every uint32 is a float64, the scaling by a power of two too; the Cast back
    truncates, which is the floor of a number >= 0). TF's uint32 RightShift (and
    LeftShift, BitwiseOr) kernels are 5-7x slower than its Mul, Add and Cast on CPU
    (measured on 256x256 words)."""
    return tf.cast(tf.cast(x, tf.float64) * tf.constant(2.0 ** -k, tf.float64), tf.uint32)


def _by_constant(ctx, x, s):
    """A shift by one static amount (``x >> 9`` in every jax.random sampler): one op, no
    broadcasts or range selects; None when the amount is not a static scalar."""
    k = tf.get_static_value(s) if s.shape.rank == 0 else None
    if k is None:
        return None
    dtype, name = _np(ctx.avals_in[0]), ctx.eqn.primitive.name
    bits, k = _bits(dtype), int(k) % (1 << _bits(_np(ctx.avals_in[1])))  # as unsigned
    if name == "shift_right_arithmetic":
        signed = tf.bitcast(x, signed_of(bits)) if dtype.kind == "u" else x
        out = tf.bitwise.right_shift(signed, tf.constant(min(k, bits - 1), signed.dtype))
        return tf.bitcast(out, x.dtype) if dtype.kind == "u" else out
    if k >= bits:
        return tf.zeros_like(x)
    if name == "shift_left":
        if dtype == np.uint32 and ctx.target == "tf":
            return x * tf.constant(2 ** k, tf.uint32)                # wraps, like XLA
        return tf.bitwise.left_shift(x, tf.constant(k, x.dtype))
    if dtype == np.uint32 and ctx.target == "tf":
        return shr_u32(x, k)
    u = tf.bitcast(x, unsigned_of(bits)) if dtype.kind == "i" else x
    out = tf.bitwise.right_shift(u, tf.constant(k, u.dtype))
    return tf.bitcast(out, x.dtype) if dtype.kind == "i" else out


def _bcast(ctx, x, s):
    shape = ctx.shape(ctx.aval_out)
    return tf.broadcast_to(x, shape), tf.broadcast_to(s, shape)


def _shift(body):
    """A shift rule: one op for a static amount (``_by_constant``); otherwise ``body(ctx,
    x, s, in_range)`` on broadcast operands, the amount clamped into range."""
    @functools.wraps(body)
    def lower(ctx, x, s, **_):
        fast = _by_constant(ctx, x, s)
        if fast is not None:
            return fast
        x, s = _bcast(ctx, x, s)
        in_range, s = _shift_amount_ok(ctx, s)
        return body(ctx, x, s, in_range)
    return lower


@rule("shift_left", dtypes="integer", cases=_shift_cases(lax.shift_left))
@_shift
def shift_left(ctx, x, s, in_range):
    """x << s, and 0 where s is outside [0, bit width)."""
    return tf.where(in_range, tf.bitwise.left_shift(x, s), tf.zeros_like(x))


@rule("shift_right_logical", dtypes="integer", cases=_shift_cases(lax.shift_right_logical))
@_shift
def shift_right_logical(ctx, x, s, in_range):
    """Zero-filling right shift whatever the signedness; 0 for amounts out of range."""
    dtype = _np(ctx.avals_in[0])
    if dtype.kind == "i":
        u = unsigned_of(_bits(dtype))
        out = tf.bitcast(tf.bitwise.right_shift(tf.bitcast(x, u), tf.bitcast(s, u)), x.dtype)
    else:
        out = tf.bitwise.right_shift(x, s)
    return tf.where(in_range, out, tf.zeros_like(x))


@rule("shift_right_arithmetic", dtypes="integer",
      cases=_shift_cases(lax.shift_right_arithmetic))
@_shift
def shift_right_arithmetic(ctx, x, s, in_range):
    """Sign-filling right shift of the bit pattern (also for unsigned dtypes); amounts out
    of range fill with the sign bit."""
    dtype = _np(ctx.avals_in[0])
    bits = _bits(dtype)
    xs = tf.bitcast(x, signed_of(bits)) if dtype.kind == "u" else x
    ss = tf.bitcast(s, signed_of(bits)) if dtype.kind == "u" else s
    out = tf.where(in_range, tf.bitwise.right_shift(xs, ss),
                   tf.bitwise.right_shift(xs, tf.constant(bits - 1, xs.dtype)))
    return tf.bitcast(out, x.dtype) if dtype.kind == "u" else out


# -- bit counting ----------------------------------------------------------------------------
def _count_cases(f):
    return [case.random(f, shapes=[(3, 4)]),
            case.custom("extremes", f, lambda rng, dt: [np.array(
                [np.iinfo(dt).min, np.iinfo(dt).max, 0, 1, 2, 255 % (np.iinfo(dt).max + 1),
                 np.iinfo(dt).max // 2 + 1], dt)], dtypes="integer")]


@rule("population_count", dtypes="integer", cases=_count_cases(lax.population_count))
def population_count(ctx, x, **_):
    """TF's PopulationCount returns uint8; JAX keeps the operand's dtype."""
    return tf.cast(tf.raw_ops.PopulationCount(x=x), x.dtype)


@rule("clz", dtypes="integer", cases=_count_cases(lax.clz))
def count_leading_zeros(ctx, x, **_):
    """No TF op: binary search on the unsigned bit pattern (halve the window each step)."""
    dtype = _np(ctx.avals_in[0])
    bits = _bits(dtype)
    u = tf.bitcast(x, unsigned_of(bits)) if dtype.kind == "i" else x
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


# == TFLite builtin forms ====================================================================
# TFLite's builtins take Add, Mul, BitwiseXor, RightShift, Bitcast and Cast on int32 and
# uint32, but Sub, FloorMod, Maximum and the compares on int32 only, and no BitwiseAnd/Or,
# Invert, LeftShift or PopulationCount at all (measured, TF 2.21 converter + LiteRT). So
# the rules below view a 32-bit operand as int32 (Bitcast keeps the bits) and build the
# missing ops from those:
#   x & y = ((x + y - (x ^ y)) >>> 1) + (bit 31 if x < 0 and y < 0)   [x + y = (x ^ y) + 2 (x & y)]
#   x | y = (x ^ y) + (x & y),   x << s = x * 2^s,   ~x = x ^ -1.
# Where the TF graph shows that x and a constant (or two values) share no set bit, & and |
# reduce to 0 and +; ``x & (2^k - 1)`` is FloorMod(x, 2^k) and ``x & ~(2^k - 1)`` is
# (x >>> k) * 2^k. That covers ``or(shift_right_logical(bits, 9), 0x3F800000)`` of every
# jax.random.uniform (one Add) and the rotations of threefry.
_MASK32 = 0xFFFFFFFF




def _i32(x):
    return x if x.dtype == tf.int32 else tf.bitcast(x, tf.int32)


def _as(x, dtype: tf.DType):
    return x if x.dtype == dtype else tf.bitcast(x, dtype)


def _c32(v: int):
    """The int32 constant with the 32-bit pattern ``v``."""
    v &= _MASK32
    return tf.constant(v - (1 << 32) if v >> 31 else v, tf.int32)


def _static32(t) -> int | None:
    """The 32-bit pattern of ``t`` if it is a constant with one value (also after a
    broadcast or a bitcast between int32 and uint32), else None."""
    v = tf.get_static_value(t)
    if v is None:
        op = getattr(t, "op", None) if not tf.executing_eagerly() else None
        if op is not None and op.type in ("Bitcast", "BroadcastTo", "Identity") \
                and op.inputs[0].dtype in (tf.int32, tf.uint32):
            return _static32(op.inputs[0])
        return None
    if np.size(v) == 0:
        return None
    v = np.asarray(v).ravel()
    return int(v[0]) & _MASK32 if np.all(v == v[0]) else None


def _known_zeros(t, depth: int = 8) -> int:
    """A 32-bit mask of the bits that are 0 in every element of ``t`` (int32/uint32), read
    off the TF graph: constants, logical right shifts and products with 2^k by constants,
    casts from narrower types, through bitcasts. 0 when nothing is known."""
    c = _static32(t)
    if c is not None:
        return ~c & _MASK32
    op = getattr(t, "op", None) if not tf.executing_eagerly() else None
    if op is None or depth == 0:
        return 0
    src = op.inputs[0] if len(op.inputs) else None
    if op.type in ("Bitcast", "Identity") and src.dtype in (tf.int32, tf.uint32):
        return _known_zeros(src, depth - 1)
    words, k = None, None
    if op.type == "RightShift" and src.dtype == tf.uint32:
        words, k = src, _static32(op.inputs[1])
    if op.type == "Mul":
        m = _static32(op.inputs[1])
        if m and m & (m - 1) == 0:
            j = m.bit_length() - 1
            return ((_known_zeros(src, depth - 1) << j) | ((1 << j) - 1)) & _MASK32
    if op.type == "Cast" and src.dtype == tf.float64 and src.op.type == "Mul":  # shr_u32
        scale = tf.get_static_value(src.op.inputs[1])
        cast = src.op.inputs[0].op
        if scale is not None and np.size(scale) == 1 and 0 < float(np.ravel(scale)[0]) <= 1 \
                and cast.type == "Cast" and cast.inputs[0].dtype == tf.uint32:
            k = -int(np.log2(float(np.ravel(scale)[0])))
            if 2.0 ** -k == float(np.ravel(scale)[0]):
                words = cast.inputs[0]
    if words is not None and k is not None and 0 <= k < 32:   # words >> k
        return (_known_zeros(words, depth - 1) >> k) | (_MASK32 & ~(_MASK32 >> k))
    if op.type == "Cast" and src.dtype in (tf.bool, tf.uint8, tf.uint16):
        return _MASK32 & ~((1 << {tf.bool: 1, tf.uint8: 8, tf.uint16: 16}[src.dtype]) - 1)
    return 0


def srl32(x, k):
    """Logical right shift of an int32 or uint32 tensor by ``k`` in [0, 31] (an int or an
    int32/uint32 tensor)."""
    if isinstance(k, int):
        if k == 0:
            return x
        k = tf.constant(k, tf.uint32)
    return _as(tf.bitwise.right_shift(_as(x, tf.uint32), _as(k, tf.uint32)), x.dtype)


def and32(x, y):
    """x & y on two int32 or two uint32 tensors, from builtin ops (see the note above)."""
    if _static32(x) is not None and _static32(y) is None:
        x, y = y, x
    c, zx, zy = _static32(y), _known_zeros(x), _known_zeros(y)
    if (zx | zy) == _MASK32:  # no bit can be set in both
        return (x + y) * tf.constant(0, x.dtype)
    if c is not None:
        if c | zx == _MASK32:  # c keeps every bit x may have
            return x
        low = (c + 1) & c == 0          # c = 2^k - 1
        high = (~c & _MASK32) & ((~c & _MASK32) + 1) == 0  # c = ~(2^k - 1)
        k = (~c & _MASK32).bit_length() if high else c.bit_length()
        if low and k <= 30:
            return _as(tf.math.floormod(_i32(x), _c32(1 << k)), x.dtype)
        if low:  # 0x7FFFFFFF
            return srl32(x * _as(_c32(2), x.dtype), 1)
        if high:
            return srl32(x, k) * _as(_c32(1 << k), x.dtype)
    xi, yi = _i32(x), _i32(y)
    out = srl32(xi + yi - tf.bitwise.bitwise_xor(xi, yi), 1)
    if not (zx | zy) >> 31:  # bit 31 is lost above: set it where both operands have it
        both_negative = tf.math.less(tf.math.maximum(xi, yi) if c is None else xi, _c32(0))
        out = tf.where(both_negative, out + _c32(1 << 31), out)
    return _as(out, x.dtype)


def or32(x, y):
    """x | y on two int32 or two uint32 tensors, from builtin ops."""
    if (_known_zeros(x) | _known_zeros(y)) == _MASK32:
        return x + y
    return _as(tf.bitwise.bitwise_xor(_i32(x), _i32(y)) + _i32(and32(x, y)), x.dtype)


# -- logic and bitwise (TFLite) --------------------------------------------------------------
def _tfl_bitwise_cases(f, nargs):
    cases = _bitwise_cases(f, nargs) + [_poly_case(f, nargs)]
    if nargs == 2:
        u = np.uint32
        cases += [
            case.custom("uniform's exponent: (bits >>> 9) | 0x3F800000 and & 0x7FFFFF",
                        lambda b: [lax.bitwise_or(lax.shift_right_logical(b, u(9)), u(0x3F800000)),
                                   lax.bitwise_and(b, u(0x7FFFFF))],
                        lambda rng, dt: [rng.integers(0, 2**32, (4, 5), dtype=np.uint64).astype(u)],
                        dtypes="uint32"),
            case.custom("random 32-bit patterns", f, lambda rng, dt: [
                rng.integers(0, 2**32, (6, 7), dtype=np.uint64).astype(np.uint32).view(dt)
                for _ in range(2)], dtypes=["int32", "uint32"]),
            case.custom("constant masks: runs, bit 31, 0, all ones", lambda x: [
                f(x, np.array(m, np.uint32).view(x.dtype)) for m in
                (0xFF, 0x7FFFFFFF, 0xFFFF0000, 0x80000000, 0x55555555, 0xF0F0F00F, 0, _MASK32,
                 1, 0x3FFFFFFF)],
                lambda rng, dt: [np.array([0, 1, -1, 2**31 - 1, -2**31, 0x12345678, -0x789ABCDE,
                                           255, 256], np.int64).astype(np.uint32).view(dt)],
                dtypes=["int32", "uint32"]),
            case.custom("disjoint halves: (x << 13) | (x >>> 19)", lambda x: f(
                lax.shift_left(x, np.array(13, x.dtype)),
                lax.shift_right_logical(x, np.array(19, x.dtype))),
                lambda rng, dt: [rng.integers(0, 2**32, (9,), dtype=np.uint64).astype(np.uint32)
                                 .view(dt)], dtypes=["int32", "uint32"]),
        ]
    return cases


@rule("and", dtypes=["int32", "uint32"], targets="tflite",
      cases=_tfl_bitwise_cases(lax.bitwise_and, 2))
@rule("or", dtypes=["int32", "uint32"], targets="tflite",
      cases=_tfl_bitwise_cases(lax.bitwise_or, 2))
def bitwise_and_or_tflite(ctx, x, y, **_):
    """& and | from Add, Sub, BitwiseXor and a logical RightShift (see the note above)."""
    f = and32 if ctx.eqn.primitive.name == "and" else or32
    x, y = _bcast_tfl(ctx, x, y)
    return f(x, y)


def _int64_cases(f, nargs):
    return [case.custom("random 64-bit patterns", f, lambda rng, dt: [
        rng.integers(-2**63, 2**63 - 1, (5, 6), dtype=np.int64, endpoint=True)
        for _ in range(nargs)], dtypes="int64")]


@rule("and", dtypes="int64", targets="tflite",
      cases=_bitwise_cases(lax.bitwise_and, 2) + _int64_cases(lax.bitwise_and, 2))
@rule("or", dtypes="int64", targets="tflite",
      cases=_bitwise_cases(lax.bitwise_or, 2) + _int64_cases(lax.bitwise_or, 2))
@rule("xor", dtypes="int64", targets="tflite",
      cases=_bitwise_cases(lax.bitwise_xor, 2) + _int64_cases(lax.bitwise_xor, 2))
def bitwise_int64_tflite(ctx, x, y, **_):
    """On the two uint32 halves of each int64 (TFLite has no 64-bit bitwise op)."""
    f = {"and": and32, "or": or32, "xor": tf.bitwise.bitwise_xor}[ctx.eqn.primitive.name]
    x, y = _bcast_tfl(ctx, x, y)

    def halves(t):
        return tf.bitcast(tf.bitcast(t, tf.uint64), tf.uint32)
    return tf.bitcast(tf.bitcast(f(halves(x), halves(y)), tf.uint64), tf.int64)


@rule("not", dtypes=["int32", "uint32", "int64"], targets="tflite",
      cases=_tfl_bitwise_cases(lax.bitwise_not, 1) + _int64_cases(lax.bitwise_not, 1))
def bitwise_not_tflite(ctx, x, **_):
    """~x = x ^ 0xFFFFFFFF (32 bits), -1 - x (int64, which has no BitwiseXor)."""
    if x.dtype == tf.int64:
        return tf.constant(-1, tf.int64) - x
    return tf.bitwise.bitwise_xor(x, tf.constant(-1 if x.dtype == tf.int32 else _MASK32, x.dtype))


# -- shifts (TFLite) -------------------------------------------------------------------------
def _amount32(s):
    """(in_range, amount as int32) for a 32-bit shift amount (negative ones out of range)."""
    s = _i32(s)
    return tf.math.logical_and(tf.math.greater_equal(s, 0), tf.math.less(s, 32)), s


def _bcast_tfl(ctx, *xs):
    """Broadcast to the result's shape only the operands that need it."""
    return [x if a.shape == ctx.aval_out.shape else tf.broadcast_to(x, ctx.shape(ctx.aval_out))
            for x, a in zip(xs, ctx.avals_in)]


def _zeros_out(ctx):
    return tf.zeros(ctx.shape(ctx.aval_out), ctx.tf_dtype(ctx.aval_out))


_TFL_SHIFT_DTYPES = ["int32", "uint32"]


def _tfl_shift_cases(f):
    def static_amounts(x):
        return [f(x, np.array(k, np.uint32).view(x.dtype))
                for k in (0, 1, 9, 31, 32, 33, 0x80000000, _MASK32)]
    return _shift_cases(f) + [_poly_case(f, 2), case.custom(
        "constant amounts 0, 1, 9, 31, 32, 33, 2^31, 2^32 - 1 (-1)", static_amounts,
        lambda rng, dt: [np.array([0, 1, -1, 2**31 - 1, -2**31, 0x12345678, -0x789ABCDE],
                                  np.int64).astype(np.uint32).view(dt)])]


@rule("shift_left", dtypes=_TFL_SHIFT_DTYPES, targets="tflite",
      cases=_tfl_shift_cases(lax.shift_left))
@rule("shift_right_logical", dtypes=_TFL_SHIFT_DTYPES, targets="tflite",
      cases=_tfl_shift_cases(lax.shift_right_logical))
def shift_zero_fill_tflite(ctx, x, s, **_):
    """x << s as x * 2^s (wrapping), x >>> s as RightShift on the uint32 view; 0 for
    amounts outside [0, 32). A computed 2^s comes from a 33-entry table whose last entry,
    0, is what amounts out of range pick."""
    left = ctx.eqn.primitive.name == "shift_left"
    k = _static32(s)
    x, s = _bcast_tfl(ctx, x, s)
    if k is not None:
        if k >= 32:
            return _zeros_out(ctx)
        return x * _as(_c32(1 << k), x.dtype) if left else srl32(x, k)
    in_range, s = _amount32(s)
    if left:
        table = tf.constant([(1 << k) - (1 << 32) * (k == 31) for k in range(32)] + [0],
                            tf.int32)
        return x * _as(tf.gather(table, tf.where(in_range, s, 32)), x.dtype)
    return tf.where(in_range, srl32(x, tf.where(in_range, s, 0)), tf.constant(0, x.dtype))


@rule("shift_right_arithmetic", dtypes=_TFL_SHIFT_DTYPES, targets="tflite",
      cases=_tfl_shift_cases(lax.shift_right_arithmetic))
def shift_right_arithmetic_tflite(ctx, x, s, **_):
    """RightShift on the int32 view; amounts outside [0, 32) shift by 31 (sign fill)."""
    k = _static32(s)
    x, s = _bcast_tfl(ctx, x, s)
    if k is not None:
        amount = tf.constant(min(k, 31), tf.int32)
    else:
        in_range, s = _amount32(s)
        amount = tf.where(in_range, s, 31)
    return _as(tf.bitwise.right_shift(_i32(x), amount), x.dtype)


# -- bit counting (TFLite) -------------------------------------------------------------------
def _tfl_count_cases(f):
    return _count_cases(f) + [_poly_case(f, 1), case.custom(
        "every 2^k, 2^k - 1 and ~(2^k - 1)", f, lambda rng, dt: [np.array(
            [m for k in range(33) for m in (1 << k, (1 << k) - 1, ~((1 << k) - 1))],
            np.int64).astype(np.uint32).view(dt)])]


@rule("population_count", dtypes=["int32", "uint32"], targets="tflite",
      cases=_tfl_count_cases(lax.population_count))
def population_count_tflite(ctx, x, **_):
    """Sum of a 256-entry table looked up at each byte."""
    xi = _i32(x)
    table = tf.constant([bin(b).count("1") for b in range(256)], tf.int32)
    a, b, c, d = [tf.gather(table, and32(srl32(xi, k), _c32(0xFF))) for k in (0, 8, 16, 24)]
    return _as((a + b) + (c + d), x.dtype)


@rule("clz", dtypes=["int32", "uint32"], targets="tflite", cases=_tfl_count_cases(lax.clz))
def count_leading_zeros_tflite(ctx, x, **_):
    """From the float exponent of the leading nonzero 16-bit half v: v + 0.5 is exact in
    float32 and its exponent is floor(log2(v)) (-1 for v = 0, so x = 0 gives 32)."""
    xi = _i32(x)
    hi = srl32(xi, 16)
    has_hi = tf.math.not_equal(hi, 0)
    v = tf.where(has_hi, hi, and32(xi, _c32(0xFFFF)))
    f = tf.bitcast(tf.cast(v, tf.float32) + 0.5, tf.int32)
    log2 = tf.bitwise.right_shift(f, 23) - 127
    return _as(tf.where(has_hi, 15 - log2, 31 - log2), x.dtype)


# -- bit counting (ONNX, TF.js) ----------------------------------------------------------------
# Neither PopulationCount nor a shift on every integer type exports: both count on the value
# as a non-negative number v (the sign bit apart) with FloorDiv/FloorMod by powers of two,
# which tf2onnx and TF.js compute exactly on non-negative operands.
_PORTABLE_COUNT_DTYPES = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32"]


def _magnitude_bits(x, dtype: np.dtype):
    """(v, sign): v >= 0 holds the bits of ``x`` below its sign bit (all of them for an
    unsigned type), ``sign`` is the sign bit as a bool (None when unsigned)."""
    bits = _bits(dtype)
    if dtype.kind == "u":
        return tf.cast(x, tf.int64 if bits == 32 else tf.int32), None
    v = tf.cast(x, tf.int32) if bits < 32 else x
    negative = v < 0
    low = v - tf.constant(-(1 << (bits - 1)), v.dtype)  # the bits below the sign, when < 0
    return tf.where(negative, low, v), negative


@rule("population_count", dtypes=_PORTABLE_COUNT_DTYPES, targets=("onnx", "tfjs"),
      cases=_count_cases(lax.population_count) + [_poly_case(lax.population_count, 1)])
def population_count_portable(ctx, x, **_):
    """A 256-entry table looked up at each byte of v (FloorMod/FloorDiv by 256), plus the
    sign bit."""
    dtype = _np(ctx.avals_in[0])
    v, negative = _magnitude_bits(x, dtype)
    table = tf.constant([bin(b).count("1") for b in range(256)], tf.int32)
    count = tf.cast(negative, tf.int32) if negative is not None else 0
    for _ in range(_bits(dtype) // 8):
        count = tf.gather(table, tf.cast(tf.math.floormod(v, tf.constant(256, v.dtype)),
                                         tf.int32)) + count
        v = tf.math.floordiv(v, tf.constant(256, v.dtype))
    return tf.cast(count, x.dtype)


@rule("clz", dtypes=_PORTABLE_COUNT_DTYPES, targets=("onnx", "tfjs"),
      cases=_count_cases(lax.clz) + [_poly_case(lax.clz, 1)])
def count_leading_zeros_portable(ctx, x, **_):
    """0 where the sign bit is set, else the width less the bit length of v, found by a
    binary search of FloorDivs by 2^step."""
    dtype = _np(ctx.avals_in[0])
    bits = _bits(dtype)
    v, negative = _magnitude_bits(x, dtype)
    length = tf.zeros_like(v)
    step = bits // 2
    while step >= 1:
        high = tf.math.floordiv(v, tf.constant(1 << step, v.dtype))
        has_high = high > 0
        length = tf.where(has_high, length + step, length)
        v = tf.where(has_high, high, v)
        step //= 2
    out = tf.constant(bits, v.dtype) - length - v  # v is now 0 or 1
    if negative is not None:
        out = tf.where(negative, tf.zeros_like(out), out)
    return tf.cast(out, x.dtype)


# -- shifts (ONNX) -----------------------------------------------------------------------------
# tf2onnx turns LeftShift/RightShift into ONNX BitShift, which is unsigned only (a signed
# operand fails to convert or comes out wrong): a signed operand is shifted as its unsigned
# view, reached by Cast (which wraps modulo 2^bits in TF and onnxruntime, as Bitcast would).
def _unsigned_shift(x, s, bits: int, left: bool):
    """x << s or x >>> s on unsigned operands, 0 for amounts >= bits."""
    in_range = tf.math.less(s, tf.constant(bits, s.dtype))
    s = tf.where(in_range, s, tf.zeros_like(s))
    out = tf.bitwise.left_shift(x, s) if left else tf.bitwise.right_shift(x, s)
    return tf.where(in_range, out, tf.zeros_like(out))


@rule("shift_left", dtypes="signed", targets="onnx", cases=_shift_cases(lax.shift_left)
      + [_poly_case(lax.shift_left, 2)])
@rule("shift_right_logical", dtypes="signed", targets="onnx",
      cases=_shift_cases(lax.shift_right_logical) + [_poly_case(lax.shift_right_logical, 2)])
def shift_zero_fill_onnx(ctx, x, s, **_):
    """The shift of the unsigned view (negative amounts are out of range there)."""
    x, s = _bcast(ctx, x, s)
    u = unsigned_of(_bits(_np(ctx.avals_in[0])))
    out = _unsigned_shift(tf.cast(x, u), tf.cast(s, u), u.size * 8,
                          ctx.eqn.primitive.name == "shift_left")
    return tf.cast(out, x.dtype)


@rule("shift_right_arithmetic", dtypes="integer", targets="onnx",
      cases=_shift_cases(lax.shift_right_arithmetic)
      + [_poly_case(lax.shift_right_arithmetic, 2)])
def shift_right_arithmetic_onnx(ctx, x, s, **_):
    """Sign fill from a logical shift: x >> s = ~(~x >>> s) where x < 0 (~x = -1 - x);
    amounts outside [0, bits) shift by bits - 1."""
    x, s = _bcast(ctx, x, s)
    bits = _bits(_np(ctx.avals_in[0]))
    u, sd = unsigned_of(bits), signed_of(bits)
    su = tf.cast(s, u)
    amount = tf.where(tf.math.less(su, tf.constant(bits, u)), su, tf.constant(bits - 1, u))
    xs = tf.cast(x, sd)
    negative = tf.math.less(xs if bits >= 32 else tf.cast(xs, tf.int32), 0)  # no int8 Less
    minus_one = tf.constant(-1, sd)
    r = tf.cast(tf.bitwise.right_shift(tf.cast(tf.where(negative, minus_one - xs, xs), u),
                                       amount), sd)
    return tf.cast(tf.where(negative, minus_one - r, r), x.dtype)
