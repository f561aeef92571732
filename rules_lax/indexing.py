"""Gather and the scatter family: gather, scatter, scatter-add, scatter-sub, scatter-mul,
scatter-min, scatter-max.

Every form of XLA's dimension numbers (offset/window dims, collapsed/inserted dims,
start_index_map, operand/indices batching dims, any slice sizes) goes through one idea:
compute, in plain TF integer ops, the *linear* position in the flattened operand of every
gathered element or every update element (one ``_IndexGrid`` serves both), then use
``tf.gather`` (gather) or segment ops (scatter). Sizes come from ``ctx.shape``, so symbolic
dimensions (``polymorphic_shapes``) work: sizes, bounds and positions are then run-time
values. Out-of-bounds handling follows what JAX's CPU lowering does:

* gather, CLIP and PROMISE_IN_BOUNDS: XLA clamps each start index so the whole window is in
  bounds. FILL_OR_DROP: JAX first converts the indices to int32 (int64 for huge operands,
  wrapping like a C cast), then fills every window with any start index out of bounds.
* scatter, CLIP: indices are clamped like gather's. FILL_OR_DROP and PROMISE_IN_BOUNDS: XLA
  drops every window with any start index out of bounds.

Scatter combiners: add/sub/mul/min/max are order-free (up to float rounding) and use
unsorted segment ops; XLA propagates NaN through min/max. Plain ``scatter`` on XLA:CPU runs
the scatter positions in row-major order, so for overlapping targets the last scatter
position wins; we pick it with a segment max over update numbers. Complex min/max (whose
NaN behaviour depends on order) and ``scatter_apply`` run XLA's order in a ``tf.while_loop``.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax
from jax._src.lax.slicing import GatherScatterMode

from core.errors import UnsupportedError
from core.rule import random_values, case, rule
from rules_lax.reductions import complex_minmax

_I64_MAX = np.iinfo(np.int64).max
_I32_MAX = np.iinfo(np.int32).max


# -- the index grid shared by gather and scatter -----------------------------------------------
# Sizes are Python ints where known and TF int32 scalars where symbolic (polymorphic_shapes);
# products of sizes and positions are int64, so they cannot overflow (int32 on TF.js, which
# has no int64 and whose tensors hold fewer than 2**31 elements).

def _ints(xs):
    return [int(x) for x in xs]


def _known_zero(d) -> bool:
    return isinstance(d, int) and d == 0


def _index_type(ctx):
    """The integer type of positions and sizes: int64, int32 on TF.js (no int64 there)."""
    return tf.int32 if ctx.target == "tfjs" else tf.int64


def _i64(d, itype=tf.int64):
    return d if isinstance(d, int) else tf.cast(d, itype)


def _prod(dims, itype=tf.int64):
    """Product of sizes: a Python int if all are known (or one is a known 0), else a
    scalar of ``itype``."""
    if any(_known_zero(d) for d in dims):
        return 0
    out = 1
    for d in dims:
        out = out * _i64(d, itype)
    return out


def _int64_vector(dims, itype=tf.int64):
    if all(isinstance(d, int) for d in dims):
        return tf.constant(dims, itype, shape=[len(dims)])
    return tf.stack([tf.cast(d, itype) for d in dims])


def _as_int64(idx, dtype, itype=tf.int64):
    """Indices as int64 (``itype``) with the same order as in their own dtype (uint64
    beyond int64 saturates: it is out of bounds either way)."""
    x = tf.cast(idx, itype)
    if np.dtype(dtype) == np.uint64:
        x = tf.where(x < 0, tf.constant(_I64_MAX, tf.int64), x)
    return x


def _iota(n, axis, rank, itype=tf.int64):
    shape = [1] * rank
    shape[axis] = n
    return tf.reshape(tf.range(n, dtype=itype), shape)


def _narrow(ctx, pos, limit):
    """int32 positions when all of them are known to be below ``limit`` <= 2**31 - 1
    (always on TFLite, whose tensors hold fewer than 2**31 elements and whose GatherV2
    takes int32 positions)."""
    small = ctx.target == "tflite" or isinstance(limit, int) and limit <= _I32_MAX
    return tf.cast(pos, tf.int32) if small else pos


@dataclasses.dataclass(frozen=True)
class _IndexGrid:
    """Where a gather reads or a scatter writes: one point for every batch element of the
    indices and every offset in its window. Grid layout: the indices' batch dims, then the
    window dims; ``to_grid`` lists the axes of the *result* (gather's output, scatter's
    updates) in that order."""
    operand_shape: list     # physical: key arrays carry their key data in trailing dims
    window: list            # window size of every operand dim (1 where collapsed/batching)
    window_dims: list       # operand dims with a window offset, in result order
    start_map: list         # operand dim of each component of a start index
    operand_batching: list
    indices_batching: list  # the indices dim paired with each operand batching dim
    batch_shape: list       # the indices' shape without the index vector dim
    to_grid: list
    itype: Any = tf.int64   # of positions and sizes (see _index_type)

    @property
    def shape(self) -> list:
        return self.batch_shape + [self.window[d] for d in self.window_dims]

    @property
    def operand_size(self):
        return _prod(self.operand_shape, self.itype)

    def clamp(self, idx64):
        """(start indices clamped so the whole window is in bounds, and for every batch
        element whether it was in bounds already). The bounds are run-time values when
        dims are symbolic."""
        upper = _int64_vector([self.operand_shape[d] - self.window[d] for d in self.start_map],
                              self.itype)
        in_bounds = tf.reduce_all(tf.logical_and(idx64 >= 0, idx64 <= upper), axis=-1)
        clamped = tf.minimum(tf.maximum(idx64, tf.constant(0, self.itype)), upper)
        return clamped, in_bounds

    def positions(self, starts):
        """Linear position in the flattened operand of every grid point (``starts``: the
        clamped start indices)."""
        nb, rank, n = len(self.batch_shape), len(self.shape), len(self.operand_shape)
        strides = [1] * n
        for d in reversed(range(n - 1)):
            strides[d] = strides[d + 1] * _i64(self.operand_shape[d + 1], self.itype)
        pos = tf.zeros([1] * rank, self.itype)
        for d, stride in enumerate(strides):
            comp = None
            if d in self.start_map:
                comp = tf.reshape(starts[..., self.start_map.index(d)],
                                  self.batch_shape + [1] * (rank - nb))
            if d in self.operand_batching:
                axis = self.indices_batching[self.operand_batching.index(d)]
                comp = _iota(self.batch_shape[axis], axis, rank, self.itype)
            if d in self.window_dims:
                off = _iota(self.window[d], nb + self.window_dims.index(d), rank, self.itype)
                comp = off if comp is None else comp + off
            if comp is not None and not _known_zero(stride):
                pos = pos + comp * stride
        return tf.broadcast_to(pos, self.shape)

    def where_in_bounds(self, in_bounds, x, other):
        """``x`` at the grid points whose window is in bounds, ``other`` elsewhere."""
        mask = tf.reshape(in_bounds, self.batch_shape + [1] * len(self.window_dims))
        return tf.where(mask, x, other)

    def from_grid(self, x):
        """A grid-shaped tensor in the result's layout."""
        perm = np.argsort(self.to_grid).tolist()
        return x if perm == sorted(perm) else tf.transpose(x, perm)

    def to_grid_layout(self, x):
        """A result-shaped tensor in the grid's layout."""
        return x if self.to_grid == sorted(self.to_grid) else tf.transpose(x, self.to_grid)


