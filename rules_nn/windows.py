"""Windowed reductions: reduce_window_{sum,max,min}, the generic (variadic) reduce_window,
and the max-pooling gradients select_and_scatter_add and select_and_gather_add.

One exact strategy serves every parameter form (any rank, strides, asymmetric or negative
padding, base and window dilation): fill the base-dilation holes and the padding with the
reduction's identity (0 for sum, -inf / the dtype minimum for max, never 0), then take
one strided slice per window offset and fold them, in XLA's order (init first, then the
window row-major), with the monoid: O(window size) StridedSlice + elementwise ops, all of
which export. A generic reducer's init value is no identity, so there XLA skips padding
and holes, and so do we (static masks). NaN propagates through max/min as in XLA
(tf.maximum propagates it); float max/min pooling over at most two axes uses MaxPool,
which drops NaN and tops out at -FLT_MAX for all -inf windows, plus (only when needed)
pools of masks that restore NaN and -inf; a float32 window sum over at most two axes
is a depthwise convolution with a filter of ones (one pass, and it exports).
Known difference: XLA's f16/bf16 window *sums* round after every add, in an order that
depends on the window layout and the padding; ours may differ by one rounding step
(within the f16/bf16 tolerances), padded or not. With padding, XLA's CPU backend also
folds a generic reducer's window in another order (measured: 2-D windows column-major,
a padded axis outermost), so an order-dependent reducer (e.g. float adds of values far
apart in size) can differ there; unpadded windows follow XLA's row-major order exactly.
Sizes and padding may be symbolic (``polymorphic_shapes``): the slices' bounds are
evaluated when the graph runs, and so are the padding masks of the generic reducers.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from jax import lax

from core.dtypes import to_tf
from core.errors import UnsupportedError
from core.rule import case, rule
from core.shapes import is_symbolic
from rules_lax.reductions import complex_minmax
from rules_lax.dims import (dilate as _dilate, dims as _dims, evaluator, grow_and_cut,
                              ints as _ints, is_zero, nonnegative, pad_or_slice, same)


def prepare_windows(x, shape, padding, base_dilation, fill, ev):
    """Base dilation then edge padding (negative amounts slice), both with ``fill``."""
    shape = list(shape)
    for axis, d in enumerate(base_dilation):
        x, shape = _dilate(x, shape, axis, d, ev, fill)
    return pad_or_slice(x, shape, padding, ev, fill)


def window_elements(x, window, strides, window_dilation, out, ev, shape=None):
    """One strided slice of ``x`` per window offset, row-major: element ``offset`` of
    every window."""
    if shape is not None and math.prod(window) > 1 and all(
            (w == 1 and s == 1) or (w == s and d == 1)
            for w, s, d in zip(window, strides, window_dilation)):
        # Non-overlapping windows (stride == window, e.g. 2x2/2 pooling): the same
        # elements come from one reshape + transpose + unstack, several times faster on
        # CPU than a StridedSlice per offset. Pure data movement, so exact.
        rank = len(window)
        if not all(same(n, o * s) for n, o, s in zip(shape, out, strides)):
            x = tf.slice(x, [0] * rank, ev([o * s for o, s in zip(out, strides)]))
        x = tf.reshape(x, ev([d for o, w in zip(out, window) for d in (o, w)]))
        x = tf.transpose(x, [*range(1, 2 * rank, 2), *range(0, 2 * rank, 2)])
        x = tf.reshape(x, ev([math.prod(window), *out]))
        yield from zip(np.ndindex(*window), tf.unstack(x, math.prod(window)))
        return
    for offset in np.ndindex(*window):
        begin = [int(o) * d for o, d in zip(offset, window_dilation)]
        end = [b + (n - 1) * s + 1 for b, n, s in zip(begin, out, strides)]
        yield offset, tf.strided_slice(x, begin, ev(end), strides)


def valid_masks(in_shape, out_shape, window, strides, padding, base_dilation,
                 window_dilation, ev):
    """Per window offset, a bool mask over the output: does that window element fall on
    a real operand element (not on padding or a base-dilation hole)? XLA skips the
    others, which matters when the init value is not the reducer's identity. The mask is
    a numpy array when every size is known; with symbolic sizes, a TF one (broadcasting
    over the output), or None when every element is real."""
    for offset in np.ndindex(*window):
        axes = []       # per axis: a 1-D numpy mask, a 1-D TF one, or None (all real)
        for n, o, w_out, s, (lo, _), bd, wd in zip(in_shape, offset, out_shape, strides,
                                                   padding, base_dilation, window_dilation):
            if not any(map(is_symbolic, (n, w_out, lo))):
                q = np.arange(w_out) * s + o * wd - lo
                axes.append((q >= 0) & (q <= (n - 1) * bd) & (q % bd == 0))
            elif o * wd == 0 and s == 1 and bd == 1 and same(lo, 0) and same(w_out, n):
                axes.append(None)           # q = 0 .. n-1: every element is real
            else:
                n, w_out, lo = ev([n, w_out, lo])
                q = tf.range(w_out) * s + (o * wd - lo)
                axes.append((q >= 0) & (q <= (n - 1) * bd) & tf.equal(q % bd, 0))
        if all(isinstance(a, np.ndarray) for a in axes):
            mask = np.ones((), bool)
            for ok in axes:
                mask = np.logical_and.outer(mask, ok)
            yield mask
            continue
        if any(isinstance(a, np.ndarray) and not a.any() for a in axes):
            yield np.zeros((), bool)
            continue
        mask = None
        for axis, ok in enumerate(axes):
            if ok is None or (isinstance(ok, np.ndarray) and ok.all()):
                continue
            at = [1] * len(axes)
            at[axis] = -1
            ok = tf.reshape(ok, at)
            mask = ok if mask is None else tf.logical_and(mask, ok)
        yield mask


def fold_windows(operands, fills, inits, combine, out_shape, ev, *, window_dimensions,
          window_strides, padding, base_dilation, window_dilation, in_shape,
          skip_padding=False):
    """XLA's reduce_window on lists of operands: acc = init; acc = combine(acc, element)
    for each window element in row-major order. Padding and holes hold ``fills``; with
    ``skip_padding`` they are skipped instead (needed unless the fill is an identity)."""
    window, strides = _ints(window_dimensions), _ints(window_strides)
    pads = [_dims(p) for p in padding]
    bdil, wdil = _ints(base_dilation), _ints(window_dilation)
    acc = [tf.broadcast_to(i, ev(out_shape)) for i in inits]
    if any(map(is_zero, out_shape)) or math.prod(window) == 0:
        return acc
    prepared = [prepare_windows(x, in_shape, pads, bdil, f, ev) for x, f in zip(operands, fills)]
    slices = [list(window_elements(p, window, strides, wdil, out_shape, ev, shape))
              for p, shape in prepared]
    masks = (valid_masks(in_shape, out_shape, window, strides, pads, bdil, wdil, ev)
             if skip_padding else iter(lambda: None, 0))
    for elems, mask in zip(zip(*slices), masks):
        if isinstance(mask, np.ndarray):
            if not mask.any():
                continue
            mask = None if mask.all() else tf.constant(mask)
        new = combine(acc, [e for _, e in elems])
        if mask is not None:
            new = [tf.where(mask, n, a) for n, a in zip(new, acc)]
        acc = new
    return acc


# -- monoids -----------------------------------------------------------------------------

def _max(a, b):
    # tf.maximum propagates NaN, as XLA's max does; bool max is "or".
    if a.dtype.is_complex:
        return complex_minmax(a, b, True)
    return tf.logical_or(a, b) if a.dtype == tf.bool else tf.maximum(a, b)


def _min(a, b):
    if a.dtype.is_complex:
        return complex_minmax(a, b, False)
    return tf.logical_and(a, b) if a.dtype == tf.bool else tf.minimum(a, b)


def _add(a, b):
    return tf.logical_or(a, b) if a.dtype == tf.bool else tf.add(a, b)


def _mul(a, b):
    return tf.logical_and(a, b) if a.dtype == tf.bool else tf.multiply(a, b)


MONOIDS = {"add": _add, "mul": _mul, "max": _max, "min": _min,
            "and": tf.logical_and, "or": tf.logical_or}


def _identity(kind, dtype):
    dtype = np.dtype(dtype)
    if kind == "add":
        return np.zeros((), dtype)
    if dtype == np.bool_:
        return np.array(kind == "min")
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.array(info.min if kind == "max" else info.max, dtype)
    return np.array(-np.inf if kind == "max" else np.inf, dtype)


def _pool_layout(x, dtype, in_shape, out_shape, window, strides, padding, base_dilation,
                 window_dilation, ev, negate=False):
    """The operand as TF's pooling ops take it, or None when the form does not allow:
    float32 (or f16/bf16, widened exactly), no dilation, at most 2 axes with a window,
    stride or padding (TFLite has no 3-D pool); the other axes go to the batch or the
    channels. Returns ``(y, ksize, kstrides, pads, restore)``: y is float32 ``[batch,
    *pooled, channels]`` (``-x`` if ``negate``), ``pads`` its padding (not applied),
    ``restore(out)`` puts a pooled result back into the output's layout and dtype."""
    active = [a for a, (w, s, (lo, hi)) in enumerate(zip(window, strides, padding))
              if w != 1 or s != 1 or not (is_zero(lo) and is_zero(hi))]
    if (np.dtype(dtype).name not in ("float32", "float16", "bfloat16")
            or set(base_dilation) - {1} or set(window_dilation) - {1}
            or not 1 <= len(active) <= 2 or any(map(is_zero, out_shape))
            # negative padding, or symbolic padding of unknown sign, goes the general way
            or not all(nonnegative(p) for pads in padding for p in pads)):
        return None
    # Axes before the first pooled one form the batch, the others the channels: NHWC
    # pooling needs no transpose, and MaxPool is ~10x faster with C channels than with
    # the channels folded into the batch and a channel dimension of 1.
    lead = [a for a in range(active[0]) if a not in active]
    rest = [a for a in range(len(in_shape)) if a not in active and a not in lead]
    perm = lead + active + rest
    y = tf.cast(x, tf.float32) if x.dtype != tf.float32 else x
    y = -y if negate else y
    if perm != list(range(len(in_shape))):
        y = tf.transpose(y, perm)
    batch = math.prod(in_shape[a] for a in lead)
    chans = math.prod(in_shape[a] for a in rest)
    y = tf.reshape(y, ev([batch, *[in_shape[a] for a in active], chans]))

    def restore(out):
        out = tf.reshape(out, ev([*[in_shape[a] for a in lead],
                                  *[out_shape[a] for a in active],
                                  *[in_shape[a] for a in rest]]))
        if perm != list(range(len(in_shape))):
            out = tf.transpose(out, np.argsort(perm).tolist())
        return tf.cast(out, to_tf(dtype))
    return (y, [1, *[window[a] for a in active], 1], [1, *[strides[a] for a in active], 1],
            [[0, 0], *[ev(padding[a]) for a in active], [0, 0]], restore)


