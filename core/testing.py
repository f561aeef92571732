"""Checking rules against JAX, the oracle: tolerances, graph checks, harness runs.

Used by the test-suite (``tests/``), by plugin authors for their own rules, and by
``python tests/conformance.py`` for the per-group pass-rate report.
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


def assert_same(got, want, what: str = "output") -> None:
    """Compare one converted output with JAX's, with the tolerance of JAX's dtype."""
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
    elif not np.array_equal(got, want):
        bad = np.argwhere(got != want)[:5].tolist()
        raise Mismatch(f"{what} ({want.dtype}) differs exactly at {bad}: "
                       f"got {got[tuple(np.array(bad).T)] if bad else got} want "
                       f"{want[tuple(np.array(bad).T)] if bad else want}")


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
    parameter form), "error" (anything else), or "jax_error" (JAX itself failed)."""
    status: str
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "pass"


def run_function(fn: Callable, args: Sequence[Any], *, compare: Callable | None = None,
                 must_use: str | None = None, **convert_kw) -> Outcome:
    """Convert ``fn``, run it under ``tf.function`` on ``args`` and compare with
    ``jax.jit(fn)(*args)``. Also checks that the traced graph has no Xla* op."""
    import jax
    import tensorflow as tf
    from core import convert
    from core.errors import NoRuleError, UnsupportedError
    try:
        want = jax.jit(fn)(*args)
    except Exception as exc:
        return Outcome("jax_error", f"{type(exc).__name__}: {exc}")
    want_leaves = jax.tree_util.tree_leaves(want)
    try:
        converted = convert(fn, **convert_kw)
        f_tf = tf.function(converted, autograph=False)
        tf_args = [tf.constant(np.asarray(a)) for a in args]
        concrete = f_tf.get_concrete_function(*tf_args)
        got = f_tf(*tf_args)
    except NoRuleError as exc:
        return Outcome("no_rule", str(exc))
    except UnsupportedError as exc:
        return Outcome("unsupported", str(exc))
    except Exception as exc:
        cause = exc.__cause__ or exc
        if isinstance(cause, (NoRuleError, UnsupportedError)):
            return Outcome("no_rule" if isinstance(cause, NoRuleError) else "unsupported",
                           str(cause))
        return Outcome("error", "".join(traceback.format_exception_only(type(exc), exc))[-3000:])
    got_leaves = jax.tree_util.tree_leaves(got)
    if len(got_leaves) != len(want_leaves):
        return Outcome("mismatch", f"{len(got_leaves)} outputs, JAX gives {len(want_leaves)}")
    try:
        for i, (g, w) in enumerate(zip(got_leaves, want_leaves)):
            w = np.asarray(jax.random.key_data(w)) if jax.dtypes.issubdtype(
                w.dtype, jax.dtypes.extended) else np.asarray(w)
            (compare or assert_same)(g.numpy(), w, what=f"output {i}")
    except Mismatch as exc:
        return Outcome("mismatch", str(exc))
    if must_use and must_use not in converted.conv.used:
        return Outcome("error", f"the case never reached rule {must_use}; it ran "
                                f"{sorted(converted.conv.used)}")
    bad = xla_ops(concrete)
    if bad and not convert_kw.get("allow_xla"):
        return Outcome("xla", f"graph contains {bad}")
    return Outcome("pass")


def harness_primitives(harness) -> set[str]:
    """The primitives a JAX harness case's jaxpr uses (sub-jaxprs included)."""
    import jax
    from core.registry import _all_eqns
    args = harness.dyn_args_maker(np.random.RandomState(0))
    closed = jax.make_jaxpr(harness.dyn_fun)(*args)
    return {e.primitive.name for e in _all_eqns(closed)}


def run_harness(harness, **convert_kw) -> Outcome:
    """Run one case of ``jax._src.internal_test_util.test_harnesses`` through ``convert``."""
    args = harness.dyn_args_maker(np.random.RandomState(0))
    return run_function(harness.dyn_fun, args, **convert_kw)


def run_rule_case(rule, case, dtype_name: str, registry=None) -> Outcome:
    """Run one of a rule's own cases for one dtype, with that rule preferred for its
    primitive, and check the rule really ran (so no other rule can hide it)."""
    from core.registry import default_registry
    args = case.make_args(np.random.default_rng(0), np.dtype(_np_dtype(dtype_name)))
    return run_function(case.fn, args, registry=registry or default_registry(),
                        prefer={rule.primitive: rule.id}, must_use=rule.id)


def _np_dtype(name: str):
    """The numpy dtype a case's inputs are made with (key arrays: their uint32 data)."""
    import jax.numpy as jnp
    if name.startswith("key<"):
        return np.dtype("uint32")
    return getattr(jnp, name) if name == "bfloat16" else np.dtype(name)


def first_divergence(fn: Callable, args: Sequence[Any], registry=None) -> str:
    """Find the first equation (sub-jaxprs inlined where JAX can evaluate them) whose TF
    result differs from JAX's on the same inputs: a debugging aid for wrong numbers.
    Each equation is checked in isolation, fed JAX's own values."""
    import jax
    import tensorflow as tf
    from jax.extend.core import Literal
    from core.interpreter import ConversionContext, constant
    from core.registry import default_registry
    conv = ConversionContext(registry or default_registry())
    closed = jax.make_jaxpr(fn)(*args)
    flat = jax.tree_util.tree_leaves(args)

    def walk(jaxpr, consts, vals) -> str | None:
        env = dict(zip([*jaxpr.constvars, *jaxpr.invars], [*consts, *vals]))
        read = lambda a: a.val if isinstance(a, Literal) else env[a]
        for eqn in jaxpr.eqns:
            ins = [read(a) for a in eqn.invars]
            want = eqn.primitive.bind(*ins, **eqn.params)
            wants = want if eqn.primitive.multiple_results else [want]
            rule = conv.registry.select(eqn)
            ctx = conv.rule_context(eqn)
            tf_ins = [constant(np.asarray(jax.random.key_data(x)) if jax.dtypes.issubdtype(
                getattr(x, "dtype", np.float32), jax.dtypes.extended) else x, v.aval.dtype)
                if not jax.dtypes.issubdtype(v.aval.dtype, jax.dtypes.extended) else
                tf.constant(np.asarray(jax.random.key_data(x)))
                for x, v in zip(ins, eqn.invars)]
            got = rule.fn(ctx, *tf_ins, **eqn.params)
            gots = got if eqn.primitive.multiple_results else [got]
            for i, (g, w) in enumerate(zip(gots, wants)):
                w = np.asarray(jax.random.key_data(w)) if jax.dtypes.issubdtype(
                    w.dtype, jax.dtypes.extended) else np.asarray(w)
                try:
                    assert_same(np.asarray(g), w, what=f"{eqn.primitive.name} output {i}")
                except Mismatch as exc:
                    from core.registry import _where
                    return f"{rule.id} on {eqn} at {_where(eqn)}:\n{exc}"
            for v, w in zip(eqn.outvars, wants):
                env[v] = w
        return None
    return walk(closed.jaxpr, closed.consts, flat) or "no divergence"
