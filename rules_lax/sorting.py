"""Sorting: sort (several operands, lexicographic on the first num_keys), top_k and
approx_top_k, with plain TF ops only.

Every order is reduced to integer keys that ascend in JAX's order, then to TF's TopKV2,
which returns ties lower index first, i.e. it is a stable sort (descending on ``~key``
gives an ascending stable sort). Several keys: successive stable sorts from the last key
to the first, composing the permutation; every operand is then gathered with it.

Float orders (bitcast to same-width ints, sign-magnitude flipped to two's complement):
- sort (lax.sort's comparator): -0.0 == 0.0 and every NaN (either sign) is one value,
  greater than +inf: -inf < ... < 0 < ... < inf < NaN. Complex: (real, imag) lexicographic.
- top_k (XLA's TopK): the total order of the bits: -NaN < -inf < ... < -0.0 < 0.0 < ...
  < inf < NaN (NaNs by payload).

TFLite (``targets="tflite"``): the same TopKV2 + Gather forms (TFLite's TopKV2 also puts ties
lower index first, measured up to n = 2000), all keys int32: uint32 travels as its int32 bits,
and sort's float keys flush subnormals to zero as XLA's CPU comparisons do (the interpreter
compares them exactly).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax.numpy as jnp
from jax import lax

from core.rule import case, rule
from rules_lax.reductions import (LITE_DTYPES, flush_subnormals, lite_bits, lite_cases, lite_unbits,
                                  unsigned_order)

_NAN = float("nan")
_INF = float("inf")


def _float_key(x, dtype, total: bool):
    """An int32/int64 key of a real float tensor, ascending in sort's order, or in the
    total order of the bits when ``total`` (top_k)."""
    bits_dt = {2: tf.int16, 4: tf.int32, 8: tf.int64}[np.dtype(dtype).itemsize]
    info = np.iinfo(bits_dt.as_numpy_dtype)
    bits = tf.bitcast(x, bits_dt)
    key_dt = tf.int32 if bits_dt == tf.int16 else bits_dt  # 16-bit: sign-extend, then work
    bits = tf.cast(bits, key_dt) if key_dt != bits_dt else bits
    key = tf.where(bits < 0, tf.bitwise.bitwise_xor(bits, tf.constant(info.max, key_dt)), bits)
    if not total:
        key = tf.where(tf.equal(x, tf.constant(0, x.dtype)), tf.constant(0, key_dt), key)  # -0.0 == 0.0
        key = tf.where(tf.math.is_nan(x), tf.constant(info.max, key_dt), key)  # NaN == NaN, top
    return key


def _descending(key):
    """~key: TopKV2 on it gives an ascending stable order (xor -1, which exports)."""
    return tf.bitwise.bitwise_xor(key, tf.constant(-1, key.dtype))


def order_keys(x, dtype, total: bool = False) -> list:
    """Integer keys (int32 or int64), most significant first, that sort like JAX."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or (jnp.issubdtype(dtype, jnp.integer) and dtype.itemsize <= 2):
        return [tf.cast(x, tf.int32)]
    if dtype in (np.dtype(np.int32), np.dtype(np.int64)):
        return [x]
    if dtype == np.dtype(np.uint32):
        return [tf.cast(x, tf.int64)]
    if dtype == np.dtype(np.uint64):  # flip the sign bit: unsigned order as signed ints
        return [tf.bitwise.bitwise_xor(tf.bitcast(x, tf.int64), tf.constant(-2 ** 63, tf.int64))]
    if jnp.issubdtype(dtype, jnp.complexfloating):
        part = np.float32 if dtype == np.complex64 else np.float64
        return [_float_key(tf.math.real(x), part, total),
                _float_key(tf.math.imag(x), part, total)]
    return [_float_key(x, dtype, total)]