def _index_grid(ctx, dn, result_aval) -> _IndexGrid:
    """The grid of a gather (``result_aval`` its output) or a scatter (its updates).
    Gather's and scatter's dimension numbers name the same things: the result dims that
    hold window offsets (offset dims / update window dims), the operand dims without a
    window (collapsed / inserted), the start index map and the batching dims. A window's
    sizes are those of the result's window dims."""
    if isinstance(dn, lax.GatherDimensionNumbers):
        result_window, dropped, start_map, indices_batching = (
            dn.offset_dims, dn.collapsed_slice_dims, dn.start_index_map,
            dn.start_indices_batching_dims)
    else:
        result_window, dropped, start_map, indices_batching = (
            dn.update_window_dims, dn.inserted_window_dims, dn.scatter_dims_to_operand_dims,
            dn.scatter_indices_batching_dims)
    operand_shape, result_shape = ctx.shape(ctx.avals_in[0]), ctx.shape(result_aval)
    rank = len(result_shape)
    n_key = rank - len(result_aval.shape)    # key data dims trail operand and result alike
    result_window = _ints(result_window) + list(range(rank - n_key, rank))
    dropped, operand_batching = _ints(dropped), _ints(dn.operand_batching_dims)
    window_dims = [d for d in range(len(operand_shape))
                   if d not in dropped and d not in operand_batching]
    window = [1] * len(operand_shape)
    for d, r in zip(window_dims, result_window):
        window[d] = result_shape[r]
    batch_axes = [r for r in range(rank) if r not in result_window]
    return _IndexGrid(operand_shape, window, window_dims, _ints(start_map), operand_batching,
                      _ints(indices_batching), ctx.shape(ctx.avals_in[1])[:-1],
                      batch_axes + result_window, _index_type(ctx))


