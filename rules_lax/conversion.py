"""Dtype conversion and bit-level float ops: convert_element_type, bitcast_convert_type,
reduce_precision and nextafter.

Where XLA (what jax.jit runs) and TF's Cast differ:
- float -> integer: XLA truncates toward zero and *saturates* (NaN -> 0, +-inf and
  out-of-range values -> the integer type's max/min); TF's Cast is C++ static_cast, which is
  undefined out of range, so the value is clamped first;
- complex -> real/int/bool: XLA takes the real part first (so 1j -> False);
- int -> float and float -> narrower float: XLA CPU and TF's Cast round the same way
  (both round twice through f32 for bf16 results; measured), so tf.cast is used, except
  that XLA gives a signed canonical NaN in a few narrowings where TF does not;
- bf16 -> bool: XLA treats bf16 subnormals as nonzero; TF's compare flushes them.
All of this was checked bit for bit against jax.jit on every 16-bit pattern and on
random 32/64-bit patterns. ``weak_type`` only steers JAX's type promotion: no effect here.
reduce_precision and nextafter are written on the integer bit patterns, the way XLA emits
them, so they need no XlaReducePrecision op and no NextAfter kernel (absent for bf16/f16).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax.numpy as jnp
from jax import lax

from core.errors import UnsupportedError
from core.dtypes import signed_of
from core.rule import case, rule
from rules_lax.bitwise import _as, _i32, _poly_case, and32, srl32
from rules_lax.comparison import TFBits, TFLiteBits, flush_subnormals

_NAN = float("nan")
_INF = float("inf")




def _standard_new_dtype(eqn):
    """A reason to refuse ``new_dtype``s outside the 15 standard dtypes (float8, int4, ...):
    their TF kernels and XLA's rounding into them are not checked here."""
    name = np.dtype(eqn.params["new_dtype"]).name
    if name not in _TARGETS:
        return (f"new_dtype={name} is not supported (only bool, int/uint 8-64, bf16, f16, "
                f"f32, f64, c64, c128); convert to one of those in the JAX program")
    return None


# -- convert_element_type --------------------------------------------------------------------
_TARGETS = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "bfloat16", "float16", "float32", "float64", "complex64", "complex128")


def _convert_to_all(make_args, name, dtypes=None):
    def fn(x):
        return [lax.convert_element_type(x, t) for t in _TARGETS]
    return case.custom(name, fn, make_args, dtypes=dtypes)


def _float_edges(rng, dt):
    vals = [_NAN, -_NAN, _INF, -_INF, 3e9, -3e9, 2.5, -2.5, 1e20, -1e20, 255.9, -0.9, -0.0,
            2147483520.0, 2147483648.0, -2147483648.0, 65535.5, 1.8e19, 9.3e18, 127.5, -128.9,
            -129.0, 40000.0, 65504.0, 6e-8, 1.0 + 2.0 ** -9]
    with np.errstate(over="ignore"):
        return [np.array(vals, np.float64).astype(dt)]


def _int_edges(rng, dt):
    info = np.iinfo(dt)
    vals = [info.min, info.max, 0, 1, info.max // 2 + 1, 255, 256, 65535, 65536,
            2 ** 24 + 1, 2 ** 30 + 2 ** 22 + 1, 2 ** 62 + 2 ** 38 + 1]
    return [np.array([v for v in vals if info.min <= v <= info.max], dt)]


def _complex_edges(rng, dt):
    return [np.array([1 + 2j, 1j, complex(_NAN, 0), complex(0, _NAN), -3.7 - 1j,
                      complex(_INF, 1), 3e9 + 0j], dt)]


@rule("convert_element_type", dtypes="all", when=_standard_new_dtype, cases=[
    _convert_to_all(_float_edges, "floats: NaN, inf, out of range, halves", "floating"),
    _convert_to_all(_int_edges, "ints: extremes, rounding to narrow floats", "integer"),
    _convert_to_all(_complex_edges, "complex: real part, NaN parts", "complex"),
    _convert_to_all(lambda rng, dt: [np.array([True, False])], "bool", "bool"),
    case.random(lambda x: lax.convert_element_type(
        x, jnp.float32 if x.dtype != jnp.float32 else jnp.int32), shapes=[(3, 4)],
        name="random to float32 (float32 to int32)"),
    case.random(lambda x: x * 1.5, shapes=[(3,)], name="weak-typed result (int * 1.5)",
                dtypes="integer")])
