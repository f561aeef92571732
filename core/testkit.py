"""The test kit for rules, JAX as the oracle: what a rule package (this repo's or a
plugin's) needs to check its rules against ``jax.jit``.

- :func:`run_rule_case`: one of a rule's own cases, for one dtype, with that rule pinned
  (it honours the rule's ``needs_xla`` and ``devices``); :func:`run_rule_case_dtypes`:
  the same for several dtypes in one conversion;
- :func:`run_function`: any JAX function, converted and run (in TF or in an export
  target's runtime) and compared with ``jax.jit``;
- :func:`assert_same` and :data:`TOLERANCES`: the comparison, with per-dtype tolerances
  stated once; :func:`graph_op_types` / :func:`xla_ops`: what a converted graph holds;
- :func:`rule_package`: a throwaway rule package, to build a registry from chosen rules.

This repo's own suite adds its internals in :mod:`core.testing` (JAX's harness runner and
the checks of decompositions that are not unique).
"""
from __future__ import annotations

import dataclasses
import traceback
from typing import Any, Callable, Sequence

import numpy as np

#: Tolerances by dtype name, used everywhere results are compared with JAX. Integer, bool
#: and key results must match exactly. Stated once here; never loosened per test.
TOLERANCES: dict[str, dict[str, float]] = {
    "bfloat16": dict(rtol=1e-2, atol=1e-2),
    "float16": dict(rtol=1e-3, atol=1e-3),
    "float32": dict(rtol=1e-5, atol=1e-6),
    "float64": dict(rtol=1e-12, atol=1e-13),
    "complex64": dict(rtol=1e-5, atol=1e-6),
    "complex128": dict(rtol=1e-12, atol=1e-13),
}


def tolerance_for(dtype) -> dict[str, float]:
    name = np.dtype(dtype).name
    return TOLERANCES.get(name, dict(rtol=0.0, atol=0.0))


class Mismatch(AssertionError):
    """Converted output differs from JAX's: a wrong number."""


def assert_same(got, want, what: str = "output", signed_zeros: bool = False) -> None:
    """Compare one converted output with JAX's, with the tolerance of JAX's dtype; NaN
    and infinities must sit where JAX has them. ``signed_zeros``: where both are zero,
    the signs must agree too (a real or imaginary part of -0.0 against +0.0 differs)."""
    want = np.asarray(want)
    got = np.asarray(got)
    if got.shape != want.shape:
        raise Mismatch(f"{what}: shape {got.shape}, JAX gives {want.shape}")
    if got.dtype != want.dtype:
        raise Mismatch(f"{what}: dtype {got.dtype}, JAX gives {want.dtype}")
    tol = tolerance_for(want.dtype)
    if want.dtype.kind in "fc" or want.dtype.name == "bfloat16":
        g = got.astype(np.complex128 if want.dtype.kind == "c" else np.float64)
        w = want.astype(np.complex128 if want.dtype.kind == "c" else np.float64)
        try:
            np.testing.assert_allclose(g, w, equal_nan=True, **tol)
        except AssertionError as exc:
            raise Mismatch(f"{what} ({want.dtype}, {tol}): {exc}") from None
        if signed_zeros:
            _assert_zero_signs(g, w, what)
    elif not np.array_equal(got, want):
        bad = np.argwhere(got != want)[:5].tolist()
        raise Mismatch(f"{what} ({want.dtype}) differs exactly at {bad}: "
                       f"got {got[tuple(np.array(bad).T)] if bad else got} want "
                       f"{want[tuple(np.array(bad).T)] if bad else want}")


def _assert_zero_signs(g, w, what: str) -> None:
    parts = [(np.real(g), np.real(w)), (np.imag(g), np.imag(w))] if w.dtype.kind == "c" \
        else [(g, w)]
    for gp, wp in parts:
        bad = (gp == 0) & (wp == 0) & (np.signbit(gp) != np.signbit(wp))
        if np.any(bad):
            at = np.argwhere(bad)[:5].tolist()
            raise Mismatch(f"{what}: sign of zero differs at {at}: got "
                           f"{gp[bad][:5].tolist()}, JAX gives {wp[bad][:5].tolist()}")


