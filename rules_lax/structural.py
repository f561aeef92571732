"""Shape ops and identities: reshape, broadcast_in_dim, transpose, squeeze, concatenate,
slice, pad, rev, split, iota, the identity-like primitives (copy, stop_gradient,
device_put, sharding_constraint, reshard, optimization_barrier, name, tie, dce_sink) and
the uninitialised buffers (empty, empty2), lowered as zeros.

Everything is expressed with Reshape, Transpose, BroadcastTo, ConcatV2, Slice,
StridedSlice, Pad/PadV2, ReverseV2 (one axis at a time) and Range, which TFLite takes as
builtins. Shapes come from the equation's avals through ``ctx.shape``/``ctx.dim`` (Python
ints, or TF scalars for symbolic dimensions), never from ``tensor.shape``.

PRNG key arrays (extended dtypes) travel as their uint32 key data, whose shape is the
key array's shape followed by a trailing key dimension (``key<fry>[3]`` is ``u32[3, 2]``).
Shape ops on key arrays are lowered by ``rules_random.keys:key_data_shape_op`` (the op
vmapped over the key data), which outranks the rules here; only ``tile``, which it does not
take, keeps the trailing key dimensions itself.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax
from jax.ad_checkpoint import checkpoint_name
from jax._src import core as _jax_core
from jax._src.lax import lax as _lax_internal

from core.errors import UnsupportedError
from core.rule import case, rule
from rules_lax.dims import dilate, dims, evaluator, pad_or_slice

SHAPE_DTYPES = ("all", "key")
_same = _jax_core.definitely_equal  # also decides equality of symbolic dimensions


def _trail(ctx, aval) -> list[int]:
    """The trailing dimensions of a key array's key data (none for other dtypes)."""
    return [int(d) for d in ctx.physical_shape(aval)[len(aval.shape):]]


def _static(v, what: str) -> int:
    if not _jax_core.is_constant_dim(v):
        raise UnsupportedError(f"{what} {v} is symbolic; only dimension sizes may be "
                               "symbolic here, give this parameter a fixed value")
    return int(v)


def _no_dynamic_shapes(prim: str, dyn) -> None:
    if dyn:
        raise UnsupportedError(f"{prim} with dynamic shape operands is not supported; "
                               "use static shapes or polymorphic_shapes")


def _empty(ctx, x):
    """The result as a constant when it has no elements (a static 0 dimension), else None:
    exact, and no Reshape to a shape with a 0 in it, which ONNX reads as "copy the input's
    dimension" (tf2onnx leaves allowzero unset: onnxruntime then failed or reshaped wrong;
    found by tests/fuzz.py)."""
    shape = ctx.shape(ctx.aval_out)
    if all(isinstance(d, int) for d in shape) and 0 in shape:
        return tf.zeros(shape, x.dtype)
    return None


def _key_cases(name, fn_on_keys, shape):
    """Cases running ``fn_on_keys`` on key arrays of each PRNG implementation, wrapped
    from key data (the form converted functions take and return)."""
    out = []
    for impl, key_dtype, width in (("threefry2x32", "key<fry>", 2), ("rbg", "key<rbg>", 4),
                                   ("unsafe_rbg", "key<urbg>", 4)):
        def fn(data, impl=impl):
            return jax.random.key_data(fn_on_keys(jax.random.wrap_key_data(data, impl=impl)))

        def make(rng, dt, width=width):
            return [rng.integers(0, 2**32, (*shape, width), dtype=np.uint32)]
        out.append(case.custom(f"{key_dtype}: {name}", fn, make, dtypes=key_dtype))
    return out


# -- reshape, broadcast, transpose, squeeze -------------------------------------------------

@rule("reshape", dtypes="all",
      cases=[case.random(lambda x: lax.reshape(x, (4, 6)), shapes=[(2, 3, 4)]),
             case.random(lambda x: lax.reshape(x, (6, 4), dimensions=(2, 0, 1)),
                         shapes=[(2, 3, 4)], name="dimensions transposes first"),
             case.random(lambda x: lax.reshape(x, (0, 5)), shapes=[(5, 0)], name="empty")])
