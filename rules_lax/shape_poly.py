"""Primitives that only appear with symbolic shapes (``polymorphic_shapes``)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from core.rule import case, rule


def _arange_of_len(x):
    # under shape polymorphism, x.shape[0] is a symbolic dimension turned into a value
    return jnp.arange(x.shape[0]) * 2 + x.astype(jnp.int32)


@rule("dim_as_value", dtypes="integer", polymorphic=True, cases=[case.random(_arange_of_len, shapes=[(4,)],
                                                           dtypes="int32")])
def dim_as_value(ctx, *, dim):
    """A (symbolic) dimension as a value of the result dtype."""
    return tf.cast(ctx.dim(dim), ctx.tf_dtype(ctx.aval_out))


@rule("dimension_size", polymorphic=True, cases=[case.random(lambda x: x.sum(), shapes=[(3,)], dtypes="float32")])
def dimension_size(ctx, x, *, dimension):
    return tf.cast(tf.shape(x)[dimension], ctx.tf_dtype(ctx.aval_out))


@rule("shape_assertion", dtypes="all", polymorphic=True,
      cases=[case.random(lambda x: x.sum(), shapes=[(3,)], dtypes="float32")])
def shape_assertion(ctx, assert_what, *inputs, error_message):
    tf.debugging.Assert(assert_what, [error_message, *inputs])
    return []