def _max_pool(x, kind, dtype, *form, neg_inf, branchless=False):
    """max/min pooling with TF's MaxPool (it exports) when :func:`_pool_layout` allows.
    MaxPool drops NaN, so a second pool of the NaN mask (run only when there is a NaN)
    puts NaN back where XLA's max propagates it. ``neg_inf()`` makes a float32 -inf."""
    layout = _pool_layout(x, dtype, *form, negate=kind == "min")  # min(x) = -max(-x)
    if layout is None:
        return None
    y, ksize, kstrides, pads, restore = layout
    if not all(is_zero(p) for pair in pads for p in pair):
        y = tf.pad(y, pads, constant_values=neg_inf())
    pool = tf.nn.max_pool1d if len(ksize) == 3 else tf.nn.max_pool2d
    out = pool(y, ksize, kstrides, "VALID")
    lowest = tf.constant(np.finfo(np.float32).min, tf.float32)

    def fix():
        # MaxPool drops NaN, and starts from the lowest finite float, not -inf: a window
        # of -inf gives -3.4e38. Pools of masks find the windows with a NaN, and those
        # whose -3.4e38 is a real element.
        has_nan = pool(tf.cast(tf.math.is_nan(y), tf.float32), ksize, kstrides, "VALID")
        has_low = pool(tf.cast(tf.equal(y, lowest), tf.float32), ksize, kstrides, "VALID")
        fixed = tf.where(tf.equal(out, lowest) & tf.equal(has_low, 0), neg_inf(), out)
        return tf.where(has_nan > 0, tf.constant(np.nan, tf.float32), fixed)
    # The mask pools are needed only when the operand holds a NaN or a window max is
    # -3.4e38; skip them otherwise. One Sum of the operand finds a NaN (NaN + anything is
    # NaN; +inf with -inf also gives NaN, which only takes the exact path needlessly), one
    # Min of the output its -3.4e38 (the lowest MaxPool gives): two reductions, where
    # IsNan/Any and Equal/Any took two passes each and made a bool tensor of each.
    if branchless:      # TFLite fails to convert this If under symbolic shapes (static: fine)
        out = fix()
    else:
        out = tf.cond(tf.math.is_nan(tf.reduce_sum(y)) | tf.equal(tf.reduce_min(out), lowest),
                      fix, lambda: out)
    return restore(-out if kind == "min" else out)


