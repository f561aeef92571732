"""``rng_bit_generator`` (the primitive behind the ``rbg``/``unsafe_rbg`` key impls), bit-exact
with XLA on CPU.

XLA's CPU backend expands RngBitGenerator into Philox-4x32-10 (also for RNG_DEFAULT) or
Threefry-2x32-20 on a u64[2] state; JAX hands it a uint32[4] key bitcast to u64[2]
(little-endian: u64[i] = w[2i] | w[2i+1] << 32). We redo that expansion with whole-array
uint32 TF ops (a few dozen ops whatever the output size), 64-bit values held as
(low, high) word pairs:

- state = (key, counter). Philox uses the 128-bit counter (low=counter, high=key) and adds
  one per 4x32 block; outputs are the blocks' four words in row-major order. Threefry uses
  ``counter + i`` as the 2x32 input; for 32-bit outputs one call gives two words, which XLA
  lays out by splitting one dimension of the shape in halves (see ``_threefry32``).
- 8/16-bit outputs are the low bits of the 32-bit outputs; 64-bit ones join two words.
- the new state is (key, counter + number of blocks/inputs used).

With symbolic dimensions (``polymorphic_shapes``) the sizes are TF scalars and the graph
gives what XLA gives for the sizes it runs with; the one choice made from the sizes, the
dimension Threefry halves, is then made at run time when it cannot be made when converting.

For TFLite (``lite``) the same runs in the uint32 ops its builtins take (Add, Mul, BitwiseXor,
RightShift, Cast; no compares, BitwiseAnd/Or, LeftShift or uint64 arithmetic): carries,
rotations and Philox's 32x32->64 products come from ``_threefry_core``; counts are int32.
"""
from __future__ import annotations

import jax
import numpy as np
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_random import _threefry_core as core3

_U32 = tf.uint32
_PHILOX_MUL = (0xD2511F53, 0xCD9E8D57)
_PHILOX_WEYL = (0x9E3779B9, 0xBB67AE85)


def _itype(lite):
    """Counts and indices: int32 for TFLite (its tensors hold fewer than 2**31 elements and
    it takes no int64 FloorDiv), else int64."""
    return tf.int32 if lite else tf.int64


def _count(dims, lite):
    """The number of elements: an int, or a TF scalar if any dimension is symbolic."""
    n = 1
    for d in dims:
        n = n * (d if isinstance(d, int) else tf.cast(d, _itype(lite)))
    return n


def _words(n, lite):
    """A count or index (an int, or an integer tensor) as (low, high) uint32 words."""
    if isinstance(n, int):
        return tf.constant(n & 0xFFFFFFFF, _U32), tf.constant(n >> 32, _U32)
    hi, lo = core3.hi_lo_words(tf.cast(n, _itype(lite)))
    return lo, hi


def _iota(dims, lite):
    """(low, high) words of each element's row-major index over ``dims``."""
    if lite:
        hi, lo = core3.iota_words(dims)
        return lo, hi
    return _words(tf.reshape(tf.range(_count(dims, lite), dtype=tf.int64), dims), lite)


def _add(a, b, lite, carry_out=False):
    """a + b mod 2**64 on (low, high) word pairs; with ``carry_out`` also the carry."""
    lo, t = a[0] + b[0], a[1] + b[1]
    c = core3.carry(a[0], b[0], lite)
    total = (lo, t + c)
    if not carry_out:
        return total
    return total, core3.carry(a[1], b[1], lite) + core3.carry(t, c, lite)


def _philox(x, k0, k1, lite):
    """Philox-4x32 with 10 rounds; x: four uint32 arrays, k0/k1 uint32 scalars."""
    for _ in range(10):
        hi0, lo0 = core3.mul_hi_lo(x[0], _PHILOX_MUL[0], lite)
        hi1, lo1 = core3.mul_hi_lo(x[2], _PHILOX_MUL[1], lite)
        x = [tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(hi1, x[1]), k0), lo1,
             tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(hi0, x[3]), k1), lo0]
        k0 = k0 + tf.constant(_PHILOX_WEYL[0], _U32)
        k1 = k1 + tf.constant(_PHILOX_WEYL[1], _U32)
    return x