def _mode(mode):
    mode = GatherScatterMode.from_any(mode)
    if mode not in (GatherScatterMode.CLIP, GatherScatterMode.FILL_OR_DROP,
                    GatherScatterMode.PROMISE_IN_BOUNDS):
        raise UnsupportedError(f"gather/scatter mode={mode} has no XLA lowering in JAX "
                               "either; use mode='clip', 'fill' or 'promise_in_bounds'.")
    return mode


# -- gather -------------------------------------------------------------------------------------

def _default_fill(dtype):
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):
        return np.iinfo(np.uint32).max
    dtype = np.dtype(dtype)
    if jax.dtypes.issubdtype(dtype, np.inexact):
        return np.nan
    if jax.dtypes.issubdtype(dtype, np.signedinteger):
        return np.iinfo(dtype).min
    if jax.dtypes.issubdtype(dtype, np.unsignedinteger):
        return np.iinfo(dtype).max
    return True


_G2 = lax.GatherDimensionNumbers(offset_dims=(1,), collapsed_slice_dims=(0,),
                                 start_index_map=(0, 1))
_GB = lax.GatherDimensionNumbers(offset_dims=(2,), collapsed_slice_dims=(),
                                 start_index_map=(2,), operand_batching_dims=(0, 1),
                                 start_indices_batching_dims=(1, 0))
_G_IDX = np.array([[0, 1], [3, 2], [-1, 4], [2, 9], [7, -8]], np.int32)


def _g(mode, dnums=_G2, sizes=(1, 3), fill_value=None):
    return lambda x, i: lax.gather(x, i, dnums, sizes, mode=mode, fill_value=fill_value)


def _rand_with(shape, *idx):
    return lambda rng, dtype: [random_values(rng, shape, dtype), *idx]


_GATHER_CASES = [
    case.custom("2-D start, window 3, clip (out-of-range starts clamp)", _g("clip"),
                _rand_with((4, 6), _G_IDX)),
    case.custom("promise_in_bounds clamps like XLA", _g("promise_in_bounds"),
                _rand_with((4, 6), _G_IDX)),
    case.custom("fill: whole window filled if any start is out of bounds", _g("fill"),
                _rand_with((4, 6), _G_IDX)),
    case.custom("fill with explicit fill_value", _g("fill", fill_value=1),
                _rand_with((4, 6), _G_IDX)),
    case.custom("uint32 indices, fill",
                _g("fill"), _rand_with((4, 6), np.array([[0, 2], [3, 4], [4, 0],
                                                         [1, 4000000000]], np.uint32))),
    case.custom("operand and indices batching dims (vmapped take), permuted",
                _g("clip", _GB, (1, 1, 3)),
                _rand_with((2, 3, 10), np.array([[[0], [1]], [[2], [8]], [[-4], [5]]],
                                                np.int32))),
    case.custom("take along axis 1 (offset dims around the batch dims), fill",
                _g("fill", lax.GatherDimensionNumbers((0, 3), (1,), (1,)), (3, 1, 2)),
                _rand_with((3, 5, 2), np.array([[[0], [4]], [[5], [-1]]], np.int32))),
    case.custom("scalar index, no batch dims", lambda x, i: lax.gather(
        x, i, lax.GatherDimensionNumbers((0, 1), (), (0,)), (2, 3),
        mode="promise_in_bounds"), _rand_with((5, 3), np.array([4], np.int8))),
]

# Symbolic dims (polymorphic_shapes): the bounds that clamp, fill or drop are run-time values.
# float64 runs with x64 on, where JAX's index arithmetic is 64-bit.
_POLY_DTYPES = ("float32", "int32", "float64")
_ROWS = np.array([0, 4, -2, 7, -9, 4], np.int32)     # after jnp's wrap: 4 and 7 clamp, -4 too


