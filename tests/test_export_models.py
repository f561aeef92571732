"""Real flax/optax programs and small programs that export targets find hard, converted
for each export target, exported with its converter, run in its runtime (LiteRT,
onnxruntime, tfjs in node) and compared with jax.jit.

Every program must either give JAX's numbers in the runtime (with the model-level
tolerance of tests/test_models.py; integers and PRNG bits exactly) or be refused by the
pre-flight with a clear error: never a wrong number, never a model the pre-flight let
through that the converter rejects. The programs in ``MUST_RUN[target]`` must run.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow as tf

from core import convert
from core.errors import NoRuleError, TargetError, UnsupportedError
from core.export import runtime
from tests.models.small import SMALL
from tests.models.zoo import MODELS
from tests.test_models import MODEL_TOL


def gp_cholesky_grad():
    """A Gaussian-process negative log likelihood and its gradient (cholesky under grad)."""
    import jax.numpy as jnp
    x = np.linspace(-1, 1, 8, dtype=np.float32)[:, None]
    y = np.sin(3 * x[:, 0]).astype(np.float32)

    def nll(log_len, log_noise):
        k = jnp.exp(-0.5 * (x - x.T) ** 2 / jnp.exp(2 * log_len)) \
            + jnp.exp(2 * log_noise) * jnp.eye(8, dtype=np.float32)
        chol = jnp.linalg.cholesky(k)
        alpha = jax.scipy.linalg.cho_solve((chol, True), y)
        return 0.5 * y @ alpha + jnp.sum(jnp.log(jnp.diag(chol)))

    def loss_and_grad(log_len, log_noise):
        return jax.value_and_grad(nll, argnums=(0, 1))(log_len, log_noise)
    return loss_and_grad, (np.float32(-0.5), np.float32(-2.0))


PROGRAMS = dict(MODELS, gp_cholesky_grad=gp_cholesky_grad,
                **{f"small_{k}": v for k, v in SMALL.items()})

#: programs that must run in each target's runtime (the issues' bars: a flax CNN, a
#: transformer with dropout in train mode, samplers, a cholesky-based loss under grad;
#: for ONNX and TF.js the eighteen small programs too)
MUST_RUN = {
    "tflite": {"mlp_linen", "mlp_nnx", "cnn_eval", "cnn_train", "transformer_train",
               "random_sampling", "gp_cholesky_grad"},
    "onnx": {"mlp_linen", "cnn_eval", "cnn_train", "transformer_train", "random_sampling",
             *(f"small_{k}" for k in SMALL)},
    "tfjs": {"mlp_linen", "cnn_eval", "cnn_train", "transformer_train", "random_sampling",
             *(f"small_{k}" for k in SMALL)},
}


def _flat(fn, args):
    leaves, tree = jax.tree_util.tree_flatten(args)

    def flat_fn(*xs):
        return fn(*jax.tree_util.tree_unflatten(tree, list(xs)))
    return flat_fn, [np.asarray(x) for x in leaves]


def run_in_target(target, fn, args):
    """(outputs from the target's runtime, JAX's outputs), or raises the pre-flight's
    refusal."""
    flat_fn, leaves = _flat(fn, args)
    want = [np.asarray(w) for w in jax.tree_util.tree_leaves(jax.jit(flat_fn)(*leaves))]
    specs = [tf.TensorSpec(x.shape, tf.as_dtype(x.dtype)) for x in leaves]
    f_tf = tf.function(convert(flat_fn, target=target), autograph=False)
    f_tf.get_concrete_function(*specs)                   # the pre-flight runs here
    rt = runtime(target)
    return rt.run(rt.export(f_tf, specs), leaves), want


@pytest.mark.parametrize("target, name", [(t, n) for t in MUST_RUN for n in sorted(PROGRAMS)])
def test_program_in_target_runtime_is_right_or_refused(target, name):
    fn, args = PROGRAMS[name]()
    try:
        got, want = run_in_target(target, fn, args)
    except (TargetError, NoRuleError, UnsupportedError) as exc:
        if name in MUST_RUN[target]:
            pytest.fail(f"{name} must run in {target} but was refused: {exc}")
        why = [ln.strip() for ln in str(exc).splitlines() if ln.strip().startswith("refused")]
        pytest.skip(f"{name} refused by the pre-flight for {target} (clearly): "
                    f"{'; '.join(why)[:300]}")
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if w.dtype.kind == "f" or w.dtype.name == "bfloat16":
            np.testing.assert_allclose(np.asarray(g, np.float64), w.astype(np.float64),
                                       err_msg=f"output {i}", **MODEL_TOL)
        else:
            np.testing.assert_array_equal(np.asarray(g).astype(w.dtype), w,
                                          err_msg=f"output {i}")