def reshape(ctx, x, *dyn, new_sizes, dimensions=None, **_):
    """Row-major reshape; ``dimensions`` is a transpose applied before it."""
    _no_dynamic_shapes("reshape", dyn)
    empty = _empty(ctx, x)
    if empty is not None:
        return empty
    if dimensions is not None and list(dimensions) != list(range(len(dimensions))):
        x = tf.transpose(x, [int(d) for d in dimensions])
    return tf.reshape(x, ctx.shape(ctx.aval_out))


@rule("broadcast_in_dim", dtypes="all",
      cases=[case.random(lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (0, 2)),
                         shapes=[(2, 4)]),
             case.random(lambda x: lax.broadcast_in_dim(x, (5, 3), (1,)), shapes=[(1,)],
                         name="size-1 dimension stretched"),
             case.random(lambda x: lax.broadcast_in_dim(x, (2, 3), ()), shapes=[()],
                         name="scalar"),
             case.random(lambda x: lax.broadcast_in_dim(x, (3, 0, 2), (1, 2)),
                         shapes=[(0, 1)], name="to a 0-size shape (found by tests/fuzz.py)")])
def broadcast_in_dim(ctx, x, *dyn, shape, broadcast_dimensions, **_):
    """Put the operand's axes where ``broadcast_dimensions`` says, then BroadcastTo."""
    _no_dynamic_shapes("broadcast_in_dim", dyn)
    empty = _empty(ctx, x)
    if empty is not None:
        return empty
    aval_in, aval_out = ctx.avals_in[0], ctx.aval_out
    dims = [int(d) for d in broadcast_dimensions]
    # operand axes keep their order in the output (JAX requires increasing dimensions)
    expanded_sym = [1] * len(aval_out.shape)
    expanded = [1] * len(aval_out.shape)
    in_shape = ctx.shape(aval_in)
    for i, d in enumerate(dims):
        expanded_sym[d] = aval_in.shape[i]
        expanded[d] = in_shape[i]
    if len(aval_in.shape) != len(aval_out.shape):
        x = tf.reshape(x, expanded)
    if all(_same(a, b) for a, b in zip(expanded_sym, aval_out.shape)):
        return x
    return tf.broadcast_to(x, ctx.shape(aval_out))


@rule("broadcast_in_dim", dtypes="float64", targets="tflite",
      cases=[case.random(lambda x: lax.broadcast_in_dim(x, (2, 3, 4), (0, 2)),
                         shapes=[(2, 4)]),
             case("size-1 dimension stretched, specials",
                  lambda x: lax.broadcast_in_dim(x, (3, 5), (1,)),
                  np.array([1.0, -0.0, np.inf, np.nan, 5e-324]))])
def broadcast_in_dim_f64_tflite(ctx, x, *dyn, **params):
    """float64 broadcast as the int64 bits: LiteRT has no float64 BroadcastTo kernel, and
    the converter's folding of one into its consumer fails for ops without implicit
    broadcasting (atan2: "failed to legalize unresolved materialization")."""
    return as_bits(lambda b: broadcast_in_dim(ctx, b, *dyn, **params), x)


def as_bits(fn, x):
    """``fn`` (a pure data movement) applied to float64 ``x`` as its int64 bits (TFLite)."""
    return tf.bitcast(fn(tf.bitcast(x, tf.int64)), tf.float64)


@rule("transpose", dtypes="all",
      cases=[case.random(lambda x: lax.transpose(x, (2, 0, 1)), shapes=[(2, 3, 4)])])
def transpose(ctx, x, *, permutation, **_):
    perm = [int(p) for p in permutation]
    if perm == list(range(len(perm))):
        return x
    return tf.transpose(x, perm)


@rule("squeeze", dtypes="all",
      cases=[case.random(lambda x: lax.squeeze(x, (0, 2)), shapes=[(1, 3, 1)])])
def squeeze(ctx, x, **_):
    """Dropping size-1 axes is a reshape to the result shape."""
    return tf.reshape(x, ctx.shape(ctx.aval_out))


# -- concatenate, slice, split, rev -------------------------------------------------------

@rule("concatenate", dtypes="all",
      cases=[case.random(lambda x, y, z: lax.concatenate([x, y, z], 1),
                         shapes=[(2, 3), (2, 1), (2, 4)]),
             case.random(lambda x, y: lax.concatenate([x, y], 0), shapes=[(0, 3), (2, 3)],
                         name="with an empty operand")])