def graph_op_types(concrete_fn) -> set[str]:
    """Every op type in a concrete function's graph and its function library."""
    gdef = concrete_fn.graph.as_graph_def()
    types = {n.op for n in gdef.node}
    for fn in gdef.library.function:
        types.update(n.op for n in fn.node_def)
    return types


def xla_ops(concrete_fn) -> list[str]:
    return sorted(t for t in graph_op_types(concrete_fn) if t.startswith("Xla"))


@dataclasses.dataclass
class Outcome:
    """How one case went: "pass", "mismatch" (a wrong number), "xla" (an Xla* op in the
    graph), "no_rule" (a known gap, refused clearly), "unsupported" (a rule refused a
    parameter form), "error" (anything else), "jax_error" (JAX itself failed), or
    "skipped" (the rule does not run on this device; ``detail`` says why)."""
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "pass"


def run_function(fn: Callable, args: Sequence[Any], *, compare: Callable | None = None,
                 must_use: str | None = None, signed_zeros: bool = False,
                 **convert_kw) -> Outcome:
    """Convert ``fn``, run it under ``tf.function`` on ``args`` and compare with
    ``jax.jit(fn)(*args)``. Also checks that the traced graph has no Xla* op.

    With an export target (``target="tflite"``, ``"onnx"``, ``"tfjs"``) the converted
    function is exported with the target's converter and run in its runtime (the LiteRT
    interpreter, onnxruntime, tfjs in node; see :mod:`core.export`), and *that* result is
    compared. A refusal by the target's pre-flight is the status "refused"; a model the
    pre-flight let through but the converter or runtime rejects is "export_error".
    ``signed_zeros``: a zero must also have JAX's sign (see :func:`assert_same`)."""
    import jax
    import tensorflow as tf
    from core import convert
    from core.errors import NoRuleError, TargetError, UnsupportedError
    target = convert_kw.get("target", "tf")
    try:
        want = jax.jit(fn)(*args)
    except Exception as exc:
        return Outcome("jax_error", f"{type(exc).__name__}: {exc}")
    want_leaves = jax.tree_util.tree_leaves(want)
    known = {NoRuleError: "no_rule", TargetError: "refused", UnsupportedError: "unsupported"}
    try:
        converted = convert(fn, **convert_kw)
        tf_args = [tf.constant(np.asarray(a)) for a in args]
        signature = _symbolic_signature(args, tf_args, convert_kw.get("polymorphic_shapes"))
        f_tf = tf.function(converted, autograph=False, input_signature=signature)
        concrete = f_tf.get_concrete_function(*tf_args)
        got = f_tf(*tf_args) if target == "tf" else None
    except tuple(known) as exc:
        return Outcome(next(v for k, v in known.items() if isinstance(exc, k)), str(exc))
    except Exception as exc:
        cause = exc.__cause__ or exc
        for k, v in known.items():
            if isinstance(cause, k):
                return Outcome(v, str(cause))
        return Outcome("error", "".join(traceback.format_exception_only(type(exc), exc))[-3000:])
    bad = xla_ops(concrete)
    if bad and not convert_kw.get("allow_xla"):
        return Outcome("xla", f"graph contains {bad}")
    if target != "tf":
        try:
            gots = run_in_target(target, f_tf, concrete, args)
        except tuple(known) as exc:
            return Outcome(next(v for k, v in known.items() if isinstance(exc, k)), str(exc))
        except Exception as exc:
            return Outcome("export_error", "".join(
                traceback.format_exception_only(type(exc), exc))[-3000:])
    else:
        got_leaves = jax.tree_util.tree_leaves(got)
        gots = [g.numpy() for g in got_leaves]
    if len(gots) != len(want_leaves):
        return Outcome("mismatch", f"{len(gots)} outputs, JAX gives {len(want_leaves)}")
    try:
        wants = [np.asarray(jax.random.key_data(w)) if jax.dtypes.issubdtype(
            w.dtype, jax.dtypes.extended) else np.asarray(w) for w in want_leaves]
        if compare is not None:
            compare(gots, wants)
        else:
            for i, (g, w) in enumerate(zip(gots, wants)):
                _same(g, w, f"output {i}", target, signed_zeros)
    except Mismatch as exc:
        return Outcome("mismatch", str(exc))
    if must_use and must_use not in converted.conv.used:
        return Outcome("error", f"the case never reached rule {must_use}; it ran "
                                f"{sorted(converted.conv.used)}")
    return Outcome("pass")


