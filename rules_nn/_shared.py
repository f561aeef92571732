"""Helpers shared by the conv and window families (no rules here)."""
from __future__ import annotations

import tensorflow as tf


def ints(xs) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


def dilate(x, shape, axis, factor, fill=0):
    """Insert ``factor - 1`` copies of ``fill`` between consecutive elements on ``axis``
    (XLA's base/lhs dilation). Returns the new tensor and its shape."""
    n = shape[axis]
    if factor == 1 or n == 0:
        return x, shape
    x = tf.expand_dims(x, axis + 1)
    pads = [[0, 0]] * (len(shape) + 1)
    pads[axis + 1] = [0, factor - 1]
    x = tf.pad(x, pads, constant_values=fill)
    new = list(shape)
    new[axis] = n * factor
    x = tf.reshape(x, new)
    new[axis] = (n - 1) * factor + 1
    return tf.slice(x, [0] * len(shape), new), new