def _poly(name, fn, make_args, *specs, dtypes=_POLY_DTYPES):
    return case.custom("polymorphic: " + name, fn, make_args, dtypes=dtypes,
                       convert_kw={"polymorphic_shapes": list(specs)})


_GATHER_CASES += [
    _poly("x[idx], n rows, b indices, out of range clamps", lambda x, i: x[i],
          _rand_with((5, 4), _ROWS), "(n, 4)", "(b,)"),
    _poly("x[:, idx], symbolic slice size", lambda x, i: x[:, i],
          _rand_with((3, 5), _ROWS), "(m, n)", "(b,)"),
    _poly("embedding lookup table[ids], ids (b, t)", lambda t, ids: t[ids],
          _rand_with((10, 8), np.array([[1, 9, 0], [3, 3, -1]], np.int32)),
          "(v, 8)", "(b, t)"),
    _poly("take_along_axis, leading dim b, fills out of bounds",
          lambda x, i: jnp.take_along_axis(x, i, axis=1),
          _rand_with((3, 5), np.array([[0, 4, 5, -1], [-6, 2, 9, 1], [3, 3, 0, -5]],
                                      np.int32)), "(b, n)", "(b, k)"),
    *[_poly(f"lax.gather {mode}, window 3, operand (r, c + 2), indices (b, 2)", _g(mode),
            _rand_with((4, 6), _G_IDX), "(r, c + 2)", "(b, 2)")
      for mode in ("clip", "fill", "promise_in_bounds")],
    _poly("fill: int64 indices wrap to int32 as under jax.jit", _g("fill"),
          _rand_with((4, 6), np.array([[0, 2], [2**32 + 1, 0], [1, 2**31]], np.int64)),
          "(r, c + 2)", "(b, 2)", dtypes="float64"),
    _poly("vmap of dynamic_slice (batching dims, clip)",
          jax.vmap(lambda x, s: lax.dynamic_slice(x, (s,), (2,))),
          _rand_with((4, 6), np.array([0, 5, -3, 2], np.int32)), "(b, 6)", "(b,)"),
]


@rule("gather", dtypes=["all", "key"], cases=_GATHER_CASES)
def gather(ctx, operand, indices, *, dimension_numbers, mode, fill_value=None, **_):
    """XLA gather as one tf.gather over linear positions in the flattened operand."""
    mode = _mode(mode)
    op_aval, idx_aval = ctx.avals_in
    grid = _index_grid(ctx, dimension_numbers, ctx.aval_out)
    out_dtype = ctx.tf_dtype(ctx.aval_out)
    if any(_known_zero(d) for d in grid.shape):
        return tf.zeros(ctx.shape(ctx.aval_out), out_dtype)
    if mode == GatherScatterMode.FILL_OR_DROP:
        # JAX's FILL_OR_DROP lowering casts the indices to a signed index type first (a
        # wrapping cast), then masks; mimic it so huge indices land where JAX's do. The
        # type is int64 only for a dim past 2**31 - 1: as jax.jit on the actual shapes, so
        # symbolic dims (whose values are int32 here) count as small. (JAX's own symbolic
        # lowering would use the default int type, int64 under x64.)
        wide = any(isinstance(d, int) and d > _I32_MAX for d in grid.operand_shape)
        idx64 = tf.cast(tf.cast(indices, tf.int64 if wide else tf.int32), grid.itype)
    else:
        idx64 = _as_int64(indices, idx_aval.dtype, grid.itype)
    starts, in_bounds = grid.clamp(idx64)
    pos = _narrow(ctx, grid.positions(starts), grid.operand_size)
    out = tf.gather(tf.reshape(operand, [-1]), pos)
    if mode == GatherScatterMode.FILL_OR_DROP:
        if fill_value is None:
            fill_value = _default_fill(op_aval.dtype)
        fill = tf.constant(np.array(fill_value).astype(out_dtype.as_numpy_dtype), out_dtype)
        out = grid.where_in_bounds(in_bounds, out, fill)
    return grid.from_grid(out)


# -- scatter ------------------------------------------------------------------------------------

