"""``rng_bit_generator`` (the primitive behind the ``rbg``/``unsafe_rbg`` key impls), bit-exact
with XLA on CPU.

XLA's CPU backend expands RngBitGenerator into Philox-4x32-10 (also for RNG_DEFAULT) or
Threefry-2x32-20 on a u64[2] state; JAX hands it a uint32[4] key bitcast to u64[2]
(little-endian: u64[i] = w[2i] | w[2i+1] << 32). We redo that expansion with whole-array
uint32/uint64 TF ops (a few dozen ops whatever the output size):

- state = (key, counter). Philox uses the 128-bit counter (low=counter, high=key) and adds
  one per 4x32 block; outputs are the blocks' four words in row-major order. Threefry uses
  ``counter + i`` as the 2x32 input; for 32-bit outputs one call gives two words, which XLA
  lays out by splitting one dimension of the shape in halves (see ``_threefry32``).
- 8/16-bit outputs are the low bits of the 32-bit outputs; 64-bit ones join two words.
- the new state is (key, counter + number of blocks/inputs used).
"""
from __future__ import annotations

import math

import jax
import numpy as np
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule

_U32, _U64 = tf.uint32, tf.uint64
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)
_TF_ROT = ((13, 15, 26, 6), (17, 29, 16, 24))
_TF_PARITY = 0x1BD11BDA


def _lo(v):            # low word of a uint64 tensor
    return tf.cast(tf.bitwise.bitwise_and(v, tf.constant(0xFFFFFFFF, _U64)), _U32)


def _hi(v):
    return tf.cast(tf.bitwise.right_shift(v, tf.constant(32, _U64)), _U32)


def _join(lo, hi):
    return tf.bitwise.bitwise_or(tf.cast(lo, _U64),
                                 tf.bitwise.left_shift(tf.cast(hi, _U64), tf.constant(32, _U64)))


def _iota64(n):
    return tf.cast(tf.range(n, dtype=tf.int64), _U64)


def _philox(x, k0, k1):
    """Philox-4x32 with 10 rounds; x: four uint32 arrays, k0/k1 uint32 scalars."""
    for _ in range(10):
        p0 = tf.cast(x[0], _U64) * tf.constant(_PHILOX_MUL[0], _U64)
        p1 = tf.cast(x[2], _U64) * tf.constant(_PHILOX_MUL[1], _U64)
        x = [tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(_hi(p1), x[1]), k0), _lo(p1),
             tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(_hi(p0), x[3]), k1), _lo(p0)]
        k0 = k0 + tf.constant(_PHILOX_WEYL[0], _U32)
        k1 = k1 + tf.constant(_PHILOX_WEYL[1], _U32)
    return x


def _rotl(v, r):
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(v, tf.constant(r, _U32)),
                                 tf.bitwise.right_shift(v, tf.constant(32 - r, _U32)))


def _threefry(x, k0, k1):
    """Threefry-2x32 with 20 rounds; x: two uint32 arrays, k0/k1 uint32 scalars."""
    ks = [k0, k1, tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(k0, k1),
                                         tf.constant(_TF_PARITY, _U32))]
    x = [x[0] + ks[0], x[1] + ks[1]]
    for block in range(5):
        for r in _TF_ROT[block % 2]:
            x[0] = x[0] + x[1]
            x[1] = tf.bitwise.bitwise_xor(x[0], _rotl(x[1], r))
        x[0] = x[0] + ks[(block + 1) % 3]
        x[1] = x[1] + ks[(block + 2) % 3] + tf.constant(block + 1, _U32)
    return x


