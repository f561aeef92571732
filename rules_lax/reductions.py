"""Reductions over axes: reduce_{sum,prod,max,min,and,or,xor}, argmin/argmax and the
generic (variadic) ``reduce`` that carries its own computation jaxpr.

JAX/XLA semantics kept here that TF does not give by itself: max/min propagate NaN on
the export targets (TF's own Max/Min do since TF 2.4; TFLite's do not), empty reductions give the monoid's identity (-inf/+inf for floats, not TF's lowest()),
complex max/min compare (real, imag) lexicographically, argmin/argmax pick the first NaN
(else the first extreme value, -0.0 == 0.0), and bitwise reductions of integers.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax.extend import core as jex
from jax import lax

from core.errors import UnsupportedError
from core.rule import case, rule

_NAN = float("nan")
_INF = float("inf")


# -- helpers shared with cumulative.py -------------------------------------------------
def is_float(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.floating)


def is_complex(dtype) -> bool:
    return jnp.issubdtype(dtype, jnp.complexfloating)


def identity(kind: str, dtype) -> np.ndarray:
    """The identity JAX uses for each monoid (lax._get_*_identity)."""
    dtype = np.dtype(dtype)
    if kind in ("add", "or", "xor"):
        return np.array(False if dtype == np.bool_ else 0, dtype)
    if kind == "mul":
        return np.array(1, dtype)
    if kind == "and":
        return np.array(True if dtype == np.bool_ else -1).astype(dtype)
    if dtype == np.bool_:
        return np.array(kind == "min", dtype)
    if jnp.issubdtype(dtype, jnp.inexact):
        return np.array(-np.inf if kind == "max" else np.inf, dtype)
    info = jnp.iinfo(dtype)
    return np.array(info.min if kind == "max" else info.max, dtype)


def complex_minmax(x, y, is_max: bool):
    """lax.max / lax.min of complex TF tensors: JAX orders them by real part, then
    imaginary part (mlir.max_hlo); where a comparison involves NaN, y is picked."""
    cmp = tf.greater if is_max else tf.less
    rx, ry = tf.math.real(x), tf.math.real(y)
    pick_x = tf.where(tf.equal(rx, ry), cmp(tf.math.imag(x), tf.math.imag(y)), cmp(rx, ry))
    return tf.where(pick_x, x, y)


def complex_mul(x, y):
    """x * y of complex TF tensors as XLA computes it, (ac - bd) + (ad + bc)j in real
    arithmetic: grappler drops TF's Mul by a constant one (and so a window's first
    product with the init value, which sets the signs of zero parts)."""
    a, b, c, d = tf.math.real(x), tf.math.imag(x), tf.math.real(y), tf.math.imag(y)
    return tf.complex(a * c - b * d, a * d + b * c)


def minmax(x, y, is_max: bool, dtype):
    """lax.max / lax.min of two TF tensors: for floats NaN wins and -0 orders below +0
    (tf.maximum/minimum keep the first operand on a tie of zeros), complex numbers
    compare as (real, imag) pairs (:func:`complex_minmax`), bool max/min are or/and."""
    if dtype == np.bool_:
        return tf.logical_or(x, y) if is_max else tf.logical_and(x, y)
    if is_complex(dtype):
        return complex_minmax(x, y, is_max)
    out = tf.maximum(x, y) if is_max else tf.minimum(x, y)
    if is_float(dtype):   # NaN or two zeros: x + y is NaN, or +0 unless both are -0
        special = tf.math.is_nan(x) | tf.math.is_nan(y) | tf.equal(x, 0) & tf.equal(y, 0)
        both = x + y
        if not is_max:    # the zero with the sign bit (1/x < 0) unless NaN (TFLite-safe)
            both = tf.where(tf.math.is_nan(both), both, tf.where(1 / x < 0, x, y))
        out = tf.where(special, both, out)
    return out


def monoid_op(kind: str, dtype):
    """The binary TF op of a monoid, with JAX's semantics for ``dtype``."""
    if kind in ("max", "min"):
        return lambda x, y: minmax(x, y, kind == "max", dtype)
    if kind == "add":
        return tf.logical_or if dtype == np.bool_ else tf.add  # bool add is or in XLA
    if kind == "mul":
        if dtype == np.bool_:
            return tf.logical_and
        return complex_mul if is_complex(dtype) else tf.multiply
    if dtype == np.bool_:
        return {"and": tf.logical_and, "or": tf.logical_or, "xor": tf.math.logical_xor}[kind]
    return {"and": tf.bitwise.bitwise_and, "or": tf.bitwise.bitwise_or,
            "xor": tf.bitwise.bitwise_xor}[kind]


def _to_last(x, shape, axes):
    """Move ``axes`` to the end and flatten them: (kept..., n). ``shape`` holds ints, or
    TF scalars for symbolic dimensions."""
    keep = [i for i in range(len(shape)) if i not in axes]
    n = _n_of(shape, axes)
    y = tf.transpose(x, keep + list(axes)) if keep + list(axes) != list(range(len(shape))) else x
    return tf.reshape(y, [shape[i] for i in keep] + [n]), n


def tree_reduce(xs, n, combine):
    """Pairwise halving along the last axis: ceil(log2 n) steps of ``combine`` on lists of
    tensors; returns the tensors with the last axis removed (n >= 1: an int, or a TF
    scalar for a symbolic length, then the steps run in a tf.while_loop)."""
    def step(n, xs):
        h = n // 2
        c = combine([x[..., :h] for x in xs], [x[..., h:2 * h] for x in xs], h)
        odd = not isinstance(n, int) or n % 2   # an even n leaves nothing to carry
        return n - h, [tf.concat([ci, x[..., 2 * h:]], -1) for ci, x in zip(c, xs)] if odd else c

    if isinstance(n, int):
        while n > 1:
            n, xs = step(n, xs)
    else:
        shapes = [x.shape[:-1].concatenate([None]) for x in xs]
        xs = tf.while_loop(lambda n, _: n > 1, step, (n, xs),
                           shape_invariants=(n.shape, shapes))[1]
    return [x[..., 0] for x in xs]


