"""The internals of this repo's test-suite, on top of the plugin test kit
(:mod:`core.testkit`): JAX's harness runner (``python tests/conformance.py`` and
tests/test_conformance.py), the checks of decompositions that are not unique (svd, eigh,
eig, qr, cholesky, triangular_solve, convolutions) by what defines them, and
:func:`first_divergence`, the fuzzer's debugging aid.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from core.testkit import Mismatch, Outcome, assert_same, run_function

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
            tf_ins = [tf.constant(np.asarray(jax.random.key_data(x)))
                      if jax.dtypes.issubdtype(v.aval.dtype, jax.dtypes.extended)
                      else constant(x, v.aval.dtype) for x, v in zip(ins, eqn.invars)]
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
