"""Linear algebra for TFLite: the factorizations TFLite has no builtin for (Cholesky,
MatrixTriangularSolve, Qr, SelfAdjointEigV2, Svd, TridiagonalSolve), written as loops of
builtin ops.

Each algorithm runs column by column in a ``tf.while_loop`` (a TFLite WHILE) over the
full ``[..., n, n]`` matrix: a step reads one column with GatherV2, updates with a
rank-1 product and writes back with SelectV2 on masks built from ``tf.range``
comparisons (MatrixDiagPartV3 is not a TFLite builtin). Only float32 is claimed; the
generic rules in ``linalg.py`` stay the TF lowering.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax
import jax.numpy as jnp
from jax import lax
from jax._src.lax import linalg as _lax_linalg  # _qr_lowering: geqrf + orgqr

from core.rule import case, rule
from rules_lax.elementwise import _sqrt_f32   # TFLite's Sqrt is wrong above 2^126
from rules_lax.linalg import (CHOLESKY_CASES, TRIANGULAR_SOLVE_CASES, _eigh_values, _pd,
                              _poly, _svd_fn, _sym, _tri_args, _tri_solve_fn, _tridiag_args)

_F32 = "float32"


def _col(x, j, nb):
    """Column ``j`` (a scalar) of ``[..., m, n]`` ``x``: ``[..., m]``."""
    return tf.gather(x, j, axis=nb + 1)


def _e(x, axis):
    """``tf.expand_dims``: TFLite rejects the StridedSlice of ``x[..., None]`` when the
    rank is known but dimensions are not."""
    return tf.expand_dims(x, axis)


def _square(ctx):
    """(shape, number of batch dimensions, range(n)) of the first operand [..., n, n]."""
    shape = ctx.shape(ctx.avals_in[0])
    return shape, len(shape) - 2, tf.range(shape[-1], dtype=tf.int32)


def _loop(n, body, *state, reverse=False):
    """``for t in range(n)`` (``reversed`` with ``reverse``) as one ``tf.while_loop``;
    ``body(j, *state) -> state``."""
    def step(t, *s):
        return (t + 1, *body(n - 1 - t if reverse else t, *s))
    return tf.while_loop(lambda t, *_: t < n, step, (tf.constant(0, tf.int32), *state))[1:]


# -- cholesky --------------------------------------------------------------------------

@rule("cholesky", dtypes=_F32, targets="tflite",
      cases=CHOLESKY_CASES + [
          case.custom("positive definite, 32x32", lax.linalg.cholesky_p.bind, _pd((32, 32))),
          case("-0.0 pivot gives NaN", lax.linalg.cholesky_p.bind, [[-0.0]]),
          case("NaN in the lower triangle propagates", lax.linalg.cholesky_p.bind,
               [[4.0, 1.0, 0.0], [float("nan"), 5.0, 0.0], [1.0, 1.0, 6.0]]),
          case("NaN in the upper triangle is not read", lax.linalg.cholesky_p.bind,
               [[4.0, float("nan")], [1.0, 5.0]]),
          case("inf on the diagonal", lax.linalg.cholesky_p.bind,
               [[float("inf"), 0.0], [1.0, 4.0]]),
          case("huge entries (TFLite's Sqrt is wrong above 2^126)", lax.linalg.cholesky_p.bind,
               [[3e38, 1e38], [1e38, 2e38]]),
          case("subnormal pivot fails, as under JAX's flush-to-zero", lax.linalg.cholesky_p.bind,
               [[1e-38, 1e-39], [1e-39, 2e-38]])])
def cholesky_by_columns(ctx, x, **_):
    """Right-looking Cholesky (LAPACK's potf2 order): column j is the updated column
    scaled by 1/sqrt(d_j), then the trailing matrix loses its outer product. Only the
    lower triangle is read; the strict upper triangle is the input's; a pivot that is
    not > 0 (NaN pivots propagate instead) turns the whole matrix into NaN, as JAX."""
    if ctx.avals_in[0].shape[-1] == 0:
        return x
    shape, nb, idx = _square(ctx)
    n = shape[-1]
    rows, cols = idx[:, None], idx[None, :]
    lower = rows >= cols
    zero = tf.constant(0, tf.float32)   # a scalar: SelectV2 broadcasts it

    def body(j, a, ok):
        col = _col(a, j, nb)
        d = tf.gather(col, j, axis=nb)
        # JAX's CPU runtime reads subnormals as 0 (so such a pivot fails); a NaN pivot
        # propagates. (The converter folds not(d <= 0) into d > 0, wrong for NaN.)
        ok = tf.logical_and(ok, tf.logical_or(d >= _TINY, tf.math.is_nan(d)))
        s = _sqrt_f32(d)
        below = tf.where(idx > j, col * _e(1 / s, -1), zero)
        trailing = tf.logical_and(rows > j, cols > j)
        a = tf.where(trailing, a - _e(below, -1) * _e(below, -2), a)
        new_col = tf.where(tf.equal(idx, j), _e(s, -1), below)
        return tf.where(tf.equal(cols, j), _e(new_col, -1), a), ok

    ok0 = tf.ones(shape[:-2], tf.bool)
    l, ok = _loop(n, body, tf.where(lower, x, zero), ok0)
    out = tf.where(lower, l, x)
    return tf.where(_e(_e(ok, -1), -1), out, tf.constant(np.nan, tf.float32))


# -- triangular_solve ------------------------------------------------------------------

def _tri_edge_args(rng, dtype):
    a = np.array([[2.0, 0.0, 0.0], [1.0, 0.0, 0.0], [-1.0, 3.0, 4.0]], dtype)
    b = np.array([[1.0, -0.0], [2.0, 0.0], [1e-38, np.inf]], dtype)
    return [a, b]


@rule("triangular_solve", dtypes=_F32, targets="tflite",
      cases=TRIANGULAR_SOLVE_CASES + [
          case.custom("unit diagonal, right, upper, transposed",
                      _tri_solve_fn(unit_diagonal=True, transpose_a=True),
                      _tri_args((5, 5), (3, 5))),
          case.custom("32x32", _tri_solve_fn(left_side=True, lower=True),
                      _tri_args((32, 32), (32, 2))),
          case.custom("zero pivot, inf and subnormal right-hand sides",
                      _tri_solve_fn(left_side=True, lower=True), _tri_edge_args)])
def triangular_solve_by_substitution(ctx, a, b, *, left_side, lower, transpose_a,
                                     conjugate_a, unit_diagonal, **_):
    """op(A) X = B or X op(A) = B by substitution, one row of X per step (LAPACK's trsm
    order: x_j = b_j / m_jj, then the rows after j lose m_ij x_j). Only the named
    triangle of A is read (not its diagonal when unit_diagonal); conjugation is a no-op
    on real matrices."""
    if ctx.avals_in[0].shape[-1] == 0:
        return b
    shape, nb, idx = _square(ctx)
    m = tf.linalg.matrix_transpose(a) if transpose_a else a
    # X op(A) = B  <=>  op(A)^T X^T = B^T; M := the matrix on the left, lower or upper
    m_lower = lower != transpose_a
    if not left_side:
        m, b, m_lower = tf.linalg.matrix_transpose(m), tf.linalg.matrix_transpose(b), not m_lower

    def body(j, x):
        mcol = _col(m, j, nb)
        bj = tf.gather(x, j, axis=nb)
        xj = bj if unit_diagonal else bj / _e(tf.gather(mcol, j, axis=nb), -1)
        after = (idx > j) if m_lower else (idx < j)
        x = tf.where(after[:, None], x - _e(mcol, -1) * _e(xj, -2), x)
        return (tf.where(tf.equal(idx, j)[:, None], _e(xj, -2), x),)

    (x,) = _loop(shape[-1], body, b, reverse=not m_lower)
    return x if left_side else tf.linalg.matrix_transpose(x)


# -- tridiagonal_solve -----------------------------------------------------------------

def _tridiag_fixed(dl, d, du, b):
    """Fixed diagonals and right-hand sides (``b`` one column per list entry)."""
    return lambda rng, dtype: [np.array(v, dtype) for v in (dl, d, du, np.transpose(b))]


_NAN, _INF = float("nan"), float("inf")
_TRIDIAG = lambda *a: lax.linalg.tridiagonal_solve(*a)


@rule("tridiagonal_solve", dtypes=_F32, targets="tflite",
      when=lambda eqn: ("perturb_singular=True is not written for TFLite"
                        if eqn.params.get("perturb_singular") else None),
      cases=[case.custom("random", _TRIDIAG, _tridiag_args(6, 2)),
             case.custom("random, 32x3", _TRIDIAG, _tridiag_args(32, 3)),
             case.custom("singular gives NaN", _TRIDIAG, _tridiag_args(3, 1, singular=True)),
             case.custom("batched", _TRIDIAG, lambda rng, dt: [
                 rng.standard_normal(s).astype(dt) for s in [(2, 3, 5)] * 3 + [(2, 3, 5, 2)]]),
             case.custom("symbolic sizes", _TRIDIAG, _tridiag_args(6, 2),
                         convert_kw=_poly("(n,)", "(n,)", "(n,)", "(n, k)")),
             case.custom("symbolic batch", _TRIDIAG, lambda rng, dt: [
                 rng.standard_normal(s).astype(dt) for s in [(3, 5)] * 3 + [(3, 5, 2)]],
                 convert_kw=_poly("(b, 5)", "(b, 5)", "(b, 5)", "(b, 5, 2)")),
             case.custom("1x1", _TRIDIAG, _tridiag_fixed([0.0], [-2.0], [0.0], [[3.0], [-0.0]])),
             case.custom("zero pivots need row interchanges; dl[0], du[-1] are not read",
                         _TRIDIAG, _tridiag_fixed([_NAN, 1, 2, 3], [0.0, 0, 5, 0],
                                                  [1.0, 1, 1, _NAN], [[1, 2, 3, 4], [-0.0] * 4])),
             case.custom("inf right-hand side: 0 * inf is NaN, as in LAPACK", _TRIDIAG,
                         _tridiag_fixed([0.0, 1, 1], [4.0, 4, 4], [1.0, 1, 0],
                                        [[1, 1, _INF], [1, -1, 1]])),
             case.custom("NaN on the diagonal propagates", _TRIDIAG,
                         _tridiag_fixed([0.0, 1, 1], [4.0, _NAN, 4], [1.0, 1, 0], [[1, 2, 3]])),
             case.custom("subnormal pivot fails, as under JAX's flush-to-zero", _TRIDIAG,
                         _tridiag_fixed([0.0, 1e-39], [1e-39, 1.0], [1e-39, 0.0], [[1, 1]])),
             case.custom("huge and tiny entries", _TRIDIAG,
                         _tridiag_fixed([0.0, 3e38, 1e-30], [1e38, 1e-30, 2e38],
                                        [2e38, 1e-37, 0.0], [[3e38, 1.0, -1e-37]]))])
def tridiagonal_solve_by_gtsv(ctx, dl, d, du, b, **_):
    """LAPACK's gtsv, what JAX runs on CPU: Gaussian elimination with partial pivoting
    (row i+1 is swapped up when |dl_{i+1}| > |d_i|, which brings in a second
    superdiagonal), then back substitution. A zero pivot (subnormals count as zero, as
    under the flush-to-zero of JAX's CPU runtime) makes that system's solution NaN.
    ``dl[0]`` and ``du[-1]`` are not read."""
    shape = ctx.shape(ctx.avals_in[3])
    if ctx.avals_in[3].shape[-2] == 0:
        return b
    nb, m = len(shape) - 2, shape[-2]
    idx = tf.range(m, dtype=tf.int32)
    row = lambda x, i: tf.gather(x, i, axis=nb)
    diag_put = lambda x, i, v: tf.where(tf.equal(idx, i), _e(v, -1), x)     # x[..., i] = v
    b_put = lambda x, i, v: tf.where(_e(tf.equal(idx, i), -1), _e(v, -2), x)  # x[..., i, :] = v
    flushed_abs = lambda x: tf.where(tf.abs(x) < _TINY, 0.0, tf.abs(x))

    def eliminate(i, low, dd, up, x, ok):
        di, dn, ui, un = row(dd, i), row(dd, i + 1), row(up, i), row(up, i + 1)
        li, xi, xn = row(low, i + 1), row(x, i), row(x, i + 1)
        keep = flushed_abs(di) >= flushed_abs(li)      # NaN: interchange, as LAPACK
        ok = tf.logical_and(ok, tf.logical_not(tf.logical_and(keep, flushed_abs(di) == 0)))
        fact = tf.where(keep, li, di) / tf.where(keep, di, li)
        f = _e(fact, -1)
        dd = diag_put(diag_put(dd, i, tf.where(keep, di, li)), i + 1,
                      tf.where(keep, dn - fact * ui, ui - fact * dn))
        up = diag_put(diag_put(up, i, tf.where(keep, ui, dn)), i + 1,
                      tf.where(keep, un, -(fact * un)))
        low = diag_put(low, i + 1, tf.where(keep, 0.0, un))    # the fill u2_i
        k = _e(keep, -1)
        x = b_put(b_put(x, i, tf.where(k, xi, xn)), i + 1,
                  tf.where(k, xn - f * xi, xi - f * xn))
        return low, dd, up, x, ok

    # dl[i + 1] then holds the second superdiagonal's u2_i (LAPACK's DL(i)). (Read from a
    # capture or an unchanged loop state, the TFLite converter moved the cast of a float64
    # model input into the loop behind the Gather, then refused that Gather.)
    ok = tf.ones(shape[:-2], tf.bool)
    up2, dd, up, x, ok = _loop(m - 1, eliminate, dl, d, du, b, ok)
    ok = tf.logical_and(ok, tf.not_equal(flushed_abs(row(dd, m - 1)), 0.0))

    def substitute(i, x):
        # (x_i - u_i x_{i+1} - u2_i x_{i+2}) / d_i, the terms past the end left out. (The
        # rows after i are read back from x: carrying x_{i+1}, x_{i+2} as loop state
        # gave wrong numbers in LiteRT, whose WHILE mixes up a state passed on shifted.)
        after = lambda s: (_e(row(up, i) if s == 1 else row(up2, tf.minimum(i + 1, m - 1)), -1)
                           * row(x, tf.minimum(i + s, m - 1)))
        t = row(x, i) - tf.where(i < m - 1, after(1), 0.0)
        t = (t - tf.where(i < m - 2, after(2), 0.0)) / _e(row(dd, i), -1)
        return (b_put(x, i, t),)

    (x,) = _loop(m, substitute, x, reverse=True)
    return tf.where(_e(_e(ok, -1), -1), x, tf.constant(np.nan, tf.float32))


# -- qr --------------------------------------------------------------------------------

def _qr_fn(full_matrices):
    return lambda x: lax.linalg.qr(x, full_matrices=full_matrices)


@rule("qr", dtypes=_F32, targets="tflite",
      when=lambda eqn: ("column pivoting (pivoting=True) is not written for TFLite"
                        if eqn.params.get("pivoting") else None),
      cases=[case.random(_qr_fn(False), shapes=[(2, 5, 3)], name="reduced"),
             case.random(_qr_fn(True), shapes=[(5, 3)], name="full"),
             case.random(_qr_fn(True), shapes=[(3, 5)], name="wide"),
             case("zero column", _qr_fn(False), [[0.0, 1.0], [0.0, 2.0], [0.0, 3.0]]),
             # the reduced and wide forms slice R with a gather over the symbolic batch,
             # which rules_lax.indexing lowers with an int64 axis (TFLite refuses it)
             case.random(_qr_fn(True), shapes=[(2, 5, 3)], name="full, symbolic batch",
                         convert_kw=_poly("(b, 5, 3)"))])
def qr_by_geqrf(ctx, x, *, full_matrices, pivoting=False, **_):
    """JAX's own CPU decomposition: LAPACK's geqrf then orgqr (householder_product),
    whose rules are Householder loops of builtin ops."""
    return ctx.lower_fun(_lax_linalg._qr_lowering, x, full_matrices=full_matrices,
                         pivoting=False, use_magma=False)


# -- Jacobi rotations (eigh, svd) --------------------------------------------------------

_EPS = float(np.finfo(np.float32).eps)
_TINY = float(np.finfo(np.float32).tiny)
_MAX_SWEEPS = 30


def _round_robin(n: int):
    """The partner of every index in each of the n-1 steps of a round-robin tournament
    (n even): every pair meets exactly once per sweep, n/2 disjoint pairs per step."""
    players, steps = list(range(n)), []
    for _ in range(n - 1):
        partner = [0] * n
        for k in range(n // 2):
            p, q = players[k], players[n - 1 - k]
            partner[p], partner[q] = q, p
        steps.append(partner)
        players = [players[0], players[-1]] + players[1:-1]
    return np.array(steps, np.int32)


def _rotation(app, aqq, apq, small):
    """(c, s) of the Jacobi rotation that zeroes apq (Golub & Van Loan's sym.schur2,
    overflow-safe for a large tau); identity where ``small``."""
    safe = tf.where(small, tf.ones_like(apq), apq)
    tau = (aqq - app) / (2 * safe)
    at = tf.abs(tau)
    big = at > 1
    inv = 1 / tf.where(big, at, tf.ones_like(at))
    root = tf.where(big, at * tf.sqrt(1 + inv * inv), tf.sqrt(1 + at * at))
    t = tf.where(tau >= 0, 1.0, -1.0) / (at + root)
    c = 1 / tf.sqrt(1 + t * t)
    return tf.where(small, 1.0, c), tf.where(small, 0.0, t * c)


def _sweeps(n: int, step, *state):
    """Cyclic Jacobi: sweeps of the round-robin steps until a sweep rotates nothing
    (at most _MAX_SWEEPS). ``step(partner, is_top, pair_mask, *state) -> (rotated,
    *state)``, ``partner``/``is_top`` int/bool ``[n]``, ``pair_mask`` bool ``[n, n]``."""
    schedule = tf.constant(_round_robin(n))
    idx = tf.range(n, dtype=tf.int32)

    def sweep(sweep_i, _, *s):
        def one(k, rotated, *s):
            partner = tf.gather(schedule, k)
            pair = tf.equal(idx[None, :], partner[:, None])
            r, *s = step(partner, idx < partner, pair, *s)
            return k + 1, tf.logical_or(rotated, r), *s
        _, rotated, *s = tf.while_loop(lambda k, *_: k < n - 1, one,
                                       (tf.constant(0), tf.constant(False), *s))
        return sweep_i + 1, rotated, *s

    out = tf.while_loop(lambda i, rotated, *_: tf.logical_and(rotated, i < _MAX_SWEEPS),
                        sweep, (tf.constant(0), tf.constant(True), *state))
    return out[2:]


def _mix(x, c, s, partner, axis):
    """Rotate rows (axis=-2) or columns (axis=-1) i and partner(i) of x by (c, s)."""
    e = axis - 1 if axis == -1 else -1      # where c and s broadcast
    other = tf.gather(x, partner, axis=len(x.shape) + axis)
    return x * _e(c, e if axis == -1 else -1) + other * _e(s, e if axis == -1 else -1)


def _scaled(x):
    """(x * f, 1 / f) per matrix with f a power of two (exact) that brings max|x| into
    [2^-60, 2^60], so the sums of squares of the Jacobi steps neither overflow nor
    underflow; the eigen/singular values are then multiplied by 1 / f."""
    big = tf.reduce_max(tf.abs(x), axis=[-2, -1])
    f = tf.where(big > 2.0 ** 60, 2.0 ** -100, tf.where(big < 2.0 ** -60, 2.0 ** 100, 1.0))
    return x * _e(_e(f, -1), -1), _e(1 / f, -1)


def _non_finite(x):
    """Per matrix: does x hold an inf or NaN? LAPACK then gives NaN eigen/singular values
    (and, for NaN, NaN vectors; for inf its vectors are meaningless: NaN here)."""
    return tf.logical_not(tf.reduce_all(tf.math.is_finite(x), axis=[-2, -1]))


def _nan_if(bad, x, inner):
    """x, NaN wherever ``bad`` (a per-matrix flag; x has ``inner`` dims more)."""
    for _ in range(inner):
        bad = _e(bad, -1)
    return tf.where(bad, np.float32(np.nan), x)


def _sort_columns(w, *vs, descending):
    """w sorted, and the columns of each v in the same order. TFLite has no sort and its
    TopKV2 takes only integers: rank_i = #{j: w_j before w_i} (ties by index), then the
    column of rank r is the sum of i over rank_i == r."""
    nb = len(w.shape) - 1
    key = tf.where(tf.math.is_nan(w), -np.inf if descending else np.inf, w)  # a permutation
    wi, wj = _e(key, -1), _e(key, -2)
    idx = tf.range(w.shape[-1], dtype=tf.int32)
    before = (wj > wi) if descending else (wj < wi)
    before = tf.logical_or(before, tf.logical_and(tf.equal(wj, wi), idx[None, :] < idx[:, None]))
    rank = tf.reduce_sum(tf.cast(before, tf.int32), axis=-1)
    order = tf.reduce_sum(tf.where(tf.equal(_e(rank, -1), idx), idx[:, None], 0), axis=-2)
    return [tf.gather(w, order, axis=nb, batch_dims=nb)] + [
        tf.gather(v, order, axis=nb + 1, batch_dims=nb) for v in vs]


# -- eigh ------------------------------------------------------------------------------

def _eigh_residual(x):
    """|A V - V diag(w)|, |V^T V - I| small and w ascending: what defines eigh."""
    v, w = lax.linalg.eigh(x, lower=True, symmetrize_input=False)
    a = jnp.tril(x) + jnp.swapaxes(jnp.tril(x, -1), -1, -2)
    n = x.shape[-1]
    scale = jnp.max(jnp.abs(a)) * n * 1e-5
    return (jnp.max(jnp.abs(a @ v - v * w[..., None, :])) < scale,
            jnp.max(jnp.abs(jnp.swapaxes(v, -1, -2) @ v - jnp.eye(n))) < n * 1e-5,
            jnp.all(jnp.diff(w, axis=-1) >= 0))


@rule("eigh", dtypes=_F32, targets="tflite", polymorphic=False,   # unrolled per size
      cases=[case.custom("eigenvalues from the lower triangle", _eigh_values(True),
                         _sym((2, 5, 5))),
             case.custom("eigenvalues from the upper triangle", _eigh_values(False), _sym((5, 5))),
             case.custom("eigenvalues, odd size 7", _eigh_values(True), _sym((7, 7))),
             case("eigenvalues of a diagonal matrix, with ties", _eigh_values(True),
                  [[2.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 2.0]]),
             case("eigenvalues of a zero matrix", _eigh_values(True), [[0.0, 0.0], [0.0, 0.0]]),
             case.custom("residual, orthonormality and order", _eigh_residual, _sym((2, 6, 6))),
             case.custom("residual, 32x32", _eigh_residual, _sym((32, 32))),
             case.custom("1x1", _eigh_values(True), _sym((3, 1, 1))),
             case("NaN gives NaN", lambda x: lax.linalg.eigh(x, symmetrize_input=False),
                  [[1.0, 2.0, 0.0], [2.0, float("nan"), 1.0], [0.0, 1.0, 3.0]]),
             case("inf gives NaN eigenvalues", _eigh_values(True),
                  [[float("inf"), 1.0], [1.0, 2.0]]),
             case("huge and tiny entries are scaled", _eigh_values(True),
                  [[[3e38, 1e38], [1e38, 2e38]], [[1e-37, 1e-38], [1e-38, 2e-37]]])])
def eigh_by_jacobi(ctx, x, *, lower=True, sort_eigenvalues=True, subset_by_index=None, **_):
    """Cyclic two-sided Jacobi on the symmetric matrix held in one triangle, n/2
    disjoint rotations per step (round-robin order); a pair is rotated while
    |a_pq| > eps * sqrt(|a_pp a_qq|). Eigenvalues come out ascending, as LAPACK's syevd
    returns them; the eigenvectors' signs are a freedom."""
    *batch, n = ctx.avals_in[0].shape[:-1]
    if n == 0:
        return [x, tf.zeros([*batch, 0], tf.float32)]
    nb = len(batch)
    idx = tf.range(n, dtype=tf.int32)
    rows, cols = idx[:, None], idx[None, :]
    keep = rows >= cols if lower else rows <= cols
    a = tf.where(keep, x, tf.linalg.matrix_transpose(x))
    bad = _non_finite(a)
    a, unscale = _scaled(tf.where(_e(_e(bad, -1), -1), 0.0, a))
    size = n + n % 2                       # a zero row and column make the size even;
    if size != n:                          # they never rotate (their a_pq are 0)
        a = tf.pad(a, [[0, 0]] * nb + [[0, 1], [0, 1]])
    eye = tf.cast(tf.equal(tf.range(size)[:, None], tf.range(size)[None, :]), tf.float32)
    v = tf.broadcast_to(eye, [*batch, size, size])
    floor = _EPS * _EPS * tf.reduce_max(tf.abs(a), axis=[-2, -1])

    def step(partner, is_top, pair, a, v):
        d = tf.reduce_sum(a * eye, axis=-1)
        apq = tf.reduce_sum(tf.where(pair, a, 0.0), axis=-1)
        dp = tf.gather(d, partner, axis=nb)
        app, aqq = tf.where(is_top, d, dp), tf.where(is_top, dp, d)
        small = tf.logical_not(tf.logical_and(
            tf.abs(apq) > _EPS * _sqrt_f32(tf.abs(app)) * _sqrt_f32(tf.abs(aqq)),
            tf.abs(apq) > _e(floor, -1)))
        c, s = _rotation(app, aqq, apq, small)
        s = tf.where(is_top, -s, s)
        a = _mix(_mix(a, c, s, partner, -2), c, s, partner, -1)
        a = tf.where(tf.logical_and(pair, _e(tf.logical_not(small), -1)), 0.0, a)
        return tf.reduce_any(tf.logical_not(small)), a, _mix(v, c, s, partner, -1)

    a, v = _sweeps(size, step, a, v)
    w = _nan_if(bad, tf.reduce_sum(a * eye, axis=-1)[..., :n] * unscale, 1)
    w, v = _sort_columns(w, _nan_if(bad, v[..., :n, :n], 2), descending=False)
    if subset_by_index is not None:
        lo, hi = (int(i) for i in subset_by_index)
        w, v = w[..., lo:hi], v[..., lo:hi]
    return [v, w]


# -- svd -------------------------------------------------------------------------------

def _svd_check(full_matrices):
    """|U S Vt - A|, |U^T U - I|, |V V^T - I| small and s descending: what defines svd."""
    def f(x):
        u, s, vt = lax.linalg.svd(x, full_matrices=full_matrices, compute_uv=True)
        k = s.shape[-1]
        scale = (jnp.max(jnp.abs(x)) + 1) * max(x.shape[-2:]) * 1e-5
        eye = lambda n: jnp.eye(n)
        h = lambda y: jnp.swapaxes(y, -1, -2)
        return (jnp.max(jnp.abs((u[..., :, :k] * s[..., None, :]) @ vt[..., :k, :] - x)) < scale,
                jnp.max(jnp.abs(h(u) @ u - eye(u.shape[-1]))) < 1e-5 * x.shape[-2],
                jnp.max(jnp.abs(vt @ h(vt) - eye(vt.shape[-2]))) < 1e-5 * x.shape[-1],
                jnp.all(jnp.diff(s, axis=-1) <= 0))
    return f



@rule("svd", dtypes=_F32, targets="tflite", polymorphic=False,   # unrolled per size
      cases=[case.random(_svd_fn(False, False), shapes=[(2, 4, 3)], name="singular values"),
             case.random(_svd_fn(False, True), shapes=[(3, 5)], name="U S Vt rebuilds"),
             case.random(_svd_fn(True, False), shapes=[(5, 3)], name="full"),
             case.random(_svd_fn(False, False), shapes=[(7, 6)], name="singular values, 7x6"),
             case.custom("orthonormal factors, tall, full", _svd_check(True), _sym((2, 6, 3))),
             case.custom("orthonormal factors, wide", _svd_check(False), _sym((3, 7))),
             case("rank-deficient: orthonormal factors", _svd_check(True),
                  [[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0, 0.0]]),
             case("zero matrix: singular values", _svd_fn(False, False), [[0.0, 0.0], [0.0, 0.0]]),
             case("NaN gives NaN", lambda x: lax.linalg.svd(x, full_matrices=False),
                  [[1.0, 2.0, 0.0], [2.0, float("nan"), 1.0]]),
             case("inf gives NaN singular values", _svd_fn(False, False),
                  [[float("inf"), 1.0], [1.0, 2.0]]),
             case("huge and tiny entries are scaled", _svd_fn(False, False),
                  [[[3e38, 1e38], [1e38, 2e38]], [[1e-37, 1e-38], [1e-38, 2e-37]]])])
def svd_by_jacobi(ctx, x, *, full_matrices, compute_uv, subset_by_index=None, algorithm=None,
                  **_):
    """One-sided (Hestenes) Jacobi on the columns of the tall orientation of x: pairs
    of columns are rotated until |a_p . a_q| <= eps * |a_p| |a_q|; s are the column norms
    (sorted descending), V accumulates the rotations. U is the Q of a Householder QR of
    the normalized columns (signs fixed from R's diagonal), which keeps U orthonormal
    and completes it for zero singular values and full_matrices."""
    *batch, m, n = ctx.avals_in[0].shape
    nb = len(batch)
    wide = m < n
    if wide:
        x, m, n = tf.linalg.matrix_transpose(x), n, m
    k = n
    bad = _non_finite(x)
    x, unscale = _scaled(tf.where(_e(_e(bad, -1), -1), 0.0, x))
    size = n + n % 2                          # a zero column never rotates
    a = tf.pad(x, [[0, 0]] * (nb + 1) + [[0, size - n]]) if size != n else x
    eye = tf.cast(tf.equal(tf.range(size)[:, None], tf.range(size)[None, :]), tf.float32)
    v = tf.broadcast_to(eye, [*batch, size, size])

    def step(partner, is_top, pair, a, v):
        norm2 = tf.reduce_sum(a * a, axis=-2)
        gamma = tf.reduce_sum(a * tf.gather(a, partner, axis=nb + 1), axis=-2)
        n2p = tf.gather(norm2, partner, axis=nb)
        alpha, beta = tf.where(is_top, norm2, n2p), tf.where(is_top, n2p, norm2)
        small = tf.logical_not(tf.abs(gamma) > _EPS * _sqrt_f32(alpha) * _sqrt_f32(beta))
        c, s = _rotation(alpha, beta, gamma, small)
        s = tf.where(is_top, -s, s)
        return (tf.reduce_any(tf.logical_not(small)), _mix(a, c, s, partner, -1),
                _mix(v, c, s, partner, -1))

    if n > 1:
        a, v = _sweeps(size, step, a, v)
    sv = _nan_if(bad, _sqrt_f32(tf.reduce_sum(a * a, axis=-2))[..., :n] * unscale, 1)
    if not compute_uv:
        (sv,) = _sort_columns(sv, descending=True)
        return [_subset(sv, subset_by_index, -1)]
    sv, a, v = _sort_columns(sv, a[..., :n], _nan_if(bad, v[..., :n, :n], 2), descending=True)
    norms = _e(_sqrt_f32(tf.reduce_sum(a * a, axis=-2)), -2)     # of the scaled columns
    cols = tf.where(norms > 0, a / tf.where(norms > 0, norms, 1.0), 0.0)
    spec = jax.ShapeDtypeStruct((*batch, m, k), np.float32)
    q, r = ctx.lower_fun(lambda c: lax.linalg.qr(c, full_matrices=full_matrices), cols,
                         avals=[spec])
    rdiag = tf.reduce_sum(tf.where(tf.equal(tf.range(k)[:, None], tf.range(k)[None, :]),
                                   r[..., :k, :], 0.0), axis=-1)
    sign = tf.where(rdiag < 0, -1.0, 1.0)
    u = _nan_if(bad, tf.concat([q[..., :k] * _e(sign, -2), q[..., k:]], axis=-1), 2)
    vt = tf.linalg.matrix_transpose(v)
    if wide:
        u, vt = tf.linalg.matrix_transpose(vt), tf.linalg.matrix_transpose(u)
    return [_subset(sv, subset_by_index, -1), _subset(u, subset_by_index, -1),
            _subset(vt, subset_by_index, -2)]


def _subset(x, subset_by_index, axis):
    if subset_by_index is None:
        return x
    lo, hi = (int(i) for i in subset_by_index)
    return x[..., lo:hi] if axis == -1 else x[..., lo:hi, :]
