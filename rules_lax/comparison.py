"""Comparisons (eq ... ge and the total-order eq_to/lt_to/le_to) and select_n; the
bitwise family (and, or, not, xor, shifts, population_count, clz) is in rules_lax.bitwise.

XLA semantics that plain TF does not share, and how they are kept here:
- total-order comparisons order -NaN < -inf < ... < -0 < +0 < ... < inf < +NaN, done by
  comparing the float's bits mapped to a monotone signed integer key;
- XLA's CPU float compares treat subnormals as zero; TFLite's do not, so they are flushed.
Narrow operands (bool, 8/16-bit ints, bf16/f16) are compared in int32/f32: exact, and it
keeps the graph exportable (TFLite rejects narrow compares).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
from jax import lax
from jax._src import core as _jcore
from jax._src.lax import lax as _lax_internal

from core.dtypes import signed_of, unsigned_of
from core.rule import case, rule
from rules_lax.bitwise import (_bits, _c32, _i32, _np, _poly_case, _static32, and32, or32,
                               srl32)

_NAN = float("nan")
_INF = float("inf")


# -- helpers ---------------------------------------------------------------------------------
def _widen_for_compare(x, dtype: np.dtype):
    """Cast operands whose compare TFLite rejects to a type that holds them exactly."""
    if dtype == np.bool_ or (dtype.kind in "iu" and dtype.itemsize <= 2):
        return tf.cast(x, tf.int32)
    if dtype.name in ("bfloat16", "float16"):
        return tf.cast(x, tf.float32)
    return x


# -- comparisons -----------------------------------------------------------------------------
_CMP = {"eq": tf.math.equal, "ne": tf.math.not_equal, "lt": tf.math.less,
        "le": tf.math.less_equal, "gt": tf.math.greater, "ge": tf.math.greater_equal}


def _cmp_cases(prim):
    f = getattr(lax, prim)
    return [case.random(f, shapes=[(3, 4), (3, 4)]),
            case.random(f, shapes=[(3, 4), ()], name="scalar rhs"),
            case.custom("bool", f, lambda rng, dt: [np.array([True, True, False, False]),
                                                    np.array([True, False, True, False])],
                        dtypes="bool"),
            case(f"{prim}: NaN, inf and signed zeros", f,
                 [_NAN, 1.0, _NAN, -0.0, _INF, -_INF, 2.0],
                 [_NAN, _NAN, 1.0, 0.0, _INF, _INF, -3.0], dtypes="floating"),
            case.custom(f"{prim}: extremes of the dtype", f, lambda rng, dt: [
                np.array([np.iinfo(dt).min, np.iinfo(dt).max, 0, 1], dt),
                np.array([np.iinfo(dt).max, np.iinfo(dt).min, 0, np.iinfo(dt).max], dt)],
                dtypes="integer")]


def _complex_cases(prim):
    f = getattr(lax, prim)
    return [case.random(f, shapes=[(5,), (5,)], name="complex", dtypes="complex"),
            case(f"{prim}: complex with NaN parts", f, [complex(1, _NAN), 1j, 2 + 1j],
                 [complex(1, _NAN), 1j, 2 - 1j], dtypes="complex")]


@rule("eq", dtypes=["numeric", "bool"], cases=_cmp_cases("eq") + _complex_cases("eq"))
@rule("ne", dtypes=["numeric", "bool"], cases=_cmp_cases("ne") + _complex_cases("ne"))
@rule("lt", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("lt"))
@rule("le", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("le"))
@rule("gt", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("gt"))
@rule("ge", dtypes=["integer", "floating", "bool"], cases=_cmp_cases("ge"))
def compare(ctx, x, y, **_):
    """Elementwise comparison: IEEE semantics for floats (NaN unordered) in JAX and TF."""
    dtype = _np(ctx.avals_in[0])
    # XLA CPU compares f32 (and bf16, via f32) with denormals-are-zero, as TF does; the
    # widening to f32 keeps that (measured on all bf16 bit patterns).
    return _CMP[ctx.eqn.primitive.name](_widen_for_compare(x, dtype),
                                        _widen_for_compare(y, dtype))


def _total_order_key(x, dtype: np.dtype):
    """A signed integer that orders floats as XLA's TOTALORDER comparison does: negative
    floats have their magnitude bits flipped so that larger magnitudes sort lower."""
    if dtype.kind in "iub":
        return _widen_for_compare(x, dtype)
    bits = _bits(dtype)
    k = tf.bitcast(x, signed_of(bits))
    if bits == 16:
        k = tf.cast(k, tf.int32)  # exact; the flip below uses the 16-bit mask
    flip = tf.constant((1 << (bits - 1)) - 1, k.dtype)
    return tf.where(k < 0, tf.bitwise.bitwise_xor(k, flip), k)


_TO = {"eq_to": tf.math.equal, "lt_to": tf.math.less, "le_to": tf.math.less_equal}


def _to_cases(prim):
    p = getattr(_lax_internal, prim + "_p")
    f = lambda x, y: p.bind(x, y)  # noqa: E731
    return [case.random(f, shapes=[(3, 4), (3, 4)]),
            case(f"{prim}: NaN, -NaN, inf and signed zeros", f,
                 [_NAN, -_NAN, -0.0, 0.0, -_INF, _NAN, 1.0, -1.0, -_NAN, 0.0],
                 [_NAN, _NAN, 0.0, -0.0, -_NAN, _INF, 1.0, -2.0, -_INF, 0.0],
                 dtypes="floating")]


@rule("eq_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("eq_to"))
@rule("lt_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("lt_to"))
@rule("le_to", dtypes=["integer", "floating", "bool"], cases=_to_cases("le_to"))
def compare_total_order(ctx, x, y, **_):
    """Total-order comparison (used by sort): compare monotone integer keys of the bits."""
    dtype = _np(ctx.avals_in[0])
    return _TO[ctx.eqn.primitive.name](_total_order_key(x, dtype), _total_order_key(y, dtype))


# -- select_n --------------------------------------------------------------------------------
def _select_cases():
    def which_of(n):
        return lambda rng, dt: [rng.integers(-1, n + 1, (3, 4)).astype(np.int32),
                                *[np.full((3, 4), k, dt) for k in range(n)]]
    return [
        case.custom("bool predicate", lax.select_n,
                    lambda rng, dt: [rng.random((3, 4)) < 0.5, np.zeros((3, 4), dt),
                                     np.ones((3, 4), dt)]),
        case.custom("scalar bool predicate", lax.select_n,
                    lambda rng, dt: [np.array(True), np.zeros((2, 3), dt),
                                     np.ones((2, 3), dt)]),
        case.custom("int32 predicate, 5 cases, -1 and 5 out of range", lax.select_n,
                    which_of(5), dtypes="numeric"),
        case.custom("uint8 predicate, 3 cases", lax.select_n,
                    lambda rng, dt: [rng.integers(0, 3, (6,)).astype(np.uint8),
                                     *[np.full((6,), k, dt) for k in range(3)]],
                    dtypes="numeric"),
        case.custom("one case", lambda p, a: lax.select_n(p, a),
                    lambda rng, dt: [np.zeros((4,), np.int32), np.ones((4,), dt)]),
        case.custom("key data", _select_keys,
                    lambda rng, dt: [np.array([True, False, True]),
                                     np.arange(6, dtype=np.uint32).reshape(3, 2),
                                     np.arange(6, 12, dtype=np.uint32).reshape(3, 2)],
                    dtypes="uint32"),
    ]


def _select_keys(p, k1, k2):
    import jax
    keys = lax.select_n(p, jax.random.wrap_key_data(k1), jax.random.wrap_key_data(k2))
    return jax.random.key_data(keys)


@rule("select_n", dtypes=["all", "key"], cases=_select_cases())
def select_n(ctx, which, *cases, **_):
    """``cases[which]``: a bool predicate picks between two; an integer one is resolved by
    the same binary tree of ``which < mid`` selects that JAX emits, so out-of-range values
    pick the first or last case exactly as XLA does."""
    return _select_tree(ctx, which, cases, tf.where)


def _select_tree(ctx, which, cases, where):
    """:func:`select_n` with ``where(pred, if_true, if_false)`` as the two-way select."""
    if len(cases) == 1:
        return tf.identity(cases[0])
    w_aval = ctx.avals_in[0]
    # Key arrays carry trailing key-data dims that the predicate must broadcast over.
    phys_ndim = len(_jcore.physical_aval(ctx.aval_out).shape)
    if w_aval.ndim and phys_ndim > w_aval.ndim:
        which = tf.reshape(which, ctx.shape(w_aval) + [1] * (phys_ndim - w_aval.ndim))
    if np.dtype(w_aval.dtype) == np.bool_:
        return where(which, cases[1], cases[0])
    which = _widen_for_compare(which, np.dtype(w_aval.dtype))

    def pick(offset, cs):
        if len(cs) == 1:
            return cs[0]
        mid = len(cs) // 2
        below = tf.math.less(which, tf.constant(offset + mid, which.dtype))
        return where(below, pick(offset, cs[:mid]), pick(offset + mid, cs[mid:]))
    return pick(0, list(cases))


def _bool_result(eqn):
    return None if eqn.outvars[0].aval.dtype == np.bool_ else "only bool cases need this form"


def _bool_cases(rng, dt):
    return [rng.integers(-1, 6, (3, 4)).astype(np.int32), *(rng.random((5, 3, 4)) < 0.5)]


@rule("select_n", dtypes=["bool", "int32"], targets=("onnx", "tfjs"), when=_bool_result,
      cases=[
          *[case.custom(c.name, c.fn, c.make_args, dtypes="bool") for c in _select_cases()[:2]],
          case.custom("int32 predicate, 5 bool cases, -1 and 5 out of range", lax.select_n,
                      _bool_cases, dtypes="int32"),
          case.custom("scalar int32 predicate, 3 bool cases",
                      lambda p, a, b, c: lax.select_n(p, a, b, c),
                      lambda rng, dt: [np.int32(1), *(rng.random((3, 2, 3)) < 0.5)],
                      dtypes="int32"),
          case.random(lax.select_n, shapes=[(3, 4)] * 3, name="symbolic batch dimension",
                      dtypes="bool", convert_kw={"polymorphic_shapes": ["(b, 4)"] * 3})])
def select_n_bool_portable(ctx, which, *cases, **_):
    """Bool cases picked with logical ops, (p and b) or (not p and a), as the generic rule's
    tree of selects: onnxruntime's Where has no bool kernel."""
    def where(p, b, a):
        shape = ctx.shape(ctx.aval_out)
        p, b, a = (tf.broadcast_to(t, shape) for t in (p, b, a))
        return tf.math.logical_or(tf.math.logical_and(p, b),
                                  tf.math.logical_and(tf.math.logical_not(p), a))
    return _select_tree(ctx, which, cases, where)


