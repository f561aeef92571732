"""The TensorFlow rule for ``rms_norm``, registered through the ``jaxtf.rules`` entry point."""
from __future__ import annotations

import sys

import numpy as np
import tensorflow as tf

from core.hookspecs import hookimpl
from core.rule import case, rule
from jaxtf_rmsnorm import rms_norm, rms_norm_p


def _x_and_scale(rng, dtype):
    return [(rng.standard_normal((4, 16)) * 3).astype(dtype),
            rng.uniform(0.5, 1.5, 16).astype(dtype)]


def _zeros(rng, dtype):
    return [np.zeros((2, 8), dtype), np.ones(8, dtype)]


@rule(rms_norm_p, dtypes="floating", cases=[
    case.custom("random rows", rms_norm, _x_and_scale),
    case.custom("all-zero rows stay finite (eps)", rms_norm, _zeros),
    case.custom("eps=0.1", lambda x, s: rms_norm(x, s, eps=0.1), _x_and_scale),
    case.custom("any batch size (polymorphic_shapes)", rms_norm, _x_and_scale,
                convert_kw={"polymorphic_shapes": ["(b, 16)", "(16,)"]}),
])   # it reads no shape, so symbolic dimensions (polymorphic, the default) need nothing
def rms_norm_tf(ctx, x, scale, *, eps):
    """Compute in float32 (or wider) and round back, exactly as the JAX implementation."""
    acc = tf.float64 if x.dtype == tf.float64 else tf.float32
    xf = tf.cast(x, acc)
    inv = tf.math.rsqrt(tf.reduce_mean(xf * xf, axis=-1, keepdims=True) + eps)
    return tf.cast(xf * inv * tf.cast(scale, acc), x.dtype)


@hookimpl
def register_rules(register) -> None:
    register.module(sys.modules[__name__])