# -- TFLite builtins: uint32 carried as its int32 bits -------------------------------------
#: The dtypes the TFLite rules of these families compute natively (other narrow types reach
#: them through the float32/int32 forms).
LITE_DTYPES = ["bool", "int32", "uint32", "float32"]


def lite_bits(x, dtype):
    """A uint32 tensor as its int32 bits (TFLite's Transpose, Gather, Cumsum, reducers and
    Maximum/Minimum refuse uint32, Bitcast converts); other dtypes unchanged."""
    return tf.bitcast(x, tf.int32) if np.dtype(dtype) == np.uint32 else x


def lite_unbits(y, dtype):
    """The inverse of :func:`lite_bits`."""
    return tf.bitcast(y, tf.uint32) if np.dtype(dtype) == np.uint32 else y


def unsigned_order(bits):
    """The int32 bits of uint32 values with the sign bit flipped: int32 values in the order of
    the unsigned ones (its own inverse)."""
    return tf.bitwise.bitwise_xor(bits, tf.constant(-2 ** 31, tf.int32))


def lite_scalar(value, like):
    """A float32 scalar ``value`` the TFLite converter cannot fold into a constant (it writes
    +-inf constants as +-FLT_MAX): its bits plus a zero computed from ``like`` (a uint32
    shifted right by 31, then by 1: always 0, but not to the converter)."""
    bits = tf.bitcast(tf.reshape(like, [-1])[:1], tf.uint32)
    zero = tf.reduce_sum(tf.bitcast(tf.bitwise.right_shift(tf.bitwise.right_shift(
        bits, tf.constant(31, tf.uint32)), tf.constant(1, tf.uint32)), tf.int32))
    bits = int(np.array(value, np.float32).view(np.int32))
    return tf.bitcast(zero + tf.constant(bits, tf.int32), tf.float32)


def flush_subnormals(x):
    """float32 subnormals as zero (of their sign), as XLA's and TF's CPU code see them in
    comparisons (denormals flushed); the TFLite interpreter compares them exactly."""
    tiny = tf.constant(np.finfo(np.float32).tiny, tf.float32)
    return tf.where(tf.abs(x) < tiny, x * 0, x)


def _axes(axes):
    return tuple(sorted(int(a) for a in axes))


#: XLA's CPU TreeReductionRewriter: a reduce with a reduced dimension longer than this is
#: first reduced in windows of this size (per reduced dimension), repeatedly.
_WINDOW = 32
#: Up to this many steps a fold is unrolled; longer (or symbolic) ones run in a while loop.
_UNROLL_MAX = 32


def _is_half(dtype) -> bool:
    return np.dtype(dtype) in (np.dtype(jnp.bfloat16), np.dtype(np.float16))


def _n_of(shape, axes):
    """How many elements ``axes`` hold: an int, or a TF scalar if one is symbolic."""
    return math.prod(shape[a] for a in axes)


def in_f32(op, dtype):
    """``op`` computed in f32 and rounded back to the half type after each call, as XLA's
    CPU backend does; this also keeps grappler from fusing a chain of half-precision adds
    into one AddN (whose different order and rounding give other numbers)."""
    tdt = tf.as_dtype(np.dtype(dtype))
    return lambda a, b: tf.cast(op(tf.cast(a, tf.float32), tf.cast(b, tf.float32)), tdt)


def fold_range(start: int, n, body, carry):
    """carry = body(i, carry) for i in range(start, n): unrolled for an int n, in a
    tf.while_loop for a TF scalar (a symbolic length)."""
    if isinstance(n, int):
        for i in range(start, n):
            carry = body(i, carry)
        return carry
    return tf.while_loop(lambda i, _: i < n, lambda i, c: (i + 1, body(i, c)),
                         (tf.constant(start), carry))[1]


def sequential_fold(flat, n, op, init=None):
    """acc = init (or the first element); acc = op(acc, x_i) along the last axis (n >= 1)."""
    acc = flat[..., 0] if init is None else op(init, flat[..., 0])
    return fold_range(1, n, lambda i, acc: op(acc, flat[..., i]), acc)


def _reduced_layout(x, shape, axes):
    """``x`` as [p] + [its reduced dims] (kept dims flattened in front, reduced ones after,
    in their order); returns (y, p, dims). Entries are ints, or TF scalars if symbolic."""
    keep = [i for i in range(len(shape)) if i not in axes]
    perm = keep + list(axes)
    y = tf.transpose(x, perm) if perm != list(range(len(shape))) else x
    p, dims = math.prod(shape[i] for i in keep), [shape[a] for a in axes]
    return tf.reshape(y, [p] + dims), p, dims


def _fold_columns(z, count, op, acc, valid=None):
    """acc = op(acc, z[:, :, j], m) for j in range(count), z of shape [p, m, count], where
    ``valid`` (bool, like z, optional) holds: unrolled for a short static count, else in a
    tf.while_loop."""
    m = z.shape[1] if z.shape[1] is not None else tf.shape(z)[1]

    def step(j, acc):
        new = op(acc, tf.gather(z, j, axis=2), m)
        return new if valid is None else tf.where(tf.gather(valid, j, axis=2), new, acc)
    if isinstance(count, int) and count <= _UNROLL_MAX:
        for j in range(count):
            acc = step(j, acc)
        return acc
    return tf.while_loop(lambda j, _: j < count, lambda j, a: (j + 1, step(j, a)),
                         (tf.constant(0), acc),
                         shape_invariants=(tf.TensorShape([]), tf.TensorShape([None, None])))[1]


