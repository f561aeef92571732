"""Export targets: rules declared for a target, selection, the op pre-flight and its error,
the accepted-op table read from the runtime, the TFLite round trip, the CLI."""
from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from core import convert
from core.errors import TargetError
from core.export import run_tflite, tflite_model
from core.registry import build_registry
from core.rule import make_rule
from core.targets import TARGETS, get
from core.testkit import rule_package
from tests.test_registry import _cli


_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sin_generic(ctx, x, **_):
    return tf.math.sin(x)


def _sin_refused(ctx, x, **_):
    return tf.math.special.bessel_i1e(x) * 0 + tf.math.sin(x)   # BesselI1e: not a builtin


def _sin_for_tflite(ctx, x, **_):
    return tf.math.sin(x)


def _eqn(f, *args):
    return jax.make_jaxpr(f)(*args).jaxpr.eqns[0]


def test_unknown_target_fails_at_declaration_and_at_convert():
    with pytest.raises(ValueError, match="unknown targets.*'tpu-lite'"):
        make_rule("sin", _sin_generic, targets="tpu-lite")
    with pytest.raises(ValueError, match="unknown target 'tflight'.*tflite"):
        convert(jnp.sin, target="tflight")


def test_a_target_rule_is_used_only_there_and_first():
    generic = make_rule("sin", _sin_generic, dtypes="floating", name="generic")
    lite = make_rule("sin", _sin_for_tflite, dtypes="float32", targets="tflite", name="lite")
    reg = build_registry([rule_package("pkg", generic, lite)], entry_points=False)
    f32 = _eqn(jnp.sin, np.float32(1))
    f16 = _eqn(jnp.sin, np.float16(1))
    assert reg.select(f32).id.endswith(":generic")                   # tf never takes it
    assert reg.select(f32, target="tflite").id.endswith(":lite")     # tflite prefers it
    assert reg.select(f16, target="tflite").id.endswith(":generic")  # falls back
    reasons = {c.rule.id.split(":")[-1]: c.reason for c in reg.candidates("sin", ["float32"])}
    assert reasons["lite"] == "written for target tflite, not tf"


def test_equal_rules_for_different_targets_are_no_tie():
    a = make_rule("sin", _sin_generic, dtypes="float32", name="a")
    b = make_rule("sin", _sin_for_tflite, dtypes="float32", targets="tflite", name="b")
    build_registry([rule_package("pkg", a, b)], entry_points=False)       # no RegistryError


def test_preflight_names_every_refused_equation_before_export():
    refused = make_rule("sin", _sin_refused, dtypes="floating", name="refused")
    cos = make_rule("cos", _sin_refused, dtypes="floating", name="cos_refused")

    def f(x):
        return jnp.sin(x) + jnp.cos(jnp.sin(x))
    base = build_registry(entry_points=False)
    reg_full = base.with_overrides(add=[refused, cos], disable=[
        r.id for p in ("sin", "cos") for r in base.rules(p)])
    with pytest.raises(TargetError) as info:
        convert(f, target="tflite", registry=reg_full)(np.ones(3, np.float32))
    msg = str(info.value)
    assert "3 equations in f cannot be lowered for target 'tflite'" in msg
    assert "sin  dtypes {float32} (2 equations)" in msg and "cos  dtypes {float32}" in msg
    assert "BesselI1e is not a TFLite/LiteRT builtin op" in msg
    assert "test_targets.py" in msg                    # the user's source line
    assert "Ways out:" in msg and "target='tf'" in msg
    assert len(info.value.refusals) == 3
    # the same registry for TF converts: the pre-flight is the target's
    out = convert(f, registry=reg_full)(np.ones(3, np.float32))
    np.testing.assert_allclose(out, np.sin(1) + np.sin(np.sin(1)), rtol=1e-6)  # "cos" is sin