def _philox_bits(words, n, wide):
    """n outputs (uint32, or uint64 if ``wide``) and the new counter's low 64 bits."""
    per_block = 2 if wide else 4
    blocks = -(-n // per_block)
    # The 128-bit counter is (low=state[1], high=state[0]): XLA reverses a u64[2] state.
    low, high = _join(words[2], words[3]), _join(words[0], words[1])
    ctr_low = low + _iota64(blocks)
    ctr_high = tf.where(ctr_low < low, high + tf.constant(1, _U64), high)
    x = _philox([_lo(ctr_low), _hi(ctr_low), _lo(ctr_high), _hi(ctr_high)], words[0], words[1])
    if wide:
        x = [_join(x[0], x[1]), _join(x[2], x[3])]
    bits = tf.reshape(tf.stack(x, axis=1), [-1])[:n]
    return bits, low + tf.constant(blocks, _U64)


def _threefry32(words, shape):
    """XLA halves the shape along its first even dimension (else its largest one), hashes
    counter + row-major index over the half shape, and interleaves the two output words
    along that dimension."""
    counter = _join(words[2], words[3])
    if not shape:
        inputs = counter + _iota64(1)
        x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
        return tf.reshape(x[0], []), counter + tf.constant(1, _U64)
    even = [i for i, d in enumerate(shape) if d % 2 == 0]
    split = even[0] if even else max(range(len(shape)), key=lambda i: (shape[i], -i))
    half = list(shape)
    half[split] = -(-shape[split] // 2)
    m = math.prod(half)
    inputs = tf.reshape(counter + _iota64(m), half)
    x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
    full = list(shape)
    full[split] = 2 * half[split]
    bits = tf.reshape(tf.stack(x, axis=split + 1), full)
    if full[split] != shape[split]:
        bits = tf.slice(bits, [0] * len(shape), list(shape))
    return bits, counter + tf.constant(m, _U64)


def _threefry64(words, n):
    counter = _join(words[2], words[3])
    inputs = counter + _iota64(n)
    x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
    return _join(x[0], x[1]), counter + tf.constant(n, _U64)


def _algorithm_name(algorithm):
    return getattr(algorithm, "name", str(algorithm))


def _refuse(eqn):
    key = eqn.invars[0].aval
    if (tuple(key.shape), np.dtype(key.dtype)) not in (((4,), np.uint32), ((2,), np.uint64)):
        return f"key {key.str_short()} (XLA takes uint32[4] or uint64[2])"
    if _algorithm_name(eqn.params["algorithm"]) not in ("RNG_DEFAULT", "RNG_PHILOX",
                                                        "RNG_THREE_FRY"):
        return f"algorithm {eqn.params['algorithm']}"
    return None


def _bits(impl, shape, bit_width=32):
    def fn(data):
        return jax.random.bits(jax.random.wrap_key_data(data, impl=impl), shape,
                               dtype=f"uint{bit_width}")

    def make(rng, dtype):
        return [np.asarray(jax.random.key_data(jax.random.key(7, impl=impl)))]
    return case.custom(f"{impl} bits uint{bit_width}{list(shape)}", fn, make,
                       dtypes=["uint32"] if bit_width < 64 else ["uint64"])


def _direct(algorithm, shape, out_dtype):
    def make(rng, dtype):
        words = rng.integers(0, 2**32, (4,), dtype=np.uint64).astype(np.uint32)
        words[2:] = [0xFFFFFFFC, 0xFFFFFFFF]      # the 64-bit counter wraps around
        return [words if dtype == np.uint32 else words.view(np.uint64)]
    return case.custom(f"{algorithm.name} {out_dtype}{list(shape)}",
                       lambda k: lax.rng_bit_generator(k, shape, out_dtype, algorithm), make,
                       dtypes=["uint64"] if out_dtype == "uint64" else None)


_ALGS = (lax.RandomAlgorithm.RNG_DEFAULT, lax.RandomAlgorithm.RNG_PHILOX,
         lax.RandomAlgorithm.RNG_THREE_FRY)


@rule("rng_bit_generator", dtypes=["uint32", "uint64"], when=_refuse, cases=[
    _bits("rbg", (2, 5)), _bits("rbg", (3,), 8), _bits("unsafe_rbg", (7,), 16),
    _bits("rbg", (3, 3), 64), _bits("unsafe_rbg", (), 64),
    *[_direct(a, s, t) for a in _ALGS for s, t in
      [((), "uint32"), ((5, 7), "uint8"), ((3, 1, 5), "uint16"), ((2, 6, 3), "uint32"),
       ((3, 5, 5), "uint32"), ((4, 5), "uint64"), ((3,), "uint64")]]])
def rng_bit_generator(ctx, key, *, shape, dtype, algorithm, **_):
    """XLA's CPU expansion of RngBitGenerator (Philox for RNG_DEFAULT)."""
    shape = [int(d) for d in shape]
    n = math.prod(shape)
    width = np.dtype(dtype).itemsize * 8
    if width not in (8, 16, 32, 64):
        raise UnsupportedError(f"rng_bit_generator: dtype {dtype} (XLA makes uint8..uint64)")
    key_is_u64 = np.dtype(ctx.avals_in[0].dtype) == np.uint64
    flat = tf.reshape(tf.bitcast(key, _U32), [4]) if key_is_u64 else key
    words = [flat[i] for i in range(4)]
    if _algorithm_name(algorithm) == "RNG_THREE_FRY":
        if width == 64:
            bits, counter = _threefry64(words, n)
        else:
            bits, counter = _threefry32(words, shape)
    else:
        bits, counter = _philox_bits(words, n, width == 64)
    bits = tf.reshape(bits, shape)
    if width < 32:
        bits = tf.cast(bits, ctx.tf_dtype(np.dtype(dtype)))   # keeps the low bits, as XLA
    new_words = tf.stack([words[0], words[1], _lo(counter), _hi(counter)])
    new_key = tf.bitcast(tf.reshape(new_words, [2, 2]), _U64) if key_is_u64 else new_words
    return [new_key, bits]