def _sum_pool(x, dtype, *form):
    """A float32 window sum as a depthwise convolution with a filter of ones (the
    padding is zeros): one pass, where the strided slices took a transpose and an add per
    window element (the CNN's 2x2 avg_pool: 4 adds). Exact like the adds: each output
    is one sum of its window's elements, from +0 (a window of -0.0 sums to +0.0, as in
    XLA); it is bit-identical to the slices' sum on random inputs (measured). AvgPool
    times the window size is not: its division underflows tiny sums to 0."""
    if np.dtype(dtype) != np.float32:
        return None                      # half floats: XLA rounds each add in f16/bf16
    layout = _pool_layout(x, dtype, *form)
    if layout is None or layout[0].shape[-1] is None:    # symbolic channels: no filter
        return None
    y, ksize, kstrides, pads, restore = layout
    chans = y.shape[-1]
    if not all(is_zero(p) for pair in pads for p in pair):
        y = tf.pad(y, pads)
    if len(ksize) == 3:                  # one pooled axis: a height of 1
        y, ksize, kstrides = tf.expand_dims(y, 1), [1, 1, *ksize[1:]], [1, 1, *kstrides[1:]]
    if kstrides[1] != kstrides[2]:       # TF's CPU kernel (without oneDNN) refuses those
        return None
    ones = tf.ones([ksize[1], ksize[2], chans, 1], tf.float32)
    out = tf.nn.depthwise_conv2d(y, ones, kstrides, "VALID")
    return restore(out)