def test_table_is_read_from_the_runtime():
    lite = get("tflite")
    data = lite._data
    assert data["how"] == "python -m core.probe tflite"
    assert data["runtime"].startswith(("ai-edge-litert", "tf.lite.Interpreter"))
    assert "float32->float32" in lite.accepted["Sin"]
    assert "BesselI1e" not in lite.accepted
    assert "uint32->uint32" not in lite.accepted.get("LeftShift", ())   # measured refusal
    assert TARGETS["tf"].accepted is None


def test_tflite_round_trip_matches_jax():
    w = np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3)

    def mlp(x):
        return jax.nn.relu(x @ w) * 2 - jnp.tanh(x[:, :3])
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    f_tf = tf.function(convert(mlp, target="tflite"), autograph=False)
    model = tflite_model(f_tf, [tf.TensorSpec([5, 4], tf.float32)])
    (got,) = run_tflite(model, [x])
    np.testing.assert_allclose(got, jax.jit(mlp)(x), rtol=1e-5, atol=1e-6)


def test_bfloat16_inputs_are_fed_as_float32_and_results_rounded():
    def f(x):
        return (x * jnp.bfloat16(1.01)) * jnp.bfloat16(1.01)
    f_tf = tf.function(convert(f, target="tflite"), autograph=False)
    model = tflite_model(f_tf, [tf.TensorSpec([4], tf.bfloat16)])
    x = np.array([1.5, -2.0, 3.0, 1.2345], np.float32)
    (got,) = run_tflite(model, [x])
    # LiteRT may hand a bfloat16 result out as float32: it must hold the bfloat16 value,
    # rounded after each multiplication as XLA does
    want = np.asarray(jax.jit(f)(x.astype(jnp.bfloat16))).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(got, np.float32), want)


def test_cli_list_and_explain_per_target():
    out = _cli("list", "--target", "tflite", "--primitive", "sin")
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(ln for ln in out.stdout.splitlines() if ln.startswith("sin "))
    assert "float32" in row or "floating" in row
    out = _cli("explain", "sin", "--target", "tflite")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "target tflite" in out.stdout and "accepted by tflite" in out.stdout


def test_zero_size_inputs_are_refused_for_tflite():
    with pytest.raises(TargetError, match=r"cannot hold zero-size tensors.*input 0 has shape "
                                          r"\(3, 0\)"):
        convert(lambda x: x * 2, target="tflite").trace(np.zeros((3, 0), np.float32))


def test_infinities_survive_the_tflite_converter():
    """The converter rewrites an inf constant as the largest float: jaxtf makes them at
    run time (a masked softmax and a max with -inf are the common cases)."""
    def f(x, m):
        logits = jnp.where(m, x, -jnp.inf)
        return jax.nn.softmax(logits), jnp.maximum(x, -jnp.inf), x * jnp.inf
    x = np.array([1.0, -2.0, 0.5, 3.0], np.float32)
    m = np.array([True, False, True, False])
    f_tf = tf.function(convert(f, target="tflite"), autograph=False)
    model = tflite_model(f_tf, [tf.TensorSpec([4], tf.float32), tf.TensorSpec([4], tf.bool)])
    for got, want in zip(run_tflite(model, [x, m]), jax.jit(f)(x, m)):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_loop_carry_moved_to_another_position_is_right_in_litert():
    """LiteRT's WHILE copies a body's outputs into its inputs one by one, so an output
    that is another position's input read it already overwritten (silently wrong): jaxtf
    copies such outputs through an op the converter keeps."""
    from core.testkit import run_function

    def rotate(x):
        return jax.lax.fori_loop(0, 3, lambda i, s: (s[0] + s[2], s[0] * 2.0, s[1]),
                                 (x, x * 3.0, x * 5.0))

    def scan_rotate(x):
        return jax.lax.scan(lambda c, _: ((c[1], c[2], c[0] + c[1]), c[0]), (x, 2 * x, 3 * x),
                            None, length=4)
    x = np.array([1.0, -0.0], np.float32)
    for fn in (rotate, scan_rotate):
        out = run_function(fn, [x], target="tflite")
        assert out.ok, out.detail
    out = run_function(rotate, [np.arange(5, dtype=np.float32)], target="tflite",
                       polymorphic_shapes=["(n,)"])
    assert out.ok, out.detail


