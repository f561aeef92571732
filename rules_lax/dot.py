"""dot_general as transpose + reshape + one MatMul / BatchMatMulV2.

Every dimension-number form is brought to ``[batch, free, contract] x [batch, contract,
free]``: exports (TFLite builtins, TF.js) handle MatMul and BatchMatMul well, and run or
translate Einsum badly. Numbers follow XLA on CPU: mixed operand dtypes are first
converted to the result dtype, f16/bf16 products are accumulated in f32 and rounded once,
and integer sums wrap in the result's width.
"""
from __future__ import annotations

import functools
import operator

import numpy as np
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax

from core.errors import UnsupportedError
from core.rule import random_values, case, rule

# The dtype TF multiplies in, for result dtypes whose MatMul kernel is missing or
# accumulates differently from XLA. Small integers are exact in int32 modulo 2^32, so the
# final cast back gives XLA's wrapped result; unsigned 32/64-bit go through int64.
_COMPUTE = {"bfloat16": tf.float32, "float16": tf.float32, "bool": tf.int32,
            "int8": tf.int32, "int16": tf.int32, "uint8": tf.int32, "uint16": tf.int32,
            "uint32": tf.int64, "uint64": tf.int64}

# Algorithm presets the CPU backend runs: JAX converts the operands to these types.
_PRESET_INPUT = {"DEFAULT": None, "F32_F32_F32": tf.float32, "F64_F64_F64": tf.float64,
                 "BF16_BF16_F32": tf.bfloat16}


def _preset_input_type(precision):
    if precision is None or isinstance(precision, tuple):
        return None  # Precision.DEFAULT/HIGH/HIGHEST change nothing on CPU
    name = getattr(precision, "name", str(precision))
    if name not in _PRESET_INPUT:
        raise UnsupportedError(
            f"dot_general with precision={name} is not supported (JAX's CPU backend does "
            f"not run it either); use Precision.HIGHEST or DotAlgorithmPreset.F32_F32_F32")
    return _PRESET_INPUT[name]


def _to(x, dtype):
    if x.dtype == dtype:
        return x
    if dtype == tf.int64 and x.dtype == tf.uint64:
        return tf.bitcast(x, tf.int64)  # same bits; wrapping products agree mod 2^64
    return tf.cast(x, dtype)


def _from(x, dtype):
    if x.dtype == dtype:
        return x
    if dtype == tf.bool:
        return tf.not_equal(x, 0)  # OR of ANDs, as XLA's PRED dot
    if dtype == tf.uint64:
        return tf.bitcast(x, tf.uint64)
    # integers: the low bits of the wide sum are XLA's wrapped result
    return tf.cast(x, dtype)


def _matmul_layout(rank, batch, contract):
    """A permutation of an operand's axes to [batch, free, contract] and to
    [batch, contract, free]; returns (free axes, both permutations)."""
    free = [d for d in range(rank) if d not in batch and d not in contract]
    return free, [*batch, *free, *contract], [*batch, *contract, *free]


def _adjoint(plain, adjoint) -> bool:
    """Whether an operand goes to the matmul in its ``adjoint`` layout (the matmul's
    transpose flag absorbing the order) rather than its ``plain`` one: when that needs no
    transpose and the plain one does; and when both need one, when it keeps the operand's
    last axis last (a copy of contiguous rows, where moving the last axis took 2-3x longer:
    the attention's keys [b, s, h, d] go to [b, h, s, d], not [b, h, d, s])."""
    identity = list(range(len(plain)))
    if plain == identity or adjoint == identity:
        return adjoint == identity and plain != identity
    return adjoint[-1] == identity[-1] and plain[-1] != identity[-1]


def _transpose(x, perm):
    return x if perm == list(range(len(perm))) else tf.transpose(x, perm)


def _reshape(x, shape):
    """``x`` reshaped to ``shape``, or ``x`` itself when it has that static shape already."""
    same = all(isinstance(d, int) for d in shape) and x.shape.as_list() == list(shape)
    return x if same else tf.reshape(x, shape)