def convert_element_type(ctx, x, *, new_dtype, **_):
    """Cast, with XLA's real-part rule for complex sources and saturating float -> int."""
    src = np.dtype(ctx.avals_in[0].dtype)
    dst = np.dtype(new_dtype)
    if src == dst:
        return tf.identity(x)
    if src.kind == "c" and dst.kind != "c":
        x = tf.math.real(x)
        src = np.dtype(np.float32 if src == np.complex64 else np.float64)
    if dst == np.bool_:
        if src.name == "bfloat16":
            # XLA tests bf16 -> bool on the bits: subnormals are True (measured), whereas
            # TF's compare flushes them to zero.
            mag = tf.bitwise.bitwise_and(tf.bitcast(x, tf.int16), tf.constant(0x7FFF, tf.int16))
            return tf.math.not_equal(mag, tf.zeros_like(mag))
        return tf.math.not_equal(x, tf.zeros_like(x))
    if dst.kind in "iu" and src.kind not in "iub":  # floating (bf16 has numpy kind "V")
        return _float_to_int(x, src, dst)
    out = tf.cast(x, ctx.tf_dtype(dst))
    if (dst.name, src.name) in _CANONICAL_NAN:
        # Here XLA gives the canonical quiet NaN with the input's sign; TF's cast drops the
        # sign (to bf16) or keeps payload bits (f64 -> f16). Measured on random NaN bits.
        out = tf.where(tf.math.is_nan(x), _nan_like(x, out.dtype), out)
    return out


def _to_bool(x):
    return lax.convert_element_type(x, jnp.bool_)


def _to_bool_only(eqn):
    if np.dtype(eqn.params["new_dtype"]) != np.bool_:
        return "only conversions to bool need a TFLite form; the generic rule does the rest"
    return None


@rule("convert_element_type", dtypes=["uint32", "float32"], targets="tflite",
      when=_to_bool_only, cases=[
          case.custom("floats: NaN, inf, out of range, halves", _to_bool, _float_edges,
                      dtypes="float32"),
          case.custom("ints: extremes", _to_bool, _int_edges, dtypes="uint32"),
          case("subnormals are False", _to_bool,
               [1e-45, -1e-45, 1e-40, -3e-39, 1.2e-38, -0.0, 0.0, _NAN], dtypes="float32"),
          _poly_case(_to_bool, 1)])
def convert_to_bool_tflite(ctx, x, **_):
    """x != 0, with uint32 compared as int32 and float32 subnormals as zero (XLA's compare
    flushes them, TFLite's does not)."""
    x = _i32(x) if x.dtype == tf.uint32 else flush_subnormals(x)
    return tf.math.not_equal(x, tf.constant(0, x.dtype))


def _to_bfloat16_only(eqn):
    if np.dtype(eqn.params["new_dtype"]).name != "bfloat16":
        return "only conversions to bfloat16 need this TFLite form"
    return None


def _to_bf16(x):
    return lax.convert_element_type(x, jnp.bfloat16)


def _bf16_rounding_edges(rng, dt):
    one = np.float32(1.0).view(np.uint32)
    ties = np.array([one + 0x8000, one + 0x18000, one + 0x8001, one + 0x7FFF, 0x7F7FFFFF,
                     0x7F7F8000, 0x00000001, 0x00008000, 0x80018000], np.uint32).view(np.float32)
    return [np.concatenate([_float_edges(rng, np.float32)[0], ties])]


@rule("convert_element_type", dtypes=["float32", "int32", "uint32", "bool", "int64"],
      targets="tflite", when=_to_bfloat16_only, cases=[
          case.custom("float32: ties to even, overflow, subnormals, NaN", _to_bf16,
                      _bf16_rounding_edges, dtypes="float32"),
          case.custom("ints: extremes, rounding twice (through float32)", _to_bf16, _int_edges,
                      dtypes=["int32", "uint32", "int64"]),
          case.custom("bool", _to_bf16, lambda rng, dt: [np.array([True, False])], dtypes="bool"),
          _poly_case(_to_bf16, 1)])