def concatenate(ctx, *xs, dimension, **_):
    return xs[0] if len(xs) == 1 else tf.concat(list(xs), axis=int(dimension))


def _tile_weighted(x):
    """``jnp.tile`` and its VJP: the value and the gradient of a weighted sum of tiles."""
    def loss(a):
        t = jnp.tile(a, (2, 3))
        return (t * jnp.arange(t.size, dtype=t.dtype).reshape(t.shape)).sum()
    return jax.value_and_grad(loss)(x)


@rule("tile", dtypes=SHAPE_DTYPES, cases=[
    case.random(lambda x: jnp.tile(x, (2, 3)), shapes=[(2, 3)]),
    case.random(lambda x: lax.tile(x, (1, 3, 1)), shapes=[(2, 1, 4)], name="ones in reps"),
    case.random(lambda x: lax.tile(x, (0, 2)), shapes=[(2, 3)], name="zero reps"),
    case.random(lambda x: lax.tile(x, (3, 2)), shapes=[(0, 3)], name="empty operand"),
    case.random(lambda x: lax.tile(x, ()), shapes=[()], name="scalar"),
    case.random(lambda x: jnp.tile(x, (2, 1, 3)), shapes=[(5, 2)], name="symbolic",
                convert_kw={"polymorphic_shapes": ["(b, 2)"]}),
    case.random(_tile_weighted, shapes=[(2, 3)], name="value and gradient",
                dtypes="floating"),
    *_key_cases("tile", lambda k: jnp.tile(k, (2, 2)), (2, 3))])
def tile(ctx, x, *, reps, **_):
    """``lax.tile``: TF's Tile (key data untouched in its trailing dimensions). Tile has no
    uint16 kernel: there, JAX's own lowering (a new axis of size ``rep`` in front of each
    axis, broadcast, merged)."""
    reps = [int(r) for r in reps]
    aval = ctx.avals_in[0]
    trail = _trail(ctx, aval)
    if all(r == 1 for r in reps):
        return x
    if x.dtype != tf.uint16:
        return tf.tile(x, reps + [1] * len(trail))
    shape = ctx.shape(aval)
    x = tf.reshape(x, [k for d in shape for k in (1, d)])
    x = tf.broadcast_to(x, [k for r, d in zip(reps, shape) for k in (r, d)])
    return tf.reshape(x, ctx.shape(ctx.aval_out))


@rule("slice", dtypes="all",
      cases=[case.random(lambda x: lax.slice(x, (1, 0), (3, 2)), shapes=[(4, 3)]),
             case.random(lambda x: lax.slice(x, (1, 0), (7, 5), (2, 3)), shapes=[(8, 5)],
                         name="strides"),
             case.random(lambda x: lax.slice(x, (2,), (2,)), shapes=[(4,)], name="empty")])
def slice_(ctx, x, *, start_indices, limit_indices, strides=None, **_):
    aval = ctx.avals_in[0]
    begin = [ctx.dim(s) for s in start_indices]
    if strides is None or all(int(s) == 1 for s in strides):
        if all(_same(s, 0) and _same(l, d) for s, l, d in
               zip(start_indices, limit_indices, aval.shape)):
            return x
        return tf.slice(x, begin, [ctx.dim(l - s) for s, l in zip(start_indices, limit_indices)])
    end = [ctx.dim(l) for l in limit_indices]
    return tf.strided_slice(x, begin, end, [int(s) for s in strides])


@rule("split", dtypes="all",
      cases=[case.random(lambda x: lax.split(x, (1, 0, 3), axis=1), shapes=[(2, 4)])])
def split(ctx, x, *, sizes, axis, **_):
    """One Slice per piece (SplitV rejects zero-size pieces in some exporters)."""
    aval = ctx.avals_in[0]
    shape, axis = ctx.shape(aval), int(axis)
    if len(sizes) == 1:
        return [x]
    outs, start = [], 0
    for size in sizes:
        begin = [0] * len(shape)
        begin[axis] = ctx.dim(start)
        out_shape = list(shape)
        out_shape[axis] = ctx.dim(size)
        outs.append(tf.slice(x, begin, out_shape))
        start = start + size
    return outs