def _window_pass(y, p, dims, init):
    """One rewrite of XLA's CPU TreeReductionRewriter on ``y`` ([p] + dims): each reduced
    dimension is cut into windows of min(d, 32), padded with ``init`` to a whole number of
    windows (the padding split evenly, the odd element high; XLA skips padding, it never
    combines it). Returns z ([p, M, W]: the M windows, each window's W elements in
    row-major order), the mask of real elements (None without padding), the window counts."""
    sym = lambda *v: any(not isinstance(t, int) for t in v)   # noqa: E731
    ws = [tf.minimum(d, _WINDOW) if sym(d) else min(d, _WINDOW) for d in dims]
    ms = [(d + w - 1) // w for d, w in zip(dims, ws)]
    pads = [m * w - d for d, w, m in zip(dims, ws, ms)]
    k = len(dims)

    def windows(y):
        z = tf.reshape(y, [p] + [v for m, w in zip(ms, ws) for v in (m, w)])
        z = tf.transpose(z, [0] + [1 + 2 * i for i in range(k)] + [2 + 2 * i for i in range(k)])
        return tf.reshape(z, [p, math.prod(ms), math.prod(ws)])
    if not (sym(*pads) or any(pads)):
        return windows(y), None, ms
    paddings = [[0, 0]] + [[q // 2, q - q // 2] for q in pads]
    valid = tf.pad(tf.ones_like(y, tf.bool), paddings, constant_values=False)
    return windows(tf.pad(y, paddings, constant_values=init)), windows(valid), ms


def xla_order_reduce(y, p, dims, op, init):
    """Reduce ``y`` ([p] + dims, dims >= 1) over all its dims but the first, in the order
    and grouping XLA's CPU backend uses: while some reduced dimension is longer than 32,
    reduce windows (see ``_window_pass``), each folded from ``init``; then fold the rest,
    row-major, from ``init``. ``op(a, b, m)`` combines two [p, m] tensors (m: an int, or a
    TF scalar); ``init`` is a TF scalar of y's dtype. Returns a [p] tensor."""
    def one_pass(y, dims):
        z, valid, ms = _window_pass(y, p, dims, init)
        acc = tf.fill([p, math.prod(ms)], init)
        w = z.shape[2] if z.shape[2] is not None else tf.shape(z)[2]
        acc = _fold_columns(z, w, op, acc, valid)
        return tf.reshape(acc, [p] + ms), ms

    if all(isinstance(d, int) for d in dims):
        while max(dims) > _WINDOW:
            y, dims = one_pass(y, dims)
    else:
        k = len(dims)

        def body(y, dims_t):
            y, ms = one_pass(y, tf.unstack(dims_t, k))
            return y, tf.stack([tf.cast(m, tf.int32) for m in ms])

        y, dims_t = tf.while_loop(
            lambda y, d: tf.reduce_max(d) > _WINDOW, body,
            (y, tf.stack([tf.cast(d, tf.int32) for d in dims])),
            shape_invariants=(tf.TensorShape([None] * (k + 1)), tf.TensorShape([k])))
        dims = tf.unstack(dims_t, k)
    n = math.prod(dims)
    z = tf.reshape(y, [p, 1, n])
    return _fold_columns(z, n, op, tf.fill([p, 1], init))[:, 0]



def _refuse_f16_multi_axis(aval, axes, kind):
    """XLA's CPU backend keeps float16 reductions in float16, and over several reduced axes
    it does not add in the row-major window order followed here (bfloat16, computed in f32,
    does). Refuse rather than give other numbers."""
    dims = [aval.shape[a] for a in axes]
    long_dims = [d for d in dims if not isinstance(d, int) or d > 1]
    n = math.prod(d for d in dims if isinstance(d, int))
    if len(long_dims) > 1 and (n > _WINDOW or len(long_dims) != len([d for d in long_dims if isinstance(d, int)])):
        raise UnsupportedError(
            f"reduce {kind} of float16 over several axes {tuple(axes)} of shape {aval.shape}: "
            "XLA's CPU order for this form is not reproduced (it would give other numbers); "
            "reduce one axis at a time (e.g. reshape the reduced axes into one), or compute "
            "in float32.")

def _fill(ctx, value, aval):
    return tf.fill(ctx.shape(aval), ctx.constant(value, aval.dtype))


def reduce_monoid(ctx, x, aval_in, aval_out, axes, kind, init=None):
    """Reduce ``x`` over ``axes`` with one of the monoids add/mul/max/min/and/or/xor;
    ``init`` (a TF scalar, optional) is combined in first, as XLA's CPU loop does."""
    dtype = np.dtype(aval_in.dtype)
    op = monoid_op(kind, dtype)
    with_init = (lambda y: y) if init is None else (lambda y: op(init, y))
    shape = ctx.shape(aval_in)        # ints, or TF scalars for symbolic dimensions
    axes = _axes(axes)
    if not axes:
        return with_init(x)
    if any(aval_in.shape[a] == 0 for a in axes):   # a symbolic dimension is >= 1
        return with_init(_fill(ctx, identity(kind, dtype), aval_out))
    n = _n_of(shape, axes)
    # XLA's CPU backend folds in its own order (windows of 32 on long axes, each from the
    # init value): followed exactly for half floats (rounded after every step, in f32),
    # wherever an init value (which need not be the identity) is combined, and for complex
    # numbers (their products' signs of zero depend on the order, and max/min pick the
    # element where a part compared is NaN; both rarely used paths).
    if kind in ("add", "mul") and dtype != np.bool_ and not (
            _is_half(dtype) or init is not None or is_complex(dtype)):
        return tf.reduce_sum(x, axes) if kind == "add" else tf.reduce_prod(x, axes)
    if kind in ("add", "mul") and dtype != np.bool_ or kind in ("max", "min") and is_complex(dtype):
        if np.dtype(dtype) == np.float16:
            _refuse_f16_multi_axis(aval_in, axes, kind)
        f = in_f32(op, dtype) if _is_half(dtype) else op
        init_t = init if init is not None else ctx.constant(identity(kind, dtype), dtype)
        y, p, dims = _reduced_layout(x, shape, axes)
        out = xla_order_reduce(y, p, dims, lambda a, b, m: f(a, b), init_t)
        return tf.reshape(out, ctx.shape(aval_out))
    if kind in ("max", "min") and dtype != np.bool_:
        y = tf.reduce_max(x, axes) if kind == "max" else tf.reduce_min(x, axes)
        # XLA's max/min keep NaN; so do TF's Max/Min kernels (since TF 2.4 their reducers
        # propagate it by definition, MaxReducer<T, PropagateNaN>: measured on every axis
        # form, size and float dtype), so on target "tf" no pass is added. TFLite's drop it
        # (TF issue 120298); the other runtimes are not trusted without a measurement.
        if is_float(dtype) and ctx.target != "tf":
            y = tf.where(tf.reduce_any(tf.math.is_nan(x), axes), tf.constant(_NAN, x.dtype), y)
        return with_init(y)
    if dtype == np.bool_:
        if kind in ("max", "or", "add"):
            return with_init(tf.reduce_any(x, axes))
        if kind in ("min", "and", "mul"):
            return with_init(tf.reduce_all(x, axes))
        count = tf.reduce_sum(tf.cast(x, tf.int32), axes)
        return with_init(tf.equal(count % 2, 1))
    # bitwise reductions of integers: no TF reducer, reduce by halving
    out, = tree_reduce([_to_last(x, shape, axes)[0]], n, lambda a, b, _: [op(a[0], b[0])])
    return with_init(out)


# -- reduce_sum / prod / max / min / and / or / xor --------------------------------------
def _rand_with_nan(rng, dtype):
    x = (rng.standard_normal((4, 5)) * 3).astype(dtype)
    x[1, 2] = np.nan
    x[3, 0] = np.nan
    return [x]


def _simple(prim_name, kind, dtypes, extra=()):
    prim = getattr(lax, prim_name)

    def lower(ctx, x, *, axes, **_):
        return reduce_monoid(ctx, x, ctx.avals_in[0], ctx.aval_out, axes, kind)

    doc = f"{prim_name} with XLA's identity for empty axes" + (
        " and NaN propagation" if kind in ("max", "min") else "")
    return rule(prim_name, dtypes=dtypes, cases=_simple_cases(prim, extra), name=prim_name,
                doc=doc)(lower)


def _simple_cases(prim, extra=()):
    return [
        case.random(lambda x: prim(x, (0,)), shapes=[(4, 6)], name="axis 0"),
        case.random(lambda x: prim(x, (0, 2)), shapes=[(3, 4, 5)], name="axes 0 2"),
        case.random(lambda x: prim(x, (1,)), shapes=[(3, 0)], name="empty -> identity"),
        case.random(lambda x: prim(x, ()), shapes=[(2, 3)], name="no axes"),
        case.random(lambda x: prim(x, (1,)), shapes=[(3, 20)], name="symbolic",
                    convert_kw={"polymorphic_shapes": ["(b, n)"]}),
        *[case.random(lambda x: prim(x, (1,)), shapes=[(2, n)], name=f"XLA's order, {n}",
                      dtypes=["bfloat16", "float16"]) for n in (64, 100, 1100)],
        case.random(lambda x: prim(x, (0,)), shapes=[(1100, 2)], name="XLA's order, symbolic",
                    dtypes=["bfloat16", "float16"], convert_kw={"polymorphic_shapes": ["(n, b)"]}),
        case.random(lambda x: prim(x, (0, 2)), shapes=[(40, 2, 40)], name="XLA's order, 2 axes",
                    dtypes=["bfloat16"]),
        *extra]


def _complex_edges(rng, dtype):
    """Parts from NaN, +-inf, +-0, 1, 2, subnormal: 2 x 40 values (a window pass)."""
    part = np.array([_NAN, _INF, -_INF, 0.0, -0.0, 1.0, 2.0, np.finfo(dtype).smallest_subnormal])
    x = np.zeros((2, 40), dtype)
    x.real, x.imag = part[rng.integers(0, 8, (2, 40))], part[rng.integers(0, 8, (2, 40))]
    return [x]


_NAN_CASES = (case.custom("NaN wins", lambda x: (lax.reduce_max(x, (1,)), lax.reduce_min(x, (0,))),
                          _rand_with_nan, dtypes="floating"),
              case("complex: a NaN part loses to the next element (found by tests/fuzz.py)",
                   lambda x: (lax.reduce_max(x, (0,)), lax.reduce_min(x[::-1], (0,))),
                   [2 + 2j, complex(_NAN, 0), complex(-_INF, 2), complex(2, _NAN), 1j],
                   dtypes="complex"),
              case.custom("complex: XLA's order, NaN, inf, subnormal parts",
                          lambda x: (lax.reduce_max(x, (1,)), lax.reduce_min(x, (0, 1))),
                          _complex_edges, dtypes="complex"),
              case("infinities", lambda x: (lax.reduce_max(x, (0,)), lax.reduce_min(x, (1,))),
                   [[-_INF, -_INF], [-1.0, _INF]], dtypes="floating"))

reduce_sum = _simple("reduce_sum", "add", "numeric")
reduce_prod = _simple("reduce_prod", "mul", "numeric", [
    case("complex: signs of zero parts, from 1 + 0j in XLA's order (found by tests/fuzz.py)",
         lambda x: (lax.reduce_prod(x[:2], (0,)), lax.reduce_prod(x, (0,))),
         [-0.0 - 4j, 1j, -1 + 0j, -0.0 + 0j] + [1 - 0j, -1j] * 16, dtypes="complex")])
reduce_max = _simple("reduce_max", "max", "all", _NAN_CASES)
reduce_min = _simple("reduce_min", "min", "all", _NAN_CASES)
reduce_and = _simple("reduce_and", "and", ["bool", "integer"])
reduce_or = _simple("reduce_or", "or", ["bool", "integer"])
reduce_xor = _simple("reduce_xor", "xor", ["bool", "integer"])


# -- argmin / argmax --------------------------------------------------------------------
def _argminmax(ctx, x, axes, index_dtype, is_max):
    """JAX's reducer: a NaN beats everything and the first NaN wins; otherwise the first
    index holding the extreme value (ties, and -0.0 == 0.0, go to the lower index)."""
    aval = ctx.avals_in[0]
    axis, = _axes(axes)
    n = ctx.dim(aval.shape[axis])     # an int, or a TF int32 scalar if symbolic
    if aval.dtype == np.bool_:
        x = tf.cast(x, tf.int32)
    best = (tf.reduce_max if is_max else tf.reduce_min)(x, [axis], keepdims=True)
    hit = tf.equal(x, best)
    if is_float(aval.dtype):
        nan = tf.math.is_nan(x)
        any_nan = tf.reduce_any(nan, [axis], keepdims=True)
        hit = (tf.where(any_nan, nan, hit) if ctx.target == "tf" else  # onnxruntime: no
               (any_nan & nan) | (~any_nan & hit))                     # bool Where
    itype = tf.int64 if isinstance(n, int) and n >= 2 ** 31 - 1 else tf.int32
    iota = tf.reshape(tf.range(n, dtype=itype), [n if i == axis else 1 for i in range(len(aval.shape))])
    idx = tf.reduce_min(tf.where(hit, iota, tf.cast(n, itype)), [axis])
    return tf.cast(idx, ctx.tf_dtype(index_dtype))


def _argcases(fn):
    poly = {"polymorphic_shapes": ["(b, n)"]}
    return [case.random(lambda x: fn(x, 0, np.int32), shapes=[(7, 3)]),
            case.random(lambda x: fn(x, 1, np.uint8), shapes=[(3, 9)], name="axis 1 uint8 index"),
            case("ties go to the first index", lambda x: fn(x, 0, np.int32), [3, 1, 3, 1, 0, 3]),
            case("NaN: first NaN wins", lambda x: fn(x, 0, np.int32),
                 [1.0, _NAN, _INF, _NAN, -_INF], dtypes="floating"),
            case("signed zeros tie", lambda x: fn(x, 0, np.int32), [-0.0, 0.0, -1.0],
                 dtypes="floating"),
            case.random(lambda x: fn(x, 1, np.uint8), shapes=[(3, 9)],
                        name="symbolic batch and axis", convert_kw=poly),
            case.random(lambda x: fn(x, 0, np.int32), shapes=[(7, 3)],
                        name="symbolic batch", convert_kw={"polymorphic_shapes": ["(7, b)"]}),
            case("NaN: first NaN wins, symbolic length", lambda x: fn(x, 1, np.int32),
                 [[1.0, _NAN, _INF, _NAN, -_INF], [0.0, -_INF, 2.0, 2.0, -0.0]],
                 dtypes="floating", convert_kw=poly)]


@rule("argmax", dtypes=["bool", "integer", "floating"], cases=_argcases(lax.argmax))
def argmax(ctx, x, *, axes, index_dtype, **_):
    """argmax: first NaN, else the first maximal element."""
    return _argminmax(ctx, x, axes, index_dtype, True)


@rule("argmin", dtypes=["bool", "integer", "floating"], cases=_argcases(lax.argmin))
def argmin(ctx, x, *, axes, index_dtype, **_):
    """argmin: first NaN, else the first minimal element."""
    return _argminmax(ctx, x, axes, index_dtype, False)


# -- generic reduce ---------------------------------------------------------------------
_MONOID_PRIMS = {"add": "add", "mul": "mul", "max": "max", "min": "min",
                 "and": "and", "or": "or", "xor": "xor"}


def _recognize_monoids(closed):
    """['add', 'max', ...] when the computation pairs operand i of each side with one
    elementwise monoid op and nothing else; None otherwise."""
    j = closed.jaxpr
    k = len(j.outvars)
    if len(j.invars) != 2 * k or len(j.eqns) != k:
        return None
    kinds = []
    for i, out in enumerate(j.outvars):
        eqn = next((e for e in j.eqns if e.outvars[0] is out), None)
        if eqn is None or eqn.primitive.name not in _MONOID_PRIMS or len(eqn.invars) != 2:
            return None
        ids = [id(v) for v in eqn.invars]
        if sorted(ids) != sorted([id(j.invars[i]), id(j.invars[k + i])]):
            return None
        kinds.append(_MONOID_PRIMS[eqn.primitive.name])
    return kinds


def _argmax_pair(xs, ys):
    x, i = xs
    y, j = ys
    pick = (x > y) | (x != x)
    return (lax.select(pick, x, y),
            lax.select(pick | ((x == y) & (i < j)), i, j))


def _complex_max_arg(rng, dtype):
    return [np.array([[1 + 2j, 1 + 3j, -4 + 9j], [1 + 5j, 0j, 2 - 1j]], dtype)]


_REDUCE_CASES = [
    case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a + b, (0,)),
                shapes=[(4, 6)], name="add from 3", dtypes="numeric"),
    case.random(lambda x, y: lax.reduce((x, y), (np.array(0, x.dtype), np.array(5, y.dtype)),
                                        lambda a, b: (lax.max(a[0], b[0]), lax.min(a[1], b[1])),
                                        (1,)),
                shapes=[(3, 5), (3, 5)], name="max and min", dtypes=["bool", "integer", "floating"]),
    case.custom("complex max", lambda x: lax.reduce(x, np.array(1 + 4j, x.dtype), lax.max, (1,)),
                _complex_max_arg, dtypes="complex"),
    case.random(lambda x: lax.reduce(x, np.array(0, x.dtype), lambda a, b: a + b, (0,)),
                shapes=[(0, 3)], name="empty -> init", dtypes="numeric"),
    case.custom("argmax pair (general path)",
                lambda x: lax.reduce((x, lax.broadcasted_iota(np.int32, x.shape, 1)),
                                     (np.array(-np.inf, x.dtype), np.array(0, np.int32)),
                                     _argmax_pair, (1,)),
                lambda rng, dt: [(rng.integers(-3, 3, (4, 11))).astype(dt)], dtypes="floating"),
    case.custom("argmax pair, long axis",
                lambda x: lax.reduce((x, lax.broadcasted_iota(np.int32, x.shape, 0)),
                                     (np.array(-np.inf, x.dtype), np.array(0, np.int32)),
                                     _argmax_pair, (0,)),
                lambda rng, dt: [(rng.integers(-9, 9, (45, 2))).astype(dt)], dtypes="floating"),
    case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a + b, (0,)),
                shapes=[(20, 6)], name="add from 3, symbolic", dtypes="numeric",
                convert_kw={"polymorphic_shapes": ["(n, b)"]}),
    case.random(lambda x, y: lax.reduce((x, y), (np.array(0, x.dtype), np.array(5, y.dtype)),
                                        lambda a, b: (lax.max(a[0], b[0]), lax.min(a[1], b[1])),
                                        (1,)),
                shapes=[(3, 5), (3, 5)], name="max and min, symbolic batch",
                dtypes=["bool", "integer", "floating"],
                convert_kw={"polymorphic_shapes": ["(b, 5)", "(b, 5)"]}),
    case.random(lambda x: lax.reduce(x, np.array(1 + 4j, x.dtype), lax.max, (1,)),
                shapes=[(3, 7)], name="complex max, symbolic", dtypes="complex",
                convert_kw={"polymorphic_shapes": ["(b, n)"]}),
    case.custom("argmax pair, symbolic batch",
                lambda x: lax.reduce((x, lax.broadcasted_iota(np.int32, x.shape, 1)),
                                     (np.array(-np.inf, x.dtype), np.array(0, np.int32)),
                                     _argmax_pair, (1,)),
                lambda rng, dt: [(rng.integers(-9, 9, (3, 45))).astype(dt)], dtypes="floating",
                convert_kw={"polymorphic_shapes": ["(b, 45)"]}),
    case.random(lambda x: lax.reduce(x, np.array(0, x.dtype), lambda a, b: a * 0.5 + b, (1,)),
                shapes=[(3, 11)], name="an order-dependent computation, symbolic length",
                dtypes="floating", convert_kw={"polymorphic_shapes": ["(b, n)"]}),
    *[case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a * 0.5 + b, (1,)),
                  shapes=[(2, n)], name=f"an order-dependent computation, XLA's order, {n}",
                  dtypes="floating") for n in (17, 33, 100, 1100)],
    case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a * 0.5 + b, (1,)),
                shapes=[(2, 100)], name="an order-dependent computation, XLA's order, symbolic",
                dtypes="floating", convert_kw={"polymorphic_shapes": ["(b, n)"]}),
    case.random(lambda x: lax.reduce(x, np.array(3, x.dtype), lambda a, b: a + b, (1,)),
                shapes=[(2, 100)], name="add from 3, long axis", dtypes="numeric"),
    case.random(lambda x, y: lax.reduce((x, y), (np.array(0, x.dtype), np.array(1, y.dtype)),
                                        lambda a, b: (a[0] * 0.5 + b[0], a[1] - a[0] * b[1]),
                                        (1,)),
                shapes=[(2, 40), (2, 40)], name="two operands, order-dependent, long axis",
                dtypes=["float32", "float64"]),
]


