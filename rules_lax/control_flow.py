"""Call-like primitives: their body is a sub-jaxpr that is lowered in place."""
from __future__ import annotations

import numpy as np
from jax import lax
import jax
import jax.numpy as jnp

from core.rule import case, rule


def _nested_jit(x):
    inner = jax.jit(lambda a: jax.jit(lambda b: b * 2)(a) + 1)
    return jax.jit(lambda a: inner(a) - a)(x)


@rule("jit", cases=[case.random(_nested_jit, shapes=[(3, 4)], name="jit nested 3 levels")])
def inline_jit(ctx, *args, jaxpr, **_):
    """Inline the called jaxpr; shardings, layouts and donation mean nothing in one TF graph."""
    return ctx.lower_jaxpr(jaxpr, *args)


@rule(["closed_call", "core_call", "remat", "checkpoint", "remat2"],
      cases=[case.random(lambda x: jax.checkpoint(lambda a: jnp.sin(a) * a)(x),
                         shapes=[(5,)], dtypes="floating")])
def inline_call(ctx, *args, jaxpr=None, call_jaxpr=None, **_):
    """Calls and rematerialisation: the body computes the values; remat only matters
    for JAX's own autodiff scheduling."""
    return ctx.lower_jaxpr(jaxpr if jaxpr is not None else call_jaxpr, *args)


@rule("custom_jvp_call", cases=[case.random(jax.nn.relu, shapes=[(4, 3)], dtypes="floating")])
def custom_jvp_primal(ctx, *args, call_jaxpr, **_):
    """Evaluate the primal function; the custom JVP rule only matters for differentiation."""
    return ctx.lower_jaxpr(call_jaxpr, *args)


@jax.custom_vjp
def _clip_grad(x):
    return jnp.sin(x)


_clip_grad.defvjp(lambda x: (jnp.sin(x), x), lambda x, g: (jnp.clip(g, -1, 1),))


@rule("custom_vjp_call", cases=[case.random(_clip_grad, shapes=[(6,)], dtypes="floating")])
def custom_vjp_primal(ctx, *args, call_jaxpr=None, fun_jaxpr=None, **_):
    """Evaluate the primal function; the forward/backward pair only matters for VJPs."""
    return ctx.lower_jaxpr(call_jaxpr if call_jaxpr is not None else fun_jaxpr, *args)
