"""Registry: declaration checks, selection, ambiguity, error messages, plugins, CLI."""
from __future__ import annotations

import contextlib
import io
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
from core.testkit import rule_package


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


def test_rules_are_polymorphic_unless_they_say_not():
    from jax import export
    (b,) = export.symbolic_shape("b")
    eqn = _eqn(lambda x: x + x, jax.ShapeDtypeStruct((b, 3), np.float32))
    assert make_rule("add", _fn).reject_reason(["float32"], "cpu", False, eqn) is None
    static = make_rule("add", _fn, polymorphic=False)
    assert "symbolic dimensions" in static.reject_reason(["float32"], "cpu", False, eqn)
    assert static.reject_reason(["float32"], "cpu", False,
                                _eqn(lambda x: x + x, np.zeros(3, np.float32))) is None


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
    """``python -m core.registry ARGS``, run in this process (the module's ``__main__``
    only calls ``core.coverage.main``; test_cli_list_json_covers_every_jax_primitive and
    test_cli_is_quiet_unless_asked start the real command)."""
    from core.coverage import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_list_json_covers_every_jax_primitive():
    out = subprocess.run([sys.executable, "-m", "core.registry", "list", "--json"],
                         capture_output=True, text=True, timeout=600,
                         env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
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
    assert all({"notes", "symbolic"} <= set(r) for r in rows)


def test_every_jax_primitive_has_a_rule_or_a_declared_status():
    """Fails when a JAX version brings a primitive nobody has looked at: give it a rule,
    or a status and its reason in core/statuses.py. (Installed plugins count: a test run
    imports plugins_example, whose rms_norm primitive then has a lowering.)"""
    from core.coverage import all_jax_primitives
    from core.statuses import CONDITIONS, GUARD, NO_RULE
    reg = build_registry(strict=True)
    rows = coverage(reg)
    missing = sorted(r["primitive"] for r in rows if r["status"] == "missing")
    assert not missing, f"primitives with neither a rule nor a status in core/statuses.py: {missing}"
    assert all(r["notes"] for r in rows if r["status"] not in ("covered", "overridden"))
    stale = sorted(set(NO_RULE) & set(reg.primitives()))
    assert not stale, f"core/statuses.py declares a status for primitives with rules: {stale}"
    gone = sorted(set(NO_RULE) - set(all_jax_primitives()))
    assert not gone, f"core/statuses.py names primitives this JAX does not have: {gone}"
    # every declared condition names a rule or a condition function that exists
    conds = {r.id for r in reg.rules()} | {
        f"{r.when.__module__}:{r.when.__qualname__}" for r in reg.rules() if r.when}
    assert set(CONDITIONS) <= conds, sorted(set(CONDITIONS) - conds)
    assert all(v.startswith(GUARD) or v for v in CONDITIONS.values())


def test_partial_only_where_a_declared_valid_form_is_refused():
    rows = {r["primitive"]: r for r in coverage(build_registry(strict=True,
                                                               entry_points=False))}
    # conditions that reject no valid program, or whose forms another rule takes
    for p in ("pow", "rng_bit_generator", "broadcast_in_dim", "custom_jvp_call", "psum"):
        assert rows[p]["status"] == "covered", rows[p]
    assert rows["qr"]["status"] == "partial" and "pivoting=True" in rows["qr"]["notes"]
    assert rows["shard_map"]["status"] == "partial" and "size > 1" in rows["shard_map"]["notes"]
    assert rows["psend"]["status"] == "unsupported" and "device" in rows["psend"]["notes"]
    assert rows["tile"]["symbolic"] == "yes"


def test_no_rule_error_gives_the_declared_status():
    from core.registry import Gap, format_gaps
    text = format_gaps([Gap("psend", ("float32",), "here", "", "", [])], "cpu", False)
    assert "no rule for 'psend': unsupported: a point-to-point send" in text


def test_cli_explain_and_plugins():
    out = _cli("explain", "jit")
    assert out.returncode == 0 and "TAKEN" in out.stdout and "inline_jit" in out.stdout
    out = _cli("explain", "no_such_primitive")
    assert out.returncode == 1 and "no rule lowers 'no_such_primitive'" in out.stdout
    out = _cli("explain", "psend")
    assert out.returncode == 1 and "unsupported: a point-to-point send" in out.stdout
    out = _cli("plugins")
    assert out.returncode == 0 and "rules_lax" in out.stdout and "builtin" in out.stdout


def test_cli_list_filters_and_markdown():
    out = _cli("list", "--json", "--primitive", "custom_*_call")
    assert {r["primitive"] for r in json.loads(out.stdout)} == {
        "custom_jvp_call", "custom_vjp_call", "custom_vmap_call"}
    out = _cli("list", "--json", "--status", "unsupported")
    rows = json.loads(out.stdout)
    assert out.returncode == 0 and rows and all(r["status"] == "unsupported" and r["notes"]
                                                for r in rows)
    out = _cli("list", "--markdown", "--primitive", "jit")
    assert out.stdout.startswith("| primitive | status |") and "| `jit` | covered |" in out.stdout


def test_cli_check_reports_the_whole_program():
    out = _cli("check", "tests.test_registry:_program_for_check", "f32[4]", "i32[4]")
    assert "uses" in out.stdout and "jit" in out.stdout
    assert out.returncode == 0, out.stdout + out.stderr     # jit, mul, add all have rules
    assert "every equation has a rule" in out.stdout
    out = _cli("check", "tests.test_registry:_program_for_check", "f32[4]", "i32[4]", "--json")
    report = json.loads(out.stdout)
    assert out.returncode == 0 and not report["gaps"]
    assert {(u["primitive"], u["rule"]) for u in report["uses"]} == {
        ("jit", "rules_lax.control_flow:inline_jit"), ("mul", "rules_lax.elementwise:mul"),
        ("add", "rules_lax.elementwise:add")}
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

def test_explain_shows_conditional_rules_with_their_condition():
    from core.coverage import explain
    reg = build_registry(strict=True, entry_points=False)

    def verdicts(prim, dts):
        return {c["rule"]: c["verdict"] for c in explain(prim, dts, registry=reg)["candidates"]}
    # a condition on dtypes alone is judged: key operands take the key rule, others do not
    assert verdicts("broadcast_in_dim", ["float32"]) == {
        "rules_lax.narrow:widened": "rejected", "rules_random.keys:key_data_shape_op": "rejected",
        "rules_random.keys:key_data_shape_op_tflite": "rejected",
        "rules_lax.structural:broadcast_in_dim_f64_tflite": "rejected",
        "rules_lax.structural:broadcast_in_dim": "taken"}
    v = verdicts("broadcast_in_dim", ["key<fry>"])
    assert v["rules_random.keys:key_data_shape_op"] == "taken"
    assert v["rules_lax.structural:broadcast_in_dim"] == "rejected"   # claims no key dtype
    # a condition on parameters is shown as a condition, with the forms it refuses
    exp = {c["rule"]: c for c in explain("exp", ["float32"], registry=reg)["candidates"]}
    c = exp["rules_lax.elementwise:unary_exp"]
    assert c["verdict"] == "conditional" and c["condition"] == "_no_accuracy"
    assert "accuracy=" in c["refuses"]
    v = verdicts("custom_jvp_call", ["float32"])
    assert v["rules_nn.activations:relu_fused"] == "conditional"
    assert v["rules_lax.control_flow:custom_jvp_primal"] == "taken"
    # a declared guard is not a condition that can decline
    assert verdicts("rng_bit_generator", ["uint32"])["rules_random.rbg:rng_bit_generator"] == "taken"
    out = _cli("explain", "exp", "--json")
    assert json.loads(out.stdout)["candidates"][1]["verdict"] == "conditional"


def _program_for_check(x, i):
    return jax.jit(lambda a: a * 2)(x), i + 1


def _program_with_gap(x):
    from jax.extend.core import Primitive
    prim = Primitive("test_registry_no_rule")       # a primitive no package lowers
    prim.def_abstract_eval(lambda a: a)
    return prim.bind(x) + 1


def _relu_and_random(x, k):
    u = jax.random.uniform(jax.random.key(k), x.shape)
    return jax.nn.relu(x) * u + jnp.tile(x, (1, 2))[:, :3]


def _broadcasts(x):
    return jnp.broadcast_to(x[:, None], (4, 2, 3)).sum() + jnp.exp(x).max()


def _keys(k, x):
    keys = jax.random.split(jax.random.key(k), 4)
    return jax.random.key_data(jnp.broadcast_to(keys[None], (2, 4))), x * 2


@pytest.mark.parametrize("fn, specs, args", [
    (_broadcasts, ["f32[4,3]"], [np.ones((4, 3), np.float32)]),
    (_relu_and_random, ["f32[4,3]", "u32[]"], [np.ones((4, 3), np.float32), np.uint32(3)]),
    (_keys, ["u32[]", "f32[2]"], [np.uint32(1), np.ones(2, np.float32)]),
])
def test_check_reports_the_rules_convert_uses(fn, specs, args):
    """``check`` names, per equation, the rule conversion really takes: the key-array rule
    only where keys are, the fused relu and not the max inside it, and the rules' own
    decompositions marked as such."""
    from core import convert
    from core.coverage import check
    reg = build_registry(strict=True, entry_points=False)
    uses, gaps, refused = check(f"tests.test_registry:{fn.__name__}", specs, registry=reg)
    assert not gaps and not refused
    converted = convert(fn, registry=reg)
    converted(*args)
    assert {u["rule"] for u in uses} == converted.conv.used
    by_prim = {(u["primitive"], u["via"]): u["rule"] for u in uses}
    if fn is _broadcasts:
        assert by_prim[("broadcast_in_dim", "program")] == "rules_lax.structural:broadcast_in_dim"
    if fn is _relu_and_random:
        assert by_prim[("custom_jvp_call", "program")] == "rules_nn.activations:relu_fused"
        assert ("threefry2x32", "decomposition") in by_prim
    if fn is _keys:
        assert by_prim[("broadcast_in_dim", "program")] == "rules_random.keys:key_data_shape_op"


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
