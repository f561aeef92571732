"""Real flax/optax programs: each converts, runs under tf.function, and matches jax.jit.

Model outputs go through many layers, so float32 results are compared with a stated
model-level tolerance (rtol 1e-4, atol 1e-5: accumulated rounding of differently ordered
float32 sums), integers and PRNG-derived bits exactly.
"""
from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow as tf

from core import convert
from core.testing import xla_ops
from tests.models.zoo import MODELS

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
