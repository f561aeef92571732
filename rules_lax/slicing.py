"""dynamic_slice and dynamic_update_slice, with XLA's clamping of the start indices.

XLA clamps each start index into ``[0, operand_dim - slice_dim]`` so the window always
lies inside the operand; indices of unsigned types are clamped as unsigned numbers (a
huge uint32 start is clamped to the end, never read as negative). The slice is one Slice
with a computed begin; the update is the update padded to the operand's shape and
selected where a range mask is on (Pad, Range, Less, SelectV2: all TFLite builtins).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax._src.lax import slicing as jslicing

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_lax.structural import _same


def _clamped_starts(ctx, starts, avals, operand_shape, window_shape) -> list[tf.Tensor]:
    """Each start clamped into [0, dim - window], as int32 (int64 for huge dimensions)."""
    wide = any(isinstance(d, int) and d > 2**31 - 1 for d in ctx.shape(ctx.avals_in[0]))
    out = []
    for t, aval, dim, size in zip(starts, avals, operand_shape, window_shape):
        dt = np.dtype(aval.dtype)
        hi = ctx.dim(dim - size)
        # onnxruntime has no 8/16-bit Min/Max: compare those in int64 as well
        if not isinstance(hi, int) or (dt.itemsize <= 2 and ctx.target == "onnx"):
            t = _as_int64(t, dt)  # a symbolic bound: compare in int64, exact for every type
            t = tf.clip_by_value(t, tf.constant(0, tf.int64), tf.cast(hi, tf.int64))
        elif dt.kind == "u":
            # compare in the index's own type: casting first would make huge values negative
            t = tf.minimum(t, tf.constant(min(hi, int(np.iinfo(dt).max)), t.dtype))
        else:
            t = tf.clip_by_value(t, tf.constant(0, t.dtype),
                                 tf.constant(min(hi, int(np.iinfo(dt).max)), t.dtype))
        out.append(tf.cast(t, tf.int64 if wide else tf.int32))
    return out


def _as_int64(t, dt):
    if dt == np.uint64:
        t = tf.bitcast(t, tf.int64)
        # values of 2^63 and more are past any dimension
        return tf.where(t < 0, tf.constant(np.iinfo(np.int64).max, tf.int64), t)
    return tf.cast(t, tf.int64)


def _starts_for(ctx, operand_aval, starts):
    ndim = len(operand_aval.shape)
    if len(starts) != ndim:
        raise UnsupportedError(f"{ctx.eqn.primitive} with dynamic slice sizes is not "
                               "supported; use static sizes")
    return list(starts), ctx.avals_in[-ndim:] if ndim else []


def _raw_dynamic_slice(x, *starts, sizes):
    return jslicing.dynamic_slice_p.bind(x, *starts, slice_sizes=sizes)


def _index_case(name, fn, xs, *starts, dtypes="numeric"):
    """Fixed operands cast to the dtype under test; start indices keep their own dtype."""
    return case.custom(name, fn,
                       lambda rng, dt: [np.asarray(x).astype(dt) for x in xs] + list(starts),
                       dtypes=dtypes)


_X = [np.arange(1, 11) % 7]  # values that fit every numeric dtype
_I = np.int32


@rule("dynamic_slice", dtypes="all",
      cases=[_index_case("in bounds", lambda x, i: _raw_dynamic_slice(x, i, sizes=(3,)), _X,
                         np.array(2, _I)),
             _index_case("negative start clamps to 0",
                         lambda x, i: _raw_dynamic_slice(x, i, sizes=(3,)), _X,
                         np.array(-4, _I)),
             _index_case("start past the end clamps",
                         lambda x, i: _raw_dynamic_slice(x, i, sizes=(3,)), _X,
                         np.array(9, np.int8)),
             _index_case("huge uint32 start clamps to the end",
                         lambda x, i: _raw_dynamic_slice(x, i, sizes=(4,)), _X,
                         np.array(2**32 - 2, np.uint32)),
             _index_case("uint8 start", lambda x, i: _raw_dynamic_slice(x, i, sizes=(2,)), _X,
                         np.array(255, np.uint8)),
             _index_case("int16 start, 2-d", lambda x, i, j: _raw_dynamic_slice(
                 x.reshape(2, 5), i, j, sizes=(1, 3)), _X, np.array(1, np.int16),
                 np.array(-1, np.int16)),
             case.custom("bool", lambda x, i, j: _raw_dynamic_slice(x, i, j, sizes=(2, 2)),
                         lambda rng, dt: [rng.random((3, 4)) < 0.5, np.array(3, _I),
                                          np.array(1, _I)],
                         dtypes="bool"),
             case.custom("full window", lambda x, i: _raw_dynamic_slice(x, i, sizes=(5,)),
                         lambda rng, dt: [np.arange(5).astype(dt), np.array(3, _I)],
                         dtypes="numeric")])
def dynamic_slice(ctx, x, *starts, slice_sizes, **_):
    """One Slice whose begin is the clamped start indices."""
    aval = ctx.avals_in[0]
    starts, start_avals = _starts_for(ctx, aval, starts)
    begin = _clamped_starts(ctx, starts, start_avals, aval.shape, slice_sizes)
    if not begin:
        return x
    return tf.slice(x, tf.stack(begin), [ctx.dim(s) for s in slice_sizes])


def _raw_update(x, u, *starts):
    return jslicing.dynamic_update_slice_p.bind(x, u, *starts)


def _update_case(name, xshape, ushape, *starts, dtypes="numeric"):
    def make(rng, dt):
        n, m = int(np.prod(xshape)), int(np.prod(ushape))
        return [(np.arange(n) % 7).reshape(xshape).astype(dt),
                (np.arange(m) % 5 + 1).reshape(ushape).astype(dt), *starts]
    return case.custom(name, _raw_update, make, dtypes=dtypes)


@rule("dynamic_update_slice", dtypes="all",
      cases=[_update_case("in bounds", (6,), (2,), np.array(3, _I)),
             _update_case("negative start clamps to 0", (6,), (2,), np.array(-3, _I)),
             _update_case("start past the end clamps", (6,), (4,), np.array(5, np.int8)),
             _update_case("huge uint32 start clamps to the end", (6,), (2,),
                          np.array(2**32 - 1, np.uint32)),
             _update_case("2-d, uint16 starts", (4, 5), (2, 3), np.array(3, np.uint16),
                          np.array(1, np.uint16)),
             _update_case("full window", (2, 3), (2, 3), np.array(1, _I), np.array(-1, _I)),
             _update_case("empty update", (2, 3), (0, 3), np.array(1, _I), np.array(0, _I)),
             case.custom("bool", _raw_update,
                         lambda rng, dt: [rng.random((3, 4)) < 0.5, np.ones((2, 2), bool),
                                          np.array(2, _I), np.array(1, _I)], dtypes="bool")])
def dynamic_update_slice(ctx, x, update, *starts, **_):
    """Pad the update to the operand's shape at the clamped starts, then select it inside
    the window (a mask of per-axis range tests)."""
    aval, uaval = ctx.avals_in[0], ctx.avals_in[1]
    starts, start_avals = _starts_for(ctx, aval, starts)
    if any(_same(u, 0) for u in uaval.shape):
        return x
    if all(_same(u, d) for u, d in zip(uaval.shape, aval.shape)):
        return update
    shape, ushape = ctx.shape(aval), ctx.shape(uaval)
    begin = _clamped_starts(ctx, starts, start_avals, aval.shape, uaval.shape)
    idx = begin[0].dtype
    paddings = [tf.stack([b, tf.cast(d - u, idx) - b]) for b, d, u in zip(begin, shape, ushape)]
    padded = tf.pad(update, tf.stack(paddings))
    mask = None
    for axis, (b, d, u) in enumerate(zip(begin, shape, ushape)):
        if _same(aval.shape[axis], uaval.shape[axis]):
            continue  # the window covers the whole axis
        r = tf.range(d, dtype=idx)
        inside = tf.logical_and(r >= b, r < b + tf.cast(u, idx))
        bshape = [1] * len(shape)
        bshape[axis] = d
        inside = tf.reshape(inside, bshape)
        mask = inside if mask is None else tf.logical_and(mask, inside)
    return tf.where(mask, padded, x)
