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

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import core as jcore
from jax._src.random import prng
from jax import lax

from core.dtypes import is_key, physical_aval
from core.errors import UnsupportedError
from core.rule import case, rule

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


def _per_impl(name: str, fn, dtypes_of=lambda key_dtype: key_dtype):
    """One case per PRNG implementation, each run on that implementation's key dtype."""
    return [case.custom(f"{impl}: {name}", _via_impl(fn, impl), _keydata(impl),
                        dtypes=dtypes_of(kd)) for impl, kd in IMPLS.items()]


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


@rule("random_seed", dtypes="integer", polymorphic=True, cases=_seed_cases())
def random_seed(ctx, seeds, *, impl):
    """``impl.seed`` vmapped over the seeds, as JAX lowers it."""
    seed = prng.iterated_vmap_unary(ctx.avals_in[0].ndim, impl.seed)
    return _lower_impl(ctx, seed, seeds)[0]


def _batch_of_keys(impl, n=5):
    """A case taking the key data of ``n`` keys, converted with the key count symbolic."""
    def make(rng, dtype):
        return [np.asarray(jax.random.key_data(jax.random.split(jax.random.key(11, impl=impl), n)))]
    return make


@rule("random_wrap", dtypes="uint32", polymorphic=True, cases=[
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


@rule("random_unwrap", dtypes="key", polymorphic=True, cases=[
    case.custom("unwrap", _via_impl(lambda k: jax.random.key_data(k) + 1),
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("unwrap b split keys", lambda k, x: jax.random.key_data(
        jax.random.split(k[0], x.shape[0])) + 1)])
def random_unwrap(ctx, keys):
    return keys


@rule("random_clone", dtypes="key", polymorphic=True, cases=[
    case.custom("clone", _via_impl(lambda k: jax.random.key_data(jax.random.clone(k))),
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("normal from a clone", lambda k, x: jax.random.normal(
        jax.random.clone(k[1]), x.shape))])
def random_clone(ctx, keys):
    return keys


@rule("random_split", dtypes="key", polymorphic=True, cases=[
    *_per_impl("split", lambda k: jax.random.key_data(jax.random.split(k[0], (2, 3)))),
    *_poly_per_impl("split in b and in (2, b)", lambda k, x: (
        jax.random.key_data(jax.random.split(k[0], x.shape[0])),
        jax.random.key_data(jax.random.split(k[1], (2, x.shape[0]))))),
    *_poly_per_impl("split each of b keys in 3", lambda k, x: jax.random.key_data(
        jax.vmap(lambda kk: jax.random.split(kk, 3))(jax.random.split(k[2], x.shape[0]))))])
def random_split(ctx, keys, *, shape):
    aval = ctx.avals_in[0]
    impl = aval.dtype._impl
    split = prng.iterated_vmap_unary(aval.ndim, lambda k: impl.split(k, shape))
    return _lower_impl(ctx, split, keys, avals=[physical_aval(aval)])[0]


@rule("random_fold_in", dtypes=["key", "integer"], polymorphic=True, cases=[
    *_per_impl("fold_in", lambda k: jax.random.key_data(jax.random.fold_in(k[1], 12))),
    *_poly_per_impl("fold_in of 0..b-1, and into b keys", lambda k, x: (
        jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(k[1], i))(
            jnp.arange(x.shape[0]))),
        jax.random.key_data(jax.vmap(jax.random.fold_in)(
            jax.random.split(k[2], x.shape[0]), jnp.arange(x.shape[0]) * 3))))])
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


@rule("random_bits", dtypes="key", polymorphic=True, cases=[
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


def _key_ops_poly_case(k, x):
    """The shape ops on a key array of symbolic length b (split from one key)."""
    keys = jax.random.split(k[0], x.shape[0])                 # key<fry>[b]
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


@rule(list(_KEY_SHAPE_OPS), dtypes=["all", "key"], when=_has_key, polymorphic=True, cases=[
    case.custom("slice/select/concat/broadcast/reshape on keys", _key_ops_case,
                _keydata("threefry2x32"), dtypes="key<fry>"),
    *_poly_per_impl("shape ops on b keys", _key_ops_poly_case, impls=["threefry2x32"]),
    *_poly_per_impl("gather and scatter on b keys", _key_index_poly_case,
                    impls=["threefry2x32"])])
def key_data_shape_op(ctx, *args, **params):
    """Apply the shape op to the key data, the key dimensions carried along: the same
    primitive vmapped over the trailing key-data axis of every key operand."""
    eqn = ctx.eqn
    prim = eqn.primitive
    in_axes = [-1 if is_key(a.dtype) else None for a in ctx.avals_in]
    outs_key = [is_key(a.dtype) for a in ctx.avals_out]

    def on_data(*xs):
        out = prim.bind(*xs, **params)
        return list(out) if prim.multiple_results else [out]
    out_axes = [-1 if k else None for k in outs_key]
    f = jax.vmap(on_data, in_axes=in_axes, out_axes=out_axes)
    avals = [physical_aval(a) for a in ctx.avals_in]
    outs = ctx.lower_fun(f, *args, avals=avals)
    return outs if prim.multiple_results else outs[0]
