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

With symbolic dimensions (``polymorphic_shapes``) the sizes are TF scalars and the graph
gives what XLA gives for the sizes it runs with; the one choice made from the sizes, the
dimension Threefry halves, is then made at run time when it cannot be made when converting.
"""
from __future__ import annotations

import jax
import numpy as np
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_random import _threefry_core as core3

_U32, _U64 = tf.uint32, tf.uint64
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)


def _lo(v):            # low word of a uint64 tensor
    return tf.cast(tf.bitwise.bitwise_and(v, tf.constant(0xFFFFFFFF, _U64)), _U32)


def _hi(v):
    return tf.cast(tf.bitwise.right_shift(v, tf.constant(32, _U64)), _U32)


def _join(lo, hi):
    return tf.bitwise.bitwise_or(tf.cast(lo, _U64),
                                 tf.bitwise.left_shift(tf.cast(hi, _U64), tf.constant(32, _U64)))


def _iota64(n):
    return tf.cast(tf.range(n, dtype=tf.int64), _U64)


def _u64(n):
    """A count (a Python int, or an int64 TF scalar for a symbolic size) as a uint64."""
    return tf.constant(n, _U64) if isinstance(n, int) else tf.cast(n, _U64)


def _count(dims):
    """The number of elements: an int, or an int64 TF scalar if any dimension is one."""
    n = 1
    for d in dims:
        n = n * (d if isinstance(d, int) else tf.cast(d, tf.int64))
    return n


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


def _threefry(x, k0, k1):
    """Threefry-2x32 with 20 rounds; x: two uint32 arrays, k0/k1 uint32 scalars."""
    return core3.rounds(k0, k1, x[0], x[1])


def _philox_bits(words, n, wide):
    """n outputs (uint32, or uint64 if ``wide``) and the new counter's low 64 bits."""
    per_block = 2 if wide else 4
    blocks = (n + per_block - 1) // per_block
    # The 128-bit counter is (low=state[1], high=state[0]): XLA reverses a u64[2] state.
    low, high = _join(words[2], words[3]), _join(words[0], words[1])
    ctr_low = low + _iota64(blocks)
    ctr_high = tf.where(ctr_low < low, high + tf.constant(1, _U64), high)
    x = _philox([_lo(ctr_low), _hi(ctr_low), _lo(ctr_high), _hi(ctr_high)], words[0], words[1])
    if wide:
        x = [_join(x[0], x[1]), _join(x[2], x[3])]
    bits = tf.reshape(tf.stack(x, axis=1), [-1])[:n]
    return bits, low + _u64(blocks)


def _threefry32(words, shape, parity):
    """XLA halves the shape along its first even dimension (else its largest one), hashes
    counter + row-major index over the half shape, and interleaves the two output words
    along that dimension.

    ``shape`` holds ints and, for symbolic dimensions, int32 TF scalars; ``parity[i]`` is
    ``shape[i] % 2`` where it is known when converting (a symbolic ``2*b`` is even), else
    None. When the halved dimension is known it is done as above; when it depends on the
    sizes at run time, see ``_threefry32_dynamic``."""
    counter = _join(words[2], words[3])
    if not shape:
        inputs = counter + _iota64(1)
        x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
        return tf.reshape(x[0], []), counter + tf.constant(1, _U64)
    split = None
    for i, p in enumerate(parity):
        if p is None:
            break
        if p == 0:
            split = i
            break
    else:                             # every dimension odd: the largest one, if known
        if all(isinstance(d, int) for d in shape):
            split = max(range(len(shape)), key=lambda i: (shape[i], -i))
    if split is None:
        return _threefry32_dynamic(words, shape, counter)
    half = list(shape)
    half[split] = (shape[split] + 1) // 2
    m = _count(half)
    inputs = tf.reshape(counter + _iota64(m), half)
    x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
    full = list(shape)
    full[split] = 2 * half[split]
    bits = tf.reshape(tf.stack(x, axis=split + 1), full)
    if parity[split] != 0:            # odd: drop the second word of the last pair
        bits = tf.slice(bits, [0] * len(shape), list(shape))
    return bits, counter + _u64(m)


