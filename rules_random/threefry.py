"""Threefry-2x32, the counter iota it hashes, and gamma sampling: bit-exact with JAX.

Threefry is written directly with uint32 TF ops (wrap-around add, rotate, xor) on whole
arrays: 20 rounds and 5 key injections, about a hundred ops per call whatever the array
size, where the old jax2tf unrolled one random call into ~1,700 ops.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax._src.random import prng
from jax._src.random import threefry2x32 as _tf2x32

from core.rule import case, rule

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA          # Threefry's key-schedule constant


def _rotl(v: tf.Tensor, r: int) -> tf.Tensor:
    return tf.bitwise.bitwise_or(tf.bitwise.left_shift(v, tf.constant(r, tf.uint32)),
                                 tf.bitwise.right_shift(v, tf.constant(32 - r, tf.uint32)))


def _u32(rng, dtype):
    return [rng.integers(0, 2**32, s, dtype=np.uint64).astype(np.uint32)
            for s in [(), (), (3, 4), (3, 4)]]


@rule("threefry2x32", dtypes="uint32", polymorphic=True, cases=[
    case.custom("hash of random words", lambda *a: _tf2x32.threefry2x32_p.bind(*a), _u32),
    case.custom("threefry_2x32 of a counter",
                lambda k: _tf2x32.threefry_2x32(k, jnp.arange(10, dtype=jnp.uint32)),
                lambda rng, dt: [np.array([0, 42], np.uint32)]),
    case.custom("hash of (b, 4) words", lambda *a: _tf2x32.threefry2x32_p.bind(*a),
                lambda rng, dt: _u32(rng, dt)[:2] + [w[:, :4] for w in _u32(rng, dt)[2:]],
                convert_kw={"polymorphic_shapes": [None, None, "(b, 4)", "(b, 4)"]}),
    case.custom("threefry_2x32 of b (odd) words", _tf2x32.threefry_2x32,
                lambda rng, dt: [np.array([0, 42], np.uint32), _u32(rng, dt)[2][:, 0]],
                convert_kw={"polymorphic_shapes": [None, "(b,)"]})])
def threefry2x32(ctx, k1, k2, x1, x2):
    """Threefry-2x32 with 20 rounds, as Salmon et al. and JAX define it."""
    shape = ctx.shape(ctx.aval_out)
    k1, k2, x1, x2 = (tf.broadcast_to(v, shape) for v in (k1, k2, x1, x2))
    ks = [k1, k2, tf.bitwise.bitwise_xor(tf.bitwise.bitwise_xor(k1, k2),
                                         tf.constant(_PARITY, tf.uint32))]
    x = [x1 + ks[0], x2 + ks[1]]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x[0] = x[0] + x[1]
            x[1] = tf.bitwise.bitwise_xor(x[0], _rotl(x[1], r))
        x[0] = x[0] + ks[(block + 1) % 3]
        x[1] = x[1] + ks[(block + 2) % 3] + tf.constant(block + 1, tf.uint32)
    return x


@rule("iota_2x32_shape", dtypes="uint32", polymorphic=True, cases=[
    case.custom("counts", lambda: prng.iota_2x32_shape((3, 5)), lambda rng, dt: []),
    case.custom("big counts", lambda: prng.iota_2x32_shape((2, 3, 70000)), lambda rng, dt: []),
    case.custom("counts of x's shape (b, 3, c)", lambda x: prng.iota_2x32_shape(x.shape),
                lambda rng, dt: [np.zeros((5, 3, 2), dt)],
                convert_kw={"polymorphic_shapes": ["(b, 3, c)"]})])
def iota_2x32_shape(ctx, *, shape):
    """The row-major index of each element as a 64-bit count split into (hi, lo) words."""
    dims = ctx.shape(ctx.aval_out)          # ints, or int32 TF scalars for symbolic dims
    n = 1
    for d in dims:                          # the count in int64: it may pass 2**31
        n = n * (d if isinstance(d, int) else tf.cast(d, tf.int64))
    counts = tf.reshape(tf.range(n, dtype=tf.int64), dims)
    lo = tf.cast(tf.bitwise.bitwise_and(counts, 0xFFFFFFFF), tf.uint32)
    hi = tf.cast(tf.bitwise.right_shift(counts, tf.constant(32, tf.int64)), tf.uint32)
    return [hi, lo]


def _gamma_case(impl, shape=(4,), spec=None, keys=None):
    """gamma(key, a) for a of ``shape``; with ``keys`` a number of keys (one per row of a,
    drawn through vmap); with ``spec`` converted with a's shape symbolic."""
    def fn(data, a):
        key = jax.random.wrap_key_data(data, impl=impl)
        if keys is None:
            return jax.random.gamma(key, a)
        return jax.vmap(jax.random.gamma)(key, a)

    def make(rng, dtype):
        key = jax.random.key(3, impl=impl)
        data = np.asarray(jax.random.key_data(
            key if keys is None else jax.random.split(key, keys)))
        return [data, rng.uniform(0.2, 5.0, shape).astype(dtype)]
    poly = {} if spec is None else {"polymorphic_shapes": spec}
    name = f"{impl} gamma" + (f" ({', '.join(str(s) for s in spec)})" if spec else "")
    return case.custom(name, fn, make, dtypes=["float32", "float64"], convert_kw=poly)


@rule("random_gamma", dtypes=["key", "floating"], polymorphic=True, cases=[
    _gamma_case("threefry2x32"),
    _gamma_case("threefry2x32", (5, 3), [None, "(b, 3)"]),
    _gamma_case("threefry2x32", (5, 2), ["(b, _)", "(b, 2)"], keys=5)])
def random_gamma(ctx, key, a, *, log_space):
    """JAX's own sampler (Marsaglia-Tsang with a while loop per element), vmapped, as JAX
    lowers it on CPU."""
    from jax._src.random import core as rcore
    impl = functools.partial(rcore._gamma_impl, log_space=log_space, use_vmap=True)
    return ctx.lower_fun(impl, key, a)[0]
