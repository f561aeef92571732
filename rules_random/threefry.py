"""Threefry-2x32 and the counter iota it hashes: bit-exact with JAX.

Threefry is written directly with uint32 TF ops (wrap-around add, rotate, xor) on whole
arrays: 20 rounds and 5 key injections, about a hundred ops per call whatever the array
size, where the old jax2tf unrolled one random call into ~1,700 ops. For the TFLite target
the rotations are written in the builtin ops TFLite takes (see ``_threefry_core``).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax._src.random import prng
from jax._src.random import threefry2x32 as _tf2x32

from core.rule import case, rule
from rules_random import _threefry_core as core3


def _u32(rng, dtype):
    return [rng.integers(0, 2**32, s, dtype=np.uint64).astype(np.uint32)
            for s in [(), (), (3, 4), (3, 4)]]


_EDGE = np.array([0, 1, 2**31 - 1, 2**31, 2**32 - 1], np.uint32)


def _edge_words(rng, dtype):
    """Keys 0 and 2**32-1 against every pair of edge words."""
    x1, x2 = np.meshgrid(_EDGE, _EDGE)
    return [np.uint32(2**32 - 1), np.uint32(0), x1, x2]


_HASH = lambda *a: _tf2x32.threefry2x32_p.bind(*a)
_THREEFRY_CASES = [
    case.custom("hash of random words", _HASH, _u32),
    case.custom("hash of edge words under keys 2**32-1 and 0", _HASH, _edge_words),
    case.custom("hash of (0, 3) words (joined to (2, 3))", lambda k1, k2, x1, x2: jnp.concatenate(
        [jnp.stack(_HASH(k1, k2, x1[:0], x2[:0])), jnp.stack(_HASH(k1, k2, x1[:2], x2[:2]))], 1),
        _u32),
    case.custom("threefry_2x32 of a counter",
                lambda k: _tf2x32.threefry_2x32(k, jnp.arange(10, dtype=jnp.uint32)),
                lambda rng, dt: [np.array([0, 42], np.uint32)]),
    case.custom("hash of (b, 4) words", _HASH,
                lambda rng, dt: _u32(rng, dt)[:2] + [w[:, :4] for w in _u32(rng, dt)[2:]],
                convert_kw={"polymorphic_shapes": [None, None, "(b, 4)", "(b, 4)"]}),
    case.custom("threefry_2x32 of b (odd) words", _tf2x32.threefry_2x32,
                lambda rng, dt: [np.array([0, 42], np.uint32), _u32(rng, dt)[2][:, 0]],
                convert_kw={"polymorphic_shapes": [None, "(b,)"]})]


@rule("threefry2x32", dtypes="uint32", cases=_THREEFRY_CASES)
def threefry2x32(ctx, k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds, as Salmon et al. and JAX define it."""
    return core3.rounds(*_to_shape(ctx, k1, k2, x1, x2), shared=ctx.target == "tf")


def _to_shape(ctx, *words):
    """The four operands broadcast to the result's shape where they differ from it; scalar
    keys stay scalars (the rounds broadcast them: two BroadcastTo fewer per call)."""
    shape, static = ctx.shape(ctx.aval_out), ctx.aval_out.shape
    return [v if v.shape == static or (i < 2 and v.shape.rank == 0)
            else tf.broadcast_to(v, shape) for i, v in enumerate(words)]


_IOTA_CASES = [
    case.custom("counts", lambda: prng.iota_2x32_shape((3, 5)), lambda rng, dt: []),
    case.custom("big counts", lambda: prng.iota_2x32_shape((2, 3, 70000)), lambda rng, dt: []),
    case.custom("counts of x's shape (b, 3, c)", lambda x: prng.iota_2x32_shape(x.shape),
                lambda rng, dt: [np.zeros((5, 3, 2), dt)],
                convert_kw={"polymorphic_shapes": ["(b, 3, c)"]})]


@rule("iota_2x32_shape", dtypes="uint32", cases=_IOTA_CASES)
def iota_2x32_shape(ctx, *, shape):
    """The row-major index of each element as a 64-bit count split into (hi, lo) words."""
    return list(iota_words64(ctx.shape(ctx.aval_out), floordiv=ctx.target == "onnx"))


def iota_words64(dims, floordiv: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
    """(hi, lo) uint32 words of each element's row-major index over ``dims`` (ints, or
    int32 TF scalars for symbolic sizes), counted in int64: the count may pass 2**31.
    ``floordiv``: the high word by FloorDiv (ONNX has no int64 shifts; in TF it takes
    twice the RightShift's time)."""
    n = 1
    for d in dims:
        n = n * (d if isinstance(d, int) else tf.cast(d, tf.int64))
    if isinstance(n, int) and n < 2 ** 31:      # the high word is zero: count in int32
        lo = tf.cast(tf.reshape(tf.range(n, dtype=tf.int32), dims), tf.uint32)
        return tf.raw_ops.ZerosLike(x=lo), lo     # one node (tf.zeros_like: a Fill and two)
    counts = tf.reshape(tf.range(n, dtype=tf.int64), dims)
    lo = tf.cast(tf.bitwise.bitwise_and(counts, 0xFFFFFFFF), tf.uint32)
    hi = (counts // 2**32 if floordiv
          else tf.bitwise.right_shift(counts, tf.constant(32, tf.int64)))
    return tf.cast(hi, tf.uint32), lo



# -- TFLite: the same in builtin ops (no uint32 LeftShift/BitwiseOr, no 64-bit shifts) -------

@rule("threefry2x32", dtypes="uint32", targets=("tflite", "onnx", "tfjs"),
      cases=_THREEFRY_CASES[:-1])   # the last: dynamic_slice's FloorDiv, refused by TFLite's table
def threefry2x32_tflite(ctx, k1, k2, x1, x2):
    """The rounds with rotations as ``x * 2**r + (x >> (32 - r))``."""
    return core3.rounds(*_to_shape(ctx, k1, k2, x1, x2), **core3.words_for(ctx.target))


@rule("iota_2x32_shape", dtypes="uint32", targets=("tflite", "onnx", "tfjs"), cases=[
    *_IOTA_CASES, case.custom("counts of (0, 3) (joined to (2, 3))", lambda: jnp.concatenate(
        [jnp.stack(prng.iota_2x32_shape((0, 3))), jnp.stack(prng.iota_2x32_shape((2, 3)))], 1),
        lambda rng, dt: [])])
def iota_2x32_shape_tflite(ctx, *, shape):
    """The index counted in int32 (TFLite tensors hold fewer than 2**31 elements)."""
    return list(core3.iota_words(ctx.shape(ctx.aval_out), ctx.tf_dtype(ctx.aval_out)))
