"""Speed of converted graphs against jax.jit, measured side by side in one process.

    python benchmarks/run.py               # all models
    python benchmarks/run.py mlp cnn       # some

For each model: the ratio of the converted tf.function's call time to jax.jit's (median
of repeated timed batches after warm-up, the two measured in alternating rounds), the same
ratio with the graph compiled by TF's XLA JIT (``tf.function(jit_compile=True)``: the
graph itself stays plain TF ops; this column shows what is TF's runtime rather than the
graph), the ratio to the same model written by hand in TF (what the converter itself
costs), the eager call time of the converted function,
the conversion+tracing time, and the number of ops in the TF graph. Targets: <= 1.1x
jax.jit for matmul/conv models, <= 1.5x for loops.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from core import convert  # noqa: E402
from core.testing import graph_op_types  # noqa: E402

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


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


def mlp():
    return _flax(MLP(), _x(64, 784))


def cnn():
    return _flax(CNN(), _x(16, 28, 28, 1))


def transformer():
    return _flax(Block(), _x(8, 64, 128))


def _rnn_weights():
    rng = np.random.default_rng(1)
    return [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in ((64, 64), (32, 64))]


def scan_rnn():
    w, u = _rnn_weights()
    xs = _x(100, 16, 32)

    def rnn(xs):
        def step(h, x):
            h = jnp.tanh(h @ w + x @ u)
            return h, h
        return jax.lax.scan(step, jnp.zeros((16, 64)), xs)[1]
    return rnn, (xs,)


def sampling():
    key = np.asarray(jax.random.key_data(jax.random.key(0)))

    def f(key_data):
        k1, k2 = jax.random.split(jax.random.wrap_key_data(key_data))
        return jax.random.normal(k1, (256, 256)) + jax.random.uniform(k2, (256, 256))
    return f, (key,)


# The same models written by hand in TF (tf.nn ops, one while loop), on the same weights:
# the ratio of the converted graph to these is what the converter itself costs; the rest of
# the gap to jax.jit is TF's runtime and kernels.

def _dense_params(module, x):
    p = module.init(jax.random.key(0), x)["params"]
    return {k: [tf.constant(np.asarray(v[n])) for n in ("kernel", "bias")] for k, v in p.items()}


def mlp_tf(x):
    p = _dense_params(MLP(), x)

    def f(x):
        for i in range(3):
            x = tf.nn.relu(x @ p[f"Dense_{i}"][0] + p[f"Dense_{i}"][1])
        return x @ p["Dense_3"][0] + p["Dense_3"][1]
    return f


def cnn_tf(x):
    p = _dense_params(CNN(), x)

    def f(x):
        conv = lambda x, k: tf.nn.relu(tf.nn.conv2d(x, p[k][0], 1, "SAME") + p[k][1])
        x = tf.nn.max_pool2d(conv(x, "Conv_0"), 2, 2, "VALID")
        x = tf.nn.avg_pool2d(conv(x, "Conv_1"), 2, 2, "VALID")
        return tf.reshape(x, [x.shape[0], -1]) @ p["Dense_0"][0] + p["Dense_0"][1]
    return f


def scan_rnn_tf(xs):
    w, u = _rnn_weights()

    def f(xs):
        ys = tf.TensorArray(tf.float32, size=xs.shape[0])

        def step(i, h, ys):
            h = tf.tanh(h @ w + xs[i] @ u)
            return i + 1, h, ys.write(i, h)
        _, _, ys = tf.while_loop(lambda i, h, ys: i < xs.shape[0], step,
                                 (0, tf.zeros([xs.shape[1], w.shape[1]]), ys))
        return ys.stack()
    return f


MODELS = {   # name: (builder, target ratio to jax.jit, hand-written TF or None)
    "mlp": (mlp, 1.1, mlp_tf), "cnn": (cnn, 1.1, cnn_tf), "transformer": (transformer, 1.1, None),
    "scan_rnn": (scan_rnn, 1.5, scan_rnn_tf), "sampling": (sampling, 1.5, None)}


def _time(fn, reps: int, rounds: int = 7) -> float:
    return _time_side_by_side([fn], reps, rounds)[0]


def _time_side_by_side(fns, reps: int, rounds: int = 9) -> list[float]:
    """Median time per call of each of ``fns``, measured in alternating rounds so a burst
    of machine load hits all of them alike."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            for _ in range(reps):
                fn()
            ts.append((time.perf_counter() - t0) / reps)
    return [statistics.median(ts) for ts in times]


def main(names) -> int:
    print(f"{'model':12} {'jax.jit':>10} {'tf graph':>10} {'ratio':>6} {'target':>6} "
          f"{'jit ratio':>8} {'vs hand':>8} {'tf eager':>10} {'convert':>9} {'ops':>6}")
    failed = []
    for name in names:
        try:
            _bench(name)
        except Exception as exc:  # a model that does not convert is a row, not a crash
            print(f"{name:12} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            failed.append(name)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def _bench(name: str) -> None:
    make, target, make_tf = MODELS[name]
    fn, args = make()
    jitted = jax.jit(fn)
    jax.block_until_ready(jitted(*args))
    t0 = time.perf_counter()
    converted = convert(fn, with_gradient=False)
    graph = tf.function(converted, autograph=False, jit_compile=False)
    tf_args = [tf.constant(a) for a in args]
    concrete = graph.get_concrete_function(*tf_args)
    graph(*tf_args)
    t_convert = time.perf_counter() - t0
    n_ops = len(concrete.graph.as_graph_def().node)
    run_jax = lambda: jax.block_until_ready(jitted(*args))
    run_tf = lambda: [o.numpy() for o in tf.nest.flatten(graph(*tf_args))]
    reps = max(1, int(0.1 / max(_time(run_jax, 1, 3), 1e-6)))
    # the same plain graph, compiled by TF's own XLA JIT when it runs (what a TF
    # Serving user can opt into); shows how much of the gap is TF's runtime
    graph_jit = tf.function(converted, autograph=False, jit_compile=True)
    graph_jit(*tf_args)
    run_tf_jit = lambda: [o.numpy() for o in tf.nest.flatten(graph_jit(*tf_args))]
    runs = [run_jax, run_tf, run_tf_jit]
    if make_tf is not None:
        hand = tf.function(make_tf(*args), autograph=False)
        np.testing.assert_allclose(hand(*tf_args).numpy(), np.asarray(jitted(*args)),
                                   rtol=1e-4, atol=1e-4)   # the same model
        runs.append(lambda: hand(*tf_args).numpy())
    t_jax, t_tf, t_tf_jit, *t_hand = _time_side_by_side(runs, reps)
    vs_hand = f"{t_tf / t_hand[0]:8.2f}" if t_hand else f"{'-':>8}"
    t_eager = _time(lambda: [o.numpy() for o in tf.nest.flatten(converted(*tf_args))], 1, 3)
    ratio = t_tf / t_jax
    print(f"{name:12} {t_jax * 1e3:8.3f}ms {t_tf * 1e3:8.3f}ms {ratio:6.2f} {target:6.1f} "
          f"{t_tf_jit / t_jax:8.2f} {vs_hand} {t_eager * 1e3:8.1f}ms {t_convert:8.2f}s {n_ops:6d}"
          + ("" if ratio <= target else "  (over target)"), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(MODELS)))
