"""Typed PRNG keys (``key<fry>``, ``key<rbg>``) and the primitives that make and use them.

A key array travels through the TF graph as its key data: ``key<fry>[n]`` is a
``uint32[n, 2]`` tensor, ``key<rbg>[n]`` a ``uint32[n, 4]`` one. The random primitives are
lowered exactly as JAX lowers them: JAX's own implementation functions (seed, split,
fold_in, random_bits of the key's PRNG implementation), vmapped over the key array's
dimensions, traced on the key data and lowered rule by rule, so the bits are JAX's bits.
Shape ops on keys (slice, squeeze, concatenate, select_n, ...) act on the key data with
the key dimensions carried along.

Symbolic dimensions (``polymorphic_shapes``) go through the same way: JAX's implementation
functions are traced with them, so ``jax.random.normal(key, x.shape)`` for a batch ``x`` of
any size gives JAX's bits for the size the graph runs with.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from jax._src import core as jcore
from jax._src.random import prng
from jax import lax

from core.dtypes import is_key, physical_aval
from core.errors import UnsupportedError
from core.rule import case, rule
from rules_random import _threefry_core as core3
from rules_random.threefry import iota_words64

IMPLS = {"threefry2x32": "key<fry>", "rbg": "key<rbg>", "unsafe_rbg": "key<urbg>"}


def _lower_impl(ctx, fn, *args, avals=None):
    """``ctx.lower_fun`` of a PRNG implementation's function. With symbolic dimensions
    JAX's own code may need a fact about them it cannot decide (e.g. with
    ``jax_threefry_partitionable=False``, whether ``16*b`` is a multiple of 32): refused
    as JAX's export refuses it, never guessed."""
    from jax._src.export.shape_poly import InconclusiveDimensionOperation
    try:
        return ctx.lower_fun(fn, *args, avals=avals)
    except InconclusiveDimensionOperation as exc:
        eqn = ctx.eqn
        first = str(exc).split("\n")[0]
        raise UnsupportedError(
            f"{eqn.primitive.name} {' '.join(str(v.aval) for v in eqn.invars)} "
            f"{dict(eqn.params)}: JAX's implementation of it cannot be traced with these "
            f"symbolic dimensions ({first}); give them concrete sizes"
            + (", or use jax_threefry_partitionable=True (JAX's default)"
               if not jax.config.jax_threefry_partitionable else "")) from None


def _seeds(rng, dtype):
    return [np.array([0, 1, 42, 2**31 - 1], dtype=dtype) if np.dtype(dtype).itemsize >= 4
            else np.array([0, 1, 42, 127], dtype=dtype)]


def _keydata(impl):
    def make(rng, dtype):
        return [np.asarray(jax.random.key_data(jax.random.split(jax.random.key(7, impl=impl), 3)))]
    return make


def _via_impl(fn, impl="threefry2x32"):
    """A case function taking raw key data, as converted functions do."""
    return lambda data: fn(jax.random.wrap_key_data(data, impl=impl))


def _per_impl(name: str, fn, dtypes_of=lambda key_dtype: key_dtype, impls=IMPLS):
    """One case per PRNG implementation, each run on that implementation's key dtype."""
    return [case.custom(f"{impl}: {name}", _via_impl(fn, impl), _keydata(impl),
                        dtypes=dtypes_of(kd)) for impl, kd in IMPLS.items() if impl in impls]


def _poly_per_impl(name: str, fn, x_shape=(5, 4), spec="(b, 4)",
                   dtypes_of=lambda key_dtype: key_dtype, impls=IMPLS):
    """One case per PRNG implementation of ``fn(keys, x)`` (``keys``: three keys wrapped
    from fixed-shape key data), converted with ``x``'s shape symbolic, as in a model
    that draws ``jax.random.normal(key, x.shape)`` for a batch of any size."""
    def make(impl):
        def make_args(rng, dtype):
            return [*_keydata(impl)(rng, dtype), rng.standard_normal(x_shape).astype(np.float32)]
        return make_args
    return [case.custom(f"{impl}: {name} (x: {spec})",
                        lambda data, x, impl=impl: fn(jax.random.wrap_key_data(data, impl=impl), x),
                        make(impl), dtypes=dtypes_of(kd),
                        convert_kw={"polymorphic_shapes": [None, spec]})
            for impl, kd in IMPLS.items() if impl in impls]