def _monoid_window(ctx, operand, kind, *, window_dimensions, window_strides, padding,
                   base_dilation, window_dilation, **_):
    aval = ctx.avals_in[0]
    ev = evaluator(ctx)
    in_shape, out_shape = _dims(aval.shape), _dims(ctx.aval_out.shape)
    form = (in_shape, out_shape, _ints(window_dimensions), _ints(window_strides),
            [_dims(p) for p in padding], _ints(base_dilation), _ints(window_dilation), ev)
    if kind in ("max", "min"):
        pooled = _max_pool(operand, kind, aval.dtype, *form,
                           # -inf from ctx.constant: TFLite's converter keeps no inf constant;
                           # made only when a pool needs it (for TFLite it reads an input)
                           neg_inf=lambda: ctx.constant(-np.inf, np.dtype("float32")),
                           branchless=ctx.target == "tflite" and any(map(is_symbolic, in_shape)))
    else:
        pooled = _sum_pool(operand, aval.dtype, *form) if kind == "add" else None
    if pooled is not None:
        return pooled
    init = ctx.constant(_identity(kind, aval.dtype), aval.dtype)
    combine = MONOIDS[kind]
    out, = fold_windows([operand], [init], [init], lambda acc, el: [combine(acc[0], el[0])],
                 out_shape, ev, window_dimensions=window_dimensions,
                 window_strides=window_strides, padding=padding,
                 base_dilation=base_dilation, window_dilation=window_dilation,
                 in_shape=in_shape)
    return out


def _rw(fn, **kw):
    base = dict(window_dimensions=(2, 3), window_strides=(1, 2), padding=((1, 0), (2, 1)))
    base.update(kw)

    def f(x):
        pads = base["padding"]
        if isinstance(pads, str):   # "SAME": JAX's pads for x's (maybe symbolic) shape
            pads = lax.padtype_to_pads(x.shape, base["window_dimensions"],
                                       base["window_strides"], pads)
        return fn(x, **{**base, "padding": pads})
    return f