@rule("reduce", cases=_REDUCE_CASES)
def reduce(ctx, *args, computation=None, jaxpr, dimensions, **_):
    """Variadic reduce: known monoids reduce natively; any other computation is applied in
    XLA's CPU order (one operand: windows of 32, see xla_order_reduce; several: one fold
    over the elements in order)."""
    k = len(args) // 2
    operands, inits = args[:k], args[k:]
    avals, avals_out = ctx.avals_in[:k], ctx.avals_out
    axes = _axes(dimensions)
    kinds = _recognize_monoids(jaxpr)
    if kinds is not None:
        return [reduce_monoid(ctx, x, aval, aout, axes, kind, init)
                for x, init, aval, aout, kind in zip(operands, inits, avals, avals_out, kinds)]
    shape, out_shape = ctx.shape(avals[0]), ctx.shape(avals_out[0])
    if 0 in avals[0].shape:
        return [tf.broadcast_to(init, out_shape) for init in inits]
    p, n = math.prod(out_shape), _n_of(shape, axes)
    flat = [tf.reshape(_to_last(x, shape, axes)[0], [p, n]) for x in operands]
    fn = jax.vmap(jex.jaxpr_as_fun(jaxpr))
    p_jax = math.prod(avals_out[0].shape)   # p as JAX's dimension expression

    def apply(a, b, m):  # the computation on (p * m)-vectors
        vec = [jax.core.ShapedArray((p_jax * m,), av.dtype) for av in avals]
        outs = ctx.lower_fun(fn, *[tf.reshape(t, [p * m]) for t in a + b], avals=vec + vec)
        return [tf.reshape(o, [p, m]) for o in outs]

    if k == 1:   # XLA's order: windows of 32 on long axes (see xla_order_reduce)
        def op(a, b, m):
            if isinstance(m, int):
                return apply([a], [b], m)[0]
            # m only known when the graph runs: one column of p elements at a time
            return tf.transpose(tf.map_fn(lambda ab: apply([ab[0][:, None]], [ab[1][:, None]], 1)[0][:, 0],
                                          (tf.transpose(a), tf.transpose(b)),
                                          fn_output_signature=a.dtype))
        y, p, dims = _reduced_layout(operands[0], shape, axes)
        return [tf.reshape(xla_order_reduce(y, p, dims, op, inits[0]), out_shape)]
    # XLA does not rewrite a variadic reduce: its CPU loop is acc = init, then
    # acc = f(acc, x_i) in element order. Folded the same way (a while loop on long axes),
    # so a computation whose result depends on the order still gives XLA's numbers.
    acc = [tf.broadcast_to(tf.reshape(i, [1, 1]), [p, 1]) for i in inits]
    acc = fold_range(0, n, lambda i, acc: apply(acc, [x[:, i:i + 1] for x in flat], 1), acc)
    return [tf.reshape(o, out_shape) for o in acc]


