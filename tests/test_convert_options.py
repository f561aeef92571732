"""convert()'s jax2tf keyword arguments: polymorphic_constraints is honoured, the
native_serialization_* options that cannot apply here say so instead of being dropped."""
from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
import tensorflow as tf
from jax import lax

from core import convert

SLICE16 = lambda x: lax.slice(x, (0,), (16,)) * 2.0   # needs b >= 16 to trace with x: (b,)


def _poly(f, constraints=()):
    g = convert(f, polymorphic_shapes=["(b,)"], polymorphic_constraints=constraints)
    return tf.function(g, autograph=False, input_signature=[tf.TensorSpec([None], tf.float32)])


def test_constraints_let_jax_decide_and_are_checked_at_run_time():
    with pytest.raises(Exception, match="inconclusive"):
        _poly(SLICE16).get_concrete_function()
    f = _poly(SLICE16, ["b >= 16"])
    for n in (16, 20):
        x = np.arange(n, dtype=np.float32) - 3.5
        np.testing.assert_array_equal(f(x).numpy(), np.asarray(jax.jit(SLICE16)(x)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="constraint b >= 16"):
        f(np.arange(8, dtype=np.float32))
    g = _poly(SLICE16, "b >= 16")                 # one constraint as a bare string
    np.testing.assert_array_equal(g(np.ones(17, np.float32)).numpy(), np.full(16, 2.0))


def test_constraints_need_symbolic_dimensions_and_must_parse():
    with pytest.raises(ValueError, match="give polymorphic_shapes"):
        convert(SLICE16, polymorphic_constraints=["b >= 16"])
    with pytest.raises(Exception, match="polymorphic_constraints"):
        _poly(SLICE16, ["b >= "]).get_concrete_function()


def test_constraints_hold_for_the_gradient():
    f = convert(SLICE16, polymorphic_shapes=["(b,)"], polymorphic_constraints=["b >= 16"])
    x = tf.Variable(np.arange(20, dtype=np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(f(x))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(),
                                  np.r_[np.full(16, 2.0), np.zeros(4)].astype(np.float32))


@pytest.mark.parametrize("name, value", [("native_serialization_platforms", ("cpu",)),
                                         ("native_serialization_disabled_checks", ["x"])])
def test_native_serialization_options_warn_that_they_have_no_effect(name, value):
    with pytest.warns(UserWarning, match=f"{name}=.* no effect in jaxtf") as rec:
        convert(lambda x: x, **{name: value})
    assert rec[0].filename == __file__            # points at the caller
    with warnings.catch_warnings():
        warnings.simplefilter("error")            # the defaults say nothing
        convert(lambda x: x, native_serialization=False, **{name: type(value)()})