def _pool_cases(fn, exact_order=False):
    # XLA's f16/bf16 window sums round after each add, in an order that depends on the
    # padding; the padded 4-D cases would compare rounding orders, not semantics.
    ln = float("nan")
    narrow = ["bool", "integer", "float32", "float64", "complex"] if exact_order else None
    return [
        case.random(_rw(fn), shapes=[(5, 7)], name="strides and padding"),
        case.random(_rw(fn, window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 1, 1),
                        padding=((0, 0), (0, -1), (1, 1), (0, 0)),
                        base_dilation=(1, 2, 1, 1), window_dilation=(1, 1, 2, 1)),
                    shapes=[(2, 5, 6, 3)], name="NHWC dilations, negative padding"),
        case.random(_rw(fn, window_dimensions=(1, 2, 2, 3), window_strides=(1, 2, 1, 1),
                        padding=((0, 0), (0, 1), (1, 1), (0, 0))),
                    shapes=[(2, 3, 4, 5)], name="3 pooled axes after a batch axis",
                    dtypes=narrow),
        case.random(_rw(fn, window_dimensions=(2, 1, 1, 2), window_strides=(1, 1, 1, 2),
                        padding=((1, 0), (0, 0), (0, 0), (0, 1))),
                    shapes=[(3, 4, 2, 5)], name="pooled axes 0 and 3", dtypes=narrow),
        case.random(_rw(fn, window_dimensions=(4,), window_strides=(3,), padding=((0, 0),)),
                    shapes=[(3,)], name="window larger than input"),
        case("NaN propagates", _rw(fn, window_dimensions=(2,), window_strides=(1,),
                                   padding=((1, 1),)),
             [1.0, ln, 2.0, -float("inf"), 5.0], dtypes="floating"),
        # MaxPool alone would give -FLT_MAX for an all -inf window (and drop the NaN).
        case("all-infinite windows", _rw(fn, window_dimensions=(2,), window_strides=(2,),
                                         padding=((0, 0),)),
             [-float("inf"), -float("inf"), 1.0, ln, float("inf"), float("inf")],
             dtypes="floating"),
        case.random(_rw(fn, window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 2, 1),
                        padding=((0, 0),) * 4),
                    shapes=[(3, 4, 6, 2)], name="symbolic batch, 2x2 pooling",
                    convert_kw={"polymorphic_shapes": ["(b, _, _, _)"]}),
        # Output sizes and SAME's padding are floor-division expressions of h and w.
        case.random(_rw(fn, window_dimensions=(1, 3, 3, 1), window_strides=(1, 2, 2, 1),
                        padding="SAME"),
                    shapes=[(2, 7, 6, 3)], name="symbolic batch and spatial, SAME",
                    dtypes=narrow, convert_kw={"polymorphic_shapes": ["(b, h, w, _)"]}),
        case.random(_rw(fn, window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 1, 1),
                        padding=((0, 0), (0, -1), (1, 1), (0, 0)),
                        base_dilation=(1, 2, 1, 1), window_dilation=(1, 1, 2, 1)),
                    shapes=[(2, 5, 6, 3)], name="symbolic spatial, dilations, negative padding",
                    convert_kw={"polymorphic_shapes": ["(b, h, w, _)"]}),
    ]


def _bind(prim_name):
    from jax._src.lax import windowed_reductions as wr
    fn = {"sum": wr._reduce_window_sum, "max": wr._reduce_window_max,
          "min": wr._reduce_window_min}[prim_name]

    def call(x, *, window_dimensions, window_strides, padding, base_dilation=None,
             window_dilation=None):
        return fn(x, window_dimensions, window_strides, padding, base_dilation,
                  window_dilation)
    return call


_NHWC_2x2 = dict(window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 2, 1),
                padding=((0, 0),) * 4)


@rule("reduce_window_sum", dtypes="numeric", cases=[
    *_pool_cases(_bind("sum"), exact_order=True),
    # 2x2 windows of -0.0 sum to +0.0 (from 0, as XLA); 1e-38 + 1e-38 stays normal (an
    # AvgPool times 4 would flush its 5e-39 average to 0)
    case("signed zeros, tiny sums, inf, NaN (2x2)", _rw(_bind("sum"), **_NHWC_2x2),
         np.array([[-0.0, -0.0, 0.0, -0.0, 1e-38, 0.0, np.inf, 1.0],
                   [-0.0, -0.0, -0.0, -0.0, 1e-38, 0.0, -np.inf, np.nan]],
                  np.float32).reshape(1, 2, 4, 2), dtypes="float32")])
def reduce_window_sum(ctx, operand, **params):
    """Sum of the strided window slices, from 0 (padding and holes are 0)."""
    return _monoid_window(ctx, operand, "add", **params)


@rule("reduce_window_max", dtypes="all",
      cases=_pool_cases(_bind("max")))
def reduce_window_max(ctx, operand, **params):
    """Max of the strided window slices; padding and holes are -inf / the dtype minimum."""
    return _monoid_window(ctx, operand, "max", **params)


@rule("reduce_window_min", dtypes="all",
      cases=_pool_cases(_bind("min")))
def reduce_window_min(ctx, operand, **params):
    """Min of the strided window slices; padding and holes are +inf / the dtype maximum."""
    return _monoid_window(ctx, operand, "min", **params)


# -- generic reduce_window ---------------------------------------------------------------

