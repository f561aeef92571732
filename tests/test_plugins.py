"""Third-party rule packages: the installed plugins_example, broken entry points, strict
mode, blocking, overrides and name clashes."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import convert
from core.errors import RegistryError
from core.registry import build_registry
from core.rule import make_rule
from core.testkit import rule_package

jaxtf_rmsnorm = pytest.importorskip(
    "jaxtf_rmsnorm", reason="plugins_example is not installed: pip install -e plugins_example")


def _broken_dist(tmp_path, target="no_such_module_for_jaxtf_tests"):
    info = tmp_path / "jaxtf_broken_plugin-0.0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jaxtf-broken-plugin\n"
                                   "Version: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[jaxtf.rules]\nbroken = {target}\n")
    return str(tmp_path)


def test_installed_plugin_is_listed_and_used():
    reg = build_registry()
    rec = {p.name: p for p in reg.plugins}["rmsnorm"]
    assert (rec.source, rec.distribution, rec.version) == ("entry point", "jaxtf-rmsnorm", "0.1.0")
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    s = np.ones(8, np.float32)
    got = convert(jaxtf_rmsnorm.rms_norm, registry=reg)(x, s).numpy()
    np.testing.assert_allclose(got, np.asarray(jax.jit(jaxtf_rmsnorm.rms_norm)(x, s)),
                               rtol=1e-5, atol=1e-6)


def test_broken_entry_point_is_recorded_not_raised(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(_broken_dist(tmp_path))
    reg = build_registry(strict=False)
    rec = {p.name: p for p in reg.plugins}["broken"]
    assert rec.distribution == "jaxtf-broken-plugin" and rec.version == "0.0.1"
    assert "ModuleNotFoundError" in rec.error and "no_such_module_for_jaxtf_tests" in rec.error
    assert "rms_norm" in reg.primitives()          # the working plugin is still there
    with pytest.raises(RegistryError, match="'broken' \\(entry point\\) failed to load"):
        build_registry(strict=True)
    reg = build_registry(strict=False, blocked=["broken"])
    assert "blocked" in {p.name: p for p in reg.plugins}["broken"].error


def test_environment_switches(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(_broken_dist(tmp_path))
    monkeypatch.setenv("JAXTF_STRICT_PLUGINS", "1")
    with pytest.raises(RegistryError):
        build_registry()
    monkeypatch.setenv("JAXTF_BLOCK_PLUGINS", "broken, other")
    assert "broken" not in [p.name for p in build_registry().plugins if not p.error]
    monkeypatch.delenv("JAXTF_BLOCK_PLUGINS")
    monkeypatch.setenv("JAXTF_DISABLE_PLUGIN_AUTOLOAD", "1")
    names = [p.name for p in build_registry().plugins]
    assert "broken" not in names and "rmsnorm" not in names


def test_cli_keeps_working_with_a_broken_plugin(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join([_broken_dist(tmp_path), os.getcwd()])}
    run = lambda *a: subprocess.run([sys.executable, "-m", "core.registry", *a], env=env,
                                    capture_output=True, text=True, timeout=600)
    out = run("plugins")
    assert out.returncode == 0
    assert "broken" in out.stdout and "FAILED: ModuleNotFoundError" in out.stdout
    assert "rmsnorm" in out.stdout and "jaxtf-rmsnorm" in out.stdout
    out = run("list", "--json", "--plugin", "rmsnorm")
    rows = json.loads(out.stdout)
    assert [r["primitive"] for r in rows] == ["rms_norm"] and rows[0]["status"] == "covered"


def _double(ctx, x, scale, **_):
    return x * 2


def test_plugin_that_clashes_with_a_builtin_is_left_out():
    clash = rule_package("clash", make_rule("jit", _double, dtypes=("all", "key"), name="my_jit"))
    reg = build_registry(plugins=[clash], entry_points=False)
    assert "ambiguous rules for 'jit'" in {p.name: p for p in reg.plugins}["clash"].error
    assert [r.package for r in reg.rules("jit")] == ["rules_lax"]


def test_explicit_replacement_and_priority_shadowing():
    from core.coverage import coverage
    repl = rule_package("repl", make_rule("jit", _double, replaces="rules_lax.control_flow:inline_jit",
                                  name="my_jit"))
    reg = build_registry(plugins=[repl], entry_points=False)
    assert [r.id for r in reg.rules("jit")] == [f"{__name__}:my_jit"]
    row = next(r for r in coverage(reg) if r["primitive"] == "jit")
    assert row["status"] == "overridden"
    loud = rule_package("loud", make_rule("jit", _double, priority=10, name="loud_jit"))
    reg = build_registry(plugins=[loud], entry_points=False)
    row = next(r for r in coverage(reg) if r["primitive"] == "jit")
    assert row["status"] == "shadowed" and row["plugin"] == "loud, rules_lax"


def test_two_primitives_with_one_name_are_detected():
    from jax.extend.core import Primitive
    other = Primitive("rms_norm")           # another library's primitive, same name
    impostor = rule_package("impostor", make_rule(other, _double, dtypes="floating", name="imp"))
    reg = build_registry(plugins=[impostor], strict=False)
    # packages given as arguments load before entry points, so the entry point is refused
    err = {p.name: p for p in reg.plugins}["rmsnorm"].error
    assert "two different primitives are named 'rms_norm'" in err and "impostor" in err
    x = np.ones((2, 4), np.float32)
    with pytest.raises(Exception, match="lowers a different primitive that is also named"):
        convert(jaxtf_rmsnorm.rms_norm, registry=reg)(x, np.ones(4, np.float32))


def test_per_conversion_overrides():
    import tensorflow as tf
    from jaxtf_rmsnorm import rms_norm_p

    def halve(ctx, x, scale, *, eps):
        return x / 2
    x = np.ones((2, 4), np.float32)
    s = np.ones(4, np.float32)
    f = convert(jaxtf_rmsnorm.rms_norm, rules=[make_rule(rms_norm_p, halve, priority=5,
                                                         dtypes="floating")])
    np.testing.assert_array_equal(f(x, s).numpy(), x / 2)
    f = convert(jaxtf_rmsnorm.rms_norm, disable_rules=["jaxtf_rmsnorm.tf_rules:rms_norm_tf"])
    with pytest.raises(Exception, match="no rule for 'rms_norm'"):
        f(x, s)
    with pytest.raises(ValueError, match="prefer: no rule 'nope' lowers 'rms_norm'"):
        convert(jaxtf_rmsnorm.rms_norm, prefer={"rms_norm": "nope"})


def _sin(ctx, x, **_):
    import tensorflow as tf
    return tf.math.sin(x)


def test_the_test_kit_honours_a_rules_constraints():
    """A plugin's XLA-only rule runs its cases with XLA allowed; a GPU-only rule's cases
    are skipped on CPU with the reason, not failed."""
    from jax import lax
    from core.rule import case
    from core.testkit import run_rule_case
    sin_case = case.random(lax.sin, shapes=[(3,)])
    xla = make_rule("sin", _sin, dtypes="float32", needs_xla=True, priority=-1,
                    name="sin_xla", cases=[sin_case])
    gpu = make_rule("sin", _sin, dtypes="float32", devices="gpu", priority=-2,
                    name="sin_gpu", cases=[sin_case])
    reg = build_registry(plugins=[rule_package("constrained", xla, gpu)], entry_points=False)
    assert run_rule_case(xla, sin_case, "float32", reg).status == "pass"
    out = run_rule_case(gpu, sin_case, "float32", reg)
    assert out.status == "skipped" and "runs on gpu, not on cpu" in out.detail