@rule("rev", dtypes="all",
      cases=[case.random(lambda x: lax.rev(x, (0, 2)), shapes=[(2, 3, 4)])])
def rev(ctx, x, *, dimensions, **_):
    """ReverseV2 one axis at a time: exporters mishandle several axes or none at all."""
    shape = ctx.avals_in[0].shape
    for d in sorted({int(d) for d in dimensions}):
        if not (_jax_core.is_constant_dim(shape[d]) and shape[d] <= 1):
            x = tf.reverse(x, [d])
    return x


# -- pad ----------------------------------------------------------------------------------

def _same_sum_pool_grad(x):
    pool = lambda x: lax.reduce_window(x, 0., lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "SAME")
    return jax.grad(lambda x: (pool(x) ** 2).sum())(x)


def _pad_config_case(config):
    return case.custom(f"pad {config}", lambda x, v: lax.pad(x, v, config),
                       lambda rng, dt: [np.arange(1, 13).reshape(3, 4).astype(dt),
                                        np.asarray(7 if dt != np.bool_ else True, dt)])


@rule("pad", dtypes="all",
      cases=[_pad_config_case(((1, 2, 0), (0, 1, 0))),
             _pad_config_case(((-1, 0, 0), (1, -2, 0))),
             _pad_config_case(((0, 0, 2), (1, 0, 1))),
             _pad_config_case(((-2, 1, 1), (-3, -3, 3))),
             _pad_config_case(((-4, 5, 0), (0, 0, 0))),
             case.custom("pad empty operand", lambda x, v: lax.pad(x, v, ((1, 1, 3), (0, 1, 0))),
                         lambda rng, dt: [np.zeros((0, 2), dt), np.asarray(1, dt)]),
             case.random(_same_sum_pool_grad, shapes=[(2, 7, 5, 3)], dtypes="float32",
                         name="symbolic edge amounts (gradient of a SAME sum-pool)",
                         convert_kw={"polymorphic_shapes": ["(b, h, w, c)"]})])
def pad(ctx, x, value, *, padding_config, **_):
    """Interior padding by dilation (reshape + pad + slice), then edges by PadV2 and, for
    negative amounts, one Slice: XLA pads the interior first, then adds (or removes)
    edges. Edge amounts may be symbolic (e.g. in the gradient of SAME pooling over
    symbolic sizes); one of unknown sign is split into add and cut when the graph runs."""
    ev = evaluator(ctx)
    shape = dims(ctx.avals_in[0].shape)
    for d, (_, _, interior) in enumerate(padding_config):
        x, shape = dilate(x, shape, d, 1 + _static(interior, "interior padding"), ev,
                          fill=value)
    return pad_or_slice(x, shape, [(lo, hi) for lo, hi, _ in padding_config], ev,
                        fill=value)[0]


# -- iota, empty ----------------------------------------------------------------------------

def _dtype_case(name, fn_of_dtype):
    """A case whose only input is a scalar of the dtype under test, used for its dtype."""
    return case.custom(name, lambda x: fn_of_dtype(x.dtype), lambda rng, dt: [np.zeros((), dt)])


@rule("iota", dtypes="numeric",
      cases=[_dtype_case("iota 1000 (rounds in narrow types)", lambda dt: lax.iota(dt, 1000)),
             _dtype_case("iota 2x5 dimension 1", lambda dt: lax.broadcasted_iota(dt, (2, 5), 1)),
             _dtype_case("iota 3x4x2 dimension 0",
                         lambda dt: lax.broadcasted_iota(dt, (3, 4, 2), 0))])
def iota(ctx, *, dtype, shape, dimension, **_):
    """Range in int32/int64, cast to the result type (integers wrap like XLA's convert;
    floats go through float32 so f16/bf16 round once), then broadcast."""
    dimension = int(dimension)
    n = ctx.dim(shape[dimension])
    target = ctx.tf_dtype(dtype)
    wide = np.dtype(dtype).itemsize == 8 or (isinstance(n, int) and n > 2**31 - 1)
    r = tf.range(n, dtype=tf.int64 if wide else tf.int32)
    if target.is_floating or target.is_complex:
        r = tf.cast(r, tf.float64 if target in (tf.float64, tf.complex128) else tf.float32)
    r = tf.cast(r, target)
    if len(shape) == 1:
        return r
    r = tf.reshape(r, [n if i == dimension else 1 for i in range(len(shape))])
    return tf.broadcast_to(r, ctx.shape(ctx.aval_out))


