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
    parameter form), "error" (anything else), or "jax_error" (JAX itself failed)."""
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
                if w.dtype == np.uint32 and np.asarray(g).dtype == np.int32:
                    g = np.asarray(g).view(np.uint32)     # TF.js: uint32 as int32 bits
                assert_same(g, w, what=f"output {i}" + (f" (in {target})" if target != "tf"
                                                         else ""), signed_zeros=signed_zeros)
    except Mismatch as exc:
        return Outcome("mismatch", str(exc))
    if must_use and must_use not in converted.conv.used:
        return Outcome("error", f"the case never reached rule {must_use}; it ran "
                                f"{sorted(converted.conv.used)}")
    return Outcome("pass")


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


def harness_primitives(harness) -> set[str]:
    """The primitives a JAX harness case's jaxpr uses (sub-jaxprs included)."""
    import jax
    from core.registry import all_eqns
    args = harness.dyn_args_maker(np.random.RandomState(0))
    closed = jax.make_jaxpr(harness.dyn_fun)(*args)
    return {e.primitive.name for e in all_eqns(closed)}


def run_harness(harness, **convert_kw) -> Outcome:  # convert_kw: target="tflite", ...
    """Run one case of ``jax._src.internal_test_util.test_harnesses`` through ``convert``.
    Decompositions that are not unique are compared by what defines them."""
    args = harness.dyn_args_maker(np.random.RandomState(0))
    check = PROPERTY_CHECKS.get(harness.group_name)
    compare = (lambda gots, wants: check(gots, wants, args)) if check else None
    return run_function(harness.dyn_fun, args, compare=compare, **convert_kw)


# -- comparing decompositions by what defines them ------------------------------------------
# svd, eigh, eig and qr are unique only up to signs, phases and (eig) order, and large
# factorizations accumulate rounding in a different order than LAPACK. These checks use
# the standard norm-wise backward-error bound: the defining equation holds to within
# BACKWARD_ERROR * eps(dtype) * n * (largest magnitude involved).
BACKWARD_ERROR = 10


def _bound(dtype, n: int, *arrays) -> float:
    import ml_dtypes  # finfo that knows bfloat16 (numpy's does not)
    dt = np.dtype(dtype)
    eps = float(ml_dtypes.finfo(dt).eps) if dt.kind in "fcV" else float(np.finfo(np.float32).eps)
    scale = max([float(np.max(np.abs(a))) if np.size(a) else 0.0 for a in arrays] + [1e-30])
    return BACKWARD_ERROR * eps * max(n, 1) * scale


def _close(what: str, got, want, dtype, n: int) -> None:
    err = float(np.max(np.abs(got - want))) if np.size(want) else 0.0
    bound = _bound(dtype, n, want)
    if not err <= bound:            # NaN fails too
        raise Mismatch(f"{what}: max error {err:.3g} exceeds the backward-error bound "
                       f"{bound:.3g} ({BACKWARD_ERROR}·eps·n·scale, dtype {np.dtype(dtype).name})")


def _h(a):
    return np.conj(np.swapaxes(a, -1, -2))


def _unitary(what, q, n_cols_axis=-1):
    k = q.shape[-1]
    _close(what + " orthonormality", _h(q) @ q, np.broadcast_to(np.eye(k), q.shape[:-2] + (k, k)),
           q.dtype, q.shape[-2])


def _check_svd(gots, wants, args=()):
    if len(wants) == 1:                               # singular values only: unique
        return assert_same(gots[0], wants[0], "singular values")
    (s, u, vt), (ws, wu, wvt) = gots, wants
    k, n = ws.shape[-1], max(wu.shape[-2], wvt.shape[-1])
    _close("singular values", s, ws, ws.dtype, n)
    rec = lambda s, u, vt: (u[..., :, :k] * s[..., None, :].astype(u.dtype)) @ vt[..., :k, :]
    _close("U·S·Vt", rec(s, u, vt), rec(ws, wu, wvt), wu.dtype, n)
    _unitary("U", u)
    _unitary("V", _h(vt))


def _check_eigh(gots, wants, args=()):
    (v, w), (wv, ww) = gots, wants
    n = ww.shape[-1]
    _close("eigenvalues", w, ww, ww.dtype, n)
    rec = lambda v, w: (v * w[..., None, :].astype(v.dtype)) @ _h(v)
    _close("V·diag(w)·V^H", rec(v, w), rec(wv, ww), wv.dtype, n)
    _unitary("eigenvectors", v)


