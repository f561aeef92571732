"""rules_nn.activations beyond its own cases: what it must leave to the generic
custom_jvp_call rule, gradients through the fused ops, and the ops a real model gets."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax._src import config as jax_config

from core import convert
from core.testkit import assert_same, graph_op_types
from tests.models.zoo import MODELS

GENERIC = "rules_lax.control_flow:custom_jvp_primal"
RELU = "rules_nn.activations:relu_fused"
RELU6 = "rules_nn.activations:relu6_fused"
SOFTMAX = "rules_nn.activations:softmax_fused"
X = np.array([[-2.0, -0.0, 0.0, 0.5], [3.0, 7.0, -1e-3, np.nan], [6.0, 5.9, 1.0, -np.inf]],
             np.float32)


def _softmax_cjvp(f):
    def g(*args):
        with jax_config.softmax_custom_jvp(True):
            return f(*args)
    return g


@jax.custom_jvp
def _relu_at_one(x):
    return jnp.maximum(x, 1.0)


_relu_at_one.defjvp(lambda p, t: (_relu_at_one(p[0]), t[0]))


def _run(fn, *args):
    """Convert ``fn``, run it under tf.function, compare with jax.jit; the rule ids used."""
    converted = convert(fn)
    got = tf.function(converted, autograph=False)(*args)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(jax.jit(fn)(*args))):
        assert_same(g.numpy(), w)
    return converted.conv.used


@pytest.mark.parametrize("fn, rule", [
    (jax.nn.relu, RELU), (jax.nn.relu6, RELU6), (jax.nn.hard_sigmoid, RELU6),
    (_softmax_cjvp(jax.nn.softmax), SOFTMAX),
    (_softmax_cjvp(lambda x: jax.nn.softmax(x, axis=0)), SOFTMAX),
], ids=["relu", "relu6", "hard_sigmoid", "softmax", "softmax_axis0"])
def test_recognised(fn, rule):
    used = _run(fn, X)
    assert rule in used and GENERIC not in used, used


@pytest.mark.parametrize("fn", [
    _relu_at_one,                                                  # max(x, 1): not relu
    jax.nn.softplus, jax.nn.log_sigmoid, jax.nn.mish,              # logaddexp: not mapped
    lambda x: jnp.logaddexp(x, x[::-1]), jax.nn.log1mexp,
    _softmax_cjvp(lambda x: jax.nn.softmax(x, where=x > 0)),      # where= is not Softmax
    _softmax_cjvp(lambda x: jax.nn.softmax(x, axis=(0, 1))),      # two axes
    _softmax_cjvp(jax.nn.softmax),                                # bfloat16 is not claimed
    lambda x: jax.nn.relu6(x.astype(jnp.int32)),                  # relu6 of ints is a float
], ids=["max_x_1", "softplus", "log_sigmoid", "mish", "logaddexp", "log1mexp",
        "softmax_where", "softmax_two_axes", "softmax_bf16", "relu6_int"])
def test_left_to_the_generic_rule(fn, request):
    x = X.astype(jnp.bfloat16) if request.node.callspec.id == "softmax_bf16" else X
    used = _run(fn, x)
    assert GENERIC in used and not {RELU, RELU6, SOFTMAX} & used, used


@pytest.mark.parametrize("fn", [
    jax.nn.relu, jax.nn.relu6, jax.nn.hard_silu,
    _softmax_cjvp(lambda x: jax.nn.softmax(x) * jnp.arange(1.0, 5.0)),
], ids=["relu", "relu6", "hard_silu", "softmax"])
def test_gradient_is_jaxs(fn):
    """tf.GradientTape through the converted function gives jax.grad's numbers, at the
    kinks (-0.0, 0, 6) too."""
    x = np.array([[-2.0, -0.0, 0.0, 0.5], [3.0, 7.0, -1e-3, 6.0], [6.0, 5.9, 1.0, -3.0]],
                 np.float32)
    want = jax.grad(lambda x: jnp.sum(fn(x) * np.arange(12.0).reshape(3, 4)))(x)
    converted = convert(fn)

    @tf.function(autograph=False)
    def grad(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(converted(x) * np.arange(12.0, dtype=np.float32).reshape(3, 4))
        return tape.gradient(y, x)
    assert_same(grad(tf.constant(x)).numpy(), want)


def test_flax_mlp_graph_has_relu():
    fn, args = MODELS["mlp_linen"]()
    converted = convert(fn)
    concrete = tf.function(converted, autograph=False).get_concrete_function(*args)
    ops = graph_op_types(concrete)
    # relu after a dense layer's bias: BiasAdd (grappler fuses it into the MatMul) and a
    # Maximum, no -0.0 fix-up pass (rules_lax.elementwise.relu)
    assert {"BiasAdd", "Maximum"} <= set(ops) and "Abs" not in ops, sorted(ops)
    assert RELU in converted.conv.used
