"""Convert a small JAX MLP to TensorFlow, run it eagerly and as a graph, save it as a
SavedModel, reload it, and check every result against JAX.

    python examples/convert_mlp.py
"""
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from core import convert
from core.testkit import graph_op_types


def init(key, sizes=(784, 128, 10)):
    params = []
    for din, dout in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (din, dout)) / np.sqrt(din), jnp.zeros(dout)))
    return params


def trained_params():
    """The parameters, for `python -m core export examples.convert_mlp:predict f32[b,784]
    --params examples.convert_mlp:trained_params --out /tmp/mlp`."""
    return init(jax.random.key(0))


def predict(params, x):
    for w, b in params[:-1]:
        x = jax.nn.relu(x @ w + b)
    w, b = params[-1]
    return jax.nn.log_softmax(x @ w + b)


def main():
    params = init(jax.random.key(0))
    x = np.random.default_rng(0).standard_normal((8, 784)).astype(np.float32)
    want = np.asarray(jax.jit(predict)(params, x))

    f_tf = convert(lambda x: predict(params, x), with_gradient=False)
    eager = f_tf(x).numpy()
    graph_fn = tf.function(f_tf, autograph=False,
                           input_signature=[tf.TensorSpec([8, 784], tf.float32)])
    graph = graph_fn(x).numpy()

    module = tf.Module()
    module.predict = graph_fn
    path = os.path.join(tempfile.mkdtemp(), "mlp")
    tf.saved_model.save(module, path)
    restored = tf.saved_model.load(path).predict(x).numpy()

    ops = sorted(graph_op_types(graph_fn.get_concrete_function()))
    for name, got in [("eager", eager), ("tf.function", graph), ("SavedModel", restored)]:
        err = float(np.max(np.abs(got - want)))
        print(f"{name:12} max |TF - JAX| = {err:.2e}")
        assert err < 1e-4, name
    print(f"saved to {path}")
    print(f"TF op types in the graph: {', '.join(ops)}")
    assert not [o for o in ops if o.startswith("Xla")]
    print("OK: same numbers as jax.jit, no Xla ops")


if __name__ == "__main__":
    main()