def _scatter_positions(ctx, grid, indices, mode):
    """For every update element, in grid order (flattened): its linear position in the
    flattened operand, or M, one past the end, where XLA drops its window."""
    starts, in_bounds = grid.clamp(_as_int64(indices, ctx.avals_in[1].dtype, grid.itype))
    pos = grid.positions(starts)
    m = grid.operand_size
    if mode != GatherScatterMode.CLIP:
        pos = grid.where_in_bounds(in_bounds, pos, tf.cast(m, grid.itype))
    return _narrow(ctx, tf.reshape(pos, [-1]), m + 1)   # the segment ops count M + 1 segments


def _is_overwrite(update_jaxpr):
    """The combiner of plain lax.scatter (None, or ``lambda x, y: y``)."""
    if update_jaxpr is None:
        return True
    jaxpr = getattr(update_jaxpr, "jaxpr", update_jaxpr)
    return (not jaxpr.eqns and len(jaxpr.outvars) == 1 and len(jaxpr.invars) == 2
            and jaxpr.outvars[0] is jaxpr.invars[1])


def _segment_reduce(kind, values, pos, m, target="tf"):
    if target == "tfjs":
        # TF.js has no segment ops; its ScatterNd sums duplicate positions (only "sum"
        # comes here on TF.js, see _scatter_impl)
        assert kind == "sum", kind
        size = [m + 1] if isinstance(m, int) else tf.reshape(m + 1, [1])
        return tf.scatter_nd(pos[:, None], values, size)[:m]
    if target == "onnx" and kind != "prod":
        return _scatter_reduce(kind, values, pos, m)
    seg = {"sum": tf.math.unsorted_segment_sum, "prod": tf.math.unsorted_segment_prod,
           "max": tf.math.unsorted_segment_max, "min": tf.math.unsorted_segment_min}[kind]
    return seg(values, pos, m + 1)[:m]


def _scatter_reduce(kind, values, pos, m):
    """The segment reduction as TensorScatterAdd/Max/Min into the reduction's identity
    (tf2onnx's UnsortedSegment* fail or miscount; these become ONNX ScatterND with a
    reduction, measured exact with duplicates)."""
    dt = values.dtype
    if kind == "sum":
        init = 0
    elif dt.is_floating:
        init = -np.inf if kind == "max" else np.inf
    else:
        init = dt.min if kind == "max" else dt.max
    acc = tf.fill(tf.reshape(tf.cast(m + 1, tf.int64), [1]), tf.constant(init, dt))
    op = {"sum": tf.tensor_scatter_nd_add, "max": tf.tensor_scatter_nd_max,
          "min": tf.tensor_scatter_nd_min}[kind]
    return op(acc, tf.cast(pos, tf.int64)[:, None], values)[:m]


def _hits(pos, m, target="tf"):
    """How many update elements land on each operand element."""
    return _segment_reduce("sum", tf.ones_like(pos), pos, m, target)


def _only_negative_zeros(values, pos, m, target="tf"):
    """For every operand element: whether every float update landing on it is -0.0 (true
    where none lands). On TF and TFLite one segment max of the bit patterns (-0.0 is the
    least signed integer), elsewhere a count of the other updates."""
    if target in ("tf", "tflite"):
        ints = {tf.float64: tf.int64}.get(values.dtype, tf.int32)
        return tf.equal(_segment_reduce("max", tf.bitcast(values, ints), pos, m, target),
                        tf.constant(ints.min, ints))
    one = tf.constant(1, values.dtype)
    negative_zero = tf.logical_and(tf.equal(values, 0), one / values < 0)     # 1 / -0 = -inf
    others = tf.cast(tf.logical_not(negative_zero), tf.int32)
    return tf.equal(_segment_reduce("sum", others, pos, m, target), 0)


def _holds_negative_zero(t, depth: int = 6) -> bool:
    """False when ``t`` is known to hold no -0.0: a constant (in a graph also one that is
    filled, broadcast or reshaped); True when not known."""
    value = tf.get_static_value(t)
    if value is not None:
        parts = (value.real, value.imag) if np.iscomplexobj(value) else (value,)
        return any(bool(np.any((p == 0) & np.signbit(p))) for p in parts)
    op = None if tf.executing_eagerly() else getattr(t, "op", None)
    if op is None or depth == 0:
        return True
    if op.type in ("Reshape", "BroadcastTo", "Identity", "ExpandDims", "Cast", "Tile"):
        return _holds_negative_zero(op.inputs[0], depth - 1)
    if op.type == "Fill":
        return _holds_negative_zero(op.inputs[1], depth - 1)
    return op.type != "ZerosLike"


