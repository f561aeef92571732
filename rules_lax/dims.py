"""Dimension and padding helpers shared by ``pad`` and the conv and window families
(rules_nn); no rules here.

Shapes and padding amounts here are lists of *dimensions*: ints, or JAX's symbolic
dimension expressions under ``polymorphic_shapes`` (``b``, ``floordiv(h - 3, 2) + 1``).
Arithmetic on them stays symbolic, so it is exact and JAX can still decide equalities and
signs; ``ev`` (from :func:`evaluator`) turns them into ints / TF int32 scalars only where
a TF op takes them. With static shapes every dimension is an int and ``ev`` returns it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import tensorflow as tf
from jax._src import core as _jcore
from jax._src.export.shape_poly import InconclusiveDimensionOperation

from core.shapes import is_symbolic

Evaluate = Callable[[Sequence], list]


def ints(xs) -> tuple[int, ...]:
    return tuple(int(x) for x in xs)


def dims(xs) -> list:
    """Dimensions as ints where known, symbolic expressions where not."""
    return [x if is_symbolic(x) else int(x) for x in xs]


def evaluator(ctx) -> Evaluate:
    """``ev(dims)``: the dimensions as ints or TF int32 scalars (solved at run time)."""
    return lambda ds: [ctx.dim(d) for d in ds]


def is_zero(d) -> bool:
    """Known to be 0 (symbolic dimensions are at least 1; TF scalars are not known)."""
    return isinstance(d, int) and d == 0


def same(a, b) -> bool:
    """Two dimensions known to be equal (for every value of the symbols)."""
    return _jcore.definitely_equal(a, b)


def nonnegative(d) -> bool | None:
    """Whether ``d >= 0``; None when it depends on the values of the symbols."""
    try:
        return bool(d >= 0)
    except InconclusiveDimensionOperation:
        return None


def dilate(x, shape, axis, factor, ev: Evaluate, fill=0):
    """Insert ``factor - 1`` copies of ``fill`` between consecutive elements on ``axis``
    (XLA's base/lhs dilation). Returns the new tensor and its shape."""
    n = shape[axis]
    if factor == 1 or is_zero(n):
        return x, shape
    x = tf.expand_dims(x, axis + 1)
    pads = [[0, 0]] * (len(shape) + 1)
    pads[axis + 1] = [0, factor - 1]
    x = tf.pad(x, pads, constant_values=fill)
    new = list(shape)
    new[axis] = n * factor
    x = tf.reshape(x, ev(new))
    new[axis] = (n - 1) * factor + 1
    return tf.slice(x, [0] * len(shape), ev(new)), new


def grow_and_cut(p, ev: Evaluate):
    """A padding amount as (elements added, elements sliced off): max(p, 0), max(-p, 0),
    evaluated. Symbolic amounts of unknown sign are split when the graph runs."""
    sign = nonnegative(p)
    if sign is None:
        t = ev([p])[0]
        return tf.maximum(t, 0), tf.maximum(-t, 0)
    return (ev([p])[0], 0) if sign else (0, ev([-p])[0])


def pad_or_slice(x, shape, pads, ev: Evaluate, fill=0):
    """``lax.pad`` with ``fill`` and no interior padding: negative amounts slice.
    Returns the new tensor and its shape."""
    split = [(grow_and_cut(lo, ev), grow_and_cut(hi, ev)) for lo, hi in pads]
    out = [s + lo + hi for s, (lo, hi) in zip(shape, pads)]
    grow = [[lo[0], hi[0]] for lo, hi in split]
    if not all(is_zero(g) for pair in grow for g in pair):
        x = tf.pad(x, grow, constant_values=fill)
    if not all(is_zero(lo[1]) and is_zero(hi[1]) for lo, hi in split):
        x = tf.slice(x, [lo[1] for lo, _ in split], ev(out))
    return x, out
