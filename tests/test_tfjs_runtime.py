"""The runtime of target "tfjs" (core/export_tfjs.py): TF graphs converted by the
tensorflowjs 4.22 converter and run by @tensorflow/tfjs 4.22 in node give JAX's numbers;
what TF.js cannot take (ops, dtypes) is a clear error at export.

The toolchain is made by ``python -m core.export_tfjs setup``; without it every test here
fails with the MissingDependency message naming that command. The functions are exported
first (one converter process for all) and run together (one node process), in a module
fixture, so that the file takes seconds, not minutes."""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from core import convert, export_tfjs as rt
from core.errors import JaxtfError
from core.export import runtime
from core.testkit import assert_same

F32_EDGES = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1.2e-38, 3.4e38,
                      -3.4e38, 1.0], np.float32)
I32_EDGES = np.array([0, 1, -1, 2**31 - 1, -2**31, 7, -7, 65536, -65536, 3], np.int32)


@pytest.fixture(scope="module", autouse=True)
def _no_preflight():
    # core/target_ops/tfjs.json is made by the probe from this module; until it exists
    # the pre-flight of target="tfjs" has nothing to check against
    mp = pytest.MonkeyPatch()
    if not os.path.exists(os.path.join(os.path.dirname(rt.__file__), "target_ops",
                                       "tfjs.json")):
        mp.setenv("JAXTF_NO_PREFLIGHT", "1")
    yield
    mp.undo()


def mlp(x, w1, b1, w2):
    return jnp.tanh(x @ w1 + b1) @ w2


def int_ops(a, b):
    return (a + b, a - b, jnp.maximum(a, b), jnp.minimum(a, b), -a, (a > b),
            jnp.where(a > 0, a, b), jnp.sum(a, keepdims=True))


def loop(x):   # a while loop (a short fori_loop, a scan, is unrolled)
    return jax.lax.while_loop(lambda s: s[0] < 5,
                              lambda s: (s[0] + 1, s[1] * 2.0 + s[0].astype(s[1].dtype)),
                              (0, x))[1]


def several(x, n):
    """Outputs of several dtypes, in an order unlike the graph's node names. (No compare
    with 0 here: XLA on CPU flushes subnormals to zero, TF.js in JS does not, so 1e-45 > 0
    is False in JAX and True in TF.js.)"""
    return (x >= 1.0, n * 2, jnp.sin(x), jnp.argmax(x).astype(jnp.int32), x * 0.5,
            jnp.isnan(x))


def logic(p, q):
    return jnp.logical_xor(p, q), p & ~q, jnp.any(p)


_RNG = np.random.default_rng(0)
CASES = {
    "mlp": (mlp, [_RNG.normal(size=(4, 8)).astype(np.float32),
                  _RNG.normal(size=(8, 16)).astype(np.float32),
                  _RNG.normal(size=(16,)).astype(np.float32),
                  _RNG.normal(size=(16, 3)).astype(np.float32)]),
    "int_ops": (int_ops, [I32_EDGES[:8], np.array([3, -1, 1, 1, 0, -9, 7, -65536], np.int32)]),
    "loop": (loop, [np.array([1.0, -2.5, 0.0, np.inf], np.float32)]),
    "several": (several, [F32_EDGES, np.arange(5, dtype=np.int32)]),
    "logic": (logic, [np.array([True, False, True, False]),
                      np.array([True, True, False, False])]),
    # the cpu backend's Cast int32 -> float32 keeps an Int32Array: read as float32 it
    # must still be rounded to float32 (2**31 - 1 -> 2**31)
    "cast": (lambda a: (a.astype(jnp.float32), a.astype(jnp.float32) == 2.0**31),
             [I32_EDGES]),
    "zero_size": (lambda x: (x * 2.0, jnp.sum(x, axis=0)), [np.zeros((0, 3), np.float32)]),
}


def _export(fn, args):
    f_tf = tf.function(convert(fn, target="tfjs"), autograph=False)
    specs = [tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)) for a in args]
    return rt.export(f_tf, specs)


@pytest.fixture(scope="module")
def exported():
    """name -> model directory: every case exported (the first pays the converter's start)."""
    rt.check_installed()      # without the toolchain: MissingDependency naming the setup
    return {name: _export(fn, args) for name, (fn, args) in CASES.items()}


@pytest.fixture(scope="module")
def ran(exported):
    """name -> outputs of TF.js: every case run by one node process."""
    names = list(CASES)
    results = rt.run_many([(exported[n], CASES[n][1]) for n in names])
    return dict(zip(names, results))


def test_runtime_module_and_name():
    assert runtime("tfjs") is rt
    rt.check_installed()
    name = rt.runtime_name()
    assert "@tensorflow/tfjs 4.22.0" in name and "node v" in name
    assert "tensorflowjs converter 4.22.0" in name


@pytest.mark.parametrize("name", list(CASES))
def test_same_as_jax(name, ran):
    fn, args = CASES[name]
    got = ran[name]
    if isinstance(got, Exception):
        raise got
    want = jax.tree_util.tree_leaves(jax.jit(fn)(*args))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.asarray(w).dtype, (i, g.dtype, w.dtype)
        assert g.shape == np.shape(w), (i, g.shape, np.shape(w))
        assert_same(g, w, what=f"{name} output {i} (in tfjs)")