def _dot(ctx, lhs, rhs, dimension_numbers):
    """Contract lhs and rhs (already in the compute dtype) with one (batch) matmul."""
    (lc, rc), (lb, rb) = dimension_numbers
    lc, rc, lb, rb = ([int(d) for d in ds] for ds in (lc, rc, lb, rb))
    ls, rs = (ctx.shape(a) for a in ctx.avals_in[:2])   # ints, or TF scalars if symbolic
    lf, l_fc, l_cf = _matmul_layout(len(ls), lb, lc)
    rf, r_fc, r_cf = _matmul_layout(len(rs), rb, rc)
    size = lambda shape, axes: functools.reduce(operator.mul, [shape[d] for d in axes], 1)
    nb = size(ls, lb)
    m, k, n = size(ls, lf), size(ls, lc), size(rs, rf)
    out_shape = [ls[d] for d in lb] + [ls[d] for d in lf] + [rs[d] for d in rf]
    if isinstance(k, int) and k == 1:
        # XLA rewrites a dot over one element (or none: an outer product) to a product,
        # which keeps the sign of a zero; a matmul adds it to +0.0
        lead = [nb] if lb else []
        a = _reshape(_transpose(lhs, l_fc), [*lead, m, 1])
        b = _reshape(_transpose(rhs, r_cf), [*lead, 1, n])
        return _reshape(a * b, out_shape)
    adj_a, adj_b = _adjoint(l_fc, l_cf), _adjoint(r_cf, r_fc)
    a = _transpose(lhs, l_cf if adj_a else l_fc)
    b = _transpose(rhs, r_fc if adj_b else r_cf)
    a_shape = [k, m] if adj_a else [m, k]
    b_shape = [n, k] if adj_b else [k, n]
    if lb:
        a, b = _reshape(a, [nb, *a_shape]), _reshape(b, [nb, *b_shape])
    else:
        a, b = _reshape(a, a_shape), _reshape(b, b_shape)
    if ctx.target == "tflite" and a.dtype.is_integer:
        # TFLite's MatMul has no integer kernel: products and a wrapping sum, exact
        a = tf.linalg.matrix_transpose(a) if adj_a else a
        b = tf.linalg.matrix_transpose(b) if adj_b else b
        out = tf.reduce_sum(tf.expand_dims(a, -1) * tf.expand_dims(b, -3), axis=-2)
    else:
        out = tf.linalg.matmul(a, b, transpose_a=adj_a, transpose_b=adj_b)
    return _reshape(out, out_shape)


def _dg(dims, **kw):
    return lambda x, y: lax.dot_general(x, y, dims, **kw)


_MATMUL = (((1,), (0,)), ((), ()))


def _ints(dtype_l, dtype_r):
    def make(rng, _):
        x = rng.integers(-120, 120, (3, 5)).astype(dtype_l)
        y = rng.integers(-120, 120, (5, 2)).astype(dtype_r)
        return [x, y]
    return make