def stable_argsort(keys: list, n: int, rank: int, flip=_descending, k=None):
    """Indices that sort the last axis ascending, lexicographically on ``keys`` and stably:
    one TopKV2 per key, least significant key first, on ``flip(key)`` (a key that descends
    where ``key`` ascends; ``flip=None``: sort descending). ``k``: the first k only."""
    perm = None
    for i, key in enumerate(reversed(keys)):
        if perm is not None:
            key = tf.gather(key, perm, batch_dims=rank - 1)
        last = i == len(keys) - 1
        idx = tf.math.top_k(flip(key) if flip else key, k if last and k is not None else n).indices
        perm = idx if perm is None else tf.gather(perm, idx, batch_dims=rank - 1)
    return perm


def _swap_last(x, axis: int, rank: int):
    if axis == rank - 1:
        return x
    perm = list(range(rank))
    perm[axis], perm[-1] = perm[-1], perm[axis]
    return tf.transpose(x, perm)


def _multi(rng, dtype):
    k = rng.integers(0, 2, (2, 30)).astype(dtype)
    return [k, rng.integers(0, 3, (2, 30)).astype(dtype), rng.standard_normal((2, 30)).astype(np.float32)]


def _sort_edge(rng, dtype):
    x = np.array([_INF, _NAN, -_NAN, -_INF, 2.0, -0.0, 0.0, -0.0, 1.0, _NAN], dtype)
    return [x, np.arange(10, dtype=np.int32)]


def _complex_edge(rng, dtype):
    x = np.array([1 + 2j, 1 - 1j, -0.0 + 1j, 0.0 + 1j, complex(_NAN, 0), 1 + 2j, -3 + 0j], dtype)
    return [x, np.arange(7, dtype=np.int32)]


_SORT_CASES = [
    case.random(lambda x: lax.sort(x, dimension=0), shapes=[(5, 7)], name="axis 0"),
    case.random(lambda x: lax.sort(x, dimension=1), shapes=[(3, 4, 6)], name="axis 1 of 3"),
    case.custom("key + payload, stable", lambda k, v: lax.sort((k, v), num_keys=1),
                lambda rng, dt: [rng.integers(0, 3, (40,)).astype(dt), np.arange(40, dtype=np.int32)]),
    case.custom("3 operands, 2 keys", lambda a, b, c: lax.sort((a, b, c), dimension=1, num_keys=2),
                _multi, dtypes=["bool", "integer", "floating"]),
    case.custom("NaN, inf, signed zeros", lambda x, i: lax.sort((x, i), num_keys=1),
                _sort_edge, dtypes="floating"),
    case.custom("complex lexicographic", lambda x, i: lax.sort((x, i), num_keys=1),
                _complex_edge, dtypes="complex"),
    case("extremes", lambda x: lax.sort(x), [3, 0, 127, 1, 100, 2], dtypes="integer"),
    case.custom("unsigned wide", lambda x: lax.sort(x),
                lambda rng, dt: [np.array([2**31, 5, 2**32 - 1, 0, 2**31 - 1], dt)],
                dtypes=["uint32"]),
    case.custom("uint64 top bit", lambda x: lax.sort(x),
                lambda rng, dt: [np.array([2**63, 5, 2**64 - 1, 0, 2**63 - 1], dt)],
                dtypes=["uint64"]),
    case.custom("int64 extremes", lambda x: lax.sort(x),
                lambda rng, dt: [np.array([2**63 - 1, -5, -2**63, 0, 7], dt)], dtypes=["int64"]),
    case.random(lambda x: lax.sort(x, dimension=1), shapes=[(3, 6)], name="symbolic batch",
                convert_kw={"polymorphic_shapes": ["(b, 6)"]}),
    case.custom("3 operands, 2 keys, symbolic length",
                lambda a, b, c: lax.sort((a, b, c), dimension=1, num_keys=2),
                _multi, dtypes=["bool", "integer", "floating"],
                convert_kw={"polymorphic_shapes": ["(b, n)"] * 3}),
]


