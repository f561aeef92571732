"""Typed PRNG keys (``key<fry>``, ``key<rbg>``) and the primitives that make and use them.

A key array travels through the TF graph as its key data: ``key<fry>[n]`` is a
``uint32[n, 2]`` tensor, ``key<rbg>[n]`` a ``uint32[n, 4]`` one. The random primitives are
lowered exactly as JAX lowers them: JAX's own implementation functions (seed, split,
fold_in, random_bits of the key's PRNG implementation), vmapped over the key array's
dimensions, traced on the key data and lowered rule by rule, so the bits are JAX's bits.
Shape ops on keys (slice, squeeze, concatenate, select_n, ...) act on the key data with
the key dimensions carried along.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import core as jcore
from jax._src.random import prng
from jax import lax

from core.dtypes import is_key, physical_aval
from core.rule import case, rule

IMPLS = {"threefry2x32": "key<fry>", "rbg": "key<rbg>", "unsafe_rbg": "key<urbg>"}


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


@rule("random_seed", dtypes="integer", cases=[case.custom(
    f"{impl}: seed", lambda s, impl=impl: jax.random.key_data(
        jax.vmap(lambda x: jax.random.key(x, impl=impl))(s)),
    _seeds, dtypes=["int32", "uint32"]) for impl in IMPLS])
def random_seed(ctx, seeds, *, impl):
    """``impl.seed`` vmapped over the seeds, as JAX lowers it."""
    seed = prng.iterated_vmap_unary(ctx.avals_in[0].ndim, impl.seed)
    return ctx.lower_fun(seed, seeds)[0]


@rule("random_wrap", dtypes="uint32", cases=_per_impl(
    "uniform and normal from raw key data",
    lambda k: (jax.random.uniform(k[0], (4,)), jax.random.normal(k[2], (2, 3))),
    dtypes_of=lambda kd: "uint32"))
def random_wrap(ctx, data, *, impl):
    """Key data already is the key's representation."""
    return data


@rule("random_unwrap", dtypes="key", cases=[case.custom(
    "unwrap", _via_impl(lambda k: jax.random.key_data(k) + 1), _keydata("threefry2x32"),
    dtypes="key<fry>")])
def random_unwrap(ctx, keys):
    return keys


@rule("random_clone", dtypes="key", cases=[case.custom(
    "clone", _via_impl(lambda k: jax.random.key_data(jax.random.clone(k))),
    _keydata("threefry2x32"), dtypes="key<fry>")])
def random_clone(ctx, keys):
    return keys


@rule("random_split", dtypes="key", cases=_per_impl(
    "split", lambda k: jax.random.key_data(jax.random.split(k[0], (2, 3)))))
def random_split(ctx, keys, *, shape):
    aval = ctx.avals_in[0]
    impl = aval.dtype._impl
    split = prng.iterated_vmap_unary(aval.ndim, lambda k: impl.split(k, shape))
    return ctx.lower_fun(split, keys, avals=[physical_aval(aval)])[0]


@rule("random_fold_in", dtypes=["key", "integer"], cases=_per_impl(
    "fold_in", lambda k: jax.random.key_data(jax.random.fold_in(k[1], 12))))
def random_fold_in(ctx, keys, msgs):
    keys_aval, msgs_aval = ctx.avals_in
    fold_in = prng.iterated_vmap_binary_bcast(keys_aval.shape, msgs_aval.shape,
                                              keys_aval.dtype._impl.fold_in)
    return ctx.lower_fun(fold_in, keys, msgs, avals=[physical_aval(keys_aval), msgs_aval])[0]


@rule("random_bits", dtypes="key", cases=_per_impl(
    "bits of 8, 16 and 32", lambda k: (jax.random.bits(k[0], (2, 5)),
                                       jax.random.bits(k[1], (3,), jnp.uint8),
                                       jax.random.bits(k[2], (7,), jnp.uint16))))
def random_bits(ctx, keys, *, bit_width, shape):
    aval = ctx.avals_in[0]
    impl = aval.dtype._impl
    bits = prng.iterated_vmap_unary(aval.ndim, lambda k: impl.random_bits(k, bit_width, shape))
    return ctx.lower_fun(bits, keys, avals=[physical_aval(aval)])[0]


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


@rule(list(_KEY_SHAPE_OPS), dtypes=["all", "key"], when=_has_key, cases=[
    case.custom("slice/select/concat/broadcast/reshape on keys", _key_ops_case,
                _keydata("threefry2x32"), dtypes="key<fry>")])
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
