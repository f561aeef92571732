"""Convolutions: ``conv_general_dilated`` in every form JAX emits.

Any number of spatial dimensions, any dimension_numbers (the gradient convs permute
them), strides, asymmetric and negative padding, lhs dilation (transposed convs), rhs
dilation (atrous), feature groups (grouped, depthwise) and batch groups (weight
gradients of grouped convs), preferred_element_type; real, integer and complex dtypes.

The operands are first brought to an ``N, spatial..., C`` / ``spatial..., I, O`` layout;
lhs dilation and padding are made explicit (zero interleaving, ``tf.pad``, slices), so the
convolution proper is always a VALID one. Floating 1-D/2-D convs (and ungrouped 3-D) run
as ``Conv2D``/``Conv3D`` (they export); everything else (integers, complex, >3 spatial
dims) as one (batched) matmul over the stacked window slices, which is exact for integers
(wrap-around arithmetic, as XLA) and for complex numbers.
Like XLA (and TF), JAX's convolution is a cross-correlation: the kernel is not flipped.
Sizes and padding may be symbolic (``polymorphic_shapes``): batch, spatial sizes and input
features (a weight gradient contracts over the batch) are evaluated when the graph runs.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from jax import lax
from jax._src import core as _jcore

from core.errors import UnsupportedError
from core.rule import case, rule
from core.shapes import is_symbolic
from rules_lax.dims import (dilate as _dilate, dims as _dims, evaluator, ints as _ints,
                              is_zero, pad_or_slice, same)


def _window_slices(x, shape, kernel, strides, dilation, out, ev):
    """For each kernel offset (row-major), the strided slice of ``x`` (``N, S..., C``) that
    it multiplies: one StridedSlice per offset."""
    nsp = len(kernel)
    for offset in np.ndindex(*kernel):
        begin = [0] + [int(o) * d for o, d in zip(offset, dilation)] + [0]
        end = [shape[0]] + [b + (p - 1) * s + 1 for b, p, s in
                            zip(begin[1:], out, strides)] + [shape[-1]]
        yield tf.strided_slice(x, begin, ev(end), [1, *strides, 1]) if nsp else x


def _matmul_conv(x, w, shape, kernel, strides, dilation, groups, out, o, ev):
    """VALID grouped conv as one batched matmul of the stacked window slices (im2col)."""
    n, c = shape[0], shape[-1]
    cg = c // groups
    ktot, ptot = math.prod(kernel), math.prod(out)
    og = o // groups
    cols = tf.stack(list(_window_slices(x, shape, kernel, strides, dilation, out, ev)),
                    axis=-2)
    cols = tf.reshape(cols, ev([n * ptot, ktot, groups, cg]))
    cols = tf.reshape(tf.transpose(cols, [2, 0, 1, 3]), ev([groups, n * ptot, ktot * cg]))
    w = tf.reshape(w, ev([ktot, cg, groups, og]))
    w = tf.reshape(tf.transpose(w, [2, 0, 1, 3]), ev([groups, ktot * cg, og]))
    y = tf.matmul(cols, w)                                   # groups, n*ptot, og
    return tf.reshape(tf.transpose(y, [1, 0, 2]), ev([n, *out, groups * og]))


def _tf_conv(x, w, shape, strides, dilation, out, o, ev, padding="VALID"):
    """VALID (or, when the caller checked it is the same padding, SAME) conv with TF's
    Conv2D/Conv3D (floating point); Conv2D infers the feature groups from the channel
    counts of ``x`` and ``w``."""
    nsp = len(strides)
    # TF CPU convs refuse strides > 1 together with dilations > 1: stride afterwards.
    post = None
    if any(s > 1 for s in strides) and any(d > 1 for d in dilation):
        post, strides = strides, (1,) * nsp
    if nsp == 1:
        x, w = tf.expand_dims(x, 1), tf.expand_dims(w, 0)
        strides, dilation = (1, *strides), (1, *dilation)
    if len(strides) == 2:
        y = tf.nn.conv2d(x, w, [1, *strides, 1], padding, dilations=[1, *dilation, 1])
    else:
        y = tf.nn.conv3d(x, w, [1, *strides, 1], padding, dilations=[1, *dilation, 1])
    if nsp == 1:
        y = tf.squeeze(y, 1)
    if post is not None:
        end = [shape[0], *[(p - 1) * s + 1 for p, s in zip(out, post)], o]
        y = tf.strided_slice(y, [0] * (nsp + 2), ev(end), [1, *post, 1])
    return y


def _compute_dtype(in_dtype, out_dtype):
    """The dtype the convolution runs in, and the dtype the operands are first cast to."""
    in_dtype, out_dtype = np.dtype(in_dtype), np.dtype(out_dtype)
    if out_dtype.kind in "fV" or out_dtype.name == "bfloat16":
        # XLA's CPU convs run f16/bf16 in f32 and round the result; an integer operand is
        # first converted to the result type, as JAX's lowering does.
        first = out_dtype if in_dtype.kind in "iub" else in_dtype
        return (tf.float64 if out_dtype == np.float64 else tf.float32), first
    if out_dtype.kind == "c":
        # complex64 -> complex128: exact products and sums in complex128 (XLA's CPU result
        # is less precise than that, by ~1e-7 relative).
        return (tf.complex128 if out_dtype == np.complex128 else tf.complex64), in_dtype
    # Integers wrap: computing mod 2^32 (or 2^64) and truncating is exact mod 2^bits.
    return (tf.int64 if out_dtype.itemsize == 8 else tf.int32), in_dtype


def conv_cases():
    def conv(**kw):
        def f(x, w):
            return lax.conv_general_dilated(x, w, **kw)
        return f
    nhwc = ("NHWC", "HWIO", "NHWC")

    def poly(*specs):   # symbolic sizes, solved from the inputs when the graph runs
        return {"polymorphic_shapes": list(specs)}
    return [
        case.random(conv(window_strides=(1, 1), padding="SAME"),
                    shapes=[(2, 3, 6, 5), (4, 3, 3, 3)], name="NCHW/OIHW SAME"),
        case.random(conv(window_strides=(2, 1), padding=((1, -1), (0, 2)),
                         lhs_dilation=(2, 1), rhs_dilation=(1, 2),
                         dimension_numbers=nhwc),
                    shapes=[(1, 7, 8, 2), (3, 2, 2, 4)],
                    name="negative padding, lhs+rhs dilation, stride with dilation"),
        case.random(conv(window_strides=(1, 2), padding="VALID", feature_group_count=2,
                         dimension_numbers=("NCHW", "OIHW", "NCHW")),
                    shapes=[(2, 4, 5, 6), (6, 2, 2, 2)], name="feature groups"),
        case.random(conv(window_strides=(1,), padding=((0, 0),), batch_group_count=2,
                         dimension_numbers=("NCH", "OIH", "NCH")),
                    shapes=[(4, 3, 7), (6, 3, 2)], name="batch groups"),
        case.random(conv(window_strides=(1, 1, 2), padding="SAME", rhs_dilation=(2, 1, 1),
                         dimension_numbers=("NCDHW", "DHWIO", "NDHWC")),
                    shapes=[(1, 2, 4, 5, 5), (2, 2, 2, 2, 3)], name="3-D mixed layouts"),
        case.random(conv(window_strides=(1, 1), padding="VALID",
                         dimension_numbers=("NHWC", "HWIO", "NHWC")),
                    shapes=[(1, 2, 2, 1), (3, 1, 1, 2)], name="kernel larger than input"),
        case.random(conv(window_strides=(1,), padding=((1, 1),),
                         preferred_element_type=np.int32),
                    shapes=[(2, 3, 5), (2, 3, 3)], dtypes=["int8", "int16", "uint8"],
                    name="integer widening"),
        case("inf and nan", conv(window_strides=(1,), padding="VALID"),
             [[[1.0, float("inf"), 2.0, float("nan"), 3.0]]], [[[1.0, -1.0]]],
             dtypes="floating"),
        # The output sizes are floor-division expressions of h and w, and so is SAME's
        # padding, which Conv2D's own SAME reproduces.
        case.random(conv(window_strides=(2, 2), padding="SAME", dimension_numbers=nhwc),
                    shapes=[(2, 9, 10, 3), (3, 3, 3, 4)],
                    name="symbolic batch and spatial, SAME with strides",
                    convert_kw=poly("(b, h, w, _)", None)),
        # Stride with dilation: Conv2D cannot take SAME, the symbolic padding is a Pad.
        case.random(conv(window_strides=(2, 1), padding="SAME", rhs_dilation=(1, 2),
                         dimension_numbers=("NCHW", "OIHW", "NCHW")),
                    shapes=[(2, 3, 7, 8), (4, 3, 2, 3)],
                    name="symbolic spatial, SAME with strides and dilation",
                    convert_kw=poly("(b, _, h, w)", None)),
        case.random(conv(window_strides=(2, 1), padding=((1, -1), (0, 2)),
                         lhs_dilation=(2, 1), rhs_dilation=(1, 2),
                         dimension_numbers=nhwc),
                    shapes=[(1, 7, 8, 2), (3, 2, 2, 4)],
                    name="symbolic spatial, negative padding, lhs+rhs dilation",
                    convert_kw=poly("(b, h, w, _)", None)),
        # The weight gradient of a conv contracts over the batch: symbolic input features.
        case.random(conv(window_strides=(1, 1), padding=((1, 1), (1, 1)),
                         dimension_numbers=("CHWN", "HWIO", "NHWC")),
                    shapes=[(3, 5, 5, 2), (3, 3, 3, 4)], name="symbolic input features",
                    convert_kw=poly("(b, _, _, _)", "(_, _, b, _)")),
        case.random(conv(window_strides=(1,), padding=((0, 0),), batch_group_count=2,
                         dimension_numbers=("NCH", "OIH", "NCH")),
                    shapes=[(4, 3, 7), (6, 3, 2)], name="batch groups, symbolic batch 2*b",
                    convert_kw=poly("(2*b, _, h)", None)),
    ]


@rule("conv_general_dilated", dtypes="numeric", cases=conv_cases())
def conv_general_dilated(ctx, lhs, rhs, *, window_strides, padding, lhs_dilation,
                         rhs_dilation, dimension_numbers, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None,
                         **_):
    """Explicit layout, dilation and padding, then a VALID Conv2D/Conv3D or matmul.
    ``precision`` changes nothing on CPU (no reduced-precision f32 passes there).
    Sizes and padding may be symbolic (``polymorphic_shapes``): they are evaluated when
    the graph runs, and JAX's SAME padding is recognised symbolically."""
    lhs_aval, rhs_aval = ctx.avals_in
    out_aval = ctx.aval_out
    ev = evaluator(ctx)
    lhs_spec, rhs_spec, out_spec = (_ints(s) for s in dimension_numbers)
    nsp = len(lhs_spec) - 2
    strides, rhs_dil, lhs_dil = _ints(window_strides), _ints(rhs_dilation), _ints(lhs_dilation)
    pads = [tuple(_dims(p)) for p in padding]

    lperm = (lhs_spec[0], *lhs_spec[2:], lhs_spec[1])
    rperm = (*rhs_spec[2:], rhs_spec[1], rhs_spec[0])
    lhs_shape, rhs_shape, res_shape = (_dims(a.shape) for a in (lhs_aval, rhs_aval, out_aval))
    shape = [lhs_shape[i] for i in lperm]
    kernel = [rhs_shape[i] for i in rhs_spec[2:]]
    out_features = rhs_shape[rhs_spec[0]]
    # Our result has axes (N, spatial..., C); out_spec says where each goes.
    logical = [0, *range(2, nsp + 2), 1]
    operm = [logical.index(k) for k in np.argsort(out_spec)]
    out_shape = [res_shape[out_spec[k]] for k in logical]
    out_tf = ctx.tf_dtype(out_aval)
    if any(map(is_zero, out_shape)) or is_zero(shape[-1]) or any(map(is_zero, kernel)):
        return tf.zeros(ctx.shape(out_aval), out_tf)

    compute, first = _compute_dtype(lhs_aval.dtype, out_aval.dtype)
    # Already NHWC / HWIO (flax's layout): no Transpose ops in the graph.
    x = lhs if list(lperm) == list(range(nsp + 2)) else tf.transpose(lhs, lperm)
    w = rhs if list(rperm) == list(range(nsp + 2)) else tf.transpose(rhs, rperm)
    if np.dtype(first) != np.dtype(lhs_aval.dtype):
        x, w = tf.cast(x, ctx.tf_dtype(first)), tf.cast(w, ctx.tf_dtype(first))
    x, w = tf.cast(x, compute), tf.cast(w, compute)

    groups = int(feature_group_count)
    if batch_group_count > 1:
        # XLA splits the batch into (groups, N/groups), group-major, and pairs batch group
        # g with output-feature group g: that is a feature-grouped conv over (groups*C).
        groups = int(batch_group_count)
        n, c = shape[0] // groups, shape[-1]
        x = tf.reshape(x, ev([groups, n, *shape[1:]]))
        x = tf.transpose(x, [*range(1, nsp + 2), 0, nsp + 2])
        shape = [n, *shape[1:-1], groups * c]
        x = tf.reshape(x, ev(shape))

    for i, d in enumerate(lhs_dil):
        x, shape = _dilate(x, shape, i + 1, d, ev)
    out = out_shape[1:-1]
    floating = compute in (tf.float32, tf.float64)
    # TF's CPU Conv3D takes neither groups nor dilations.
    tf_conv = floating and (nsp in (1, 2) or (nsp == 3 and groups == 1
                                                and set(rhs_dil) == {1}))
    if not tf_conv and any(map(is_symbolic, kernel)):
        raise UnsupportedError(f"conv_general_dilated with a symbolic kernel size {kernel} "
                               "needs a floating-point 1-D/2-D conv (Conv2D)")
    tf_pad, padded = "VALID", False
    no_pad = all(is_zero(lo) and is_zero(hi) for lo, hi in pads)
    if (tf_conv and not no_pad
            and not (any(s > 1 for s in strides) and any(d > 1 for d in rhs_dil))
            and all(same(a, b) for p, q in zip(pads, _same_pads(shape[1:-1], kernel,
                                                                strides, rhs_dil))
                    for a, b in zip(p, q))):
        # The padding is TF's SAME padding: let Conv2D pad (with zeros, as tf.pad would)
        # instead of a separate Pad op that copies the whole input. (Not when _tf_conv
        # strides afterwards: SAME would then pad for stride 1.)
        tf_pad = "SAME"
    else:
        x, shape = pad_or_slice(x, shape, [(0, 0), *pads, (0, 0)], ev)
        padded = not no_pad or any(d > 1 for d in lhs_dil)

    if tf_conv and ctx.target == "tflite":
        if isinstance(shape[-1], int) and padded and not all(isinstance(d, int) for d in shape):
            # The TFLite converter's shape inference loses the feature count behind a Pad
            # of symbolic sizes, and its CONV_2D needs it: a Reshape to a shape whose last
            # entry is a constant restores it.
            x = tf.reshape(x, tf.stack([*tf.unstack(tf.shape(x))[:-1], shape[-1]]))
        elif not isinstance(shape[-1], int):
            raise UnsupportedError(
                f"conv_general_dilated with a symbolic input feature count ({shape[-1]}, "
                "e.g. the weight gradient of a conv over a symbolic batch) for TFLite: "
                "its CONV_2D needs the feature count when the model is converted; "
                "convert with concrete shapes.")
    if tf_conv:
        y = _tf_conv(x, w, shape, strides, rhs_dil, out, out_features, ev, tf_pad)
    else:
        y = _matmul_conv(x, w, shape, kernel, strides, rhs_dil, groups, out, out_features,
                         ev)
    y = tf.cast(y, out_tf)
    return y if list(operm) == list(range(nsp + 2)) else tf.transpose(y, operm)


def _same_pads(in_sizes, kernel, strides, dilation):
    """TF's SAME padding per spatial axis: total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0),
    the odd element at the end (symbolic expressions for symbolic sizes)."""
    pads = []
    for n, k, s, d in zip(in_sizes, kernel, strides, dilation):
        total = _jcore.max_dim((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
        pads.append((total // 2, total - total // 2))
    return pads
