"""Eighteen small programs that exercise what export targets find hard, each a function
``name() -> (fn, args)`` like tests/models/zoo.py: dense and convolutional layers, a
transformer block, loops, PRNG sampling, sorting, cumulative ops, special functions,
gathers and scatters. Shared by tests/test_export_models.py and benchmarks/.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

RNG = np.random.default_rng(3)


def _x(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _key(seed=0):
    return np.asarray(jax.random.key_data(jax.random.key(seed)))


def mlp():
    w1, b1, w2, b2 = _x(16, 32), _x(32), _x(32, 10), _x(10)

    def f(x):
        return jax.nn.log_softmax(jax.nn.relu(x @ w1 + b1) @ w2 + b2)
    return f, (_x(4, 16),)


def cnn():
    k1, k2 = _x(3, 3, 1, 4), _x(3, 3, 4, 8)

    def f(x):
        dn = ("NHWC", "HWIO", "NHWC")
        y = jax.nn.relu(jax.lax.conv_general_dilated(x, k1, (1, 1), "SAME",
                                                     dimension_numbers=dn))
        y = jax.lax.reduce_window(y, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        y = jax.nn.relu(jax.lax.conv_general_dilated(y, k2, (1, 1), "SAME",
                                                     dimension_numbers=dn))
        return jnp.mean(y, axis=(1, 2))
    return f, (_x(2, 8, 8, 1),)


def transformer_block():
    d, h = 16, 4
    wq, wk, wv, wo = (_x(d, d, scale=0.3) for _ in range(4))
    w1, w2 = _x(d, 32, scale=0.3), _x(32, d, scale=0.3)

    def ln(x):
        m = x.mean(-1, keepdims=True)
        return (x - m) * jax.lax.rsqrt(((x - m) ** 2).mean(-1, keepdims=True) + 1e-6)

    def f(x):
        b, t, _ = x.shape
        q, k, v = ((ln(x) @ w).reshape(b, t, h, d // h) for w in (wq, wk, wv))
        att = jnp.einsum("bthd,bshd->bhts", q, k) / np.sqrt(d // h)
        att = jnp.where(jnp.tril(jnp.ones((t, t), bool)), att, -jnp.inf)
        y = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(att, -1), v).reshape(b, t, d)
        x = x + y @ wo
        return x + jax.nn.gelu(ln(x) @ w1) @ w2
    return f, (_x(2, 6, d),)


def scan_rnn():
    wx, wh = _x(8, 16, scale=0.3), _x(16, 16, scale=0.3)

    def f(xs):
        def step(h, x):
            h = jnp.tanh(x @ wx + h @ wh)
            return h, h.sum()
        return jax.lax.scan(step, jnp.zeros(16, np.float32), xs)
    return f, (_x(20, 8),)


def while_newton():
    def f(a):
        def cond(s):
            x, i = s
            return (i < 50) & jnp.any(jnp.abs(x * x - a) > 1e-6 * a)

        def body(s):
            x, i = s
            return 0.5 * (x + a / x), i + 1
        return jax.lax.while_loop(cond, body, (a, 0))
    return f, (np.abs(_x(5)) + 0.5,)


def random_uniform():
    def f(key_data):
        k = jax.random.wrap_key_data(key_data)
        return jax.random.uniform(k, (6,)), jax.random.randint(k, (5,), 0, 100)
    return f, (_key(1),)


def random_normal():
    def f(key_data):
        k1, k2 = jax.random.split(jax.random.wrap_key_data(key_data))
        return jax.random.normal(k1, (8,)), jax.random.bernoulli(k2, 0.3, (8,))
    return f, (_key(2),)


def random_dropout():
    def f(x, key_data):
        keep = jax.random.bernoulli(jax.random.wrap_key_data(key_data), 0.8, x.shape)
        return jnp.where(keep, x / 0.8, 0.0)
    return f, (_x(4, 8), _key(3))


def sort():
    x = _x(3, 9)
    x[0, 2], x[1, 4], x[2, 1] = np.nan, -0.0, 0.0
    return (lambda x: jnp.sort(x, axis=-1)), (x,)


def top_k():
    x = _x(4, 12)
    x[1, :4] = 1.5                                       # ties keep the lower index first
    return (lambda x: jax.lax.top_k(x, 3)), (x,)


def argsort():
    x = np.array([[3, 1, 2, 1, 3, 0], [5, 5, 5, 1, 2, 2]], np.int32)
    return (lambda x: jnp.argsort(x, axis=-1, stable=True)), (x,)


def cumsum():
    return (lambda x: jnp.cumsum(x, axis=1)), (_x(3, 10),)


def cumprod():
    return (lambda x: jnp.cumprod(x, axis=0)), (_x(6, 4) * 0.5 + 1.0,)


def cummax():
    return (lambda x: jax.lax.cummax(x, axis=1)), (_x(3, 10),)


def erf_inv():
    x = np.linspace(-0.999, 0.999, 64, dtype=np.float32)
    return jax.scipy.special.erfinv, (x,)


def gelu_exact():
    x = np.concatenate([np.linspace(-30, 30, 250, dtype=np.float32),
                        np.array([0.0, -0.0, 1e-30, -1e-30, 50.0, -50.0], np.float32)])
    return (lambda x: jax.nn.gelu(x, approximate=False)), (x,)


def gather():
    table = _x(10, 4)
    idx = np.array([[0, 3], [9, 9], [2, 5]], np.int32)
    return (lambda t, i: t[i]), (table, idx)


def scatter_add():
    idx = np.array([0, 2, 2, 5, 7, 2], np.int32)
    return (lambda x, i, u: x.at[i].add(u)), (_x(8, 3), idx, _x(6, 3))


SMALL = {f.__name__: f for f in [
    mlp, cnn, transformer_block, scan_rnn, while_newton, random_uniform, random_normal,
    random_dropout, sort, top_k, argsort, cumsum, cumprod, cummax, erf_inv, gelu_exact,
    gather, scatter_add]}
