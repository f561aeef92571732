"""The interpreter and convert(): nested programs, constants, literals, dropped outputs,
pytrees, caching, name scopes, eager vs tf.function, and the errors users see."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf
from jax import lax

from core import convert
from core.errors import ConversionError, InputError, JaxtfError, NoRuleError
from core.registry import build_registry
from core.rule import make_rule
from core.testkit import graph_op_types, rule_package


def _nest(depth, f):
    for _ in range(depth):
        f = jax.jit(f)
    return f


def test_jit_nested_five_levels_eager_and_graph():
    f = _nest(5, lambda x: jax.jit(lambda y: y * 3)(x) + x)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    want = np.asarray(f(x))
    np.testing.assert_array_equal(convert(f)(x).numpy(), want)
    np.testing.assert_array_equal(tf.function(convert(f), autograph=False)(x).numpy(), want)


def test_closed_over_constants_literals_and_multiple_results():
    table = jnp.arange(4.0, dtype=jnp.float32)

    def f(x):
        y = x * 2.5 + table          # a jaxpr constant and a literal
        return y, (x - 1.0, {"z": y * y})
    x = np.ones(4, np.float32)
    got = convert(f)(x)
    want = f(x)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(g.numpy(), np.asarray(w))
    assert isinstance(got, tuple) and isinstance(got[1][1], dict)


def test_dropped_outputs_and_unused_inputs():
    def f(x, unused):
        _, ys = lax.scan(lambda c, a: (c + a, c * a), 0.0, x)   # carry dropped
        return ys
    x = np.array([1.0, 2.0, 3.0], np.float32)
    np.testing.assert_array_equal(convert(f)(x, np.float32(7)).numpy(), np.asarray(f(x, 7.0)))


def test_pytree_and_keyword_inputs():
    def f(params, x, *, scale):
        return params["w"] * x + params["b"] * scale
    p = {"w": np.float32(2), "b": np.float32(1)}
    x = np.arange(3, dtype=np.float32)
    got = convert(f)(p, x, scale=np.float32(10))
    np.testing.assert_array_equal(got.numpy(), np.asarray(f(p, x, scale=10.0)))


def test_custom_jvp_custom_vjp_and_remat_use_their_primal():
    @jax.custom_vjp
    def g(x):
        return jnp.sin(x) * 2

    g.defvjp(lambda x: (g(x), x), lambda x, ct: (ct * 0,))
    f = jax.checkpoint(lambda x: jax.nn.relu(g(x)) + 1)
    x = np.linspace(-3, 3, 7).astype(np.float32)
    np.testing.assert_allclose(convert(f)(x).numpy(), np.asarray(f(x)), rtol=1e-6)


def test_control_flow():
    def f(x, i):
        y = lax.switch(i, [jnp.sin, jnp.cos, lambda a: -a], x)
        y = lax.fori_loop(0, 3, lambda k, c: c * 1.5 + k, y)
        return lax.cond(y.sum() > 0, lambda a: a + 1, lambda a: a - 1, y)
    x = np.linspace(-1, 1, 5).astype(np.float32)
    for i in (-3, 0, 1, 2, 9):       # out-of-range indices are clamped, as in JAX
        np.testing.assert_allclose(convert(f)(x, np.int32(i)).numpy(),
                                   np.asarray(f(x, np.int32(i))), rtol=1e-6)


def test_traces_once_per_signature():
    calls = []

    def f(x):
        calls.append(x.shape)
        return x + 1
    tf_f = convert(f)
    tf_f(np.ones(3, np.float32))
    tf_f(np.zeros(3, np.float32))
    tf_f(np.ones(4, np.float32))
    assert calls == [(3,), (4,)]


def test_name_scopes_follow_jax_name_stack():
    def model(x):
        with jax.named_scope("encoder"):
            return jnp.tanh(x) * 2
    reg = build_registry(entry_points=False)
    cf = tf.function(convert(model, registry=reg), autograph=False).get_concrete_function(
        tf.TensorSpec([3], tf.float32))
    names = [n.name for n in cf.graph.as_graph_def().node]
    assert any("encoder" in n and "tanh" in n for n in names), names


def test_inputs_are_canonicalised_like_jax():
    f = lambda x: x * 2
    got = convert(f)(np.arange(3, dtype=np.int64))   # x32 mode: int64 -> int32, as jax.jit
    assert got.dtype == tf.int32
    got = convert(f)(np.float64(1.5))
    assert got.dtype == tf.float32 and got.numpy() == 3.0


def test_pre_flight_error_reports_before_building_ops():
    built = []

    def spy(ctx, x, y, **_):
        built.append(1)
        return x * y

    mod = rule_package("spy_pkg", make_rule("mul", spy, dtypes="floating"))
    reg = build_registry([mod], entry_points=False)
    with pytest.raises(NoRuleError, match="exp"):
        convert(lambda x: jnp.exp(x * x), registry=reg)(np.ones(2, np.float32))
    assert built == []          # the gap was found before any rule ran


def test_rule_failure_names_the_equation():
    def boom(ctx, x, y, **_):
        raise ValueError("kaboom")
    reg = build_registry([rule_package("boom_pkg", make_rule("mul", boom, dtypes="all"))],
                         entry_points=False)
    with pytest.raises(ConversionError, match=r"boom .*failed on mul float32\[2\].*"
                                              r"test_interpreter.py.*ValueError: kaboom"):
        convert(lambda x: x * x, registry=reg)(np.ones(2, np.float32))


def test_clear_errors_for_bad_input_and_unsupported_options():
    with pytest.raises(TypeError, match="expects a callable"):
        convert(42)
    with pytest.raises(InputError, match="input #0 .*not an array"):
        convert(lambda x: x)(object())
    f = tf.function(convert(lambda x: x * 2), autograph=False,
                    input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    with pytest.raises(InputError, match="unknown dimensions.*name them with polymorphic_shapes"):
        f.get_concrete_function()
    g = tf.function(convert(lambda x: x * 2, polymorphic_shapes=["(b, 4)"]), autograph=False,
                    input_signature=[tf.TensorSpec([None, 3], tf.float32)])
    with pytest.raises(InputError, match="does not fit the arguments"):
        g.get_concrete_function()
    with pytest.raises(JaxtfError, match="never emits XlaCallModule"):
        convert(lambda x: x, native_serialization=True)
    with pytest.raises(ValueError, match="device must be"):
        convert(lambda x: x, device="npu")


def _grads(f_tf, *xs):
    xs = [tf.constant(x) for x in xs]
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = f_tf(*xs)
    return tape.gradient(y, xs)


def test_gradient_is_jax_vjp_eager_and_graph():
    @jax.custom_jvp
    def softclip(x):
        return jnp.tanh(x)
    softclip.defjvp(lambda p, t: (softclip(p[0]), t[0] * 0.5))   # deliberately not tanh'
    f = lambda w, x, i: jnp.sum(softclip(x @ w) ** 2) + jnp.sum(w) * i
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 2)).astype(np.float32)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    gw, gx = jax.grad(f, argnums=(0, 1))(w, x, 3)
    for wrap in (lambda g: g, lambda g: tf.function(g, autograph=False)):
        tw, tx, ti = _grads(wrap(convert(f)), w, x, np.int32(3))
        np.testing.assert_allclose(tw.numpy(), gw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(tx.numpy(), gx, rtol=1e-5, atol=1e-6)
        assert ti is None                              # integer inputs have no gradient


def test_second_order_gradient():
    f = lambda x: jnp.sum(jnp.sin(x) * x)
    x = tf.constant([0.5, 1.0, 2.0])
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            y = convert(f)(x)
        g = inner.gradient(y, x)
    h = outer.gradient(g, x)
    want = jax.grad(lambda a: jnp.sum(jax.grad(f)(a)))(np.array([0.5, 1.0, 2.0], np.float32))
    np.testing.assert_allclose(h.numpy(), want, rtol=1e-5)


def test_without_gradient_asking_for_one_is_a_clear_error():
    f = convert(lambda x: jnp.sin(x) * x, with_gradient=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="converted with with_gradient=False"):
        _grads(f, np.ones(2, np.float32))
    # ... but a SavedModel of it still saves (TF traces gradient functions when saving)
    import tempfile
    m = tf.Module()
    m.f = tf.function(f, autograph=False, input_signature=[tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(m, tempfile.mkdtemp())


def test_polymorphic_batch_any_size_and_inconsistent_inputs_raise():
    f = lambda x, y: jnp.tanh(x) * 2.0 + y
    g = tf.function(convert(f, polymorphic_shapes=["(b, 3)", "(b, 3)"]), autograph=False,
                    input_signature=[tf.TensorSpec([None, 3], tf.float32)] * 2)
    for n in (1, 5):
        x = np.linspace(-1, 1, 3 * n).reshape(n, 3).astype(np.float32)
        np.testing.assert_allclose(g(x, x).numpy(), np.asarray(f(x, x)), rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"args\[1\].shape\[0\] \(= 4\).*specification .+b.+ \(= 2\)"):
        g(np.ones((2, 3), np.float32), np.ones((4, 3), np.float32))


def test_polymorphic_multiple_of_a_dim_is_solved_and_checked_at_run_time():
    # "(2*b,)": b is solved by floor division of a runtime shape, under AutoGraph too
    f = lambda x: (x.reshape(-1, 2) * 2).sum(0)
    g = tf.function(convert(f, polymorphic_shapes=["(2*b,)"]),
                    input_signature=[tf.TensorSpec([None], tf.float32)])
    for n in (2, 6):
        x = np.arange(n, dtype=np.float32)
        np.testing.assert_array_equal(g(x).numpy(), np.asarray(f(x)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="Division had remainder 1"):
        g(np.arange(5, dtype=np.float32))


def test_graph_has_no_xla_ops():
    f = lambda x: lax.fori_loop(0, 4, lambda i, c: jnp.tanh(c) * 2, x)
    cf = tf.function(convert(f), autograph=False).get_concrete_function(
        tf.TensorSpec([3], tf.float32))
    assert not [t for t in graph_op_types(cf) if t.startswith("Xla")]