@rule("sort", cases=_SORT_CASES)
def sort(ctx, *operands, dimension, is_stable, num_keys, **_):
    """Stable lexicographic sort of all operands by the first ``num_keys`` (is_stable=False
    is sorted stably as well: a valid order, though XLA's CPU sort may order ties
    differently)."""
    return _sort(ctx, operands, int(dimension), num_keys, order_keys)


def _sort(ctx, operands, dimension, num_keys, keys_of, flip=_descending):
    """The sort of :func:`sort`, with ``keys_of(x, dtype)`` making the order keys."""
    aval = ctx.avals_in[0]
    shape = ctx.shape(aval)           # ints, or TF scalars for symbolic dimensions
    rank, dim = len(shape), int(dimension)
    n = shape[dim]
    if (isinstance(n, int) and n <= 1) or 0 in aval.shape:  # symbolic dimensions are >= 1
        return list(operands)
    moved = [_swap_last(x, dim, rank) for x in operands]
    keys = [k for x, a in zip(moved[:num_keys], ctx.avals_in) for k in keys_of(x, a.dtype)]
    perm = stable_argsort(keys, n, rank, flip)
    return [_swap_last(tf.gather(x, perm, batch_dims=rank - 1), dim, rank) for x in moved]


def _top_k_edge(rng, dtype):
    return [np.array([_INF, _NAN, -_NAN, -_INF, 3.0, -0.0, 0.0, _NAN, -_NAN, -0.0, 0.0], dtype)]


_TOP_K_CASES = [
    case.random(lambda x: lax.top_k(x, 2), shapes=[(5, 3)]),
    case.random(lambda x: lax.top_k(x, 3), shapes=[(2, 9)], name="k=3"),
    case("ties: lower index first", lambda x: lax.top_k(x, 4), [5, 7, 5, 8, 8, 5]),
    case.custom("NaN keeps its sign, -0.0 < 0.0", lambda x: lax.top_k(x, 11), _top_k_edge,
                dtypes="floating"),
    case.random(lambda x: lax.top_k(x, 2, axis=0), shapes=[(4, 3)], name="axis 0"),
    case.random(lambda x: lax.top_k(x, 0), shapes=[(2, 3)], name="k=0"),
    case.random(lambda x: lax.top_k(x, 2), shapes=[(5, 3)], name="symbolic batch",
                convert_kw={"polymorphic_shapes": ["(b, 3)"]}),
    # JAX takes k=3 only where it proves n >= 3: here from n = m + 2 and m >= 1
    case.random(lambda x: lax.top_k(x, 3), shapes=[(2, 9)], name="symbolic length",
                convert_kw={"polymorphic_shapes": ["(b, m + 2)"]}),
]


@rule("top_k", dtypes=["bool", "integer", "floating"], cases=_TOP_K_CASES)
def top_k(ctx, x, *, k, axis=-1, **_):
    """TopKV2 on order keys (ties lower index first), then a gather of the values. With
    a symbolic last dimension n, JAX accepted k only if it proved k <= n from the
    dimension variables' constraints, which the converted graph asserts on its inputs
    (and TopKV2 refuses k > n as well): too short an input raises, never computes."""
    return _top_k(ctx, x, int(k), axis, order_keys)


def _top_k(ctx, x, k, axis, keys_of):
    aval = ctx.avals_in[0]
    rank = len(aval.shape)
    axis = int(axis) % rank
    y = _swap_last(x, axis, rank)
    key, = keys_of(y, aval.dtype, total=True)
    idx = tf.math.top_k(key, k).indices
    values = tf.gather(y, idx, batch_dims=rank - 1)
    return [_swap_last(values, axis, rank), _swap_last(idx, axis, rank)]


# -- TFLite builtins ---------------------------------------------------------------------
def _lite_keys(x, dtype, total: bool = False) -> list:
    """:func:`order_keys` for TFLite, all int32: uint32 operands arrive as their int32 bits.
    JAX's CPU sort compares floats with subnormals as zero (XLA runs with denormals flushed,
    TF too, the TFLite interpreter does not): sort's keys flush them explicitly."""
    if np.dtype(dtype) == np.uint32:
        return [unsigned_order(x)]
    if np.dtype(dtype) == np.float32 and not total:
        x = flush_subnormals(x)
    return order_keys(x, dtype, total)