@rule("dot_general", dtypes="all",
      cases=[case.random(_dg(_MATMUL), shapes=[(3, 4), (4, 2)], name="matmul"),
             case.random(_dg((((1,), (1,)), ((), ()))), shapes=[(3, 4), (2, 4)],
                         name="contract last dims (x @ y.T)"),
             case.random(_dg((((0,), (0,)), ((), ()))), shapes=[(4, 3), (4, 2)],
                         name="contract first dims (x.T @ y)"),
             case.random(_dg((((2, 1), (1, 2)), ((0,), (0,)))), shapes=[(2, 3, 4), (2, 4, 3)],
                         name="two contracting dims, batch"),
             case.random(_dg((((4, 3), (3, 2)), ((0, 1), (1, 0)))),
                         shapes=[(2, 3, 1, 2, 4), (3, 2, 2, 4, 2)],
                         name="batch dims in different positions"),
             case.random(_dg((((), ()), ((), ()))), shapes=[(3,), (2, 2)], name="outer"),
             case.random(_dg((((0,), (0,)), ((), ()))), shapes=[(4,), (4,)], name="vdot"),
             case.custom("outer and one-element contraction keep -0.0 (XLA multiplies)",
                         lambda x, y: (_dg((((), ()), ((), ())))(x[:, 0], y[0]),
                                       _dg(_MATMUL)(x, y)),
                         lambda rng, dt: [np.array([[-0.0], [1.0]], dt),
                                          np.array([[1.0, -0.0]], dt)], dtypes="floating"),
             case.random(_dg((((1,), (0,)), ((), ()))), shapes=[(0, 3), (3, 2)],
                         name="empty free dim"),
             case.random(_dg((((1,), (0,)), ((), ()))), shapes=[(2, 0), (0, 2)],
                         name="empty contraction gives zeros"),
             case.custom("int8 sum wraps", _dg(_MATMUL), _ints(np.int8, np.int8),
                         dtypes="int8"),
             case.custom("int32 products and sums wrap", _dg(_MATMUL),
                         lambda rng, dt: [rng.integers(-2**31, 2**31, (3, 5)).astype(dt),
                                          rng.integers(-2**31, 2**31, (5, 2)).astype(dt)],
                         dtypes="int32"),
             case.custom("wide unsigned sums wrap", _dg(_MATMUL),
                         lambda rng, dt: [rng.integers(0, np.iinfo(dt).max, (3, 5), dtype=dt),
                                          rng.integers(0, np.iinfo(dt).max, (5, 2), dtype=dt)],
                         dtypes=["uint32", "uint64", "int64", "int32"]),
             case.custom("int8 x int8 -> int32", _dg(_MATMUL, preferred_element_type=jnp.int32),
                         _ints(np.int8, np.int8), dtypes="int8"),
             case.custom("int8 x uint8 mixed", _dg(_MATMUL), _ints(np.int8, np.uint8),
                         dtypes="int8"),
             case.custom("f16 accumulates in f32",
                         _dg(_MATMUL), lambda rng, dt: [np.array([[2048.] + [1.] * 64], dt),
                                                        np.ones((65, 1), dt)],
                         dtypes=["float16", "bfloat16"]),
             case.random(_dg(_MATMUL, preferred_element_type=jnp.float32),
                         shapes=[(3, 4), (4, 2)], name="preferred f32",
                         dtypes=["bfloat16", "float16", "int8", "int16", "int32", "uint8"]),
             case.random(_dg(_MATMUL, precision=lax.DotAlgorithmPreset.F32_F32_F32),
                         shapes=[(3, 4), (4, 2)], name="preset F32_F32_F32",
                         dtypes=["float16", "bfloat16", "float32"]),
             case.random(_dg(_MATMUL, precision=lax.DotAlgorithmPreset.BF16_BF16_F32),
                         shapes=[(3, 40), (40, 2)], name="preset BF16_BF16_F32",
                         dtypes=["float16", "bfloat16", "float32"])])
def dot_general_by_matmul(ctx, lhs, rhs, *, dimension_numbers, precision=None,
                          preferred_element_type=None, **_):
    """One MatMul/BatchMatMulV2 after moving batch dims first and merging the free and
    contracting dims; the result dtype is taken from JAX's output aval."""
    out_dtype = ctx.tf_dtype(ctx.aval_out)
    # XLA on CPU converts mixed operands to the result dtype (a preset: to its own
    # input type) before the dot.
    preset = _preset_input_type(precision)
    if preset == tf.bfloat16:
        # measured on CPU: float32 operands make a plain float32 dot; f16 operands are
        # rounded to bfloat16, then summed in float32
        if tf.float64 in (lhs.dtype, rhs.dtype):
            raise UnsupportedError(
                "dot_general with precision=BF16_BF16_F32 on float64 operands: XLA's "
                "float32 sums are not reproduced to float64 tolerance; cast the operands "
                "to float32 or use Precision.HIGHEST")
        if lhs.dtype == rhs.dtype == tf.float32:
            preset = None
    compute = (_COMPUTE.get(preset.name, preset) if preset is not None
               else _COMPUTE.get(np.dtype(ctx.aval_out.dtype).name, out_dtype))
    lhs, rhs = _to(lhs, preset or out_dtype), _to(rhs, preset or out_dtype)
    lhs, rhs = _to(lhs, compute), _to(rhs, compute)
    return _from(_dot(ctx, lhs, rhs, dimension_numbers), out_dtype)