def _threefry32_dynamic(words, shape, counter):
    """The same when which dimension XLA halves is only known at run time: the halved
    dimension ``s`` is computed from the sizes, and each element at index ``i`` takes word
    ``i[s] % 2`` of the hash of counter + (its row-major index over the half shape, with
    ``i[s] // 2`` in dimension ``s``). The hash runs on the full shape instead of half of
    it, so this costs twice the static form."""
    rank = len(shape)
    dims = [tf.constant(d, tf.int64) if isinstance(d, int) else tf.cast(d, tf.int64)
            for d in shape]
    # the first even dimension, else the first of the largest ones
    largest, size = tf.constant(0, tf.int64), dims[0]
    for i in range(1, rank):
        bigger = dims[i] > size
        largest = tf.where(bigger, tf.constant(i, tf.int64), largest)
        size = tf.maximum(size, dims[i])
    split = largest
    for i in reversed(range(rank)):
        split = tf.where(dims[i] % 2 == 0, tf.constant(i, tf.int64), split)
    is_split = [tf.equal(split, i) for i in range(rank)]
    half = [tf.where(is_split[i], (dims[i] + 1) // 2, dims[i]) for i in range(rank)]
    index = tf.zeros([1] * rank, tf.int64)
    word = tf.zeros([1] * rank, tf.int64)
    stride = tf.constant(1, tf.int64)
    for i in reversed(range(rank)):
        along = [1] * rank
        along[i] = -1
        pos = tf.reshape(tf.range(dims[i], dtype=tf.int64), along)
        index = index + tf.where(is_split[i], pos // 2, pos) * stride
        word = word + tf.where(is_split[i], pos % 2, tf.zeros_like(pos))
        stride = stride * half[i]
    inputs = tf.broadcast_to(counter + tf.cast(index, _U64), shape)
    x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
    bits = tf.where(tf.broadcast_to(word, shape) == 0, x[0], x[1])
    return bits, counter + tf.cast(stride, _U64)


def _threefry64(words, n):
    counter = _join(words[2], words[3])
    inputs = counter + _iota64(n)
    x = _threefry([_lo(inputs), _hi(inputs)], words[0], words[1])
    return _join(x[0], x[1]), counter + _u64(n)


def _parity(d):
    """``d % 2`` for a dimension, or None if that depends on the value of a symbolic one."""
    from jax._src import core as jcore
    p = d % 2
    return int(p) if jcore.is_constant_dim(p) else None


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


def _direct_poly(algorithm, label, shape_of, x_shape, spec, out_dtype):
    """bits of a shape made from ``x``'s, converted with ``x``'s shape symbolic: the
    Threefry forms cover the halved dimension known when converting (an even ``2*b``) and
    known only at run time (``b`` of either parity)."""
    def make(rng, dtype):
        key, = _direct(algorithm, (), out_dtype).make_args(rng, dtype)
        return [key, np.zeros(x_shape, np.float32)]
    return case.custom(f"{algorithm.name} {out_dtype}{label} (x: {spec})",
                       lambda k, x: lax.rng_bit_generator(k, shape_of(x.shape), out_dtype,
                                                          algorithm), make,
                       dtypes=["uint64"] if out_dtype == "uint64" else None,
                       convert_kw={"polymorphic_shapes": [None, spec]})


def _bits_poly(impl, bit_width):
    def fn(data, x):
        return jax.random.bits(jax.random.wrap_key_data(data, impl=impl), (x.shape[0], 3),
                               dtype=f"uint{bit_width}")

    def make(rng, dtype):
        return [np.asarray(jax.random.key_data(jax.random.key(7, impl=impl))),
                np.zeros((5,), np.float32)]
    return case.custom(f"{impl} bits uint{bit_width}[b, 3] (x: (b,))", fn, make,
                       dtypes=["uint32"] if bit_width < 64 else ["uint64"],
                       convert_kw={"polymorphic_shapes": [None, "(b,)"]})


_ALGS = (lax.RandomAlgorithm.RNG_DEFAULT, lax.RandomAlgorithm.RNG_PHILOX,
         lax.RandomAlgorithm.RNG_THREE_FRY)
_POLY_FORMS = [   # (label, shape from x.shape, x's shape in the case, spec, dtype)
    ("[b, 3]", lambda s: (s[0], 3), (5, 2), "(b, 2)", "uint32"),
    ("[3, 2*b]", lambda s: (3, 2 * s[0]), (5, 2), "(b, 2)", "uint8"),
    ("[b, c, 3]", lambda s: (s[0], s[1], 3), (3, 5), "(b, c)", "uint16"),
    ("[c, b]", lambda s: (s[1], s[0]), (4, 3), "(b, c)", "uint32"),
    ("[b]", lambda s: (s[0],), (5, 2), "(b, 2)", "uint64"),
]


@rule("rng_bit_generator", dtypes=["uint32", "uint64"], when=_refuse, polymorphic=True, cases=[
    _bits("rbg", (2, 5)), _bits("rbg", (3,), 8), _bits("unsafe_rbg", (7,), 16),
    _bits("rbg", (3, 3), 64), _bits("unsafe_rbg", (), 64),
    *[_direct(a, s, t) for a in _ALGS for s, t in
      [((), "uint32"), ((5, 7), "uint8"), ((3, 1, 5), "uint16"), ((2, 6, 3), "uint32"),
       ((3, 5, 5), "uint32"), ((4, 5), "uint64"), ((3,), "uint64")]],
    *[_direct_poly(a, *form) for a in _ALGS for form in _POLY_FORMS],
    _bits_poly("rbg", 8), _bits_poly("unsafe_rbg", 32), _bits_poly("rbg", 64)])
def rng_bit_generator(ctx, key, *, shape, dtype, algorithm, **_):
    """XLA's CPU expansion of RngBitGenerator (Philox for RNG_DEFAULT). With symbolic
    dimensions the numbers are those XLA gives for the sizes the graph runs with."""
    dims = [ctx.dim(d) for d in shape]         # ints, or int32 TF scalars where symbolic
    n = _count(dims)
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
            bits, counter = _threefry32(words, dims, [_parity(d) for d in shape])
    else:
        bits, counter = _philox_bits(words, n, width == 64)
    bits = tf.reshape(bits, dims)
    if width < 32:
        bits = tf.cast(bits, ctx.tf_dtype(np.dtype(dtype)))   # keeps the low bits, as XLA
    new_words = tf.stack([words[0], words[1], _lo(counter), _hi(counter)])
    new_key = tf.bitcast(tf.reshape(new_words, [2, 2]), _U64) if key_is_u64 else new_words
    return [new_key, bits]