def convert_to_bfloat16_tflite(ctx, x, **_):
    """Through float32 (as XLA rounds integers), then rounded to bfloat16 on the bits by
    rules_lax.narrow.round_to_narrow: TFLite computes in float32 and its converter drops a
    float32 -> bfloat16 -> float32 Cast pair, so the rounding must not be left to a Cast.
    NaN becomes bfloat16's quiet NaN with the input's sign, as in XLA."""
    from rules_lax.narrow import round_to_narrow
    x = tf.cast(x, tf.float32) if x.dtype != tf.float32 else x
    negative = tf.math.less(tf.bitcast(x, tf.int32), 0)
    nan = tf.where(negative, tf.bitcast(tf.constant(-(1 << 31) | 0x7FC00000, tf.int32), tf.float32),
                   tf.bitcast(tf.constant(0x7FC00000, tf.int32), tf.float32))
    return tf.cast(tf.where(tf.math.is_nan(x), nan, round_to_narrow(x, "bfloat16")),
                   tf.bfloat16)


_CANONICAL_NAN = {("bfloat16", "float32"), ("bfloat16", "float64"), ("float16", "float64")}


def _nan_like(x, dtype: tf.DType):
    """The quiet NaN of ``dtype`` with the sign of ``x`` (a float tensor)."""
    bits = x.dtype.size * 8
    negative = tf.math.less(tf.bitcast(x, signed_of(bits)), tf.zeros([], signed_of(bits)))
    nan = tf.constant(_NAN, dtype)
    return tf.where(negative, -nan, nan)


def _float_to_int(x, src: np.dtype, dst: np.dtype):
    """Truncate toward zero, saturating like XLA: NaN -> 0, beyond the range -> min/max."""
    if src.itemsize < 4:
        x = tf.cast(x, tf.float32)  # exact, and every 16-bit float bound is representable
    info = np.iinfo(dst)
    # Both bounds are powers of two (or 0), hence exact in every float type.
    lo = tf.constant(float(info.min), x.dtype)
    hi = tf.constant(float(info.max) + 1.0, x.dtype)
    too_big = tf.math.greater_equal(x, hi)
    too_small = tf.math.less_equal(x, lo)
    bad = tf.math.logical_or(tf.math.logical_or(too_big, too_small), tf.math.is_nan(x))
    out = tf.cast(tf.where(bad, tf.zeros_like(x), x), tf.as_dtype(dst))
    out = tf.where(too_big, tf.constant(info.max, out.dtype), out)
    return tf.where(too_small, tf.constant(info.min, out.dtype), out)


# -- bitcast_convert_type --------------------------------------------------------------------
@rule("bitcast_convert_type", dtypes=["numeric", "bool"], when=_standard_new_dtype, cases=[
    case.random(lambda x: lax.bitcast_convert_type(x, jnp.int32), shapes=[(2, 3)],
                dtypes="float32", name="float32 -> int32"),
    case("NaN and -0 to bits", lambda x: lax.bitcast_convert_type(x, jnp.uint32),
         [_NAN, -0.0, _INF], dtypes="float32"),
    case.random(lambda x: lax.bitcast_convert_type(x, jnp.uint8), shapes=[(2, 3)],
                dtypes=["float32", "int32", "uint32", "bfloat16", "float16", "int16"],
                name="to uint8 adds a trailing dim"),
    case.custom("uint8[..., 4] -> float32 drops the trailing dim",
                lambda x: lax.bitcast_convert_type(x, jnp.float32),
                lambda rng, dt: [rng.integers(0, 256, (2, 3, 4)).astype(np.uint8)],
                dtypes="uint8"),
    case.custom("uint16[..., 2] -> int32", lambda x: lax.bitcast_convert_type(x, jnp.int32),
                lambda rng, dt: [rng.integers(0, 65536, (5, 2)).astype(np.uint16)],
                dtypes="uint16"),
    case.random(lambda x: lax.bitcast_convert_type(x, x.dtype), shapes=[(3,)],
                name="same dtype"),
])
def bitcast_convert_type(ctx, x, *, new_dtype, **_):
    """tf.bitcast has XLA's shape rule: a narrower type adds a trailing dim, a wider one
    consumes it; both are little-endian."""
    src = np.dtype(ctx.avals_in[0].dtype)
    if src == np.dtype(new_dtype):
        return tf.identity(x)
    return tf.bitcast(x, ctx.tf_dtype(new_dtype))