def _lite_edge(rng, dtype):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else None
    if info is None:
        x = np.array([0.0, _NAN, -0.0, 1.0, -_INF, 1.0, _INF, -0.0, -_NAN, 0.0, 1e-45, -1e-45,
                      3.4028235e38, -3.4028235e38], dtype)
    elif dtype == np.bool_:
        x = np.array([True, False, True, True, False], dtype)
    else:
        x = np.array([info.max, 0, info.min, 1, info.max, info.min, 0, info.max - 1], dtype)
    return [x]


_LITE_SORT_CASES = [
    case.custom("argsort: edge values, ties stable", lambda x: jnp.argsort(x), _lite_edge),
    # not uint32: the rev around the sort (ReverseV2) has no uint32 form in TFLite here
    case.custom("descending argsort (rev + sort)",
                lambda x: jnp.argsort(x, descending=True, stable=True), _lite_edge,
                dtypes=["bool", "int32", "float32"]),
    case.custom("descending sort", lambda x: jnp.sort(x, descending=True), _lite_edge,
                dtypes=["bool", "int32", "float32"]),
    case.custom("unstable sort", lambda x, i: lax.sort((x, i), is_stable=False, num_keys=1),
                lambda rng, dt: _lite_edge(rng, dt) + [np.arange(len(_lite_edge(rng, dt)[0]),
                                                                dtype=np.int32)]),
    case.random(lambda x: lax.sort(x, dimension=0), shapes=[(1, 3)], name="length 1"),
    case.custom("long, many ties", lambda x, i: lax.sort((x, i), dimension=1, num_keys=1),
                lambda rng, dt: [rng.integers(0, 3, (2, 700)).astype(dt),
                                 np.arange(1400, dtype=np.int32).reshape(2, 700)]),
]


@rule("sort", dtypes=LITE_DTYPES, targets="tflite",
      cases=_SORT_CASES + _LITE_SORT_CASES)
def sort_tflite(ctx, *operands, dimension, is_stable, num_keys, **_):
    """The generic sort in TFLite builtins: TopKV2 on int32 keys (TFLite's TopKV2 also puts
    ties lower index first), Gather; uint32 operands are carried as their int32 bits
    (TFLite's Transpose and Gather refuse uint32) and ordered with the sign bit flipped."""
    dts = [a.dtype for a in ctx.avals_in]
    ins = [lite_bits(x, d) for x, d in zip(operands, dts)]
    outs = _sort(ctx, ins, int(dimension), num_keys, _lite_keys)
    return [lite_unbits(y, d) for y, d in zip(outs, dts)]


@rule("top_k", dtypes=LITE_DTYPES, targets="tflite", cases=[
    *lite_cases(_TOP_K_CASES), case.custom("edge values", lambda x: lax.top_k(x, 5), _lite_edge)])
def top_k_tflite(ctx, x, *, k, axis=-1, **_):
    """The generic top_k in TFLite builtins (int32 keys; uint32 as its int32 bits)."""
    dt = ctx.avals_in[0].dtype
    values, idx = _top_k(ctx, lite_bits(x, dt), int(k), axis, _lite_keys)
    return [lite_unbits(values, dt), idx]


def _approx(k, dim=-1, is_max=True, agg=True):
    fn = lax.approx_max_k if is_max else lax.approx_min_k
    return lambda x: fn(x, k, reduction_dimension=dim, aggregate_to_topk=agg)


def _distinct(shape):
    """Distinct values: XLA's CPU sort is not stable beyond a few elements, so the order
    of ties in large inputs is unspecified."""
    def make(rng, dtype):
        n = int(np.prod(shape))
        if np.dtype(dtype).itemsize == 2:  # consecutive bit patterns from 1.0 upwards
            one = np.array(1.0, dtype).view(np.uint16)
            x = (one + np.arange(n, dtype=np.uint16)).view(dtype)
        else:
            x = rng.standard_normal(n).astype(dtype)
        return [rng.permutation(x).reshape(shape)]
    return make


