"""Samplers written on top of the key primitives: ``random_gamma`` (jax.random.gamma),
lowered through JAX's own sampler so its numbers are bit-exact with JAX.

(``rng_uniform``, XLA's stateful generator, has its own module; ``random_bits`` is with the
keys.)
"""
from __future__ import annotations

import functools

import jax
import numpy as np

from core.rule import case, rule


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


@rule("random_gamma", dtypes=["key", "floating"], cases=[
    _gamma_case("threefry2x32"),
    _gamma_case("threefry2x32", (5, 3), [None, "(b, 3)"]),
    _gamma_case("threefry2x32", (5, 2), ["(b, _)", "(b, 2)"], keys=5)])
def random_gamma(ctx, key, a, *, log_space):
    """JAX's own sampler (Marsaglia-Tsang with a while loop per element), vmapped, as JAX
    lowers it on CPU."""
    from jax._src.random import core as rcore
    impl = functools.partial(rcore._gamma_impl, log_space=log_space, use_vmap=True)
    return ctx.lower_fun(impl, key, a)[0]