def test_tflite_complex_abs_and_a_complex128_input():
    """complex64 abs runs in LiteRT (inf and NaN parts included); a complex128 input with
    x64 off needs a complex128 -> complex64 Cast LiteRT has not: a TargetError naming
    it, not a converter crash (found by tests/fuzz.py)."""
    from core.errors import TargetError
    from core.testing import run_function
    z = np.array([3 + 4j, complex(np.inf, np.nan), -0j, complex(np.nan, 1), 1e30 + 1e30j])
    out = run_function(jax.lax.abs, [z.astype(np.complex64)], target="tflite")
    assert out.ok, out.detail
    with pytest.raises(TargetError, match=r"Cast\(complex128->complex64\).*complex64 arrays"):
        convert(jax.lax.abs, target="tflite")(tf.constant(z))


def test_export_command_writes_and_checks_every_format(tmp_path):
    """`python -m core export` (the `jaxtf` command): each format written, run in its
    runtime and compared with jax.jit, a table printed; exit status 0 when all match."""
    out = subprocess.run(
        [sys.executable, "-m", "core", "export", "examples.convert_mlp:predict", "f32[b,784]",
         "--params", "examples.convert_mlp:trained_params", "--out", str(tmp_path),
         "--to", "saved_model,tflite,onnx,tfjs", "--sizes", "b=3"],
        capture_output=True, text=True, cwd=_ROOT, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = {ln.split()[0]: ln for ln in out.stdout.splitlines()[1:] if ln.strip()}
    for fmt in ("saved_model", "tflite", "onnx", "tfjs"):
        assert " ok " in rows[fmt], out.stdout
    assert (tmp_path / "model.tflite").exists() and (tmp_path / "model.onnx").exists()
    assert (tmp_path / "saved_model" / "saved_model.pb").exists()
    assert "[4/4] tfjs" in out.stderr


def test_export_command_names_a_bad_spec():
    out = subprocess.run([sys.executable, "-m", "core", "export", "examples.convert_mlp:predict",
                          "f32(3,784)", "--out", "/tmp/unused"],
                         capture_output=True, text=True, cwd=_ROOT, timeout=120)
    assert out.returncode == 1
    assert "cannot read input spec 'f32(3,784)'; write it as f32[8,784]" in out.stderr


def _sampler(key_data, x):
    k1, k2 = jax.random.split(jax.random.wrap_key_data(key_data))
    return x + jax.random.normal(k1, x.shape), jax.random.randint(k2, (3,), 0, 10)


def test_export_of_a_sampler_taking_key_data_matches_jax_in_every_format(tmp_path):
    """A uint32 key input: TF.js holds it as int32 bits (fed as key.view(np.int32)), the
    other formats as uint32; every artifact gives JAX's bits."""
    from core.export import export_model
    results = export_model(_sampler, ["u32[2]", "f32[4]"], str(tmp_path),
                           to=("saved_model", "tflite", "onnx", "tfjs"), progress=lambda m: None)
    assert [r.format for r in results if r.matches] == ["saved_model", "tflite", "onnx", "tfjs"], \
        [(r.format, r.detail) for r in results]


def test_tflite_trig_of_large_arguments_is_a_known_mismatch():
    """A listed limitation (README): LiteRT's float32 sin/cos/tan lose the argument's
    reduction from |x| ~ 1e6. Pinned to its status: when this fails, the limitation is gone
    (or became a refusal); update README."""
    from core.testkit import run_function
    for fn, x in ((jnp.sin, [1.0e7, 3.0e7]), (jnp.cos, [5.0e6]), (jnp.tan, [1.0e6])):
        out = run_function(fn, [np.array(x, np.float32)], target="tflite")
        assert out.status == "mismatch", (fn.__name__, out)
    ok = run_function(jnp.sin, [np.array([1e3, -2.5e4, 0.5], np.float32)], target="tflite")
    assert ok.status == "pass", ok
