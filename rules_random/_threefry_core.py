"""Threefry-2x32 (20 rounds) on whole uint32 arrays, shared by the threefry, key and rbg
rules, and the uint32 word forms the TFLite target needs (rotations, the carry of an
addition, the high word of a product).

The rounds need a rotate-left by a constant. For TF it is ``(x << r) | (x >> (32 - r))``;
TFLite's builtins take no uint32 LeftShift or BitwiseOr (measured: uint32 Add, Mul, which
wrap mod 2**32, BitwiseXor, RightShift, which is logical, and Cast convert), so there it
is ``x * 2**r + (x >> (32 - r))``: the two halves share no bit, so ``+`` is ``|``.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from core.errors import UnsupportedError
from rules_lax.bitwise import shr_u32

ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
PARITY = 0x1BD11BDA          # Threefry's key-schedule constant
_U32 = tf.uint32


def rotl_bitwise(v: tf.Tensor, r: int) -> tf.Tensor:
    """For TF: ``v * 2**r`` (wraps) plus ``v >> (32 - r)`` (the two share no bit), the
    shift in float64: TF's uint32 shift and or kernels are slow (``shr_u32``); they were
    80% of a sampler's time."""
    return v * tf.constant(2 ** r, _U32) + shr_u32(v, 32 - r)


def rotl_builtin(v: tf.Tensor, r: int) -> tf.Tensor:
    return v * tf.constant(2 ** r, _U32) + _shr(v, 32 - r)


def _shr(v, s: int):
    return tf.bitwise.right_shift(v, tf.constant(s, _U32))


def low_bits(v: tf.Tensor, k: int) -> tf.Tensor:
    """``v & (2**k - 1)`` in builtin ops: a Mul that wraps, then a RightShift."""
    return _shr(v * tf.constant(2 ** (32 - k), _U32), 32 - k)


def carry(a, b, builtin: bool = False) -> tf.Tensor:
    """The carry (0 or 1) out of the uint32 sum ``a + b``. ``builtin``: without compares
    or BitwiseAnd, ``(a // 2 + b // 2 + (a & b & 1)) >> 31``."""
    if not builtin:
        return tf.cast(a + b < a, _U32)
    return _shr(_shr(a, 1) + _shr(b, 1) + low_bits(a, 1) * low_bits(b, 1), 31)


