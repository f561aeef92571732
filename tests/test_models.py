"""Real flax/optax programs: each converts, runs under tf.function, and matches jax.jit.

Model outputs go through many layers, so float32 results are compared with a stated
model-level tolerance (rtol 1e-4, atol 1e-5: accumulated rounding of differently ordered
float32 sums), integers and PRNG-derived bits exactly.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from core import convert
from core.testkit import assert_same, xla_ops
from tests.models.zoo import MODELS, attention_bfloat16

MODEL_TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_matches_jax(name):
    fn, args = MODELS[name]()
    want = jax.tree_util.tree_leaves(jax.jit(fn)(*args))
    tf_fn = tf.function(convert(fn), autograph=False)
    got = jax.tree_util.tree_leaves(tf_fn(*args))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        w = np.asarray(w)
        g = g.numpy()
        assert g.shape == w.shape and g.dtype == w.dtype, (i, g.shape, w.shape, g.dtype, w.dtype)
        if w.dtype.kind == "f":
            np.testing.assert_allclose(g, w, err_msg=f"output {i}", **MODEL_TOL)
        else:
            np.testing.assert_array_equal(g, w, err_msg=f"output {i}")
    assert not xla_ops(tf_fn.get_concrete_function(*args))


ATTENTION = sorted(n for n in MODELS if n.startswith("attention"))


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_gradient_matches_jax(name):
    """tf.GradientTape through converted attention, with respect to every float32 input
    (q, k, v, bias, parameters), gives jax.grad's numbers. Masks and sequence lengths are
    closed over (see test_gradient_with_integer_input)."""
    fn, args = MODELS[name]()
    leaves, tree = jax.tree_util.tree_flatten(args)
    diff = [i for i, a in enumerate(leaves) if np.asarray(a).dtype == np.float32]
    weights = np.random.default_rng(1).standard_normal(np.shape(jax.jit(fn)(*args)))
    weights = weights.astype(np.float32)

    def of_floats(*xs):
        full = list(leaves)
        for i, x in zip(diff, xs):
            full[i] = x
        return fn(*jax.tree_util.tree_unflatten(tree, full))
    loss = lambda *xs: jnp.sum(of_floats(*xs) * weights)
    want = jax.jit(jax.grad(loss, argnums=tuple(range(len(diff)))))(*[leaves[i] for i in diff])
    converted = convert(of_floats)

    @tf.function(autograph=False)
    def grads(*xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            total = tf.reduce_sum(converted(*xs) * weights)
        return tape.gradient(total, xs)
    got = grads(*[tf.constant(np.asarray(leaves[i])) for i in diff])
    assert len(got) == len(want)
    for i, (g, w) in zip(diff, zip(got, want)):
        np.testing.assert_allclose(g.numpy(), np.asarray(w), err_msg=f"d/d input {i}", **MODEL_TOL)


def test_gradient_with_integer_input():
    fn, args = MODELS["attention_seq_lengths_window"]()
    q, k, v, bias, q_len, kv_len = (tf.constant(a) for a in args)
    with tf.GradientTape() as tape:
        tape.watch(q)
        total = tf.reduce_sum(convert(fn)(q, k, v, bias, q_len, kv_len))
    want = jax.grad(lambda q: jnp.sum(fn(q, *args[1:])))(args[0])
    np.testing.assert_allclose(tape.gradient(total, q).numpy(), want, **MODEL_TOL)


def test_attention_bfloat16():
    fn, args = attention_bfloat16()
    want = jax.jit(fn)(*args)
    got = tf.function(convert(fn), autograph=False)(*args)
    assert_same(got.numpy(), want)