def _bf16_bits_case(dst, shape=(2, 3)):
    def make(rng, dt):
        bits = rng.integers(0, 2**16, shape).astype(np.uint16)
        # NaN, -NaN, -0, a subnormal. (NaN payloads do not survive a TFLite model's input:
        # bfloat16 inputs are fed as float32 and cast, which quiets them, in TF as well.)
        bits.flat[:4] = [0x7FC0, 0xFFC0, 0x8000, 0x0001]
        return [bits.view(jnp.bfloat16)]
    return case.custom(f"bfloat16 -> {dst}", lambda x: lax.bitcast_convert_type(x, dst), make,
                       dtypes="bfloat16")


@rule("bitcast_convert_type", dtypes="bfloat16", targets="tflite", when=_standard_new_dtype,
      cases=[_bf16_bits_case(d) for d in ("int16", "uint16", "uint8", "int8", "bfloat16")]
      + [_bf16_bits_case(d, (2, 3, 2)) for d in ("float32", "int32", "uint32")])
def bitcast_from_bfloat16_tflite(ctx, x, *, new_dtype, **_):
    """TFLite keeps bfloat16 tensors as float32 (its Bitcast then sees 4 bytes, measured:
    uint8[..., 4] where JAX gives uint8[..., 2]), so the pattern is read from the float32
    value's top 16 bits, which for a bfloat16 value hold all of its bits."""
    dst = np.dtype(new_dtype)
    if dst.name == "bfloat16":
        return tf.identity(x)
    if dst.name == "float16":
        raise UnsupportedError("bitcast_convert_type bfloat16 -> float16 has no TFLite form; "
                               "convert with target='tf'")
    bits = srl32(tf.bitcast(tf.cast(x, tf.float32), tf.int32), 16)  # 0 .. 2^16 - 1
    if dst.itemsize == 2:
        return tf.cast(bits - tf.cast(bits >= 1 << 15, tf.int32) * (1 << 16) if dst.kind == "i"
                       else bits, ctx.tf_dtype(dst))
    if dst.itemsize == 1:
        lo_hi = tf.stack([and32(bits, tf.constant(0xFF)), srl32(bits, 8)], axis=-1)
        if dst.kind == "i":
            lo_hi = lo_hi - tf.cast(lo_hi >= 128, tf.int32) * 256
        return tf.cast(lo_hi, ctx.tf_dtype(dst))
    return _as(bits[..., 0] + bits[..., 1] * (1 << 16), ctx.tf_dtype(dst))


def _to_float32_only(eqn):
    if np.dtype(eqn.params["new_dtype"]) != np.float32:
        return "only int32/uint32 -> float32 has a form without Bitcast"
    return None


def _bits_to_float_edges(rng, dt):
    pats = [0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000, 0xBF800001,
            0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0x34000000, 0x4B7FFFFF]
    bits = np.concatenate([np.array(pats, np.uint32),
                           rng.integers(0, 2**32, (40,), dtype=np.uint64).astype(np.uint32)])
    return [bits.view(dt)]


@rule("bitcast_convert_type", dtypes=["int32", "uint32"], targets=("onnx", "tfjs"),
      when=_to_float32_only, cases=[
          case.custom("bits -> float32: zeros, subnormals, extremes, inf, NaN, random",
                      lambda x: lax.bitcast_convert_type(x, jnp.float32), _bits_to_float_edges),
          _poly_case(lambda x: lax.bitcast_convert_type(x, jnp.float32), 1)])