def _widen(x):
    """f16/bf16 have segment kernels, but accumulate in f32 as XLA does per step."""
    return tf.cast(x, tf.float32) if x.dtype in (tf.float16, tf.bfloat16) else x


def _combine_ordered(ctx, kind, op_flat, upd_flat, pos, m, n_scatter, window,
                     update_jaxpr=None, update_consts=()):
    """XLA:CPU's own order: scatter positions one after another (each one's window
    elements land on distinct operand elements). Used where order changes the numbers."""
    upd2 = tf.reshape(upd_flat, _int64_vector([n_scatter, window], pos.dtype))
    pos2 = tf.reshape(pos, _int64_vector([n_scatter, window], pos.dtype))
    acc0 = tf.concat([op_flat, tf.zeros([1], op_flat.dtype)], 0)

    def combine(x, y):
        if kind == "scatter":
            return y
        if kind in ("min", "max"):
            return complex_minmax(x, y, kind == "max")
        out, = ctx.lower_jaxpr(update_jaxpr, x, y, consts=list(update_consts))
        return tf.broadcast_to(tf.cast(out, x.dtype), tf.shape(x))

    def body(i, acc):
        p = pos2[i]
        new = combine(tf.gather(acc, p), upd2[i])
        return i + 1, tf.tensor_scatter_nd_update(acc, p[:, None], new)

    n = n_scatter if isinstance(n_scatter, int) else tf.cast(n_scatter, pos.dtype)
    _, acc = tf.while_loop(lambda i, _: i < n, body, (tf.constant(0, pos.dtype), acc0))
    return acc[:m]


def _scatter_impl(kind, ctx, operand, indices, updates, *, dimension_numbers, mode,
                  update_jaxpr=None, update_consts=(), **_):
    mode = _mode(mode)
    if kind == "scatter" and not _is_overwrite(update_jaxpr):
        kind = "apply"
    grid = _index_grid(ctx, dimension_numbers, ctx.avals_in[2])
    m = grid.operand_size
    n_scatter = _prod(grid.batch_shape, grid.itype)
    window = _prod(grid.shape[len(grid.batch_shape):], grid.itype)
    n = _prod([n_scatter, window], grid.itype)
    if _known_zero(m) or _known_zero(n):
        return operand
    pos = _scatter_positions(ctx, grid, indices, mode)
    upd = tf.reshape(grid.to_grid_layout(updates), [-1])
    op = tf.reshape(operand, [-1])
    dtype = op.dtype
    t = ctx.target
    if t == "tfjs" and kind not in ("add", "sub"):
        # TF.js's only scatter that combines duplicates sums them: the others go one
        # scatter position after another, with the primitive's own combiner
        kind = kind if kind == "scatter" or update_jaxpr is None else "apply"
        out = _combine_ordered(ctx, kind, op, upd, pos, m, n_scatter, window,
                               update_jaxpr, update_consts)
    elif kind == "scatter":
        # The last scatter position wins: updates are now numbered in XLA's order.
        order = tf.range(n, dtype=pos.dtype)
        winner = _segment_reduce("max", order, pos, m, t)
        out = tf.where(winner >= 0, tf.gather(upd, tf.maximum(winner, 0)), op)
    elif kind == "apply" or (kind in ("min", "max") and dtype.is_complex):
        out = _combine_ordered(ctx, kind, op, upd, pos, m, n_scatter, window,
                               update_jaxpr, update_consts)
    elif kind == "mul" or (kind in ("add", "sub") and dtype.is_integer):
        red = _segment_reduce("prod" if kind == "mul" else "sum", _widen(upd), pos, m, t)
        wide = _widen(op)
        out = tf.cast({"add": wide + red, "sub": wide - red, "mul": wide * red}[kind], dtype)
    elif kind in ("add", "sub"):
        # XLA adds the updates one after another (x - u is x + -u), so where only -0.0 lands
        # (or nothing) the operand is left as it is; a segment sum starts from +0.0, which
        # would make a -0.0 operand +0.0 there. Kept per part of a complex number.
        v = _widen(upd) if kind == "add" else -_widen(upd)
        out = tf.cast(_widen(op) + _segment_reduce("sum", v, pos, m, t), dtype)
        if _holds_negative_zero(op):    # (not a gradient's zeros: nothing to keep there)
            if dtype.is_complex:
                keep_re = _only_negative_zeros(tf.math.real(v), pos, m, t)
                keep_im = _only_negative_zeros(tf.math.imag(v), pos, m, t)
                out = tf.complex(tf.where(keep_re, tf.math.real(op), tf.math.real(out)),
                                 tf.where(keep_im, tf.math.imag(op), tf.math.imag(out)))
            else:
                out = tf.where(_only_negative_zeros(v, pos, m, t), op, out)
    elif dtype == tf.bool:   # min is AND, max is OR
        red = _segment_reduce(kind, tf.cast(upd, tf.int32), pos, m, t)
        hit = _hits(pos, m, t) > 0
        red = tf.cast(red, tf.bool)
        out = tf.where(hit, tf.logical_and(op, red) if kind == "min" else
                       tf.logical_or(op, red), op)
    else:
        wide_u, wide_o = _widen(upd), _widen(op)
        hit = _hits(pos, m, t) > 0
        if dtype.is_floating:
            # XLA's min/max propagate NaN from either side; segment min/max do not.
            inf = np.inf if kind == "min" else -np.inf
            is_nan = tf.math.is_nan(wide_u)
            red = _segment_reduce(kind, tf.where(is_nan, tf.constant(inf, wide_u.dtype),
                                                 wide_u), pos, m, t)
            nan_hit = _segment_reduce("max", tf.cast(is_nan, tf.int32), pos, m, t) > 0
            both = tf.minimum(wide_o, red) if kind == "min" else tf.maximum(wide_o, red)
            both = tf.where(tf.logical_or(nan_hit, tf.math.is_nan(wide_o)),
                            tf.constant(np.nan, wide_o.dtype), both)
        else:
            red = _segment_reduce(kind, wide_u, pos, m, t)
            both = tf.minimum(wide_o, red) if kind == "min" else tf.maximum(wide_o, red)
        out = tf.cast(tf.where(hit, both, wide_o), dtype)
    return tf.reshape(out, grid.operand_shape)