def _seed_cases():
    cases = []
    for impl in IMPLS:
        fn = (lambda s, impl=impl: jax.random.key_data(
            jax.vmap(lambda x: jax.random.key(x, impl=impl))(s)))
        cases += [case.custom(f"{impl}: seed", fn, _seeds, dtypes=["int32", "uint32"]),
                  case.custom(f"{impl}: seed (seeds: (b,))", fn, _seeds,
                              dtypes=["int32", "uint32"], convert_kw={"polymorphic_shapes": ["(b,)"]})]
    return cases


@rule("random_seed", dtypes="integer", cases=_seed_cases())
def random_seed(ctx, seeds, *, impl):
    """``impl.seed`` vmapped over the seeds, as JAX lowers it."""
    seed = prng.iterated_vmap_unary(ctx.avals_in[0].ndim, impl.seed)
    return _lower_impl(ctx, seed, seeds)[0]


def _batch_of_keys(impl, n=5):
    """A case taking the key data of ``n`` keys, converted with the key count symbolic."""
    def make(rng, dtype):
        return [np.asarray(jax.random.key_data(jax.random.split(jax.random.key(11, impl=impl), n)))]
    return make


@rule("random_wrap", dtypes="uint32", cases=[
    *_per_impl("uniform and normal from raw key data",
               lambda k: (jax.random.uniform(k[0], (4,)), jax.random.normal(k[2], (2, 3))),
               dtypes_of=lambda kd: "uint32"),
    *[case.custom(f"{impl}: uniform from each of b keys (data: (b, _))",
                  lambda data, impl=impl: jax.vmap(lambda k: jax.random.uniform(k, (3,)))(
                      jax.random.wrap_key_data(data, impl=impl)),
                  _batch_of_keys(impl), dtypes="uint32",
                  convert_kw={"polymorphic_shapes": ["(b, _)"]}) for impl in IMPLS]])
def random_wrap(ctx, data, *, impl):
    """Key data already is the key's representation."""
    return data


@rule("random_unwrap", dtypes="key", cases=[
    case.custom("unwrap", _via_impl(lambda k: jax.random.key_data(k) + 1),
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("unwrap b split keys", lambda k, x: jax.random.key_data(
        jax.random.split(k[0], x.shape[0])) + 1)])
def random_unwrap(ctx, keys):
    return keys


@rule("random_clone", dtypes="key", cases=[
    case.custom("clone", _via_impl(lambda k: jax.random.key_data(jax.random.clone(k))),
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("normal from a clone", lambda k, x: jax.random.normal(
        jax.random.clone(k[1]), x.shape))])
def random_clone(ctx, keys):
    return keys


def _split_cases(impls=IMPLS):
    return [
        *_per_impl("split", lambda k: jax.random.key_data(jax.random.split(k[0], (2, 3))),
                   impls=impls),
        *_poly_per_impl("split in b and in (2, b)", lambda k, x: (
            jax.random.key_data(jax.random.split(k[0], x.shape[0])),
            jax.random.key_data(jax.random.split(k[1], (2, x.shape[0])))), impls=impls),
        *_poly_per_impl("split each of b keys in 3", lambda k, x: jax.random.key_data(
            jax.vmap(lambda kk: jax.random.split(kk, 3))(jax.random.split(k[2], x.shape[0]))),
            impls=impls)]


@rule("random_split", dtypes="key", cases=_split_cases())
def random_split(ctx, keys, *, shape):
    aval = ctx.avals_in[0]
    impl = aval.dtype._impl
    split = prng.iterated_vmap_unary(aval.ndim, lambda k: impl.split(k, shape))
    return _lower_impl(ctx, split, keys, avals=[physical_aval(aval)])[0]


def _fold_in_cases(impls=IMPLS):
    return [
        *_per_impl("fold_in", lambda k: jax.random.key_data(jax.random.fold_in(k[1], 12)),
                   impls=impls),
        *_poly_per_impl("fold_in of 0..b-1, and into b keys", lambda k, x: (
            jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(k[1], i))(
                jnp.arange(x.shape[0]))),
            jax.random.key_data(jax.vmap(jax.random.fold_in)(
                jax.random.split(k[2], x.shape[0]), jnp.arange(x.shape[0]) * 3))),
            impls=impls)]