def bitcast_to_float32_portable(ctx, x, **_):
    """32 bits -> float32 without Bitcast (tf2onnx and TF.js have none), from the fields:
    (m + 2^23 [e > 0]) * 2^(max(e, 1) - 150) is exact (a product of an integer below 2^24
    and a power of two that is the result's own scale), the sign a factor +-1 (so -0.0
    stays), e = 255 gives +-inf or NaN (a NaN's payload and sign are not kept: NaN)."""
    if ctx.target == "tfjs":  # int32 only (TF.js has no int64); its FloorDiv/FloorMod floor
        b, negative = x, x < 0
    else:                     # the bits as a number in [0, 2^32): tf2onnx's integer
        b = tf.cast(x, tf.int64)  # FloorDiv/FloorMod truncate negative operands
        if x.dtype == tf.int32:
            b = tf.where(x < 0, b + (1 << 32), b)
        negative = b >= (1 << 31)
    e = tf.cast(tf.math.floormod(tf.math.floordiv(b, tf.constant(1 << 23, b.dtype)),
                                 tf.constant(256, b.dtype)), tf.int32)
    m = tf.cast(tf.math.floormod(b, tf.constant(1 << 23, b.dtype)), tf.int32)
    scale = tf.constant([2.0 ** (max(k, 1) - 150) for k in range(255)] + [0.0], tf.float32)
    mag = tf.cast(tf.where(e > 0, m + (1 << 23), m), tf.float32) * tf.gather(scale, e)
    special = tf.where(tf.equal(m, 0), tf.constant(np.inf, tf.float32),
                       tf.constant(np.nan, tf.float32))
    mag = tf.where(tf.equal(e, 255), special, mag)
    return mag * tf.where(negative, tf.constant(-1.0), tf.constant(1.0))


# -- reduce_precision ------------------------------------------------------------------------
def _rp(e, m):
    return lambda x: lax.reduce_precision(x, exponent_bits=e, mantissa_bits=m)


def _rp_edges(rng, dt):
    fi = jnp.finfo(dt)
    vals = np.array([_NAN, -_NAN, _INF, -_INF, 0.0, -0.0, 1.0, 1.0 + 2.0 ** -8,
                     1.0 + 3 * 2.0 ** -8, 1.0 + 2.0 ** -8 + 2.0 ** -20, 65504.0, 65520.0, 1e-5,
                     6e-5, 1e-8, 3.4e38, 1.0 + 2.0 ** -11, -2.5, float(fi.max),
                     float(fi.tiny), float(fi.tiny) / 4], np.float64)
    with np.errstate(over="ignore"):
        x = vals.astype(dt)
    # NaNs with payloads in low mantissa bits (rounding must not turn them into inf/zero).
    bits = np.dtype(dt).itemsize * 8
    u = {16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]
    nan_low = np.array([(((1 << (fi.nexp)) - 1) << fi.nmant) | 1,
                        (1 << (bits - 1)) | (((1 << fi.nexp) - 1) << fi.nmant) | 3], u)
    return [np.concatenate([x, nan_low.view(np.dtype(dt))])]


_RP_CASES = [
    case.custom("to bf16 (8, 7): ties, NaN payloads, overflow, subnormals", _rp(8, 7),
                _rp_edges),
    case.custom("to f16 (5, 10)", _rp(5, 10), _rp_edges),
    case.custom("(3, 2), (1, 0), (2, 0): tiny formats, NaN kept without mantissa", lambda x: [
        _rp(3, 2)(x), _rp(1, 0)(x), _rp(2, 0)(x)], _rp_edges),
    case.custom("wider than the source: identity", _rp(11, 52), _rp_edges),
    case.random(_rp(8, 7), shapes=[(4, 5)]),
]


@rule("reduce_precision", dtypes="floating", cases=_RP_CASES)
def reduce_precision(ctx, x, *, exponent_bits, mantissa_bits, **_):
    """XLA's ReducePrecision on the bits: round the mantissa to nearest-even by adding a
    bias and masking, then flush exponents out of range to signed zero / inf (subnormals of
    the reduced format go to zero); NaN keeps its bits."""
    return _reduce_precision(x, np.dtype(ctx.avals_in[0].dtype), int(exponent_bits),
                             int(mantissa_bits), TFBits)