def single_monoid(jaxpr, n):
    """The monoid when the reducer is one add/mul/max/min/and/or of its two scalars."""
    if n != 1 or len(jaxpr.eqns) != 1 or jaxpr.constvars:
        return None
    eqn = jaxpr.eqns[0]
    name = eqn.primitive.name
    if name not in MONOIDS or list(eqn.outvars) != list(jaxpr.outvars):
        return None
    if set(map(id, eqn.invars)) != set(map(id, jaxpr.invars)) or len(eqn.invars) != 2:
        return None
    return MONOIDS[name]


def _generic_cases():
    def argmax_like(x, i):
        def red(a, b):
            ka, ia = a
            kb, ib = b
            pick = ka >= kb
            return lax.select(pick, ka, kb), lax.select(pick, ia, ib)
        return lax.reduce_window((x, i), (np.array(-np.inf, x.dtype), np.array(0, i.dtype)),
                                 red, (2, 2), (1, 2), ((0, 1), (1, 0)))
    return [
        case.random(lambda x: lax.reduce_window(x, np.array(2, x.dtype), lax.mul, (2, 2),
                                                (1, 1), ((1, 0), (0, 1)), (2, 1), (1, 1)),
                    shapes=[(3, 4)], name="mul from 2, base dilation", dtypes="numeric"),
        case.random(lambda x: lax.reduce_window(x, np.array(1, x.dtype), lax.max, (3,),
                                                (2,), ((1, 2),)),
                    shapes=[(6,)], name="max from 1", dtypes=["integer", "floating"]),
        case.custom("two operands (argmax)", argmax_like,
                    lambda rng, dt: [rng.integers(-3, 3, (4, 5)).astype(dt),
                                     np.arange(20, dtype=np.int32).reshape(4, 5)],
                    dtypes="floating"),
        # Symbolic sizes: which window elements are padding is only known at run time.
        case.random(lambda x: lax.reduce_window(x, np.array(2, x.dtype), lax.mul, (2, 2),
                                                (1, 1), ((1, 0), (0, 1)), (2, 1), (1, 1)),
                    shapes=[(3, 4)], name="mul from 2, base dilation, symbolic sizes",
                    dtypes="numeric", convert_kw={"polymorphic_shapes": ["(b, w)"]}),
        case.custom("two operands (argmax), symbolic sizes", argmax_like,
                    lambda rng, dt: [rng.integers(-3, 3, (4, 5)).astype(dt),
                                     np.arange(20, dtype=np.int32).reshape(4, 5)],
                    dtypes="floating",
                    convert_kw={"polymorphic_shapes": ["(b, w)", "(b, w)"]}),
    ]


@rule("reduce_window", dtypes="all", cases=_generic_cases())
def reduce_window(ctx, *args, jaxpr, consts=(), window_dimensions, window_strides, padding,
                  base_dilation, window_dilation, **_):
    """Fold the strided window slices with the reducer jaxpr (or its monoid when it is a
    single add/mul/max/min), starting from the init values, which also fill the padding."""
    n = len(args) // 2
    operands, inits = list(args[:n]), list(args[n:])
    inner = getattr(jaxpr, "jaxpr", jaxpr)
    monoid = single_monoid(inner, n)
    if monoid is not None:
        first = inner.eqns[0].invars[0] is inner.invars[0]
        def combine(acc, el):
            return [monoid(acc[0], el[0]) if first else monoid(el[0], acc[0])]
    else:
        def combine(acc, el):
            return ctx.lower_jaxpr(inner, *acc, *el, consts=list(consts))
    return fold_reducer_windows(ctx, operands, inits, combine, window_dimensions=window_dimensions,
                                window_strides=window_strides, padding=padding,
                                base_dilation=base_dilation, window_dilation=window_dilation)


def fold_reducer_windows(ctx, operands, inits, combine, **window):
    """:func:`fold_windows` for a reducer that is no monoid (its init need not be an
    identity): padding and holes filled with the init and skipped, the equation's shapes.
    ``window``: the window_dimensions, window_strides, padding, base_dilation and
    window_dilation parameters of reduce_window."""
    return fold_windows(operands, inits, inits, combine, _dims(ctx.aval_out.shape),
                        evaluator(ctx), in_shape=_dims(ctx.avals_in[0].shape),
                        skip_padding=True, **window)


# -- max-pooling gradients ---------------------------------------------------------------

def _selects(select_prim, dtype):
    """``select(current, candidate)``: True keeps the current element (ge / le)."""
    name = getattr(select_prim, "name", str(select_prim))
    if name not in ("ge", "le"):
        raise UnsupportedError(f"select_prim={name}: only ge and le (max / min pooling) "
                               "are supported")
    def select(a, b):
        if a.dtype == tf.bool:  # ordered as False < True (int32: TFLite compares no int8)
            a, b = tf.cast(a, tf.int32), tf.cast(b, tf.int32)
        return tf.greater_equal(a, b) if name == "ge" else tf.less_equal(a, b)
    return name, select


