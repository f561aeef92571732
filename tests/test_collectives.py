"""What the rule cases of rules_lax/collectives.py cannot say: a whole shard_map model on a
one-device mesh (with jnp.tile) converts, saves and matches JAX with its gradient; a mesh
of two devices gets one error naming the axis and its size; a collective whose axis no
shard_map bound is refused rather than guessed."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from core import convert
from core.testkit import assert_same, run_function

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(w, x):
    """A data-parallel layer written for a mesh: per-shard matmul, tiled features, a
    psum'd mean and the gathered batch."""
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))

    def per_shard(w, x):
        h = jnp.tanh(jnp.tile(x, (1, 2)) @ w)
        total = lax.psum(h.sum(0), "data")
        n = lax.psum(h.shape[0], "data")
        return h - total / n, lax.all_gather(h, "data", tiled=True)
    return jax.shard_map(per_shard, mesh=mesh, in_specs=(P(), P("data")),
                         out_specs=(P("data"), P()), check_vma=False)(w, x)


W = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
X = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)


def test_one_device_shard_map_model_matches_jax():
    out = run_function(_model, [W, X])
    assert out.ok, out.detail


def test_one_device_shard_map_gradient_and_saved_model(tmp_path):
    f = convert(lambda w, x: _model(w, x)[0].sum())
    w = tf.Variable(W)
    with tf.GradientTape() as tape:
        y = f(w, X)
    want_y, want_g = jax.value_and_grad(lambda w: _model(w, X)[0].sum())(W)
    assert_same(y.numpy(), np.asarray(want_y))
    assert_same(tape.gradient(y, w).numpy(), np.asarray(want_g))
    mod = tf.Module()
    mod.f = tf.function(convert(_model), autograph=False,
                        input_signature=[tf.TensorSpec(W.shape), tf.TensorSpec(X.shape)])
    tf.saved_model.save(mod, str(tmp_path))
    got = tf.saved_model.load(str(tmp_path)).f(W, X)
    for g, w_ in zip(got, jax.jit(_model)(W, X)):
        assert_same(g.numpy(), np.asarray(w_))


def test_collective_outside_a_shard_map_is_refused():
    """An equation traced under an axis environment (no shard_map to say the size)."""
    import types
    from core.errors import UnsupportedError
    from rules_lax.collectives import all_reduce_one_device
    eqn = jax.make_jaxpr(lambda x: lax.psum(x, "i"), axis_env=[("i", 1)])(X).eqns[0]
    with pytest.raises(UnsupportedError, match="axis 'i' outside a shard_map"):
        all_reduce_one_device(types.SimpleNamespace(eqn=eqn), tf.constant(X), **eqn.params)


def test_two_device_psum_gets_one_error_naming_the_axis_and_size():
    script = textwrap.dedent("""
        import numpy as np, jax, jax.numpy as jnp
        from jax import lax
        from jax.sharding import Mesh, PartitionSpec as P
        from core import convert
        from core.errors import NoRuleError
        assert len(jax.devices()) == 2
        mesh = Mesh(np.array(jax.devices()), ("batch",))
        f = jax.shard_map(lambda a: lax.psum(a, "batch"), mesh=mesh, in_specs=P("batch"),
                          out_specs=P())
        try:
            convert(f)(np.ones((4, 3), np.float32))
        except NoRuleError as e:
            print("ERROR:", e)
    """)
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "TF_CPP_MIN_LOG_LEVEL": "3", "JAXTF_DISABLE_PLUGIN_AUTOLOAD": "1"}
    run = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    msg = run.stdout[run.stdout.index("ERROR:"):]
    assert msg.count("has no usable rule") == 1 and "1 equation" in msg, msg
    assert "shard_map" in msg and "mesh axis 'batch' of size 2" in msg, msg
    assert "psum" not in msg.split("at ", 1)[0], msg     # the one gap is the shard_map