@rule("approx_top_k", dtypes="floating", cases=[
    case.random(_approx(4), shapes=[(3, 40)], name="max k=4"),
    case.random(_approx(4, is_max=False), shapes=[(3, 40)], name="min k=4"),
    case.random(_approx(3, dim=0), shapes=[(20, 3)], name="reduction dim 0"),
    case.custom("large", _approx(5, is_max=False), _distinct((2048,))),
    case.custom("no aggregation", _approx(4, agg=False), _distinct((2, 2048))),
    case("ties: lower index first", _approx(2), [3.0, 1.0, 3.0, 2.0, 3.0, 1.0]),
    case("ties (min), signed zeros", _approx(3, is_max=False), [3.0, 0.0, -0.0, 2.0, 0.0, 1.0]),
    case("float32 max: top_k's order, -0.0 < 0.0 and NaN by sign (found by tests/fuzz.py)",
         _approx(5), [-0.0, -_NAN, 0.0, 1e-45, -0.0, _NAN, 0.0], dtypes=["float32"]),
    case.custom("float32 max: ties lower index first, long", _approx(6),
                lambda rng, dt: [rng.integers(-2, 3, (2, 300)).astype(dt)], dtypes=["float32"]),
    case.custom("no aggregation, symbolic batch", _approx(4, agg=False), _distinct((2, 2048)),
                convert_kw={"polymorphic_shapes": ["(b, 2048)"]}),
    case.random(_approx(3, is_max=False), shapes=[(2, 40)], name="symbolic length",
                convert_kw={"polymorphic_shapes": ["(b, m + 2)"]}),
])
def approx_top_k(ctx, x, *, k, reduction_dimension, is_max_k, aggregate_to_topk,
                 recall_target=None, reduction_input_size_override=None, **_):
    """On CPU, XLA evaluates ApproxTopK exactly, sliced to the output length (k or, without
    aggregation, the approximate reduction size JAX computed, read from the result's
    shape). float32 max: its TopK kernel, top_k's total order of the bits (-0.0 < 0.0,
    NaN by sign), ties lower index first. Otherwise a sort with plain < / > (-0.0 == 0.0),
    ties lower index first; XLA's sort keeps that order only up to 16 elements, and NaN
    has no place in it (README, limitations): here NaN counts as the largest value."""
    aval = ctx.avals_in[0]
    rank = len(aval.shape)
    dim = int(reduction_dimension) % rank
    out_len = ctx.dim(ctx.aval_out.shape[dim])
    y = _swap_last(x, dim, rank)
    key, = order_keys(y, aval.dtype, total=is_max_k and aval.dtype == np.float32)
    idx = tf.math.top_k(key if is_max_k else _descending(key), out_len).indices
    values = tf.gather(y, idx, batch_dims=rank - 1)
    return [_swap_last(values, dim, rank), _swap_last(idx, dim, rank)]


# -- ONNX and TF.js (no Bitcast) ---------------------------------------------------------
# tf2onnx has no Bitcast and TF.js neither (nor BitwiseXor): the keys are the values
# themselves, compared by TopKV2 (ONNX TopK and TF.js topk both put ties lower index first,
# measured), and a key descends as -key. tf2onnx casts integer TopK keys to float32, so
# integers are split into pieces of at most 24 bits, one key each. A float
# key is split in two, NaN first: [isnan, x with NaN as 0]; sort's key flushes subnormals
# (XLA's CPU compare does, onnxruntime and TF.js do not). top_k's total order adds -0.0 <
# 0.0 (1/x > 0) but cannot see a NaN's sign or payload without the bits: every NaN counts
# as the largest value, as +NaN does (a -NaN input is placed wrong, see top_k_portable).
PORTABLE_TARGETS = ("onnx", "tfjs")
_PORTABLE_DTYPES = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                    "float32", "float64"]