def _reduce_precision(x, dtype: np.dtype, e: int, m: int, bit_ops):
    fi = jnp.finfo(dtype)
    nbits = dtype.itemsize * 8
    src_m, src_e = int(fi.nmant), nbits - 1 - int(fi.nmant)
    # XLA drops a no-op; it computes bf16 in f32, so there "no-op" means no-op in f32
    # (only then does a bf16 NaN keep its payload).
    if (e >= 8 and m >= 23) if dtype.name == "bfloat16" else (e >= src_e and m >= src_m):
        return tf.identity(x)
    b = bit_ops(nbits)
    c = b.c
    u = tf.bitcast(x, b.itype)
    sign_mask = 1 << (nbits - 1)
    exp_mask = ((1 << src_e) - 1) << src_m
    is_nan = tf.math.greater(b.and_(u, c(sign_mask - 1)), c(exp_mask))
    if m < src_m:
        shift = src_m - m
        last = 1 << shift
        last_bit = b.srl(b.and_(u, c(last)), shift)
        u = b.and_(u + last_bit + c((last >> 1) - 1), c(((1 << nbits) - 1) & ~(last - 1)))
    if e < src_e:
        bias = (1 << (src_e - 1)) - 1
        reduced_bias = (1 << (e - 1)) - 1
        x_exp = b.and_(u, c(exp_mask))
        overflow = tf.math.greater(x_exp, c((bias + reduced_bias) << src_m))
        underflow = tf.math.less_equal(x_exp, c((bias - reduced_bias) << src_m))
        signed_zero = b.and_(u, c(sign_mask))
        signed_inf = b.or_(signed_zero, c(exp_mask))
        u = tf.where(overflow, signed_inf, u)
        u = tf.where(underflow, signed_zero, u)
    # XLA's CPU emitter returns NaN inputs unchanged, even with no mantissa bits left
    # (measured; the older LLVM emitter turned them into inf there). For bf16 it works in
    # f32 and converts back, which keeps only the NaN's sign.
    nan_out = _nan_like(x, x.dtype) if dtype.name == "bfloat16" else x
    return tf.where(is_nan, nan_out, tf.bitcast(u, x.dtype))


@rule("reduce_precision", dtypes="float32", targets="tflite",
      cases=_RP_CASES + [_poly_case(_rp(5, 10), 1)])
def reduce_precision_tflite(ctx, x, *, exponent_bits, mantissa_bits, **_):
    """The same on the int32 view, with & and | made of builtin ops (the compares are on
    masked patterns below 2^31, so signed compares order them as unsigned ones would)."""
    return _reduce_precision(x, np.dtype(np.float32), int(exponent_bits), int(mantissa_bits),
                             TFLiteBits)


# -- nextafter -------------------------------------------------------------------------------
_NEXTAFTER_CASES = [
    case("zeros, NaN, infinities, equal operands", lax.nextafter,
         [0.0, -0.0, 0.0, _NAN, 1.0, 1.0, _INF, -_INF, 1.0, -1.0, 2.0, -0.0, 5.0, _INF],
         [1.0, 1.0, -1.0, 1.0, _NAN, 1.0, 0.0, 0.0, 2.0, -2.0, 1.0, 0.0, -_INF, _INF]),
    case.custom("extremes: max to inf, min normal to subnormal", lax.nextafter,
                lambda rng, dt: [np.array([float(jnp.finfo(dt).max), float(jnp.finfo(dt).tiny),
                                           -float(jnp.finfo(dt).max),
                                           float(jnp.finfo(dt).smallest_subnormal)], dt),
                                 np.array([_INF, 0.0, -_INF, 0.0], dt)]),
    case.random(lax.nextafter, shapes=[(4, 5), (4, 5)]),
    case.random(lax.nextafter, shapes=[(4, 5), (1, 5)], name="broadcast"),
]


@rule("nextafter", dtypes="floating", cases=_NEXTAFTER_CASES)
def nextafter(ctx, x, y, **_):
    """XLA's (CHLO's) decomposition on the bits: +-1 on the sign-magnitude pattern, towards
    zero when the signs differ or |x| > |y|; from +-0 the smallest subnormal signed like y;
    y when x == y (a float compare, so denormals-are-zero like XLA) or both are zero; the
    canonical NaN when either is NaN."""
    return _nextafter(ctx, x, y, TFBits)


@rule("nextafter", dtypes="float32", targets="tflite", cases=_NEXTAFTER_CASES + [
    case("subnormal operands: x == y compares them as zero", lax.nextafter,
         [1e-45, 1e-45, -1e-45, 3e-40, 0.0, 1e-40, 1.2e-38],
         [0.0, 2e-45, 0.0, -3e-40, 1e-45, 1e-40, 0.0], dtypes="float32"),
    _poly_case(lax.nextafter, 2)])