def _same(got, want, what: str, target: str, signed_zeros: bool) -> None:
    if want.dtype == np.uint32 and np.asarray(got).dtype == np.int32:
        got = np.asarray(got).view(np.uint32)     # TF.js: uint32 as int32 bits
    assert_same(got, want, what + (f" (in {target})" if target != "tf" else ""),
                signed_zeros=signed_zeros)


def run_in_target(target: str, f_tf, concrete, args) -> list:
    """Export ``f_tf`` (traced as ``concrete``) with the target's converter and run it on
    ``args`` in the target's runtime (bfloat16 inputs are fed as float32: the exported
    models take float32 and cast inside, see core.export); outputs in the graph's dtypes."""
    import tensorflow as tf
    from core.export import runtime
    rt = runtime(target)
    specs = [tf.TensorSpec(t.shape, t.dtype) for t in concrete.inputs]
    outs = rt.run(rt.export(f_tf, specs), [
        np.asarray(a, np.float32) if s.dtype == tf.bfloat16 else np.asarray(a)
        for a, s in zip(args, specs)])
    want_dtypes = [t.dtype.as_numpy_dtype for t in concrete.outputs]
    return [np.asarray(o).astype(d) if o.dtype != d else o for o, d in zip(outs, want_dtypes)]


def _symbolic_signature(args, tf_args, polymorphic_shapes):
    """With ``polymorphic_shapes``, trace with ``None`` for every symbolic dimension, so
    rules really meet shapes that are unknown until the graph runs (static TF shapes
    would let shape inference hide a rule that needs them)."""
    if polymorphic_shapes is None:
        return None
    import jax
    import tensorflow as tf
    from jax import export
    from core.shapes import is_symbolic
    spec = polymorphic_shapes
    if isinstance(spec, list):
        spec = tuple(spec)
    structs = tuple(jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in args)
    sym = jax.tree_util.tree_leaves(export.symbolic_args_specs(structs, spec))
    return [tf.TensorSpec([None if is_symbolic(d) else int(d) for d in s.shape], t.dtype)
            for s, t in zip(sym, tf_args)]


#: Decompositions unique only up to signs: a zero in their factors may carry either sign.
_SIGNS_FREE = {"svd", "eigh", "eig", "qr", "geqrf", "householder_product"}


def run_rule_case(rule, case, dtype_name: str, registry=None, target: str = "tf",
                  signed_zeros: bool | None = None, device: str = "cpu") -> Outcome:
    """Run one of a rule's own cases for one dtype, with that rule preferred for every
    primitive it lowers, and check the rule really ran (so no other rule can hide it). A
    rule's cases hold its edge values, so zeros must have JAX's sign there (by default for
    real dtypes: the signs of zero parts of complex functions are a limitation, see
    README).

    The rule's constraints are honoured: a rule that ``needs_xla`` runs with
    ``allow_xla=True`` (its Xla* ops are then allowed in the graph); a rule that does not
    run on ``device`` (the device the test runs on, "cpu" here) gives the status
    "skipped", with the reason."""
    if device not in rule.devices:
        return _skipped(rule, device)
    if signed_zeros is None:
        signed_zeros = _signed_zeros(rule, dtype_name)
    args = case.make_args(np.random.default_rng(0), np.dtype(np_dtype(dtype_name)))
    return run_function(case.fn, args, signed_zeros=signed_zeros,
                        **_case_kw(rule, case, registry, target, device))