def _threefry(x, words, lite):
    """Threefry-2x32 with 20 rounds of the (low, high) pair x under key words 0 and 1."""
    rotl = core3.rotl_builtin if lite else core3.rotl_bitwise
    return core3.rounds(words[0], words[1], x[0], x[1], rotl=rotl)


def _philox_bits(words, n, wide, lite):
    """n outputs (uint32, or (low, high) pairs ``[n, 2]`` if ``wide``) and the new counter."""
    per_block = 2 if wide else 4
    blocks = (n + per_block - 1) // per_block
    # The 128-bit counter is (low=state[1], high=state[0]): XLA reverses a u64[2] state.
    low, high = (words[2], words[3]), (words[0], words[1])
    ctr_low, c = _add(low, _iota([blocks], lite), lite, carry_out=True)
    ctr_high = _add(high, (c, tf.constant(0, _U32)), lite)
    x = _philox([*ctr_low, *ctr_high], words[0], words[1], lite)
    bits = tf.reshape(tf.stack(x, axis=1), [-1, 2] if wide else [-1])[:n]
    return bits, _add(low, _words(blocks, lite), lite)


def _threefry32(words, shape, parity, lite):
    """XLA halves the shape along its first even dimension (else its largest one), hashes
    counter + row-major index over the half shape, and interleaves the two output words
    along that dimension.

    ``shape`` holds ints and, for symbolic dimensions, int32 TF scalars; ``parity[i]`` is
    ``shape[i] % 2`` where it is known when converting (a symbolic ``2*b`` is even), else
    None. When the halved dimension is known it is done as above; when it depends on the
    sizes at run time, see ``_threefry32_dynamic``."""
    counter = (words[2], words[3])
    if not shape:
        return _threefry(counter, words, lite)[0], _add(counter, _words(1, lite), lite)
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
        return _threefry32_dynamic(words, shape, counter, lite)
    half = list(shape)
    half[split] = (shape[split] + 1) // 2
    x = _threefry(_add(counter, _iota(half, lite), lite), words, lite)
    full = list(shape)
    full[split] = 2 * half[split]
    bits = tf.reshape(tf.stack(x, axis=split + 1), full)
    if parity[split] != 0:            # odd: drop the second word of the last pair
        bits = tf.slice(bits, [0] * len(shape), list(shape))
    return bits, _add(counter, _words(_count(half, lite), lite), lite)


