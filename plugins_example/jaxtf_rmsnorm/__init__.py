"""A fused RMS-norm as a JAX primitive: ``rms_norm(x, scale, eps=1e-6)``.

    y = x / sqrt(mean(x**2, axis=-1, keepdims=True) + eps) * scale

It has everything a real custom primitive needs: an implementation (used by ``jax.jit``
through an MLIR lowering), abstract evaluation, a batching rule for ``jax.vmap``, and a JVP
written with ordinary JAX ops, so ``jax.grad`` works through it (the JVP's linear part is
made of standard primitives, which JAX knows how to transpose).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.extend.core import Primitive
from jax.interpreters import ad, batching, mlir

__all__ = ["rms_norm", "rms_norm_p"]

rms_norm_p = Primitive("rms_norm")


def rms_norm(x, scale, eps: float = 1e-6):
    """RMS-normalise ``x`` over its last axis and multiply by ``scale`` (shape ``x.shape[-1:]``)."""
    x, scale = jnp.asarray(x), jnp.asarray(scale)
    if scale.shape != x.shape[-1:]:
        raise ValueError(f"rms_norm: scale must have shape {x.shape[-1:]}, got {scale.shape}")
    return rms_norm_p.bind(x, scale, eps=float(eps))


def _reference(x, scale, *, eps):
    # Accumulate in float32 at least, as fused kernels do, then round back.
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xf = x.astype(acc)
    inv = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return (xf * inv * scale.astype(acc)).astype(x.dtype)


def _abstract_eval(x, scale, *, eps):
    return jax.core.ShapedArray(x.shape, x.dtype)


def _batch(args, dims, *, eps):
    x, scale = args
    xd, sd = dims
    if sd is not None:                       # None: this operand is not batched
        # a batched scale: fall back to the reference computation
        return jax.vmap(lambda a, b: _reference(a, b, eps=eps), (xd, sd))(x, scale), 0
    x = jnp.moveaxis(x, xd, 0)
    return rms_norm_p.bind(x, scale, eps=eps), 0


def _jvp(primals, tangents, *, eps):
    x, scale = primals
    dx, dscale = (ad.instantiate_zeros(t) for t in tangents)
    y = rms_norm_p.bind(x, scale, eps=eps)
    acc = jnp.promote_types(x.dtype, jnp.float32)
    xf, dxf = x.astype(acc), dx.astype(acc)
    n = x.shape[-1]
    inv = jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    # d(x * inv) = dx * inv - x * inv**3 * mean(x * dx)
    dnorm = dxf * inv - xf * inv ** 3 * jnp.sum(xf * dxf, axis=-1, keepdims=True) / n
    dy = dnorm * scale.astype(acc) + xf * inv * dscale.astype(acc)
    return y, dy.astype(x.dtype)


rms_norm_p.def_impl(lambda x, scale, *, eps: _reference(x, scale, eps=eps))
rms_norm_p.def_abstract_eval(_abstract_eval)
batching.primitive_batchers[rms_norm_p] = _batch
ad.primitive_jvps[rms_norm_p] = _jvp
mlir.register_lowering(rms_norm_p, mlir.lower_fun(_reference, multiple_results=False))
