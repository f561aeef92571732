"""``lax.rng_uniform``: XLA's stateful generator.

Its numbers cannot be reproduced: JAX itself gives different ones on every call of the
same jitted function (measured: ``jax.jit(lambda a, b: lax.rng_uniform(a, b, (4,)))``
twice on the same inputs), and XLA seeds it from compiler state. So it is refused, with
the way out; ``convert(..., prefer={"rng_uniform":
"rules_random.rng_uniform:rng_uniform_stateful_tf"})`` opts in to TF's stateful generator
(``tf.random.uniform``, what the old jax2tf emitted): the same distribution on the same
interval, other numbers. Its cases check that: the interval, both ends, mean and spread.
"""
from __future__ import annotations

import jax.numpy as jnp
import tensorflow as tf
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule

_ID = f"{__name__}:rng_uniform_stateful_tf"
_N = 4096


def _interval(a, b):
    """Within [a, b), integers reaching both ends; the mean and spread of a uniform."""
    r = lax.rng_uniform(a, b, (_N,))
    lo, hi = a.astype(jnp.float32), b.astype(jnp.float32)
    if jnp.issubdtype(r.dtype, jnp.integer):
        ends = jnp.any(r == a) & jnp.any(r == b - 1)
        hi = hi - 1
    else:
        ends = jnp.all(r < b)
    x = r.astype(jnp.float32)
    width = hi - lo
    return (jnp.all(r >= a) & jnp.all(r < b), ends,
            jnp.abs(x.mean() - (lo + hi) / 2) < 0.05 * width,    # ~10 standard errors
            jnp.abs(x.std() - width / jnp.sqrt(12.0)) < 0.1 * width)


def _symbolic(x):
    r = lax.rng_uniform(jnp.zeros((), x.dtype), jnp.ones((), x.dtype) * 8, x.shape)
    return jnp.all((r >= 0) & (r < 8))


@rule("rng_uniform", dtypes=["float32", "float64", "int32", "int64"], cases=[
    case("interval [1, 5)", _interval, 1, 5),
    case("interval [-3, 100)", _interval, -3, 100),
    case.random(_symbolic, shapes=[(3, 5)], name="symbolic", dtypes=["float32", "int32"],
                convert_kw={"polymorphic_shapes": ["(b, 5)"]})])
def rng_uniform_stateful_tf(ctx, a, b, *, shape, **_):
    """Refused (its numbers cannot be reproduced), unless named in ``prefer``: then TF's
    stateful ``RandomUniform`` over the same [a, b)."""
    if (ctx.conversion.prefer or {}).get("rng_uniform") != _ID:
        raise UnsupportedError(
            "lax.rng_uniform draws from XLA's stateful generator: JAX itself gives other "
            "numbers on every call, so no TF graph can reproduce them. Use jax.random "
            "(its numbers are converted bit-exactly), or convert with prefer="
            f"{{'rng_uniform': '{_ID}'}} to draw from TF's stateful generator instead "
            "(tf.random.uniform: the same distribution on [a, b), other numbers).")
    return tf.random.uniform(ctx.shape_tensor(ctx.aval_out), a, b, dtype=a.dtype)