# -- TFLite builtins ---------------------------------------------------------------------
# Measured: the generic rules convert, with JAX's numbers, for float32, int32 and bool, except
# reduce_and/or of int32 (BitwiseAnd/Or are refused), max/min over empty axes of float32 (the
# converter writes the -inf/inf identity constant as -FLT_MAX/FLT_MAX), everything uint32
# (TFLite has no uint32 Sum/Prod/Max/Min/Transpose/Gather) and argmax/argmin ties between
# subnormals and zeros (the interpreter compares subnormals exactly, XLA's CPU code as zero).

#: Bit k of an int32 as a number: 2**k, and bit 31 as -2**31.
_BIT_WEIGHTS = np.array([1 << k for k in range(31)] + [-2 ** 31], np.int32)


def _bitwise_lite(x, axes, kind):
    """and/or of int32 over the (non-empty) ``axes``: per bit, the min (and) or max (or) of
    (x >> k) mod 2, recombined as the sum of bit_k * 2**k (the bits are disjoint)."""
    bits = tf.math.floormod(tf.bitwise.right_shift(tf.expand_dims(x, -1), tf.range(32)), 2)
    red = (tf.reduce_min if kind == "and" else tf.reduce_max)(bits, list(axes))
    return tf.reduce_sum(red * tf.constant(_BIT_WEIGHTS), -1)


