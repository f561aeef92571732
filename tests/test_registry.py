"""Registry: declaration checks, selection, ambiguity, error messages, plugins, CLI."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from core import convert
from core.errors import NoRuleError, RegistryError
from core.hookspecs import hookimpl
from core.coverage import coverage
from core.registry import Registry, build_registry
from core.rule import case, make_rule, rule, rules_of
from core.testing import rule_package


def _fn(ctx, x, y, **_):
    return tf.math.add(x, y)


def _eqn(f, *args):
    return jax.make_jaxpr(f)(*args).jaxpr.eqns[0]


def test_unknown_dtype_and_device_fail_at_declaration():
    with pytest.raises(ValueError, match="unknown dtype or dtype group 'flaot32'"):
        make_rule("add", _fn, dtypes="flaot32")
    with pytest.raises(ValueError, match="unknown devices.*'npu'"):
        make_rule("add", _fn, devices=("npu",))


def test_decorator_only_marks():
    @rule("add", dtypes="floating")
    def f(ctx, x, y):
        return x + y
    assert f(None, 1, 2) == 3                      # still the plain function
    (r,) = rules_of(f)
    assert r.primitive == "add" and "float32" in r.dtypes and "int32" not in r.dtypes
    assert r.id.endswith(":f")


def test_selection_by_dtype_priority_and_specificity():
    general = make_rule("add", _fn, dtypes="all", name="general")
    floats = make_rule("add", _fn, dtypes="floating", name="floats")
    favoured = make_rule("add", _fn, dtypes="integer", priority=5, name="favoured")
    reg = build_registry([rule_package("pkg", general, floats, favoured)], entry_points=False)
    f32 = _eqn(jnp.add, np.float32(1), np.float32(2))
    i32 = _eqn(jnp.add, np.int32(1), np.int32(2))
    b = _eqn(jnp.logical_or, True, False)
    assert reg.select(f32).id.endswith(":floats")        # more specific than "all"
    assert reg.select(i32).id.endswith(":favoured")      # higher priority
    assert reg.rules("add")[0].id.endswith(":favoured")  # index is ranked


def test_conditional_rule_and_xla_rule():
    cond = make_rule("add", _fn, dtypes="floating", name="only_scalars",
                     when=lambda e: None if not e.invars[0].aval.shape else "not a scalar")
    xla = make_rule("add", _fn, dtypes="floating", needs_xla=True, priority=9, name="xla")
    reg = build_registry([rule_package("pkg", cond, xla)], entry_points=False)
    vec = _eqn(jnp.add, np.ones(3, np.float32), np.ones(3, np.float32))
    with pytest.raises(NoRuleError) as err:
        reg.select(vec)
    msg = str(err.value)
    assert "not a scalar" in msg and "allow_xla=True" in msg
    assert reg.select(vec, allow_xla=True).id.endswith(":xla")
    assert reg.select(_eqn(jnp.add, np.float32(1), np.float32(1))).id.endswith(":only_scalars")


def test_equal_rank_overlap_is_an_error_at_build_time():
    a = make_rule("add", _fn, dtypes="floating", name="a")
    b = make_rule("add", _fn, dtypes=["float32", "float64", "bfloat16", "float16"], name="b")
    with pytest.raises(RegistryError, match="ambiguous rules for 'add'.*:a.*:b"):
        build_registry([rule_package("pkg", a, b)], entry_points=False)
    # same rank but disjoint devices is fine
    c = make_rule("add", _fn, dtypes="floating", devices=("gpu",), name="c")
    d = make_rule("add", _fn, dtypes="floating", devices=("cpu",), name="d")
    build_registry([rule_package("pkg", c, d)], entry_points=False)


def test_replaces_removes_the_target_and_unknown_target_is_an_error():
    base = make_rule("add", _fn, dtypes="floating", name="base")
    new = make_rule("add", _fn, dtypes="floating", name="new",
                    replaces=f"{__name__}:base")
    reg = build_registry([rule_package("pkg", base, new)], entry_points=False)
    assert [r.id for r in reg.rules("add")] == [f"{__name__}:new"]
    assert coverage(reg)[[r["primitive"] for r in coverage(reg)].index("add")]["status"] \
        == "overridden"
    bad = make_rule("add", _fn, replaces="nowhere:nothing", name="bad")
    with pytest.raises(RegistryError, match="replaces='nowhere:nothing'"):
        build_registry([rule_package("pkg", bad)], entry_points=False)


def test_failing_package_is_recorded_unless_strict():
    broken = types.ModuleType("broken")

    @hookimpl
    def register_rules(register):
        raise ImportError("needs a library that is not installed")
    broken.register_rules = register_rules
    ok = rule_package("ok", make_rule("add", _fn, name="fine"))
    reg = build_registry([ok], plugins=[broken], entry_points=False, strict=False)
    rec = {p.name: p for p in reg.plugins}
    assert "ImportError: needs a library" in rec["broken"].error
    assert rec["ok"].rule_count == 1 and rec["ok"].error is None
    with pytest.raises(RegistryError, match="'broken'.*failed to load"):
        build_registry([ok], plugins=[broken], entry_points=False, strict=True)
    with pytest.raises(RegistryError, match="'broken'.*builtin.*failed to load"):
        build_registry([broken, ok], entry_points=False, strict=False)   # built-ins always raise


def test_no_rule_error_lists_every_gap_with_location_and_candidates():
    floats_only = make_rule("add", _fn, dtypes="floating", name="floats_only")
    reg = build_registry([rule_package("pkg", floats_only)], entry_points=False)

    def program(x, i):
        y = x + x
        return y, i + i, i + 1, jnp.sin(x)   # two int adds, one sin: no rules

    with pytest.raises(NoRuleError) as err:
        convert(program, registry=reg)(np.ones(3, np.float32), np.ones(3, np.int32))
    msg = str(err.value)
    assert msg.startswith("3 equations in program have no usable rule (device cpu")
    assert "add  dtypes {int32} (2 equations)" in msg
    assert "sin  dtypes {float32}" in msg
    assert "int32 not in {floating}" in msg and "floats_only" in msg
    assert "test_registry.py:" in msg                     # the user's source line
    assert "no rule for 'sin' in any loaded package" in msg
    assert len(err.value.gaps) == 3


def test_default_registry_builds_strictly():
    reg = build_registry(strict=True, entry_points=False)
    assert "jit" in reg.primitives()
    assert all(p.error is None for p in reg.plugins)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "core.registry", *args], capture_output=True,
                          text=True, timeout=600, env={**__import__("os").environ,
                                                       "TF_CPP_MIN_LOG_LEVEL": "3"})


def test_cli_list_json_covers_every_jax_primitive():
    out = _cli("list", "--json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    names = {r["primitive"] for r in rows}
    # every primitive a program using JAX's public modules can lower, found independently
    probe = subprocess.run([sys.executable, "-c", (
        "import jax, jax.numpy, jax.random, jax.nn, jax.scipy.special, jax.lax.linalg\n"
        "from jax._src.interpreters import mlir\n"
        "names = {p.name for p in mlir._lowerings}\n"
        "[names.update(p.name for p in t) for t in mlir._platform_specific_lowerings.values()]\n"
        "print('\\n'.join(sorted(names)))")], capture_output=True, text=True, timeout=600)
    expected = set(probe.stdout.split())
    assert len(expected) > 150 and expected <= names, sorted(expected - names)
    assert all({"primitive", "status", "plugin"} <= set(r) for r in rows)
    by = {r["primitive"]: r for r in rows}
    assert by["jit"]["status"] == "covered" and by["jit"]["plugin"] == "rules_lax"
    assert any(r["status"] == "missing" for r in rows)


def test_cli_explain_and_plugins():
    out = _cli("explain", "jit")
    assert out.returncode == 0 and "TAKEN" in out.stdout and "inline_jit" in out.stdout
    out = _cli("explain", "no_such_primitive")
    assert out.returncode == 1 and "no rule lowers 'no_such_primitive'" in out.stdout
    out = _cli("plugins")
    assert out.returncode == 0 and "rules_lax" in out.stdout and "builtin" in out.stdout


def test_cli_list_filters_and_markdown():
    out = _cli("list", "--json", "--primitive", "custom_*_call")
    assert {r["primitive"] for r in json.loads(out.stdout)} == {
        "custom_jvp_call", "custom_vjp_call", "custom_vmap_call"}
    out = _cli("list", "--json", "--status", "missing")
    assert out.returncode == 0 and all(r["status"] == "missing" for r in json.loads(out.stdout))
    out = _cli("list", "--markdown", "--primitive", "jit")
    assert out.stdout.startswith("| primitive | status |") and "| `jit` | covered |" in out.stdout


def test_cli_check_reports_the_whole_program():
    out = _cli("check", "tests.test_registry:_program_for_check", "f32[4]", "i32[4]")
    assert "uses" in out.stdout and "jit" in out.stdout
    assert out.returncode == 0, out.stdout + out.stderr     # jit, mul, add all have rules
    assert "every equation has a rule" in out.stdout
    out = _cli("check", "tests.test_registry:_program_with_gap", "f32[4]")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "no usable rule" in out.stdout and "test_registry_no_rule" in out.stdout


def test_cli_is_quiet_unless_asked(tmp_path):
    import os
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    out = subprocess.run([sys.executable, "-m", "core.registry", "plugins"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "rules_lax" in out.stdout
    assert "oneDNN" not in out.stderr and "absl::InitializeLog" not in out.stderr, out.stderr
    # the lines TF writes while it is imported pass on when at or above the user's level
    (tmp_path / "tensorflow").mkdir()
    (tmp_path / "tensorflow" / "__init__.py").write_text(
        "import os, warnings\n"
        "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called\\n'"
        " b'I0000 00:00:1.5 1 port.cc:153] oneDNN\\nW0000 00:00:1.5 1 a.cc:1] warned\\n'"
        " b'2026-01-01 10:00:00.5: E tsl/b.cc:2] failed\\nplain line\\n')\n"
        "warnings.warn('from python')\n")
    code = "from core import _import_tensorflow_quietly as q; q(); import tensorflow"
    words = ["oneDNN", "absl", "warned", "failed", "plain line", "from python"]
    for level, shown in [("1", words[2:]), ("3", words[4:]), ("0", words)]:
        err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=600, env={**env, "TF_CPP_MIN_LOG_LEVEL": level,
                                               "PYTHONPATH": f"{tmp_path}{os.pathsep}{os.getcwd()}"},
                             ).stderr
        assert [w for w in words if w in err] == shown, (level, err)

def _program_for_check(x, i):
    return jax.jit(lambda a: a * 2)(x), i + 1


def _program_with_gap(x):
    from jax.extend.core import Primitive
    prim = Primitive("test_registry_no_rule")       # a primitive no package lowers
    prim.def_abstract_eval(lambda a: a)
    return prim.bind(x) + 1


def test_docs_coverage_table_is_current():
    """docs/coverage.md is generated: `python -m core.registry list --markdown` with
    plugin autoload off (built-in rules only)."""
    import os
    env_out = subprocess.run([sys.executable, "-m", "core.registry", "list", "--markdown"],
                             capture_output=True, text=True, timeout=600,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
                                  "JAXTF_DISABLE_PLUGIN_AUTOLOAD": "1"})
    with open(os.path.join(os.path.dirname(__file__), "..", "docs", "coverage.md")) as f:
        doc = f.read()
    table = doc.split("<!-- generated -->\n", 1)[-1]
    assert table.strip() == env_out.stdout.strip(), (
        "docs/coverage.md is stale: regenerate it with `python tests/regen_docs.py`")