@rule("random_fold_in", dtypes=["key", "integer"], cases=_fold_in_cases())
def random_fold_in(ctx, keys, msgs):
    keys_aval, msgs_aval = ctx.avals_in
    fold_in = prng.iterated_vmap_binary_bcast(keys_aval.shape, msgs_aval.shape,
                                              keys_aval.dtype._impl.fold_in)
    return _lower_impl(ctx, fold_in, keys, msgs, avals=[physical_aval(keys_aval), msgs_aval])[0]


def _sampled_like_x(k, x):
    """What models draw for a batch x: noise, dropout masks, integers, raw bits."""
    b = x.shape[0]
    return (x + jax.random.normal(k[0], x.shape),
            jnp.where(jax.random.bernoulli(k[1], 0.7, x.shape), x / 0.7, 0.0),
            jax.random.uniform(k[2], (2 * b, 3)),
            jax.random.randint(k[0], (b,), 0, 10),
            jax.random.bits(k[1], (b, 3), jnp.uint8),
            jax.random.bits(k[2], (b,), jnp.uint16))


@rule("random_bits", dtypes="key", cases=[
    *_per_impl("bits of 8, 16 and 32", lambda k: (jax.random.bits(k[0], (2, 5)),
                                                   jax.random.bits(k[1], (3,), jnp.uint8),
                                                   jax.random.bits(k[2], (7,), jnp.uint16))),
    *_poly_per_impl("normal, bernoulli, uniform, randint, bits", _sampled_like_x),
    *_poly_per_impl("normal of (b, b)", lambda k, x: jax.random.normal(
        k[0], (x.shape[0], x.shape[0])), x_shape=(6, 4)),
    *_poly_per_impl("uniform from each of b split keys", lambda k, x: jax.vmap(
        lambda kk: jax.random.uniform(kk, (3,)))(jax.random.split(k[0], x.shape[0])))])
def random_bits(ctx, keys, *, bit_width, shape):
    aval = ctx.avals_in[0]
    impl = aval.dtype._impl
    bits = prng.iterated_vmap_unary(aval.ndim, lambda k: impl.random_bits(k, bit_width, shape))
    return _lower_impl(ctx, bits, keys, avals=[physical_aval(aval)])[0]


# -- TFLite and ONNX: the Threefry key primitives in builtin ops ---------------------------
# JAX's threefry seed/split/fold_in/bits written directly in the uint32 ops TFLite's
# builtins take (Add, Mul, BitwiseXor, logical RightShift, Cast; see _threefry_core),
# rather than lowered from JAX's implementation, whose shift_left/or on uint32 and 64-bit
# shifts TFLite refuses. Key data stays ``uint32[..., 2]``. 64-bit values go in and out by
# bitcasts for TFLite; ONNX has no Bitcast (tf2onnx has no handler), there they are split
# and joined by arithmetic, and counters are counted in int64 (``iota_words64``).

def _fry_seed(eqn):
    name = eqn.params["impl"].name
    return None if name in IMPLS else f"{name} keys (this rule makes {', '.join(IMPLS)} keys)"