# -- TFLite ---------------------------------------------------------------------------------
_F32_TINY = float(np.finfo(np.float32).tiny)


class TFLiteBits:
    """Bit operations on float bit patterns in TFLite builtins (float32 only): the integer
    view is int32, where the compares that rules make on masked patterns (< 2^31) hold."""
    itype = tf.int32

    def __init__(self, nbits: int, signed: bool = True):
        if nbits != 32:
            raise ValueError("TFLiteBits works on 32-bit patterns")

    c = staticmethod(_c32)
    and_ = staticmethod(and32)
    or_ = staticmethod(or32)
    srl = staticmethod(srl32)

    @staticmethod
    def not_(x):
        c = _static32(x)
        return _c32(~c) if c is not None else tf.bitwise.bitwise_xor(x, _c32(-1))

    @staticmethod
    def eq_daz(x, y):
        """x == y on floats with XLA CPU's denormals-are-zero compare."""
        return tf.math.equal(*_flush_for_compare(x, y))


class TFBits:
    """The same operations with TF's own bitwise ops, on the (unsigned) integer type of the
    width."""

    def __init__(self, nbits: int, signed: bool = False):
        self.itype = signed_of(nbits) if signed else unsigned_of(nbits)

    def c(self, v: int):
        return tf.constant(v, self.itype)
    and_ = staticmethod(tf.bitwise.bitwise_and)
    or_ = staticmethod(tf.bitwise.bitwise_or)
    not_ = staticmethod(tf.bitwise.invert)

    def srl(self, x, k: int):
        return tf.bitwise.right_shift(x, self.c(k))
    eq_daz = staticmethod(tf.math.equal)  # TF's CPU compares flush denormals, as XLA's do