def scatter_back(contrib, cshape, offset, strides, shape, ev):
    """Place ``contrib`` (one value per window, of shape ``cshape``) at element ``offset``
    of each window in a zero tensor of the padded operand's ``shape``: the inverse of the
    strided slice."""
    for axis, s in enumerate(strides):
        contrib, cshape = _dilate(contrib, cshape, axis, s, ev, 0)
    highs = ev([n - int(o) - c for o, n, c in zip(offset, shape, cshape)])
    return tf.pad(contrib, [[int(o), h] for o, h in zip(offset, highs)])


def _ssa(select_prim, window, strides, padding):
    from jax._src.lax import windowed_reductions as wr
    return lambda s, x: wr._select_and_scatter_add(s, x, select_prim, window, strides, padding)


def _max_pool_grad_same(x):
    """Scatter a 3x3/2 SAME max pool's values back: the source's (symbolic) shape and the
    padding both follow from x's."""
    from jax._src.lax import windowed_reductions as wr
    window, strides = (1, 3, 3, 1), (1, 2, 2, 1)
    pads = lax.padtype_to_pads(x.shape, window, strides, "SAME")
    source = wr._reduce_window_max(x, window, strides, pads, None, None)
    return wr._select_and_scatter_add(source, x, lax.ge_p, window, strides, pads)


@rule("select_and_scatter_add", dtypes=["bool", "integer", "floating"],
      cases=[
          case.custom("ties pick the first, padding",
                      _ssa(lax.ge_p, (2, 2), (1, 2), ((1, 0), (0, 1))),
                      lambda rng, dt: [rng.integers(1, 5, (3, 3)).astype(dt),
                                       rng.integers(0, 2, (3, 5)).astype(dt)],
                      dtypes=["integer", "floating"]),
          case.custom("le, overlapping windows", _ssa(lax.le_p, (3,), (1,), ((1, 1),)),
                      lambda rng, dt: [rng.integers(1, 5, (6,)).astype(dt),
                                       rng.integers(0, 3, (6,)).astype(dt)],
                      dtypes=["integer", "floating"]),
          case.custom("NaN in the window", _ssa(lax.ge_p, (2,), (1,), ((0, 0),)),
                      lambda rng, dt: [np.array([1, 2, 3, 4], dt),
                                       np.array([0, np.nan, 2, np.nan, 1], dt)],
                      dtypes="floating"),
          case.random(_ssa(lax.ge_p, (2, 2), (2, 2), ((0, 0), (0, 0))),
                      shapes=[(2, 2), (4, 4)], name="bool", dtypes="bool"),
          case.random(_ssa(lax.ge_p, (1, 2, 2, 1), (1, 2, 2, 1), ((0, 0),) * 4),
                      shapes=[(3, 2, 3, 2), (3, 4, 6, 2)], name="symbolic batch, 2x2 pooling",
                      convert_kw={"polymorphic_shapes": ["(b, _, _, _)", "(b, _, _, _)"]}),
          case.random(_max_pool_grad_same, shapes=[(2, 7, 6, 3)],
                      name="symbolic batch and spatial, SAME (a max-pool gradient)",
                      convert_kw={"polymorphic_shapes": ["(b, h, w, _)"]}),
      ])