def _dn(w, i, s, ob=(), ib=()):
    return lax.ScatterDimensionNumbers(update_window_dims=w, inserted_window_dims=i,
                                       scatter_dims_to_operand_dims=s,
                                       operand_batching_dims=ob,
                                       scatter_indices_batching_dims=ib)


_D1 = _dn((), (0,), (0,))
_DW = _dn((1,), (), (0,))          # overlapping windows of 3 along dim 0
_DWF = _dn((0,), (), (0,))         # the same with the window dim before the scatter dim
_DB = _dn((2,), (), (2,), (0, 1), (1, 0))
_DUP = np.array([[1], [1], [3], [0], [1]], np.int32)
_OOB = np.array([[3], [-1], [1], [2], [9]], np.int32)
_AT_IDX = np.array([1, 9, -2, 1, -7, 0], np.int32)   # after jnp's wrap: 9 and -2 dropped


def _s(fn, dn, mode, **kw):
    return lambda x, i, u: fn(x, i, u, dn, mode=mode, **kw)


def _upd_args(operand_shape, indices, updates_shape):
    return lambda rng, dt: [random_values(rng, operand_shape, dt), indices,
                            random_values(rng, updates_shape, dt)]


_SCATTER_FNS = {  # kind: (the lax function, the x.at[i] method that binds its primitive)
    "scatter": (lax.scatter, "set"), "add": (lax.scatter_add, "add"),
    "sub": (lax.scatter_sub, None), "mul": (lax.scatter_mul, "multiply"),
    "min": (lax.scatter_min, "min"), "max": (lax.scatter_max, "max")}