def _flush_for_compare(x, y):
    """XLA's CPU float compares treat subnormals as zero, TFLite's do not: flush them. An
    operand needs no flush when the other is a constant without zeros or subnormals (a
    subnormal then compares with it as 0 does)."""
    def clean(v):
        return v is not None and bool(np.all(~(np.abs(v.astype(np.float32)) < _F32_TINY)))
    cx, cy = tf.get_static_value(x), tf.get_static_value(y)
    return (x if clean(cy) else flush_subnormals(x)), (y if clean(cx) else flush_subnormals(y))


def flush_subnormals(t):
    """float32 subnormals -> +0 (NaN stays)."""
    return tf.where(tf.math.less(tf.abs(t), _F32_TINY), tf.constant(0, t.dtype), t)


# -- comparisons (TFLite) --------------------------------------------------------------------
def _u32_key(x, ordered: bool):
    """uint32 compared as int32: the bits as they are for ==, with bit 31 flipped for <."""
    return tf.bitwise.bitwise_xor(_i32(x), _c32(1 << 31)) if ordered else _i32(x)


def _subnormal_case(prim):
    f = getattr(lax, prim)
    return case(f"{prim}: subnormals compare as zero", f,
                [1e-45, 1e-45, -1e-45, 1e-40, 0.0, 1e-40, -2e-39, 1.2e-38],
                [2e-45, 0.0, 0.0, 1e-40, -1e-45, 2e-40, 0.0, 0.0], dtypes="float32")