def lite_reduce_monoid(ctx, x, aval_in, aval_out, axes, kind, init=None):
    """:func:`reduce_monoid` in TFLite builtins, for LITE_DTYPES."""
    dtype = np.dtype(aval_in.dtype)
    axes = _axes(axes)
    empty = any(aval_in.shape[a] == 0 for a in axes)    # a symbolic dimension is >= 1
    if dtype == np.uint32:   # on the int32 bits; max/min with the sign bit flipped
        flip = unsigned_order if kind in ("max", "min") else (lambda b: b)
        i32 = np.dtype(np.int32)
        y = lite_reduce_monoid(ctx, flip(lite_bits(x, dtype)), aval_in.update(dtype=i32),
                               aval_out.update(dtype=i32), axes, kind,
                               None if init is None else flip(lite_bits(init, dtype)))
        return lite_unbits(flip(y), dtype)
    if dtype == np.int32 and kind in ("and", "or"):
        y = x if not axes else (_fill(ctx, identity(kind, dtype), aval_out) if empty
                                else _bitwise_lite(x, axes, kind))
        if init is None:
            return y
        pair = tf.stack([tf.broadcast_to(init, tf.shape(y)), y], -1)
        return _bitwise_lite(pair, [len(aval_out.shape)], kind)
    if dtype == np.float32 and kind in ("max", "min") and empty and init is None:
        raise UnsupportedError(
            f"reduce_{kind} of float32 over an empty axis for TFLite: the result is the "
            f"constant {'-' if kind == 'max' else ''}inf, which the TFLite converter writes "
            f"as {'-' if kind == 'max' else ''}FLT_MAX (a wrong number); use target='tf'.")
    return reduce_monoid(ctx, x, aval_in, aval_out, axes, kind, init)