def run_rule_case_dtypes(rule, case, dtype_names: Sequence[str], registry=None,
                         target: str = "tf", device: str = "cpu") -> dict[str, Outcome]:
    """:func:`run_rule_case` for several dtypes, as fast as one: a function running the
    case on each dtype's inputs side by side is converted, traced, exported and compiled
    by ``jax.jit`` once, and each dtype's outputs are compared as :func:`run_rule_case`
    compares them. Unless that passes for every dtype, each dtype runs on its own, so
    every outcome is that dtype's own (its failure, named). The dtypes must share JAX's
    x64 mode (the caller sets it). Cases with ``polymorphic_shapes`` run one by one."""
    if device not in rule.devices:
        return {d: _skipped(rule, device) for d in dtype_names}

    def alone():
        return {d: run_rule_case(rule, case, d, registry, target, device=device)
                for d in dtype_names}
    if len(dtype_names) < 2 or "polymorphic_shapes" in case.convert_kw:
        return alone()
    import jax
    argsets = [case.make_args(np.random.default_rng(0), np.dtype(np_dtype(d)))
               for d in dtype_names]
    try:
        counts = [len(jax.tree_util.tree_leaves(jax.eval_shape(case.fn, *a)))
                  for a in argsets]
    except Exception:
        return alone()                        # JAX refuses a dtype: each says so itself

    def side_by_side(*flat):
        out, i = [], 0
        for a in argsets:
            out.append(case.fn(*flat[i:i + len(a)]))
            i += len(a)
        return out

    def compare(gots, wants):
        i = 0
        for d, n in zip(dtype_names, counts):
            for j, (g, w) in enumerate(zip(gots[i:i + n], wants[i:i + n])):
                _same(g, w, f"{d} output {j}", target, _signed_zeros(rule, d))
            i += n
    together = run_function(side_by_side, [a for s in argsets for a in s], compare=compare,
                            **_case_kw(rule, case, registry, target, device))
    return {d: together for d in dtype_names} if together.ok else alone()


def _skipped(rule, device: str) -> Outcome:
    return Outcome("skipped", f"{rule.id} runs on {', '.join(sorted(rule.devices))}, "
                              f"not on {device}")


def _signed_zeros(rule, dtype_name: str) -> bool:
    return not dtype_name.startswith("complex") and rule.primitive not in _SIGNS_FREE


def _case_kw(rule, case, registry, target: str, device: str) -> dict:
    """run_function's keywords for a rule's case: the rule preferred for every primitive
    it lowers (a rule's cases are shared by them all), its use checked, its
    ``needs_xla`` honoured."""
    from core.registry import default_registry
    registry = registry or default_registry()
    kw = dict(case.convert_kw)
    if rule.needs_xla:
        kw["allow_xla"] = True
    prefer = {r.primitive: rule.id for r in registry.rules() if r.id == rule.id}
    return dict(registry=registry, prefer=prefer or {rule.primitive: rule.id},
                must_use=rule.id, target=target, device=device, **kw)


def np_dtype(name: str):
    """The numpy dtype a case's inputs are made with (key arrays: their uint32 data)."""
    import jax.numpy as jnp
    if name.startswith("key<"):
        return np.dtype("uint32")
    return getattr(jnp, name) if name == "bfloat16" else np.dtype(name)


def rule_package(name: str, *rules):
    """A throwaway rule package (a module with a ``register_rules`` hook) holding ``rules``:
    for tests that build a registry from chosen rules."""
    import types
    from core.hookspecs import hookimpl
    mod = types.ModuleType(name)
    mod.RULES = list(rules)

    @hookimpl
    def register_rules(register):
        register.module(mod)
    mod.register_rules = register_rules
    return mod