def _uint_order_case(prim):
    f = getattr(lax, prim)
    return case(f"{prim}: across bit 31", f, np.array([0, 2**31, 2**31 - 1, 2**32 - 1, 7], np.uint32),
                np.array([2**31, 0, 2**31, 2**31 - 1, 7], np.uint32), dtypes="uint32")


def _tfl_cmp_cases(prim):
    return _cmp_cases(prim) + [_subnormal_case(prim), _uint_order_case(prim),
                               _poly_case(getattr(lax, prim), 2)]


@rule("eq", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("eq"))
@rule("ne", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("ne"))
@rule("lt", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("lt"))
@rule("le", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("le"))
@rule("gt", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("gt"))
@rule("ge", dtypes=["uint32", "float32"], targets="tflite", cases=_tfl_cmp_cases("ge"))
def compare_tflite(ctx, x, y, **_):
    """TFLite compares no uint32 (compare the int32 view, bit 31 flipped to order) and
    compares float32 subnormals as such (flush them, as XLA's CPU compare does)."""
    name = ctx.eqn.primitive.name
    if _np(ctx.avals_in[0]) == np.uint32:
        ordered = name not in ("eq", "ne")
        x, y = _u32_key(x, ordered), _u32_key(y, ordered)
    else:
        x, y = _flush_for_compare(x, y)
    return _CMP[name](x, y)


@rule("eq_to", dtypes="uint32", targets="tflite", cases=_to_cases("eq_to"))
@rule("lt_to", dtypes="uint32", targets="tflite", cases=_to_cases("lt_to"))
@rule("le_to", dtypes="uint32", targets="tflite", cases=_to_cases("le_to"))
def compare_total_order_tflite(ctx, x, y, **_):
    """uint32 total order = the unsigned order: the int32 view with bit 31 flipped."""
    return _TO[ctx.eqn.primitive.name](_u32_key(x, True), _u32_key(y, True))