def _scatter_cases(kind):
    fn, at = _SCATTER_FNS[kind]
    windows, windows_first = _upd_args((5,), _OOB, (5, 3)), _upd_args((5,), _OOB, (3, 5))
    batched = _upd_args((2, 3, 10), np.array([[[0], [1]], [[2], [9]], [[4], [-5]]], np.int32),
                        (3, 2, 3))
    cases = [
        case.custom("duplicate indices, drop", _s(fn, _D1, "drop"), _upd_args((5,), _DUP, (5,))),
        case.custom("windows of 3, partly out of bounds, drop", _s(fn, _DW, "drop"), windows),
        case.custom("out of bounds, promise_in_bounds drops too",
                    _s(fn, _DW, "promise_in_bounds"), windows),
        case.custom("window dim first, clip", _s(fn, _DWF, "clip"), windows_first),
        case.custom("operand and indices batching dims", _s(fn, _DB, "clip"), batched),
        case.custom("uint8 indices, sorted, unique", _s(fn, _D1, "drop", indices_are_sorted=True,
                                                      unique_indices=True),
                    _upd_args((5,), np.array([[0], [2], [4], [200]], np.uint8), (4,))),
    ]
    if kind in ("min", "max"):
        cases.append(case("NaN in operand and updates", _s(fn, _D1, "drop"),
                          [1.0, np.nan, 3.0, 4.0, 5.0], np.array([[0], [0], [1], [2], [2]],
                                                                 np.int32),
                          [np.nan, 2.0, 0.0, 7.0, np.nan], dtypes="inexact"))
    if kind in ("add", "sub"):
        cases.append(case(
            "signed zeros: none lands, -0.0 lands, +0.0 lands, 1 and -1 cancel",
            _s(fn, _D1, "drop"), [-0.0, -0.0, -0.0, 0.0, -0.0, -0.0, 0.0],
            np.array([[1], [2], [3], [4], [4], [5], [5], [6]], np.int32),
            [-0.0, 0.0, -0.0, 1.0, -1.0, -0.0, -0.0, 0.0], dtypes="inexact"))
    # complex min/max run in XLA's order, in a while loop over the (symbolic) scatter count
    poly_dtypes = _POLY_DTYPES + (("complex64",) if kind in ("min", "max") else ())
    cases += [
        _poly("windows of 3 partly out of bounds, drop", _s(fn, _DW, "drop"), windows,
              "(n + 2,)", "(b, 1)", "(b, 3)", dtypes=poly_dtypes),
        _poly("window dim first, clip", _s(fn, _DWF, "clip"), windows_first,
              "(n + 2,)", "(b, 1)", "(3, b)", dtypes=poly_dtypes),
        _poly("operand and indices batching dims", _s(fn, _DB, "clip"), batched,
              "(a, b, n + 2)", "(b, a, 1)", "(b, a, 3)", dtypes=poly_dtypes)]
    if at:
        cases.append(_poly(f"x.at[idx].{at}(u), duplicates, out of bounds dropped",
                           lambda x, i, u: getattr(x.at[i], at)(u),
                           _upd_args((5, 4), _AT_IDX, (6, 4)), "(n, 4)", "(b,)", "(b, 4)",
                           dtypes=poly_dtypes))
    return cases


def _scatter_rule(primitive, kind, dtypes, doc, extra_cases=()):
    """The rule of one scatter primitive: ``_scatter_impl`` with its combiner ``kind``."""
    def lower(ctx, operand, indices, updates, **params):
        return _scatter_impl(kind, ctx, operand, indices, updates, **params)
    return rule(primitive, dtypes=dtypes, cases=_scatter_cases(kind) + list(extra_cases),
                name=primitive.replace("-", "_"), doc=doc)(lower)


scatter = _scatter_rule(
    "scatter", "scatter", ["all", "key"],
    "Overwrite; with overlaps the last scatter position wins, as on XLA:CPU.", [
        case.custom("scatter_apply (custom combiner, applied once per hit)",
                    lambda x, i: lax.scatter_apply(x, i, lambda v: v * 2 + 1, _D1,
                                                   update_shape=(5,)),
                    lambda rng, dt: [random_values(rng, (5,), dt), _DUP], dtypes="numeric"),
        _poly("x.at[idx].apply(f)", lambda x, i: x.at[i].apply(lambda v: v * 2 + 1),
              lambda rng, dt: [random_values(rng, (5,), dt), _AT_IDX], "(n,)", "(b,)")])
scatter_add = _scatter_rule(
    "scatter-add", "add", "numeric", "operand + segment sum of the updates (modular for integers, like XLA).")
scatter_sub = _scatter_rule("scatter-sub", "sub", "numeric", "operand - segment sum of the updates.")
scatter_mul = _scatter_rule(
    "scatter-mul", "mul", "numeric",
    "operand * segment product of the updates (no logs, so signs and zeros are exact).")
scatter_min = _scatter_rule(
    "scatter-min", "min", "all",
    "Segment min with XLA's NaN propagation; complex: lexicographic, in XLA's order.")
scatter_max = _scatter_rule(
    "scatter-max", "max", "all",
    "Segment max with XLA's NaN propagation; complex: lexicographic, in XLA's order.")