def lite_cases(cases) -> list:
    """The cases of a generic rule that a TFLite model can hold: no zero-size input or
    output (the export refuses them; they carry no data)."""
    return [c for c in cases if not c.name.startswith(("empty", "k=0"))]


def _lite_extremes(rng, dtype):
    if np.dtype(dtype) == np.float32:
        return [np.array([[-_INF, -_INF, -_INF], [_INF, 1e-45, -1e-45], [-0.0, 0.0, _NAN]], dtype)]
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, (3, 5), dtype=dtype, endpoint=True)
    x[0, :2], x[1, :2], x[2, :] = info.max, info.min, info.max
    return [x]


def _simple_tflite(prim_name, kind, dtypes):
    prim = getattr(lax, prim_name)

    def lower(ctx, x, *, axes, **_):
        return lite_reduce_monoid(ctx, x, ctx.avals_in[0], ctx.aval_out, axes, kind)

    extra = [case.custom("extremes", lambda x: (prim(x, (1,)), prim(x, (0,))), _lite_extremes)]
    return rule(prim_name, dtypes=dtypes, targets="tflite",
                cases=lite_cases(_simple_cases(prim, extra)), name=f"{prim_name}_tflite",
                doc=f"{prim_name} in TFLite builtins (see lite_reduce_monoid)")(lower)