def nextafter_tflite(ctx, x, y, **_):
    """The same on the int32 view, with & and | made of builtin ops and the x == y test
    flushing subnormals as XLA's compare does (TFLite's does not)."""
    return _nextafter(ctx, x, y, TFLiteBits)


@rule("nextafter", dtypes=["float32", "float64"], targets=("onnx", "tfjs"),
      cases=_NEXTAFTER_CASES + [
          case("subnormal operands, both directions across the normal boundary",
               lax.nextafter, [1e-45, 1e-45, -1e-45, 3e-40, 0.0, 1e-40, 1.2e-38, 1.1754944e-38],
               [0.0, 2e-45, 0.0, -3e-40, 1e-45, 1e-40, 0.0, 1.0], dtypes="float32"),
          case("powers of two, both directions", lax.nextafter,
               [1.0, 1.0, -1.0, -1.0, 2.0**-126, 2.0**100, -(2.0**-125), 0.5],
               [2.0, 0.0, -2.0, 0.0, 0.0, _INF, 0.0, -0.0]),
          _poly_case(lax.nextafter, 2)])
def nextafter_arith(ctx, x, y, **_):
    """The same without a bitcast (tf2onnx and TF.js have none), in float arithmetic:
    ``x +- max(|x| * 0.7 ulp(1), smallest subnormal)`` rounds to the neighbour of x, since
    the step lies strictly between half and one and a half of the spacing on either side of
    x (at a power of two, the spacing below is half the one above). The compare x == y
    treats subnormals as zero, as XLA's does; infinities step to the largest finite."""
    shape = ctx.shape(ctx.aval_out)
    x, y = tf.broadcast_to(x, shape), tf.broadcast_to(y, shape)
    fi = np.finfo(ctx.avals_in[0].dtype)
    const = lambda v: tf.constant(v, x.dtype)
    step = tf.maximum(tf.abs(x) * const(0.7 * float(fi.eps)), const(fi.smallest_subnormal))
    out = x + tf.where(y > x, step, -step)
    out = tf.where(tf.math.is_inf(x), tf.where(x > 0, const(fi.max), const(-fi.max)), out)
    tiny = const(fi.tiny)
    equal = tf.math.logical_or(tf.equal(x, y), tf.math.logical_and(tf.abs(x) < tiny,
                                                                   tf.abs(y) < tiny))
    out = tf.where(equal, y, out)
    either_nan = tf.math.logical_or(tf.math.is_nan(x), tf.math.is_nan(y))
    return tf.where(either_nan, const(_NAN), out)


def _nextafter(ctx, x, y, bit_ops):
    shape = ctx.shape(ctx.aval_out)
    x, y = tf.broadcast_to(x, shape), tf.broadcast_to(y, shape)
    nbits = np.dtype(ctx.avals_in[0].dtype).itemsize * 8
    b = bit_ops(nbits, signed=True)
    it = b.itype
    xi, yi = tf.bitcast(x, it), tf.bitcast(y, it)
    sign = tf.constant(-(1 << (nbits - 1)), it)  # only the sign bit set
    one = tf.constant(1, it)
    zero = tf.constant(0, it)
    x_abs = b.and_(xi, b.not_(sign))
    y_abs = b.and_(yi, b.not_(sign))
    y_sign = b.and_(yi, sign)
    signs_differ = tf.math.not_equal(b.and_(xi, sign), y_sign)
    shrink = tf.math.logical_or(tf.math.greater(x_abs, y_abs), signs_differ)
    out = xi + tf.where(shrink, -one, one)
    from_zero = tf.where(tf.math.equal(y_abs, zero), yi, b.or_(y_sign, one))
    out = tf.where(tf.math.equal(x_abs, zero), from_zero, out)
    out = tf.where(b.eq_daz(x, y), yi, out)
    either_nan = tf.math.logical_or(tf.math.is_nan(x), tf.math.is_nan(y))
    return tf.where(either_nan, tf.constant(_NAN, x.dtype), tf.bitcast(out, x.dtype))