def _flip_portable(key):
    return -key


def _chunks(x, dtype) -> list:
    """Integer keys as pieces of at most 24 bits, most significant first: tf2onnx gives
    ONNX's TopK integer keys as float32 (exact below 2^24 only)."""
    if dtype.itemsize <= 2:
        return [tf.cast(x, tf.int32)]
    if dtype == np.uint32 and x.dtype == tf.int32:   # TF.js: uint32 held as int32 bits
        hi = tf.math.floordiv(x, 65536)
        return [tf.where(x < 0, hi + 65536, hi), tf.math.floormod(x, 65536)]
    if dtype.itemsize == 4:
        pieces, x = [16], (tf.cast(x, tf.int64) if dtype == np.uint32 else x)
    else:
        pieces = [24, 24]
    keys = []
    for bits in pieces:  # peel off the low bits
        keys.insert(0, tf.math.floormod(x, tf.constant(1 << bits, x.dtype)))
        x = tf.math.floordiv(x, tf.constant(1 << bits, x.dtype))
    return [x] + keys


def _portable_keys(x, dtype, total: bool = False) -> list:
    """Bitcast-free keys (int32/int64/float), most significant first, that sort like JAX."""
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        return _chunks(x, dtype)
    nan = tf.math.is_nan(x)
    value = tf.where(nan, tf.zeros_like(x), x)
    if not total:
        tiny = tf.constant(np.finfo(dtype).tiny, x.dtype)
        return [tf.cast(nan, tf.int32), tf.where(tf.abs(value) < tiny, tf.zeros_like(x), value)]
    positive_zero = tf.logical_and(tf.equal(x, 0), tf.constant(1, x.dtype) / x > 0)
    return [tf.cast(nan, tf.int32), value, tf.cast(positive_zero, tf.int32)]


@rule("sort", dtypes=_PORTABLE_DTYPES, targets=PORTABLE_TARGETS,
      cases=_SORT_CASES + _LITE_SORT_CASES)
def sort_portable(ctx, *operands, dimension, is_stable, num_keys, **_):
    """The generic sort without Bitcast: TopKV2 per key on the values themselves."""
    return _sort(ctx, operands, int(dimension), num_keys, _portable_keys, _flip_portable)


def _no_negative_nan(rng, dtype):
    x, = _lite_edge(rng, dtype)
    return [x[~(np.isnan(x) & np.signbit(x))] if x.dtype.kind == "f" else x]


def _top_k_nan_edge(rng, dtype):
    return [np.array([_INF, _NAN, -_INF, 3.0, -0.0, 0.0, _NAN, -0.0, 0.0, 1e-45, -1e-45],
                     dtype)]


@rule("top_k", dtypes=[d for d in _PORTABLE_DTYPES if d != "bool"], targets=PORTABLE_TARGETS,
      cases=[
          *[c for c in _TOP_K_CASES if "NaN" not in c.name],
          case.custom("+NaN, inf, -0.0 < 0.0, subnormals", lambda x: lax.top_k(x, 11),
                      _top_k_nan_edge, dtypes="floating"),
          case.custom("edge values", lambda x: lax.top_k(x, 5), _no_negative_nan)])
def top_k_portable(ctx, x, *, k, axis=-1, **_):
    """top_k without Bitcast: stable descending TopKV2 passes on [isnan, value, 0 < 1/x];
    the last pass keeps k. Every NaN is ordered as +NaN (above +inf); XLA puts a -NaN below
    -inf, which no op without the bits can tell from +NaN."""
    aval = ctx.avals_in[0]
    rank = len(aval.shape)
    axis = int(axis) % rank
    y = _swap_last(x, axis, rank)
    n = ctx.shape(aval)[axis]
    idx = stable_argsort(_portable_keys(y, aval.dtype, total=True), n, rank, flip=None, k=int(k))
    values = tf.gather(y, idx, batch_dims=rank - 1)
    return [_swap_last(values, axis, rank), _swap_last(idx, axis, rank)]
