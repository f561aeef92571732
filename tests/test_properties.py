"""Property tests where TF's and JAX's semantics differ most: integer division and
remainder signs, division by zero, shifts past the bit width, NaN in min/max, float ->
int conversion. Inputs come from hypothesis, with the edge values forced in."""
from __future__ import annotations

import functools

import jax
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from jax import lax

from core import convert

N = 8
I32 = st.integers(-2**31, 2**31 - 1)
EDGE_I32 = st.sampled_from([0, 1, -1, 2**31 - 1, -2**31, 7, -7, 31, 32, 33, -32])
ints = st.lists(st.one_of(I32, EDGE_I32), min_size=N, max_size=N).map(
    lambda v: np.array(v, np.int32))
floats = st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=32),
                            st.sampled_from([0.0, -0.0, np.nan, np.inf, -np.inf, 2.5, -2.5,
                                             3e9, -3e9, 2147483520.0, -2147483648.0, 1e-45])),
                  min_size=N, max_size=N).map(lambda v: np.array(v, np.float32))


@functools.lru_cache(maxsize=None)
def _graph(name):
    fn = {"div": lax.div, "rem": lax.rem, "shl": lax.shift_left,
          "sra": lax.shift_right_arithmetic, "srl": lax.shift_right_logical,
          "max": lax.max, "min": lax.min,
          "f2i": lambda x: lax.convert_element_type(x, np.int32)}[name]
    return fn, tf.function(convert(fn), autograph=False)


def _check(name, *args):
    fn, graph = _graph(name)
    want = np.asarray(jax.jit(fn)(*args))
    got = graph(*args).numpy()
    msg = f"{name}{tuple(a.tolist() for a in args)}"
    np.testing.assert_array_equal(got, want, err_msg=msg)
    if want.dtype.kind == "f":      # equal above takes -0.0 for 0.0: the sign of zero too
        np.testing.assert_array_equal(np.signbit(got) | np.isnan(got),
                                      np.signbit(want) | np.isnan(want), err_msg=msg)


@settings(max_examples=40, deadline=None)
@given(ints, ints)
@pytest.mark.parametrize("name", ["div", "rem", "shl", "sra", "srl"])
def test_integer_ops(name, x, y):
    _check(name, x, y)


@settings(max_examples=40, deadline=None)
@given(floats, floats)
@pytest.mark.parametrize("name", ["max", "min"])
def test_nan_and_signed_zero_in_max_min(name, x, y):
    _check(name, x, y)


@settings(max_examples=40, deadline=None)
@given(floats)
def test_float_to_int_conversion(x):
    _check("f2i", x)                # NaN, ±inf and out-of-range values included