# -- ragged_dot_general (mixture-of-experts) ---------------------------------------------------

def _ragged(dims=None):
    """``lax.ragged_dot`` (rows of ``lhs`` in groups, group ``i`` times ``rhs[i]``), or
    ``ragged_dot_general`` with other dimension numbers."""
    if dims is None:
        return lambda lhs, rhs, gs: lax.ragged_dot(lhs, rhs, gs)
    return lambda lhs, rhs, gs: lax.ragged_dot_general(lhs, rhs, gs, dims)


def _groups(*sizes):
    return np.array(sizes, np.int32)


def _ragged_args(lhs_shape, rhs_shape, groups):
    def make(rng, dtype):
        return [random_values(rng, lhs_shape, dtype), random_values(rng, rhs_shape, dtype), groups]
    return make


def _ragged_case(name, lhs_shape, rhs_shape, groups, dims=None, **kw):
    return case.custom(name, _ragged(dims), _ragged_args(lhs_shape, rhs_shape, groups), **kw)


def _ragged_value_and_grad(lhs, rhs, gs):
    return jax.value_and_grad(lambda a, b: lax.ragged_dot(a, b, gs).sum(), (0, 1))(lhs, rhs)


_RAGGED_CONTRACTING = lax.RaggedDotDimensionNumbers((([1], [0]), ([], [])), [1], [])
_RAGGED_BATCH = lax.RaggedDotDimensionNumbers((([2], [1]), ([0], [0])), [0], [])


@rule("ragged_dot_general", dtypes="numeric", cases=[
    _ragged_case("rows in 3 groups", (7, 4), (3, 4, 2), _groups(2, 0, 5)),
    _ragged_case("groups cover fewer rows than lhs has", (6, 3), (2, 3, 5), _groups(1, 2)),
    _ragged_case("groups past the last row, a negative size", (6, 3), (3, 3, 2),
                 _groups(-2, 4, 5), dtypes="signed"),
    _ragged_case("ragged contracting dimension", (3, 6), (6, 2), _groups(4, 2),
                 _RAGGED_CONTRACTING),
    _ragged_case("ragged batch dimension", (4, 2, 3), (4, 3, 5), _groups(1, 3), _RAGGED_BATCH),
    case.custom("value and gradient", _ragged_value_and_grad,
                _ragged_args((5, 3), (2, 3, 4), _groups(3, 2)), dtypes="floating"),
    case.custom("symbolic rows", _ragged(), _ragged_args((6, 3), (2, 3, 2), _groups(2, 4)),
                dtypes="float32", convert_kw={"polymorphic_shapes": ["(m, 3)", None, None]})])
def ragged_dot_general(ctx, lhs, rhs, group_sizes, *, group_offset=None, **params):
    """JAX's own definition (``_ragged_dot_general_impl``, what it lowers to when XLA's
    ragged-dot instruction is off): each group's rows masked out of the ragged operand,
    then one dot_general over the group axis. Rows past the last group give zeros."""
    from jax._src.lax.lax import _ragged_dot_general_impl
    if group_offset is not None:
        raise UnsupportedError("ragged_dot_general with group_offset: JAX has no lowering "
                               "of it either; slice group_sizes instead")
    return ctx.lower_fun(lambda a, b, g: _ragged_dot_general_impl(a, b, g, **params),
                         lhs, rhs, group_sizes)[0]