def test_artifact_files_and_async_flag(exported, tmp_path):
    with open(os.path.join(exported["loop"], "jaxtf.json")) as f:
        info = json.load(f)
    assert info["needs_async"] and "LoopCond" in info["ops"]      # lowered while loop
    with open(os.path.join(exported["mlp"], "jaxtf.json")) as f:
        assert not json.load(f)["needs_async"]
    written = rt.save(exported["mlp"], str(tmp_path / "mlp"))
    assert {os.path.basename(p) for p in written} >= {"model.json", "jaxtf.json"}
    assert rt.run(str(tmp_path / "mlp"), CASES["mlp"][1])[0].shape == (4, 3)


def test_run_ones(exported):
    assert rt.run_ones([exported["mlp"], exported["loop"], exported["logic"]]) == ["ok"] * 3


def test_arguments_cast_only_when_exact(exported):
    x = CASES["several"][1][0]
    got = rt.run(exported["several"], [x, np.arange(5, dtype=np.int64)])    # exact: fine
    assert_same(got[1], np.arange(5, dtype=np.int32) * 2)
    with pytest.raises(TypeError, match="does not convert to it exactly"):
        rt.run(exported["several"], [x, np.array([0, 1, 2, 3, 2**40])])
    with pytest.raises(ValueError, match="shape"):
        rt.run(exported["several"], [x[:3], np.arange(5, dtype=np.int32)])


def test_refusals_name_the_ops_and_dtypes():
    with pytest.raises(rt.TfjsExportError, match="Bitcast") as info:
        rt.export(tf.function(lambda x: tf.bitcast(x, tf.float32), autograph=False),
                  [tf.TensorSpec([3], tf.int32)])
    assert isinstance(info.value, JaxtfError) and "Bitcast" in info.value.ops
    with pytest.raises(rt.TfjsExportError, match="no dtype int64"):
        rt.export(tf.function(lambda x: x + 1, autograph=False), [tf.TensorSpec([3], tf.int64)])


def test_export_graphs_one_batch():
    from core.probe import single_node_graph
    g = tf.Graph()
    with g.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3])
        i = tf.compat.v1.placeholder(tf.int32, [3])
        ops = [tf.exp(x).op, tf.raw_ops.Bitcast(input=i, type=tf.float32).op,
               tf.raw_ops.FloorMod(x=i, y=i).op]
    out = rt.export_graphs([single_node_graph(op) for op in ops])
    assert isinstance(out[1], rt.TfjsExportError) and "Bitcast" in str(out[1])
    assert rt.run_ones([out[0], out[2]]) == ["ok", "ok"]


def test_a_model_that_never_ends_is_killed_and_the_rest_run(exported, monkeypatch):
    def forever(x):
        return jax.lax.while_loop(lambda c: c[0] > 0, lambda c: c + 1.0, x)
    hang = _export(forever, [np.ones(3, np.float32)])
    monkeypatch.setenv("JAXTF_TFJS_TIMEOUT", "2")
    out = rt.run_ones([exported["mlp"], hang, exported["loop"]])
    assert out[0] == "ok" and out[2] == "ok"
    assert out[1].startswith("crash (no result after 2 s")


def test_a_model_whose_node_dies_is_a_clear_error(exported, monkeypatch):
    """node killed under load gives no result for that model: an error that says so (it
    was ``KeyError: 'outputs'``), and the other models' results."""
    def forever(x):
        return jax.lax.while_loop(lambda c: c[0] > 0, lambda c: c + 1.0, x)
    hang = _export(forever, [np.ones(3, np.float32)])
    monkeypatch.setenv("JAXTF_TFJS_TIMEOUT", "2")
    x = np.ones(3, np.float32)
    out = rt.run_many([(hang, [x]), (hang, [x])])
    assert all(isinstance(o, rt.TfjsRunError) for o in out)
    assert "node) died while running this model" in str(out[0])
    assert "no result after 2 s" in str(out[0])


def test_symbolic_batch_runs_on_any_batch():
    """jaxtf checks symbolic-dimension constraints with Assert ops; TF.js has none, so
    they are left out (as the TFLite converter does) and the model takes any batch."""
    def fn(x):
        return jnp.sum(x, axis=0), (x * 2.0).reshape(-1), jnp.maximum(x, 0.5)
    f_tf = tf.function(convert(fn, polymorphic_shapes=["(b, 3)"], target="tfjs"),
                       autograph=False)
    model = rt.export(f_tf, [tf.TensorSpec([None, 3], tf.float32)])
    xs = [_RNG.normal(size=(n, 3)).astype(np.float32) for n in (1, 5)]
    for x, got in zip(xs, rt.run_many([(model, [x]) for x in xs])):
        for i, (g, w) in enumerate(zip(got, jax.jit(fn)(x))):
            assert_same(g, w, what=f"batch {len(x)} output {i} (in tfjs)")