def _threefry32_dynamic(words, shape, counter, lite):
    """The same when which dimension XLA halves is only known at run time: the halved
    dimension ``s`` is computed from the sizes, and each element at index ``i`` takes word
    ``i[s] % 2`` of the hash of counter + (its row-major index over the half shape, with
    ``i[s] // 2`` in dimension ``s``). The hash runs on the full shape instead of half of
    it, so this costs twice the static form."""
    rank, itype = len(shape), _itype(lite)
    dims = [tf.constant(d, itype) if isinstance(d, int) else tf.cast(d, itype) for d in shape]
    # the first even dimension, else the first of the largest ones
    largest, size = tf.constant(0, itype), dims[0]
    for i in range(1, rank):
        bigger = dims[i] > size
        largest = tf.where(bigger, tf.constant(i, itype), largest)
        size = tf.maximum(size, dims[i])
    split = largest
    for i in reversed(range(rank)):
        split = tf.where(dims[i] % 2 == 0, tf.constant(i, itype), split)
    is_split = [tf.equal(split, i) for i in range(rank)]
    half = [tf.where(is_split[i], (dims[i] + 1) // 2, dims[i]) for i in range(rank)]
    index = tf.zeros([1] * rank, itype)
    word = tf.zeros([1] * rank, itype)
    stride = tf.constant(1, itype)
    for i in reversed(range(rank)):
        along = [1] * rank
        along[i] = -1
        pos = tf.reshape(tf.range(dims[i], dtype=itype), along)
        index = index + tf.where(is_split[i], pos // 2, pos) * stride
        word = word + tf.where(is_split[i], pos % 2, tf.constant(0, itype))
        stride = stride * half[i]
    x = _threefry(_add(counter, _words(tf.broadcast_to(index, shape), lite), lite), words, lite)
    bits = tf.where(tf.equal(tf.broadcast_to(word, shape), 0), x[0], x[1])
    return bits, _add(counter, _words(stride, lite), lite)


def _threefry64(words, n, lite):
    """n (low, high) pairs ``[n, 2]``: the two words of Threefry of counter + i."""
    counter = (words[2], words[3])
    x = _threefry(_add(counter, _iota([n], lite), lite), words, lite)
    return tf.stack(x, axis=-1), _add(counter, _words(n, lite), lite)


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


def _direct(algorithm, shape, out_dtype, words=(None, None, 0xFFFFFFFC, 0xFFFFFFFF), label=""):
    """By default the 64-bit counter wraps around; ``words``: the key's words (None: random)."""
    def make(rng, dtype):
        w = rng.integers(0, 2**32, (4,), dtype=np.uint64).astype(np.uint32)
        w[:] = [r if v is None else v for r, v in zip(w, words)]
        return [w if dtype == np.uint32 else w.view(np.uint64)]
    return case.custom(f"{algorithm.name} {out_dtype}{list(shape)}{label}",
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


_CASES = [
    _bits("rbg", (2, 5)), _bits("rbg", (3,), 8), _bits("unsafe_rbg", (7,), 16),
    _bits("rbg", (3, 3), 64), _bits("unsafe_rbg", (), 64),
    *[_direct(a, s, t) for a in _ALGS for s, t in
      [((), "uint32"), ((5, 7), "uint8"), ((3, 1, 5), "uint16"), ((2, 6, 3), "uint32"),
       ((3, 5, 5), "uint32"), ((4, 5), "uint64"), ((3,), "uint64")]],
    *[_direct(a, (3, 4), "uint32", w, label) for a in _ALGS for w, label in [
        ((0xFFFFFFFF,) * 3 + (0x7FFFFFFF,), ", all-ones words, the counter's low word wraps"),
        ((0, 0, 0, 0), ", zero key")]],
    *[_direct_poly(a, *form) for a in _ALGS for form in _POLY_FORMS],
    _bits_poly("rbg", 8), _bits_poly("unsafe_rbg", 32), _bits_poly("rbg", 64)]


@rule("rng_bit_generator", dtypes=["uint32", "uint64"], when=_refuse,
      cases=_CASES)
def rng_bit_generator(ctx, key, *, shape, dtype, algorithm, **_):
    """XLA's CPU expansion of RngBitGenerator (Philox for RNG_DEFAULT). With symbolic
    dimensions the numbers are those XLA gives for the sizes the graph runs with."""
    return _generate(ctx, key, shape, dtype, algorithm, lite=False)


@rule("rng_bit_generator", dtypes=["uint32", "uint64"], when=_refuse,
      targets="tflite", cases=_CASES)
def rng_bit_generator_tflite(ctx, key, *, shape, dtype, algorithm, **_):
    """The same in the uint32 ops TFLite's builtins take."""
    return _generate(ctx, key, shape, dtype, algorithm, lite=True)


def _generate(ctx, key, shape, dtype, algorithm, lite):
    dims = [ctx.dim(d) for d in shape]         # ints, or int32 TF scalars where symbolic
    n = _count(dims, lite)
    width = np.dtype(dtype).itemsize * 8
    if width not in (8, 16, 32, 64):
        raise UnsupportedError(f"rng_bit_generator: dtype {dtype} (XLA makes uint8..uint64)")
    key_is_u64 = np.dtype(ctx.avals_in[0].dtype) == np.uint64
    flat = tf.reshape(tf.bitcast(key, _U32), [4]) if key_is_u64 else key
    words = [flat[i] for i in range(4)]
    if _algorithm_name(algorithm) == "RNG_THREE_FRY":
        if width == 64:
            bits, counter = _threefry64(words, n, lite)
        else:
            bits, counter = _threefry32(words, dims, [_parity(d) for d in shape], lite)
    else:
        bits, counter = _philox_bits(words, n, width == 64, lite)
    if width == 64:
        bits = tf.bitcast(bits, tf.uint64)                    # (low, high) pairs
    bits = tf.reshape(bits, dims)
    if width < 32:
        bits = tf.cast(bits, ctx.tf_dtype(np.dtype(dtype)))   # keeps the low bits, as XLA
    new_words = tf.stack([words[0], words[1], *counter])
    new_key = tf.bitcast(tf.reshape(new_words, [2, 2]), tf.uint64) if key_is_u64 else new_words
    return [new_key, bits]
