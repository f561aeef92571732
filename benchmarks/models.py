"""The benchmark models, in plain JAX and flax only (no jaxtf, no TF), so the same file
builds them in our process and in the old jax2tf's virtualenv (jax 0.7.1).

``build(name, small)`` returns ``(fn, args)``: a function ``jax.jit`` accepts and numpy
arguments. ``small`` shrinks batch sizes and trip counts for a smoke run.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np


def _x(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        for _ in range(3):
            x = nn.relu(nn.Dense(512)(x))
        return nn.Dense(10)(x)


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(32, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3))(x))
        x = nn.avg_pool(x, (2, 2), (2, 2))
        return nn.Dense(10)(x.reshape(x.shape[0], -1))


class Block(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(4)(h, h)
        return x + nn.Dense(128)(nn.gelu(nn.Dense(512)(nn.LayerNorm()(x))))


def _flax(module, x):
    params = module.init(jax.random.key(0), x)
    return (lambda x: module.apply(params, x)), (x,)


def mlp(rng, small):
    return _flax(MLP(), _x(rng, 8 if small else 64, 784))


def cnn(rng, small):
    return _flax(CNN(), _x(rng, 2 if small else 16, 28, 28, 1))


def transformer(rng, small):
    return _flax(Block(), _x(rng, 1 if small else 8, 64, 128))


def rnn_weights():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in ((64, 64), (32, 64))]


def scan_rnn(rng, small):
    w, u = rnn_weights()
    xs = _x(rng, 10 if small else 100, 16, 32)

    def rnn(xs):
        def step(h, x):
            h = jnp.tanh(h @ w + x @ u)
            return h, h
        return jax.lax.scan(step, jnp.zeros((16, 64)), xs)[1]
    return rnn, (xs,)


def newton(rng, small):
    """Square roots by Newton's method in a while_loop (a data-dependent trip count)."""
    a = np.abs(_x(rng, 64 if small else 4096)) + 0.5

    def sqrt(a):
        def body(s):
            x, _ = s
            nx = 0.5 * (x + a / x)
            return nx, jnp.max(jnp.abs(nx - x))
        return jax.lax.while_loop(lambda s: s[1] > 1e-6, body, (a, jnp.float32(1.0)))[0]
    return sqrt, (a,)


def sampling(rng, small):
    key = np.asarray(jax.random.key_data(jax.random.key(0)))
    n = 32 if small else 256

    def f(key_data):
        k1, k2 = jax.random.split(jax.random.wrap_key_data(key_data))
        return jax.random.normal(k1, (n, n)) + jax.random.uniform(k2, (n, n))
    return f, (key,)


MODELS = {"mlp": mlp, "cnn": cnn, "transformer": transformer, "scan_rnn": scan_rnn,
          "newton": newton, "sampling": sampling}


def build(name: str, small: bool = False):
    return MODELS[name](np.random.default_rng(0), small)
