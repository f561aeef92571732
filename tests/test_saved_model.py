"""SavedModels: batch-polymorphic models with parameters as variables, saved, reloaded in
a process where JAX cannot be imported, run at two batch sizes; outputs and input
gradients equal JAX's; a fine-tuning step in TF equals JAX's."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from core import to_module

TOL = dict(rtol=1e-4, atol=1e-5)      # model-level float32 tolerance, as in test_models


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(3)(nn.relu(nn.Dense(16)(x)))


class CNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (3, 3))(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        return nn.Dense(3)(x.reshape(x.shape[0], -1))


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(2)(h, h)
        return x + nn.Dense(8)(nn.gelu(nn.Dense(16)(nn.LayerNorm()(x))))


CASES = {   # name: (module, per-example input shape)
    "mlp": (MLP(), (6,)),
    "cnn": (CNN(), (8, 8, 1)),
    "transformer": (Encoder(), (5, 8)),
}

RELOAD = textwrap.dedent("""
    import json, sys
    sys.modules["jax"] = None          # make `import jax` fail: the model must not need it
    import numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    out = {}
    for n in (1, 3):
        x = tf.constant(np.load(sys.argv[2] + f"/x{n}.npy"))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model.serve(x)
            loss = tf.reduce_sum(y * y)
        np.save(sys.argv[2] + f"/y{n}.npy", y.numpy())
        np.save(sys.argv[2] + f"/dx{n}.npy", tape.gradient(loss, x).numpy())
        sig = model.signatures["serving_default"](x)
        np.save(sys.argv[2] + f"/sig{n}.npy", list(sig.values())[0].numpy())
    print("ok")
""")


def _save(name, tmp_path, trainable=False):
    module, shape = CASES[name]
    x1 = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
    params = jax.tree_util.tree_map(np.asarray, module.init(jax.random.key(0), x1))
    spec = "(b, " + ", ".join(map(str, shape)) + ")"
    tf_module = to_module(module.apply, params, trainable=trainable,
                          input_signature=[tf.TensorSpec([None, *shape], tf.float32)],
                          polymorphic_shapes=[spec])
    path = str(tmp_path / name)
    tf.saved_model.save(tf_module, path, signatures=tf_module.serving_signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=True))
    return module, params, shape, tf_module, path


@pytest.mark.parametrize("name", sorted(CASES))
def test_reload_without_jax_any_batch_with_gradients(name, tmp_path):
    module, params, shape, _, path = _save(name, tmp_path)
    rng = np.random.default_rng(1)
    for n in (1, 3):
        np.save(tmp_path / f"x{n}.npy", rng.standard_normal((n, *shape)).astype(np.float32))
    proc = subprocess.run([sys.executable, "-c", RELOAD, path, str(tmp_path)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
    f = lambda x: module.apply(params, x)
    for n in (1, 3):
        x = np.load(tmp_path / f"x{n}.npy")
        np.testing.assert_allclose(np.load(tmp_path / f"y{n}.npy"), f(x), **TOL)
        np.testing.assert_allclose(np.load(tmp_path / f"sig{n}.npy"), f(x), **TOL)
        want_dx = jax.grad(lambda x: jnp.sum(f(x) ** 2))(x)
        np.testing.assert_allclose(np.load(tmp_path / f"dx{n}.npy"), want_dx, **TOL)


def test_parameters_are_variables_not_constants(tmp_path):
    _, params, shape, tf_module, _ = _save("mlp", tmp_path)
    graph = tf_module.serve.get_concrete_function().graph.as_graph_def()
    sizes = []
    for node in graph.node:
        if node.op == "Const":
            dims = node.attr["value"].tensor.tensor_shape.dim
            sizes.append(int(np.prod([d.size for d in dims])) if dims else 1)
    biggest_param = max(np.size(p) for p in jax.tree_util.tree_leaves(params))
    assert max(sizes, default=0) < biggest_param, "a parameter was baked in as a Const"
    assert len(tf_module.param_variables) == len(jax.tree_util.tree_leaves(params))


# cnn: the kernel gradient is a conv that contracts over the (symbolic) batch
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_fine_tuning_step_in_tf_equals_jax(name, tmp_path):
    module, params, shape, _, path = _save(name, tmp_path, trainable=True)
    loaded = tf.saved_model.load(path)
    x = np.random.default_rng(2).standard_normal((4, *shape)).astype(np.float32)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(loaded.serve(x) ** 2)
    grads = tape.gradient(loss, loaded.param_variables)
    for v, g in zip(loaded.param_variables, grads):
        v.assign_sub(0.1 * g)
    jax_grads = jax.grad(lambda p: jnp.mean(module.apply(p, x) ** 2))(params)
    want = jax.tree_util.tree_map(lambda p, g: p - 0.1 * g, params, jax_grads)
    for v, w in zip(loaded.param_variables, jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(v.numpy(), w, **TOL)


def test_keras_layer_example_from_readme():
    module, shape = CASES["mlp"]
    x = np.random.default_rng(3).standard_normal((5, *shape)).astype(np.float32)
    params = jax.tree_util.tree_map(np.asarray, module.init(jax.random.key(0), x))

    class JaxLayer(tf.keras.layers.Layer):
        def __init__(self, apply_fn, params, **kw):
            super().__init__(**kw)
            self.module = to_module(apply_fn, params, trainable=True,
                                    polymorphic_shapes=["(b, 6)"])

        def call(self, x):
            return self.module(x)

    layer = JaxLayer(module.apply, params)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) ** 2)
    grads = tape.gradient(loss, layer.module.param_variables)
    want = jax.grad(lambda p: jnp.sum(module.apply(p, x) ** 2))(params)
    for g, w in zip(grads, jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(g.numpy(), w, **TOL)