def mul_hi_lo(a: tf.Tensor, m: int, builtin: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(high, low) words of the 64-bit product of uint32 ``a`` and the constant ``m``.
    ``builtin``: from 16-bit halves, whose products fit in 32 bits (no uint64 in TFLite):
    with a = a1 2^16 + a0, the high word is a1 m1 + (a1 m0 >> 16) + (a0 m1 >> 16) plus
    the carry of the middle column, (a0 m0 >> 16) + low16(a1 m0) + low16(a0 m1) >> 16."""
    lo = a * tf.constant(m, _U32)
    if not builtin:
        wide = tf.cast(a, tf.uint64) * tf.constant(m, tf.uint64)
        return tf.cast(tf.bitwise.right_shift(wide, tf.constant(32, tf.uint64)), _U32), lo
    c = lambda v: tf.constant(v, _U32)
    a1, a0, m1, m0 = _shr(a, 16), low_bits(a, 16), m >> 16, m & 0xFFFF
    p, q = a1 * c(m0), a0 * c(m1)
    mid = _shr(a0 * c(m0), 16) + low_bits(p, 16) + low_bits(q, 16)
    return a1 * c(m1) + _shr(p, 16) + _shr(q, 16) + _shr(mid, 16), lo


def rounds(k0, k1, x0, x1, rotl=rotl_bitwise, xor=tf.bitwise.bitwise_xor,
           shared: bool = False) -> list:
    """Threefry-2x32 as Salmon et al. and JAX define it: 20 rounds, 5 key injections.
    All four operands must already have the result's shape (or be scalar keys), uint32
    words, or int32 tensors holding their bits (TF.js, with that target's ``rotl`` and
    ``xor``: see :func:`words_for`).

    ``shared`` (TF's uint32 form only): a call of one TF function that every threefry of
    the graph calls, so the ~180 ops of the 20 rounds are in the graph once, not once per
    ``split``/``random_bits`` (TF inlines the call when it runs the graph: same speed)."""
    if 0 in x0.shape:      # nothing to hash (TF.js's kernels give a wrong shape on empties)
        return [tf.zeros_like(x0), tf.zeros_like(x0)]
    if shared:
        return list(_shared_rounds(k0, k1, x0, x1))
    return _rounds(k0, k1, x0, x1, rotl, xor)


@tf.function(input_signature=[tf.TensorSpec(None, _U32)] * 4, autograph=False)
def _shared_rounds(k0, k1, x0, x1):
    return _rounds(k0, k1, x0, x1, rotl_bitwise, tf.bitwise.bitwise_xor)


def _rounds(k0, k1, x0, x1, rotl, xor) -> list:
    dt = k0.dtype
    parity = tf.constant(np.uint32(PARITY).view(np.int32) if dt == tf.int32 else PARITY, dt)
    ks = [k0, k1, xor(xor(k0, k1), parity)]
    x = [x0 + ks[0], x1 + ks[1]]
    for block in range(5):
        for r in ROTATIONS[block % 2]:
            x[0] = x[0] + x[1]
            x[1] = xor(x[0], rotl(x[1], r))
        x[0] = x[0] + ks[(block + 1) % 3]
        x[1] = x[1] + ks[(block + 2) % 3] + tf.constant(block + 1, dt)
    return x


def words_for(target: str) -> dict:
    """The ``rotl``/``xor`` forms of :func:`rounds` for a target: uint32 bitwise ops for
    TF, builtins for TFLite and ONNX, int32 arithmetic for TF.js (no uint32 and no bitwise
    ops there: uint32 words are int32 bits, rules_lax.tfjs)."""
    if target == "tfjs":
        from rules_lax.tfjs import u32_rotl, u32_xor
        return {"rotl": u32_rotl, "xor": u32_xor}
    return {"rotl": rotl_builtin if target in ("tflite", "onnx") else rotl_bitwise}


# -- TFLite forms --------------------------------------------------------------------------

def count(dims):
    """The number of elements of a shape (ints, or int32 TF scalars for symbolic sizes)."""
    n = 1
    for d in dims:
        n = n * d
    return n


def iota_words(dims, held=_U32) -> tuple[tf.Tensor, tf.Tensor]:
    """(hi, lo) uint32 words of each element's row-major index, in builtin ops.

    The index is counted in int32: a TFLite tensor cannot hold 2**31 elements, so
    ``hi`` is zero; a larger static shape is refused."""
    n = count(dims)
    if isinstance(n, int) and n >= 2 ** 31:
        raise UnsupportedError(f"a PRNG counter over {n} elements (shape {list(dims)}): "
                               "TFLite tensors hold fewer than 2**31 elements")
    lo = (tf.zeros(dims, tf.int32) if isinstance(n, int) and n == 0
          else tf.reshape(tf.range(n, dtype=tf.int32), dims))
    lo = lo if held == tf.int32 else tf.cast(lo, held)    # TF.js holds words as int32
    return zeros_like(lo), lo


def hi_lo_words(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """An integer array as (hi, lo) uint32 words, as JAX's threefry seed splits it: 64-bit
    ints by bitcasts (TFLite has no 64-bit shifts and bitcasts int64 to uint32 only through
    uint64; little-endian, word 0 is the low one), narrower ones converted as
    convert_element_type does (sign- or zero-extended) with a zero high word."""
    if x.dtype.size == 8:
        w = tf.bitcast(tf.bitcast(x, tf.uint64) if x.dtype == tf.int64 else x, _U32)
        return w[..., 1], w[..., 0]
    lo = tf.cast(x, _U32)
    return zeros_like(lo), lo


def zeros_like(x):
    """Zeros of x's shape and dtype (ZerosLike is no TFLite builtin)."""
    return x * tf.constant(0, x.dtype)


def hash_with_keys(keys: tf.Tensor, x0, x1, shape, key_rank: int,
                   target: str = "tflite") -> list:
    """Threefry of (x0, x1) under keys ``(*kb, 2)`` (key data of a key array of rank
    ``key_rank``), in builtin ops; every operand is broadcast to ``shape`` whose leading
    ``key_rank`` dimensions are the keys' (each key hashes its own trailing block)."""
    extra = len(shape) - key_rank
    k0, k1 = keys[..., 0], keys[..., 1]
    for _ in range(extra):
        k0, k1 = tf.expand_dims(k0, -1), tf.expand_dims(k1, -1)
    return rounds(*(tf.broadcast_to(v, shape) for v in (k0, k1, x0, x1)), **words_for(target))