def _check_eig(gots, wants, args=()):
    w, ww = gots[0], wants[0]
    n = ww.shape[-1]
    order = lambda x: np.argsort(np.round(x, 3), axis=-1, kind="stable")
    _close("eigenvalues (as a set)", np.take_along_axis(w, order(w), -1),
           np.take_along_axis(ww, order(ww), -1), ww.dtype, n)
    if len(wants) == 1 or n == 0:
        return
    vr_w = wants[-1]
    # the matrix, rebuilt from JAX's right eigenvectors, defines both kinds of eigenvector
    a = (vr_w * ww[..., None, :]) @ np.linalg.inv(vr_w)
    for v, kind in zip(gots[1:], ["left", "right"][-(len(gots) - 1):]):
        if kind == "right":
            _close("A·v = λ·v", a @ v, v * w[..., None, :], ww.dtype, n)
        else:
            _close("v^H·A = λ·v^H", _h(v) @ a, _h(v) * w[..., :, None], ww.dtype, n)


def _check_qr(gots, wants, args=()):
    (q, r), (wq, wr) = gots, wants
    n = max(wq.shape[-2], wr.shape[-1])
    _close("Q·R", q @ r, wq @ wr, wq.dtype, n)
    _unitary("Q", q)
    if np.any(np.tril(r, -1) != 0):
        raise Mismatch("R is not upper triangular")


def _check_cholesky(gots, wants, args=()):
    (l,), (wl,) = gots, wants
    n = wl.shape[-1]
    lower = lambda x: np.tril(x)
    _close("L·L^H", lower(l) @ _h(lower(l)), lower(wl) @ _h(lower(wl)), wl.dtype, n)
    assert_same(np.triu(l, 1), np.triu(wl, 1), "strict upper triangle (left as given)")


def _check_solve(gots, wants, args=()):
    (x,), (wx,) = gots, wants
    _close("solution", x, wx, wx.dtype, wx.shape[-1] if wx.ndim else 1)


def _check_contraction(gots, wants, args=()):
    """Convolutions sum K = (kernel size) products per output: near cancellation an
    element-wise tolerance is meaningless, so the error is bounded norm-wise by
    10·eps·K·max|result| (the classic forward-error bound of a K-term dot product)."""
    (g,), (w,) = gots, wants
    if w.dtype.kind not in "fcV":
        return assert_same(g, w, "output")
    k = int(np.size(args[1])) if len(args) > 1 else 1
    _close("output", g, w, w.dtype, k)


PROPERTY_CHECKS: dict[str, Callable] = {
    "svd": _check_svd, "eigh": _check_eigh, "eig": _check_eig, "qr": _check_qr,
    "cholesky": _check_cholesky, "triangular_solve": _check_solve,
    "conv_general_dilated": _check_contraction,
}


#: Decompositions unique only up to signs: a zero in their factors may carry either sign.
_SIGNS_FREE = {"svd", "eigh", "eig", "qr", "geqrf", "householder_product"}


def run_rule_case(rule, case, dtype_name: str, registry=None, target: str = "tf",
                  signed_zeros: bool | None = None) -> Outcome:
    """Run one of a rule's own cases for one dtype, with that rule preferred for its
    primitive, and check the rule really ran (so no other rule can hide it). A rule's
    cases hold its edge values, so zeros must have JAX's sign there (by default for real
    dtypes: the signs of zero parts of complex functions are a limitation, see README)."""
    if signed_zeros is None:
        signed_zeros = not dtype_name.startswith("complex") and rule.primitive not in _SIGNS_FREE
    from core.registry import default_registry
    args = case.make_args(np.random.default_rng(0), np.dtype(np_dtype(dtype_name)))
    return run_function(case.fn, args, registry=registry or default_registry(),
                        prefer={rule.primitive: rule.id}, must_use=rule.id, target=target,
                        signed_zeros=signed_zeros, **case.convert_kw)


def np_dtype(name: str):
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
                    from core.registry import where
                    return f"{rule.id} on {eqn} at {where(eqn)}:\n{exc}"
            for v, w in zip(eqn.outvars, wants):
                env[v] = w
        return None
    return walk(closed.jaxpr, closed.consts, flat) or "no divergence"


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
