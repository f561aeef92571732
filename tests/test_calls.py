"""What the rule cases of rules_lax/calls.py (and tile, ragged_dot_general) cannot say:
the refusal of Python callbacks and its message, the opt-in that runs them in-process,
what jax.debug.print writes and when it is dropped, TF gradients through tile and
ragged_dot."""
from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import io_callback

from core import convert
from core.errors import UnsupportedError
from core.testkit import graph_op_types, run_function

IN_PROCESS = "rules_lax.calls:python_callback_in_process"
X = np.arange(6, dtype=np.float32).reshape(2, 3)


def _pure(x):
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x) + 1


def _io(x):
    return io_callback(np.cos, jax.ShapeDtypeStruct(x.shape, x.dtype), x) * 2


def _debug(x):
    jax.debug.callback(lambda a: None, x)
    return x - 1


@pytest.mark.parametrize("fn, api", [(_pure, "jax.pure_callback"),
                                     (_io, "jax.experimental.io_callback"),
                                     (_debug, "jax.debug.callback")])
def test_python_callbacks_are_refused_with_the_way_out(fn, api):
    with pytest.raises(UnsupportedError) as err:
        convert(fn)(X)
    msg = str(err.value)
    assert api in msg and "cannot be serialized into a TF graph" in msg
    assert IN_PROCESS in msg
    if fn is _debug:
        assert "rules_lax.calls:debug_callback_dropped" in msg
    else:
        assert "outside the converted function" in msg and "jax.numpy" in msg


def test_callback_refusal_is_the_same_with_symbolic_shapes():
    with pytest.raises(UnsupportedError, match="cannot be serialized into a TF graph"):
        convert(_pure, polymorphic_shapes=["(b, 3)"])(X)


@pytest.mark.parametrize("fn", [_pure, _io, _debug])
def test_python_callbacks_run_in_process_when_asked(fn):
    want = np.asarray(jax.jit(fn)(X))
    f_tf = convert(fn, prefer={"pure_callback": IN_PROCESS})   # opts in every callback
    np.testing.assert_allclose(f_tf(X).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(tf.function(f_tf, autograph=False)(X).numpy(), want, rtol=1e-6)


def test_debug_callback_runs_in_process_each_call():
    seen = []

    def f(x):
        jax.debug.callback(lambda a: seen.append(np.asarray(a).sum()), x)
        return x * 3
    f_tf = tf.function(convert(f, prefer={"debug_callback": IN_PROCESS}), autograph=False)
    f_tf(X)
    f_tf(X + 1)
    assert seen == [15, 21]


def test_debug_callback_dropped_when_asked():
    f_tf = convert(_debug, prefer={"debug_callback": "rules_lax.calls:debug_callback_dropped"})
    np.testing.assert_array_equal(f_tf(X).numpy(), X - 1)


def _prints(x):
    jax.debug.print("x={x} total={} {{literal}}", x.sum(), x=x)
    jax.debug.print("{0} and {name!r}", x[0, 0], name="static")
    jax.debug.print("{t:.2f}|{n:4d}|{n:04d}|{t:.1e}|{z}", t=x.sum() / 7, n=x.size,
                    z=lax.complex(x[0, 1], -x[0, 2]))
    return x * 2


def test_debug_print_writes_the_values_to_stdout(capfd):
    f_tf = tf.function(convert(_prints), autograph=False)
    np.testing.assert_array_equal(f_tf(X).numpy(), X * 2)
    out = capfd.readouterr().out
    assert "x=[[0 1 2]\n [3 4 5]] total=15 {literal}" in out
    assert "0 and 'static'" in out
    assert "2.14|   6|0006|2.1e+00|(1-2j)" in out


def test_debug_print_in_a_loop_prints_each_step(capfd):
    def f(x):
        def body(i, c):
            jax.debug.print("step {}", i)
            return c + x
        return lax.fori_loop(0, 3, body, x)
    convert(f)(np.float32(1.0))
    out = capfd.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("step")] == \
        ["step 0", "step 1", "step 2"]


def test_debug_print_dropped_when_asked(capfd):
    f_tf = convert(_prints, prefer={"debug_print": "rules_lax.calls:debug_print_dropped"})
    concrete = tf.function(f_tf, autograph=False).get_concrete_function(tf.constant(X))
    assert "PrintV2" not in graph_op_types(concrete)
    np.testing.assert_array_equal(concrete(tf.constant(X)).numpy(), X * 2)
    assert "x=" not in capfd.readouterr().out


def test_debug_print_is_dropped_for_an_export_target():
    def f(x):
        jax.debug.print("x={}", x)
        return x + 1
    outcome = run_function(f, [X], target="tflite")
    assert outcome.status == "pass", outcome.detail


def test_jnp_tile_has_a_tf_gradient():
    w = np.arange(36, dtype=np.float32).reshape(4, 9)

    def f(x):
        return (jnp.tile(x, (2, 3)) * w).sum()
    x = tf.constant(X)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = convert(f)(x)
    np.testing.assert_allclose(y.numpy(), f(X), rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), jax.grad(f)(X), rtol=1e-6)


def test_ragged_dot_has_a_tf_gradient():
    rng = np.random.default_rng(0)
    lhs = rng.standard_normal((5, 3)).astype(np.float32)
    rhs = rng.standard_normal((2, 3, 4)).astype(np.float32)
    groups = np.array([2, 3], np.int32)

    def f(a, b):
        return (lax.ragged_dot(a, b, groups) ** 2).sum()
    a, b = tf.constant(lhs), tf.constant(rhs)
    with tf.GradientTape() as tape:
        tape.watch([a, b])
        y = convert(f)(a, b)
    ga, gb = tape.gradient(y, [a, b])
    wa, wb = jax.grad(f, (0, 1))(lhs, rhs)
    np.testing.assert_allclose(y.numpy(), f(lhs, rhs), rtol=1e-5)
    np.testing.assert_allclose(ga.numpy(), wa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gb.numpy(), wb, rtol=1e-5, atol=1e-6)


def test_rng_uniform_is_refused_unless_tf_numbers_are_asked_for():
    def f(a, b):
        return lax.rng_uniform(a, b, (1000,))
    a, b = np.float32(2), np.float32(3)
    with pytest.raises(UnsupportedError, match="JAX itself gives other numbers on every call"):
        convert(f)(a, b)
    r = convert(f, prefer={"rng_uniform": "rules_random.rng_uniform:rng_uniform_stateful_tf"})(
        a, b).numpy()
    assert r.shape == (1000,) and ((r >= 2) & (r < 3)).all() and r.std() > 0.2