def select_and_scatter_add(ctx, source, operand, *, select_prim, window_dimensions,
                           window_strides, padding, **_):
    """As JAX on CPU: pad the operand with the select identity (padding can be selected),
    pick in each window the element XLA picks (the first, and then any candidate that
    ``select(current, candidate)`` rejects the current for), and add the source there, in
    XLA's order of accumulation; the padding is sliced off at the end."""
    aval = ctx.avals_in[1]
    ev = evaluator(ctx)
    name, select = _selects(select_prim, aval.dtype)
    window, strides = _ints(window_dimensions), _ints(window_strides)
    pads = [_dims(p) for p in padding]
    in_shape = _dims(aval.shape)
    out_shape = _dims(ctx.avals_in[0].shape)
    ident = ctx.constant(_identity("max" if name == "ge" else "min", aval.dtype), aval.dtype)
    x, pshape = prepare_windows(operand, in_shape, pads, (1,) * len(window), ident, ev)
    zero = ctx.constant(np.zeros((), aval.dtype), aval.dtype)
    if any(map(is_zero, out_shape)) or math.prod(window) == 0:
        return tf.zeros(ev(in_shape), ctx.tf_dtype(aval))
    best, best_k = None, None
    offsets = []
    for k, (offset, elem) in enumerate(window_elements(x, window, strides,
                                                        (1,) * len(window), out_shape, ev,
                                                        pshape)):
        offsets.append(offset)
        if best is None:
            best, best_k = elem, tf.zeros(ev(out_shape), tf.int32)
            continue
        # where(keep, ...), not logical_not: grappler turns not(a >= b) into a < b,
        # which is wrong for NaN.
        keep = select(best, elem)
        best = tf.where(keep, best, elem)
        best_k = tf.where(keep, best_k, tf.constant(k, tf.int32))
    # XLA adds the sources into each element in row-major source order, i.e. in
    # decreasing window offset: accumulate the offsets in that order.
    out = tf.zeros(ev(pshape), ctx.tf_dtype(aval))
    for k in reversed(range(len(offsets))):
        contrib = tf.where(tf.equal(best_k, k), source, zero)
        out = _add(out, scatter_back(contrib, out_shape, offsets[k], strides, pshape, ev))
    if all(same(p, n) for p, n in zip(pshape, in_shape)):
        return out
    return tf.slice(out, [grow_and_cut(lo, ev)[0] for lo, _ in pads], ev(in_shape))


def _sga(select_prim, **kw):
    from jax._src.lax import windowed_reductions as wr
    base = dict(window_dimensions=(2, 2), window_strides=(1, 1),
                padding=((0, 0), (0, 0)), base_dilation=(1, 1), window_dilation=(1, 1))
    base.update(kw)
    return lambda t, x: wr._select_and_gather_add(t, x, select_prim, **base)


@rule("select_and_gather_add", dtypes="floating",
      cases=[
          case.custom("ties keep the first", _sga(lax.ge_p, window_strides=(1, 2)),
                      lambda rng, dt: [rng.standard_normal((4, 5)).astype(dt),
                                       rng.integers(0, 2, (4, 5)).astype(dt)]),
          case.random(_sga(lax.ge_p, window_strides=(2, 1), padding=((1, 0), (0, 2))),
                      shapes=[(4, 5), (4, 5)], name="padding"),
          case.custom("le with dilations", _sga(lax.le_p, base_dilation=(2, 1),
                                                window_dilation=(1, 2)),
                      lambda rng, dt: [rng.standard_normal((3, 6)).astype(dt),
                                       rng.standard_normal((3, 6)).astype(dt)]),
          case.custom("NaN in the window", _sga(lax.ge_p, window_dimensions=(2,),
                                                window_strides=(1,), padding=((0, 1),),
                                                base_dilation=(1,), window_dilation=(1,)),
                      lambda rng, dt: [np.arange(5).astype(dt),
                                       np.array([0, np.nan, 2, np.nan, 1], dt)]),
          case.random(_sga(lax.ge_p, window_strides=(2, 1), padding=((1, 0), (0, 2))),
                      shapes=[(4, 5), (4, 5)], name="padding, symbolic sizes",
                      convert_kw={"polymorphic_shapes": ["(b, w)", "(b, w)"]}),
      ])
def select_and_gather_add(ctx, tangents, operand, *, select_prim, window_dimensions,
                          window_strides, padding, base_dilation, window_dilation, **_):
    """JAX's CPU lowering: a two-operand reduce_window over (operand, tangent) pairs from
    (-inf or +inf, 0), keeping the accumulated pair when ``select(acc, element)``.
    Ties go to the first element row-major; XLA agrees except in windows of a padded
    reduction, where its order differs (ties are unspecified in XLA's semantics)."""
    aval = ctx.avals_in[1]
    name, select = _selects(select_prim, aval.dtype)
    init = ctx.constant(np.array(-np.inf if name == "ge" else np.inf, aval.dtype), aval.dtype)
    zero = ctx.constant(np.zeros((), aval.dtype), aval.dtype)

    def combine(acc, el):
        keep = select(acc[0], el[0])
        return [tf.where(keep, acc[0], el[0]), tf.where(keep, acc[1], el[1])]
    _, out = fold_windows([operand, tangents], [init, zero], [init, zero], combine,
                   _dims(ctx.aval_out.shape), evaluator(ctx),
                   window_dimensions=window_dimensions, window_strides=window_strides,
                   padding=padding, base_dilation=base_dilation,
                   window_dilation=window_dilation, in_shape=_dims(aval.shape),
                   skip_padding=True)
    return out