@rule(["empty", "empty2"], dtypes=SHAPE_DTYPES,
      cases=[_dtype_case("lax.empty", lambda dt: lax.empty((2, 3), dt)),
             _dtype_case("empty2", lambda dt: _lax_internal.empty2(
                 dt, memory_space=_jax_core.MemorySpace.Device))])
def empty_as_zeros(ctx, **_):
    """Uninitialised buffers: any contents are valid, zeros are the deterministic choice."""
    return tf.zeros(ctx.shape(ctx.aval_out), ctx.tf_dtype(ctx.aval_out))


# -- identities -----------------------------------------------------------------------------

def _reshard(x):
    from jax.sharding import AxisType, NamedSharding, PartitionSpec
    mesh = jax.make_mesh((1,), ("a",), axis_types=(AxisType.Explicit,))
    return jax.sharding.reshard(x, NamedSharding(mesh, PartitionSpec("a")))


def _barrier(x, y):
    a, b = lax.optimization_barrier((x, y))
    return a, b


@rule(["copy", "stop_gradient", "sharding_constraint", "reshard", "name"],
      dtypes=SHAPE_DTYPES,
      cases=[case.random(lambda x: jnp.array(x, copy=True), shapes=[(2, 3)], name="copy"),
             case.random(lax.stop_gradient, shapes=[(2, 3)], name="stop_gradient"),
             case.random(lambda x: checkpoint_name(x, "h"), shapes=[(3,)],
                         name="checkpoint_name"),
             case.random(lambda x: jax.lax.with_sharding_constraint(
                 x, jax.sharding.SingleDeviceSharding(jax.devices()[0])),
                 shapes=[(2, 2)], name="with_sharding_constraint"),
             case.random(_reshard, shapes=[(2, 2)], name="reshard")])
def identity(ctx, x, **_):
    """Copies, gradient stops, names and sharding annotations change no value."""
    return x


@rule(["device_put", "optimization_barrier"], dtypes=SHAPE_DTYPES,
      cases=[case.random(lambda x, y: jax.device_put((x, y)), shapes=[(2, 3), ()],
                         name="device_put"),
             case.random(_barrier, shapes=[(2, 3), (4,)], name="optimization_barrier")])
def identity_many(ctx, *xs, **_):
    """One device and no scheduling in a TF graph: every operand passes through."""
    return list(xs)


@rule("tie", dtypes=SHAPE_DTYPES,
      cases=[case.random(lambda x, y: _lax_internal.tie_p.bind(x, y), shapes=[(3,), (3,)])])
def tie(ctx, x, y, **_):
    """``tie(x, y)`` is ``y``; ``x`` only orders JAX's effects."""
    return y


def _sink(x):
    _lax_internal.dce_sink(x)
    return x


@rule("dce_sink", dtypes=SHAPE_DTYPES, cases=[case.random(_sink, shapes=[(3,)])])
def dce_sink(ctx, *_, **__):
    """Only keeps JAX from dropping a value; a TF graph needs no such mark."""
    return []


# -- stack / unstack --------------------------------------------------------------------------
# Key arrays carry their key data in trailing dimensions, so stacking along a logical axis
# is stacking the key data along the same axis.

@rule("stack", dtypes=("all", "key"), cases=[
    case.random(lambda x, y: jnp.stack([x, y], axis=0), shapes=[(2, 3), (2, 3)]),
    case.random(lambda x, y: jnp.stack([x, y, x], axis=2), shapes=[(2, 3), (2, 3)],
                name="last axis")])
def stack(ctx, *xs, axis, **_):
    return tf.stack(xs, axis=int(axis))


@rule("unstack", dtypes=("all", "key"), cases=[
    case.random(lambda x: _lax_internal.unstack_p.bind(x, axis=1), shapes=[(2, 3, 4)])])
def unstack(ctx, x, *, axis, **_):
    return tf.unstack(x, num=len(ctx.avals_out), axis=int(axis))