reduce_sum_tflite = _simple_tflite("reduce_sum", "add", ["uint32"])
reduce_prod_tflite = _simple_tflite("reduce_prod", "mul", ["uint32"])
reduce_max_tflite = _simple_tflite("reduce_max", "max", ["uint32", "float32"])
reduce_min_tflite = _simple_tflite("reduce_min", "min", ["uint32", "float32"])
reduce_and_tflite = _simple_tflite("reduce_and", "and", ["int32", "uint32"])
reduce_or_tflite = _simple_tflite("reduce_or", "or", ["int32", "uint32"])
reduce_xor_tflite = _simple_tflite("reduce_xor", "xor", ["uint32"])


def _argminmax_lite(ctx, x, axes, index_dtype, is_max):
    """uint32 on the int32 bits with the sign bit flipped; float32 with subnormals flushed."""
    dtype = np.dtype(ctx.avals_in[0].dtype)
    x = unsigned_order(lite_bits(x, dtype)) if dtype == np.uint32 else flush_subnormals(x)
    return _argminmax(ctx, x, axes, index_dtype, is_max)


def _argcases_lite(fn):
    return _argcases(fn) + [
        case("subnormals tie with zeros", lambda x: fn(x, 0, np.int32),
             [1e-45, 0.0, -1e-45, -0.0, -1.1e-38], dtypes=["float32"]),
        case("subnormals tie with zeros", lambda x: fn(x, 1, np.int32),
             [[0.0, 1e-45, -1e-45, -0.0, 1.1e-38], [-0.0, 1.1e-38, -1e-45, 1.2e-38, 0.0]],
             dtypes=["float32"]),
        case.custom("extremes", lambda x: fn(x, 1, np.int32), _lite_extremes)]


def _arg_tflite(prim_name, is_max):
    def lower(ctx, x, *, axes, index_dtype, **_):
        return _argminmax_lite(ctx, x, axes, index_dtype, is_max)

    return rule(prim_name, dtypes=["uint32", "float32"], targets="tflite",
                cases=_argcases_lite(getattr(lax, prim_name)), name=f"{prim_name}_tflite",
                doc=f"{prim_name} in TFLite builtins (see _argminmax_lite)")(lower)


argmax_tflite = _arg_tflite("argmax", True)
argmin_tflite = _arg_tflite("argmin", False)


def _inf_init(rng, dtype):
    return [np.array([[-_INF, -_INF, -_INF], [1.0, _NAN, -_INF]], dtype)]


@rule("reduce", dtypes=LITE_DTYPES, targets="tflite", cases=[
    c for c in lite_cases(_REDUCE_CASES) if "order-dependent computation" not in c.name
    or "symbolic" not in c.name] + [
    case.custom("max from +inf", lambda x: lax.reduce(x, np.inf, lax.max, (1,)),
                _inf_init, dtypes=["float32"]),
    case.custom("min from inf, max from -inf", lambda x: lax.reduce(
        (x, x), (np.float32(np.inf), np.float32(-np.inf)),
        lambda a, b: (lax.min(a[0], b[0]), lax.max(a[1], b[1])), (0,)),
        lambda rng, dt: [-_inf_init(rng, dt)[0]], dtypes=["float32"]),
    case.custom("and, or from extremes", lambda x: lax.reduce(
        (x, x), (np.array(-3).astype(x.dtype), np.array(5, x.dtype)),
        lambda a, b: (lax.bitwise_and(a[0], b[0]), lax.bitwise_or(a[1], b[1])), (1,)),
        _lite_extremes, dtypes=["int32", "uint32"])])
def reduce_tflite(ctx, *args, computation=None, jaxpr, dimensions, **_):
    """The generic reduce in TFLite builtins: known monoids through lite_reduce_monoid, an
    infinite init (the converter writes +-inf constants as +-FLT_MAX) made at run time;
    other computations as the generic rule computes them."""
    k = len(args) // 2
    operands, inits = args[:k], list(args[k:])
    for i, init in enumerate(inits):
        v = tf.get_static_value(init)
        if v is not None and v.dtype.kind == "f" and np.isinf(v).any():
            if 0 in ctx.avals_in[i].shape:
                raise UnsupportedError(
                    "reduce over an empty axis from an infinite init for TFLite: the "
                    "TFLite converter writes the result, a constant +-inf, as +-FLT_MAX.")
            inits[i] = lite_scalar(float(v), operands[i])
    kinds = _recognize_monoids(jaxpr)
    if kinds is None:
        if k == 1 and any(not isinstance(d, int) for d in ctx.shape(ctx.avals_in[0])):
            raise UnsupportedError(
                "reduce with a general computation over symbolic dimensions for TFLite: its "
                "column-by-column form (map_fn, TensorList ops) has no TFLite builtin form; "
                "convert with concrete shapes or use target='tf'.")
        return reduce(ctx, *operands, *inits, jaxpr=jaxpr, dimensions=dimensions)
    return [lite_reduce_monoid(ctx, x, aval, aout, dimensions, kind, init)
            for x, init, aval, aout, kind in zip(operands, inits, ctx.avals_in[:k],
                                                  ctx.avals_out, kinds)]
