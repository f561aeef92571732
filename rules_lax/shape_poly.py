"""Primitives that only appear with symbolic shapes (``polymorphic_shapes``)."""
from __future__ import annotations

import tensorflow as tf

from core.rule import case, rule


def _plus_len(x):
    # under shape polymorphism, x.shape[0] is a symbolic dimension turned into a value
    return x + x.shape[0]


@rule("dim_as_value", dtypes="integer", cases=[
    case.random(_plus_len, shapes=[(4,)], dtypes="int32",
                convert_kw={"polymorphic_shapes": ["(b,)"]})])
def dim_as_value(ctx, *, dim):
    """A (symbolic) dimension as a value of the result dtype."""
    return tf.cast(ctx.dim(dim), ctx.tf_dtype(ctx.aval_out))