def _hi_lo_words(ctx, x):
    """(hi, lo) uint32 words of integer seeds or messages, as ``threefry_seed`` makes them.
    ONNX: 64-bit ints by ``x // 2**32`` (for int64 the arithmetic shift, whose low 32 bits
    are the logical shift's; uint64 by a RightShift) and ``x & 0xFFFFFFFF``; narrower ones
    converted (wrapping) with a zero high word."""
    if ctx.target == "tfjs":       # int32 (or uint32 as its int32 bits): a zero high word
        lo = x if x.dtype == tf.int32 else tf.cast(x, tf.int32)
        return core3.zeros_like(lo), lo
    if ctx.target != "onnx":
        return core3.hi_lo_words(x)
    if x.dtype.size != 8:
        lo = tf.cast(x, tf.uint32)
        return core3.zeros_like(lo), lo
    mask = tf.constant(0xFFFFFFFF, x.dtype)
    hi = (tf.bitwise.right_shift(x, tf.constant(32, x.dtype)) if x.dtype == tf.uint64
          else x // tf.constant(2**32, x.dtype))
    return (tf.cast(tf.bitwise.bitwise_and(hi, mask), tf.uint32),
            tf.cast(tf.bitwise.bitwise_and(x, mask), tf.uint32))


def _join64(ctx, hi, lo):
    """uint64 values from (hi, lo) uint32 words: a bitcast of (lo, hi) for TFLite (no
    64-bit shifts), ``hi << 32 | lo`` for ONNX (no Bitcast)."""
    if ctx.target != "onnx":
        return tf.bitcast(tf.stack([lo, hi], axis=-1), tf.uint64)
    hi = tf.bitwise.left_shift(tf.cast(hi, tf.uint64), tf.constant(32, tf.uint64))
    return tf.bitwise.bitwise_or(hi, tf.cast(lo, tf.uint64))


def _iota_words(ctx, dims):
    """(hi, lo) words of the row-major counter over ``dims``: counted in int32 for TFLite
    (its tensors hold fewer than 2**31 elements), in int64 for ONNX."""
    return (core3.iota_words(dims, ctx.tf_dtype(np.uint32)) if ctx.target in ("tflite", "tfjs")
            else iota_words64(dims, floordiv=ctx.target == "onnx"))


def _edge_seeds(rng, dtype):
    info = np.iinfo(dtype)
    vals = {0, 1, 42, info.max, info.min, min(info.max, 2**32 - 1), min(info.max, 2**32)}
    return [np.array(sorted(vals), dtype=dtype)]


def _fry_keys(k):
    return jax.random.key_data(k)


def _tflite_seed_cases():
    batch = lambda s: _fry_keys(jax.vmap(jax.random.key)(s))
    return [case.custom("seed: edge seeds", batch, _edge_seeds),
            *[case.custom(f"{impl}: seed: edge seeds", lambda s, impl=impl: _fry_keys(
                jax.vmap(lambda x: jax.random.key(x, impl=impl))(s)), _edge_seeds)
              for impl in ("rbg", "unsafe_rbg")],
            case.custom("seed: one seed (the dtype max)", lambda s: _fry_keys(
                jax.random.key(s)), lambda rng, dt: [np.array(np.iinfo(dt).max, dt)]),
            case.custom("seed: seeds (b,)", batch, _edge_seeds,
                        convert_kw={"polymorphic_shapes": ["(b,)"]}),
            case.custom("seed: no seeds (joined to the edge seeds)", lambda s: jnp.concatenate(
                [batch(np.zeros((0,), s.dtype)), batch(s)]), _edge_seeds)]


@rule("random_seed", dtypes="integer", targets=("tflite", "onnx", "tfjs"), when=_fry_seed,
      cases=_tflite_seed_cases())
def random_seed_tflite(ctx, seeds, *, impl):
    """Key data ``(seed >> 32, seed & 0xFFFFFFFF)`` per seed, as ``threefry_seed``; rbg
    keys hold that pair twice (``_rbg_seed``)."""
    hi, lo = _hi_lo_words(ctx, seeds)
    return tf.stack([hi, lo] * (impl.key_shape[-1] // 2), axis=-1)


def _edge_keydata(rng, dtype):
    m = 2**32 - 1
    return [np.array([[0, 0], [m, m], [0, m], [m, 0], [1, 2**31]], np.uint32)]


def _edge_key_case(name, fn, dtypes="key<fry>", **kw):
    return case.custom(f"threefry2x32: {name} (keys with words 0, 2**31, 2**32-1)",
                       _via_impl(fn), _edge_keydata, dtypes=dtypes, **kw)


def _fry_zero_case(name, fn):
    """``fn(keys, n)`` of size 0 (n = 0) joined to that of n = 2: TFLite models cannot
    return empty arrays, and symbolic sizes are at least 1."""
    return case.custom(f"threefry2x32: {name} of size 0 (joined to size 2)",
                       _via_impl(lambda k: jnp.concatenate([fn(k, 0), fn(k, 2)])),
                       _keydata("threefry2x32"), dtypes="key<fry>")


@rule("random_split", dtypes="key<fry>", targets=("tflite", "onnx", "tfjs"),
      cases=[
          *_split_cases(["threefry2x32"]),
          _edge_key_case("split each in (2, 3)", lambda k: _fry_keys(
              jax.vmap(lambda kk: jax.random.split(kk, (2, 3)))(k))),
          _edge_key_case("split in 600 x 500", lambda k: _fry_keys(
              jax.random.split(k[1], (600, 500)))),
          _fry_zero_case("split", lambda k, n: _fry_keys(jax.random.split(k[0], n)))])
def random_split_tflite(ctx, keys, *, shape):
    """Threefry of the 64-bit row-major counter over ``shape`` under each key, the two
    output words making each new key (``_threefry_split_foldlike``); with
    ``jax_threefry_partitionable=False``, ``threefry_2x32`` of the counts 0..2n-1
    (``_threefry_split_original``)."""
    kb = ctx.shape(ctx.avals_in[0])[:-1]
    dims = [ctx.dim(d) for d in shape]
    if not jax.config.jax_threefry_partitionable:
        words = _threefry_2x32_counts(ctx, keys, kb, core3.count(dims) * 2)
        return tf.reshape(words, [*kb, *dims, 2])
    hi, lo = _iota_words(ctx, dims)
    return tf.stack(core3.hash_with_keys(keys, hi, lo, [*kb, *dims], len(kb), ctx.target),
                    axis=-1)


def _threefry_2x32_counts(ctx, keys, kb, n, halves=False):
    """JAX's ``threefry_2x32(key, iota(n))`` under each key, ``(*kb, n)`` words: the counts
    padded to an even length are hashed as (first half, second half) and the two output
    halves concatenated; with ``halves``, the two halves of the padded result instead."""
    h = _shr(n + 1, 1)
    first = tf.range(h, dtype=tf.int32)
    second = tf.math.floormod(first + h, tf.maximum(n, 1))    # the padding count is 0
    held = ctx.tf_dtype(np.uint32)
    y = core3.hash_with_keys(keys, tf.cast(first, held), tf.cast(second, held),
                             [*kb, h], len(kb), ctx.target)
    return y if halves else _first(tf.concat(y, axis=-1), n)


def _shr(n, k):
    """``n // 2**k`` of a size (an int, or an int32 TF scalar: no FloorDiv in TFLite)."""
    return n >> k if isinstance(n, int) else tf.bitwise.right_shift(n, k)


def _first(x, n):
    """The first ``n`` entries along the last axis (a Slice: TFLite takes no StridedSlice
    with a run-time end)."""
    return tf.slice(x, [0] * len(x.shape), [*([-1] * (len(x.shape) - 1)), n])


def _fold_in_edges(k):
    m = jnp.array([0, 1, 2**31, 2**32 - 1], jnp.uint32)
    return (_fry_keys(jax.vmap(jax.random.fold_in)(k[:4], m)),
            _fry_keys(jax.vmap(lambda kk: jax.vmap(lambda i: jax.random.fold_in(kk, i))(m))(k)),
            _fry_keys(jax.random.fold_in(k[0], jnp.int32(-1))))


def _fold_in_msgs(rng, dtype):
    info = np.iinfo(dtype)
    return [*_edge_keydata(rng, dtype)[:1],
            np.array([0, 1, info.max, info.min, min(info.max, 2**32)], dtype)]


def _fold_in_prim(data, msgs):
    """``random_fold_in`` of 5 keys and 5 messages of any integer dtype, as bound
    directly (``jax.random.fold_in`` converts to uint32 first)."""
    return _fry_keys(prng.random_fold_in(jax.random.wrap_key_data(data), msgs))


@rule("random_fold_in", dtypes=["key<fry>", "integer"], targets=("tflite", "onnx", "tfjs"),
      cases=[*_fold_in_cases(["threefry2x32"]),
             _edge_key_case("fold_in 0, 1, 2**31, 2**32-1 and -1", _fold_in_edges),
             case.custom("threefry2x32: fold_in messages of every integer dtype",
                         _fold_in_prim, _fold_in_msgs, dtypes="integer"),
             _fry_zero_case("fold_in 0..n-1", lambda k, n: _fry_keys(
                 jax.vmap(lambda i: jax.random.fold_in(k[1], i))(jnp.arange(n))))])
def random_fold_in_tflite(ctx, keys, msgs):
    """Threefry of the counter ``(0, msg)`` (``threefry_2x32(key, threefry_seed(msg))``),
    keys and messages broadcast against each other."""
    out = ctx.shape(ctx.aval_out)[:-1]
    _, m = _hi_lo_words(ctx, msgs)
    return tf.stack(core3.hash_with_keys(keys, core3.zeros_like(m), m, out, len(out),
                                         ctx.target), axis=-1)


def _bits_of_every_width(k):
    return tuple(jax.random.bits(k[i % len(k)], s, jnp.dtype(f"uint{w}"))
                 for i, (w, s) in enumerate([(8, (3, 5)), (16, (7,)), (32, (2, 3, 4)),
                                             (64, (5,))]))


# "uint64" never matches a random_bits operand (a key): it is claimed so that the test-suite
# runs the cases marked uint64 with JAX's x64 mode on, where bits of 64 are uint64.
@rule("random_bits", dtypes=["key<fry>", "uint64"], targets=("tflite", "onnx", "tfjs"),
      cases=[
          *[case.custom(f"threefry2x32: bits of 8, 16, 32 and 64{x64}", _via_impl(
              _bits_of_every_width), _keydata("threefry2x32"), dtypes=dt)
            for x64, dt in [("", "key<fry>"), (" (x64)", "uint64")]],
          _edge_key_case("bits of 8, 16, 32 and 64 per key (x64)", lambda k: jax.vmap(
              lambda kk: _bits_of_every_width([kk]))(k), dtypes="uint64"),
          _edge_key_case("bits of 8, 16, 32 and 64 per key", lambda k: jax.vmap(
              lambda kk: _bits_of_every_width([kk]))(k)),
          _edge_key_case("32 bits of (512, 1024)", lambda k: jax.random.bits(
              k[2], (512, 1024))),
          *_poly_per_impl("bits of 8, 16, 32, 64 of (b, 3)", lambda k, x: tuple(
              jax.random.bits(k[1], (x.shape[0], 3), jnp.dtype(f"uint{w}"))
              for w in (8, 16, 32, 64)), impls=["threefry2x32"],
              dtypes_of=lambda kd: ["key<fry>", "uint64"]),
          *_poly_per_impl("bits of each of b split keys", lambda k, x: jax.vmap(
              lambda kk: jax.random.bits(kk, (3,)))(jax.random.split(k[0], x.shape[0])),
              impls=["threefry2x32"]),
          _fry_zero_case("bits of (n, 3)", lambda k, n: jax.random.bits(k[0], (n, 3))),
          _fry_zero_case("8 bits of (n, 3)", lambda k, n: jax.random.bits(k[0], (n, 3),
                                                                          jnp.uint8))])
def random_bits_tflite(ctx, keys, *, bit_width, shape):
    """The two Threefry words of the row-major counter over ``shape``: xor-ed for 32 bits
    (their low bits for 8 and 16), joined as (hi, lo) for 64 (a bitcast of (lo, hi)).
    With ``jax_threefry_partitionable=False``, ``_threefry_random_bits_original``."""
    if bit_width not in (8, 16, 32, 64):
        raise UnsupportedError(f"random_bits of {bit_width} bits (threefry makes 8, 16, 32, 64)")
    kb = ctx.shape(ctx.avals_in[0])[:-1]
    dims = [ctx.dim(d) for d in shape]
    out = [*kb, *dims]
    if not jax.config.jax_threefry_partitionable:
        return _original_bits(ctx, keys, kb, bit_width, shape, out)
    hi, lo = _iota_words(ctx, dims)
    b1, b2 = core3.hash_with_keys(keys, hi, lo, out, len(kb), ctx.target)
    if bit_width == 64:
        return _join64(ctx, b1, b2)
    xor = core3.words_for(ctx.target).get("xor", tf.bitwise.bitwise_xor)
    return tf.cast(xor(b1, b2), ctx.tf_dtype(ctx.aval_out))


def _original_bits(ctx, keys, kb, bit_width, shape, out):
    """``threefry_2x32`` of the counts 0..ceil(bits/32)-1: 32-bit words in order; 64-bit
    values join the first half (high words) with the second; 8- and 16-bit values are the
    words cut low bits first."""
    size = ctx.dim(math.prod(shape))
    n = _shr(size * bit_width + 31, 5)                  # ceil(bits / 32)
    if bit_width == 64:
        hi, lo = _threefry_2x32_counts(ctx, keys, kb, n, halves=True)
        return tf.reshape(_join64(ctx, hi, lo), out)
    words = _threefry_2x32_counts(ctx, keys, kb, n)
    if bit_width == 32:
        return tf.reshape(words, out)
    parts = [tf.bitwise.right_shift(words, tf.constant(s, tf.uint32))
             for s in range(0, 32, bit_width)]
    small = _first(tf.reshape(tf.stack(parts, axis=-1), [*kb, -1]), size)
    return tf.reshape(tf.cast(small, ctx.tf_dtype(ctx.aval_out)), out)


# -- shape ops on key arrays ---------------------------------------------------------------

_KEY_SHAPE_OPS = ("slice", "squeeze", "reshape", "broadcast_in_dim",
                  "concatenate", "transpose", "rev", "select_n", "dynamic_slice",
                  "dynamic_update_slice", "gather", "scatter", "copy", "pad",
                  "split", "device_put", "optimization_barrier", "sharding_constraint")


def _has_key(eqn) -> str | None:
    if any(is_key(v.aval.dtype) for v in [*eqn.invars, *eqn.outvars]):
        return None
    return "no key-typed operand"


def _key_ops_case(data):
    keys = jax.random.wrap_key_data(data)                     # key<fry>[3]
    picked = lax.select(jnp.array([True, False, True]), keys, keys[::-1])
    both = jnp.concatenate([keys[:1], picked[1:]])
    grid = jnp.broadcast_to(both[None], (2, 3)).T.reshape(6)
    return jax.random.key_data(grid[2]), jax.random.bits(jnp.squeeze(grid[3:4]), (2,))


def _key_ops_poly_case(k, x, dynamic=True):
    """The shape ops on a key array of symbolic length b (split from one key); with
    ``dynamic``, dynamic_slice and dynamic_update_slice too (and indexing that JAX makes
    gathers of)."""
    keys = jax.random.split(k[0], x.shape[0])                 # key<fry>[b]
    if not dynamic:
        first_col = lax.squeeze(lax.slice_in_dim(x, 0, 1, axis=1), (1,))
        picked = lax.select(first_col > 0, keys, lax.rev(keys, (0,)))
        both = lax.concatenate([lax.slice_in_dim(keys, 0, 1), lax.slice_in_dim(picked, 1, None)], 0)
        grid = lax.reshape(lax.transpose(lax.broadcast(both, (2,)), (1, 0)), (2 * x.shape[0],))
        return jax.random.key_data(grid), jax.random.key_data(lax.squeeze(keys[:, None], (1,)))
    picked = lax.select(x[:, 0] > 0, keys, keys[::-1])
    both = jnp.concatenate([keys[:1], picked[1:]])             # slice, concatenate
    grid = jnp.broadcast_to(both[None], (2, x.shape[0])).T.reshape(2 * x.shape[0])
    first, rest = jnp.split(keys, [1])
    moved = lax.dynamic_update_slice_in_dim(jnp.concatenate([rest, first]), first, 1, 0)
    window = lax.dynamic_slice_in_dim(grid, 2, x.shape[0])
    return (jax.random.key_data(grid), jax.random.key_data(moved),
            jax.random.key_data(jnp.squeeze(keys[:, None], 1)),
            jax.vmap(lambda kk: jax.random.bits(kk, (2,)))(window))


def _key_index_poly_case(k, x):
    """gather and scatter on a key array of symbolic length."""
    keys = jax.random.split(k[0], x.shape[0])
    picked = keys[jnp.array([2, 0, 1])]
    return jax.random.key_data(picked), jax.random.key_data(keys.at[1].set(k[1]))


_KEY_OPS_CASES = [
    case.custom("slice/select/concat/broadcast/reshape on keys", _key_ops_case,
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("shape ops on b keys", _key_ops_poly_case, impls=["threefry2x32"]),
    *_poly_per_impl("gather and scatter on b keys", _key_index_poly_case,
                    impls=["threefry2x32"])]
# For TFLite, the dynamic slices, gathers and scatters of b keys are left out: the lax rules
# they lower to emit int64-index GatherV2 and UnsortedSegmentMax, which TFLite refuses.
_KEY_OPS_TFLITE_CASES = [
    _KEY_OPS_CASES[0],
    *_poly_per_impl("static shape ops on b keys", lambda k, x: _key_ops_poly_case(
        k, x, dynamic=False), impls=["threefry2x32"])]


@rule(list(_KEY_SHAPE_OPS), dtypes=["all", "key"], when=_has_key,
      cases=_KEY_OPS_CASES)
def key_data_shape_op(ctx, *args, **params):
    """Apply the shape op to the key data, the key dimensions carried along: the same
    primitive vmapped over the trailing key-data axis of every key operand."""
    return _on_key_data(ctx, args, params)


@rule(list(_KEY_SHAPE_OPS), dtypes=["all", "key"], when=_has_key,
      targets="tflite", cases=_KEY_OPS_TFLITE_CASES)
def key_data_shape_op_tflite(ctx, *args, **params):
    """The same on the key data bitcast to int32: the transposes and gathers that vmap
    makes are TFLite builtins on int32, not on uint32."""
    return _on_key_data(ctx, args, params, as_int32=True)


def _on_key_data(ctx, args, params, as_int32=False):
    eqn = ctx.eqn
    prim = eqn.primitive
    is_keys = [is_key(a.dtype) for a in ctx.avals_in]
    outs_key = [is_key(a.dtype) for a in ctx.avals_out]

    def on_data(*xs):
        out = prim.bind(*xs, **params)
        return list(out) if prim.multiple_results else [out]
    f = jax.vmap(on_data, in_axes=[-1 if k else None for k in is_keys],
                 out_axes=[-1 if k else None for k in outs_key])
    avals = [physical_aval(a) for a in ctx.avals_in]
    if as_int32:
        args = [tf.bitcast(x, tf.int32) if k else x for x, k in zip(args, is_keys)]
        avals = [a.update(dtype=np.dtype(np.int32)) if k else a
                 for a, k in zip(avals, is_keys)]
    outs = ctx.lower_fun(f, *args, avals=avals)
    if as_int32:
        outs = [tf.bitcast(x, tf.uint32) if k else x for x, k in zip(outs, outs_key)]
    return outs if prim.multiple_results else outs[0]
