"""Linear algebra: cholesky, eigh, eig, svd, qr, geqrf, householder_product, lu,
lu_pivots_to_permutation, triangular_solve, tridiagonal_solve and custom_linear_solve.

Most map onto ``tf.linalg``; the glue reproduces what JAX's CPU lowering (LAPACK) returns
beyond the mathematical result: which triangle is read, what fills the unused triangle,
NaN for failed factorizations, LAPACK's pivot conventions. LU is written out (a loop of
rank-1 updates) because TF's Lu gives no LAPACK pivot sequence and takes only square
matrices; geqrf and householder_product are LAPACK's compact QR written as Householder
loops (TF has no equivalent). Decompositions that are unique only up to signs, phases or order (eigh, eig,
svd, qr) follow TF's choice where it differs from LAPACK's. Batch and matrix dimensions
may be symbolic (``polymorphic_shapes``): every TF op used here takes sizes known only when
the graph runs, and the Householder and LU loops run to a run-time bound.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf
import jax.numpy as jnp
from jax import lax
from jax._src.lax import linalg as _lax_linalg  # geqrf has no public wrapper

from core.rule import case, rule

_LAPACK = ["float32", "float64", "complex64", "complex128"]


def _poly(*specs):
    return {"polymorphic_shapes": list(specs)}


def _pd(shape):
    def make(rng, dtype):
        a = rng.standard_normal(shape).astype(dtype)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal(shape).astype(dtype)
        return [a @ np.conj(np.swapaxes(a, -1, -2)) + shape[-1] * np.eye(shape[-1], dtype=dtype)]
    return make


def _ax(x, *axes):
    """``tf.expand_dims`` at each axis in turn: ``x[..., None]`` is a StridedSlice that
    TFLite refuses when dimensions are unknown (symbolic shapes)."""
    for axis in axes:
        x = tf.expand_dims(x, axis)
    return x


def _min(a, b):
    """The smaller of two dimensions (ints, or TF scalars when symbolic)."""
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else tf.minimum(a, b)


# -- cholesky --------------------------------------------------------------------------

#: shared with linalg_tflite's rule
CHOLESKY_CASES = [
    case.custom("positive definite, batch", lax.linalg.cholesky_p.bind, _pd((2, 4, 4))),
    case("upper triangle is kept from the input", lax.linalg.cholesky_p.bind,
         [[4.0, 7.0, 9.0], [2.0, 5.0, 8.0], [1.0, 3.0, 6.0]]),
    case("not positive definite gives NaN", lax.linalg.cholesky_p.bind,
         [[[1.0, 2.0], [2.0, 1.0]], [[4.0, 0.0], [2.0, 5.0]]]),
    case("zero pivot gives NaN", lax.linalg.cholesky_p.bind, [[1.0, 0.0], [0.0, 0.0]]),
    case.custom("symbolic batch and size", lax.linalg.cholesky_p.bind, _pd((3, 4, 4)),
                convert_kw=_poly("(b, n, n)"))]


@rule("cholesky", dtypes=_LAPACK,
      cases=CHOLESKY_CASES + [case.custom("empty", lax.linalg.cholesky_p.bind, _pd((3, 0, 0)))])
def cholesky_lower(ctx, x, **_):
    """L in the lower triangle, the input's strict upper triangle above it (LAPACK's potrf
    leaves it untouched); a matrix that is not positive definite becomes all NaN."""
    chol = tf.linalg.band_part(tf.linalg.cholesky(x), -1, 0)
    # TF fills the lower triangle of a failed factorization with NaN (real) or 0
    # (complex); a successful one has a positive diagonal. JAX turns the whole matrix
    # into NaN, except that NaN in the input propagates without failing (OpenBLAS).
    lower_in = tf.linalg.band_part(x, -1, 0)
    positive = tf.math.real(tf.linalg.diag_part(chol)) > 0
    failed = tf.logical_and(
        tf.logical_not(tf.reduce_all(positive, axis=-1)),
        tf.logical_not(tf.reduce_any(tf.math.is_nan(tf.abs(lower_in)), axis=[-2, -1])))
    out = chol + (x - lower_in)
    nan = tf.cast(tf.constant(np.nan, x.dtype.real_dtype), x.dtype)
    return tf.where(failed[..., None, None], nan, out)


# -- eigh ------------------------------------------------------------------------------

def _hermitian_from(x, lower):
    """The Hermitian matrix that LAPACK sees when it reads one triangle of ``x``."""
    tri = tf.linalg.band_part(x, -1, 0) if lower else tf.linalg.band_part(x, 0, -1)
    diag = tf.linalg.diag_part(tri)
    strict = tf.linalg.set_diag(tri, tf.zeros_like(diag))
    herm = strict + tf.linalg.adjoint(strict)
    if x.dtype.is_complex:
        diag = tf.cast(tf.math.real(diag), x.dtype)  # the imaginary part is not read
    return tf.linalg.set_diag(herm, diag)


def _sym(shape):
    def make(rng, dtype):
        a = rng.standard_normal(shape).astype(dtype)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal(shape).astype(dtype)
        return [a]
    return make


def _eigh_values(lower, subset=None):
    return lambda x: lax.linalg.eigh(x, lower=lower, symmetrize_input=False,
                                     subset_by_index=subset)[1]


def _eigh_abs_vectors(x):
    # |v| is independent of the eigenvectors' signs/phases (distinct eigenvalues)
    v, w = lax.linalg.eigh(x, lower=True, symmetrize_input=False)
    return jnp.abs(v), w


@rule("eigh", dtypes=_LAPACK,
      cases=[case.custom("eigenvalues from the lower triangle", _eigh_values(True), _sym((2, 5, 5))),
             case.custom("eigenvalues from the upper triangle", _eigh_values(False), _sym((5, 5))),
             case.custom("|eigenvectors|", _eigh_abs_vectors, _sym((4, 4))),
             case.custom("empty", _eigh_values(True), _sym((0, 0))),
             case.custom("symbolic batch and size", _eigh_values(False), _sym((3, 5, 5)),
                         convert_kw=_poly("(b, n, n)")),
             case.custom("|eigenvectors|, symbolic batch", _eigh_abs_vectors, _sym((2, 4, 4)),
                         convert_kw=_poly("(b, 4, 4)"))])
def eigh_from_one_triangle(ctx, x, *, lower=True, sort_eigenvalues=True,
                           subset_by_index=None, **_):
    """(eigenvectors, ascending eigenvalues) of the Hermitian matrix held in one triangle;
    LAPACK's syevd returns them ascending whether or not sorting was asked for."""
    w, v = tf.linalg.eigh(_hermitian_from(x, lower))
    w = tf.math.real(w)  # TF keeps the complex dtype for Hermitian eigenvalues
    if subset_by_index is not None:
        lo, hi = (ctx.dim(i) for i in subset_by_index)
        w, v = w[..., lo:hi], v[..., lo:hi]
    return [v, w]


# -- eig -------------------------------------------------------------------------------

def _lapack_normalize(vectors):
    """Columns scaled to unit 2-norm with their largest-modulus entry real and positive,
    as LAPACK's geev does for complex matrices (for real matrices LAPACK leaves the sign
    of real eigenvectors as its algorithm produces it: a sign freedom)."""
    norm = tf.norm(vectors, axis=-2, keepdims=True)
    vectors = vectors / tf.cast(tf.where(norm == 0, tf.ones_like(norm), norm), vectors.dtype)
    big = tf.argmax(tf.abs(vectors), axis=-2, output_type=tf.int32)
    top = tf.gather(tf.linalg.matrix_transpose(vectors), big[..., None],
                    batch_dims=len(vectors.shape) - 1)[..., 0]
    mag = tf.abs(top)
    phase = tf.math.conj(top) / tf.cast(tf.where(mag == 0, tf.ones_like(mag), mag), top.dtype)
    phase = tf.where(mag == 0, tf.ones_like(phase), phase)
    return vectors * phase[..., None, :]


def _eig_fn(left, right):
    def f(x):
        out = lax.linalg.eig(x, compute_left_eigenvectors=left,
                             compute_right_eigenvectors=right)
        return out[0] if not (left or right) else out
    return f


def _eig_residual(x):
    # |A v - w v| and |u^H A - w u^H| are ~0 whatever the order and phases
    w, vl, vr = lax.linalg.eig(x, compute_left_eigenvectors=True,
                               compute_right_eigenvectors=True)
    a = x.astype(w.dtype)
    ul = jnp.conj(jnp.swapaxes(vl, -1, -2))
    right = jnp.abs(a @ vr - vr * w[..., None, :]).max() < 1e-3
    left = jnp.abs(ul @ a - w[..., :, None] * ul).max() < 1e-3
    return right & left


@rule("eig", dtypes=_LAPACK,
      cases=[case("eigenvalues of a triangular matrix", _eig_fn(False, False),
                  [[1.0, 5.0, 2.0], [0.0, 2.0, 4.0], [0.0, 0.0, 3.0]]),
             case("eigenvectors are residual-free", _eig_residual,
                  [[2.0, 1.0, 0.5], [0.3, -1.0, 0.2], [0.0, 0.4, 3.0]]),
             case.custom("empty", _eig_fn(True, True), _sym((0, 0))),
             case.custom("residual-free, symbolic batch and size", _eig_residual,
                         _sym((3, 4, 4)), convert_kw=_poly("(b, n, n)"))])
def eig_general(ctx, x, *, compute_left_eigenvectors=True, compute_right_eigenvectors=True,
                **_):
    """Eigenvalues and right/left eigenvectors (columns) of a general square matrix.
    Left eigenvectors are the columns of inv(V)^H; the eigenvalue order is TF's and may
    differ from LAPACK's (an order freedom)."""
    w, v = tf.linalg.eig(x)
    if ctx.avals_in[0].shape[-1] == 0:     # never true of a symbolic dimension (>= 1)
        return [w] + [v] * (compute_left_eigenvectors + compute_right_eigenvectors)
    outs = [w]
    if compute_left_eigenvectors:
        outs.append(_lapack_normalize(tf.linalg.adjoint(tf.linalg.inv(v))))
    if compute_right_eigenvectors:
        outs.append(_lapack_normalize(v))
    return outs


# -- svd -------------------------------------------------------------------------------

def _svd_fn(full_matrices, compute_uv, subset=None):
    def f(x):
        out = lax.linalg.svd_p.bind(x, full_matrices=full_matrices, compute_uv=compute_uv,
                                    subset_by_index=subset, algorithm=None)
        if not compute_uv:
            return out[0]
        s, u, vt = out
        return s, jnp.abs(u[..., :, :1]), u @ (s[..., :, None] * vt)[..., :u.shape[-1], :]
    return f


@rule("svd", dtypes=_LAPACK,
      cases=[case.random(_svd_fn(False, False), shapes=[(2, 4, 3)], name="singular values"),
             case.random(_svd_fn(False, True), shapes=[(3, 5)], name="U S Vt rebuilds"),
             case.random(_svd_fn(True, False), shapes=[(5, 3)], name="full"),
             case.random(_svd_fn(False, True), shapes=[(2, 3, 5)], name="symbolic batch",
                         convert_kw=_poly("(b, 3, 5)")),
             case.random(_svd_fn(True, False), shapes=[(2, 6, 4)],
                         name="symbolic batch and size", convert_kw=_poly("(b, m, n)"))])
def svd_by_tf(ctx, x, *, full_matrices, compute_uv, subset_by_index=None, algorithm=None, **_):
    """(s, U, Vt) in JAX's order; TF returns V, not its adjoint. The choice of algorithm
    changes only rounding; singular vectors are unique up to sign/phase."""
    if compute_uv:
        s, u, v = tf.linalg.svd(x, full_matrices=full_matrices, compute_uv=True)
        vt = tf.linalg.adjoint(v)
    else:
        s = tf.linalg.svd(x, compute_uv=False)
    if subset_by_index is not None:
        lo, hi = (ctx.dim(i) for i in subset_by_index)
        s = s[..., lo:hi]
        if compute_uv:
            u, vt = u[..., :, lo:hi], vt[..., lo:hi, :]
    return [s, u, vt] if compute_uv else [s]


# -- qr --------------------------------------------------------------------------------

@rule("qr", dtypes=_LAPACK,
      when=lambda eqn: ("column pivoting (pivoting=True) has no TF equivalent"
                        if eqn.params.get("pivoting") else None),
      cases=[case.random(lambda x: lax.linalg.qr(x, full_matrices=False), shapes=[(2, 5, 3)],
                         name="reduced"),
             case.random(lambda x: lax.linalg.qr(x, full_matrices=True), shapes=[(5, 3)],
                         name="full"),
             case.random(lambda x: lax.linalg.qr(x, full_matrices=True), shapes=[(3, 5)],
                         name="wide"),
             case.random(lambda x: lax.linalg.qr(x, full_matrices=False), shapes=[(2, 5, 3)],
                         name="symbolic batch", convert_kw=_poly("(b, 5, 3)")),
             case.random(lambda x: lax.linalg.qr(x, full_matrices=True), shapes=[(2, 5, 3)],
                         name="full, symbolic batch and size", convert_kw=_poly("(b, m, n)"))])
def qr_householder(ctx, x, *, full_matrices, pivoting=False, **_):
    """Householder QR; TF (Eigen) and LAPACK use the same reflector sign convention."""
    q, r = tf.linalg.qr(x, full_matrices=full_matrices)
    return [q, r]


# -- geqrf / householder_product -------------------------------------------------------

def _col(x, j, nb):
    return tf.gather(x, j, axis=nb + 1)


@rule("geqrf", dtypes=_LAPACK,
      cases=[case.random(_lax_linalg.geqrf, shapes=[(5, 3)], name="tall"),
             case.random(_lax_linalg.geqrf, shapes=[(2, 3, 4)], name="wide, batch"),
             case("zero column below the diagonal", _lax_linalg.geqrf,
                  [[2.0, 1.0], [0.0, 3.0], [0.0, 4.0]]),
             case.random(_lax_linalg.geqrf, shapes=[(2, 5, 3)], name="symbolic batch",
                         convert_kw=_poly("(b, 5, 3)")),
             case.random(_lax_linalg.geqrf, shapes=[(2, 4, 4)],
                         name="symbolic batch and size", convert_kw=_poly("(b, n, n)"))])
def geqrf_householder(ctx, a, **_):
    """LAPACK's compact QR: R on and above the diagonal, the Householder vectors (unit
    leading entry implied) below it, and taus; reflector H = I - tau v v^H with
    beta = -sign(re(alpha)) * norm, and tau = 0 when there is nothing to reflect."""
    shape = ctx.shape(ctx.avals_in[0])   # ints, or TF scalars for symbolic dimensions
    m, n = shape[-2:]
    nb, k = len(shape) - 2, _min(m, n)
    rows, cols = tf.range(m, dtype=tf.int32), tf.range(n, dtype=tf.int32)
    taus0 = tf.zeros([*shape[:-2], k], a.dtype)
    if 0 in ctx.avals_in[0].shape[-2:]:
        return [a, taus0]

    def body(j, a, taus):
        col = _col(a, j, nb)
        alpha = tf.gather(col, j, axis=nb)
        x = tf.where(rows > j, col, tf.zeros_like(col))
        xnorm = tf.sqrt(tf.reduce_sum(tf.square(tf.abs(x)), axis=-1))
        alpha_re = tf.math.real(alpha) if a.dtype.is_complex else alpha
        alpha_im = tf.math.imag(alpha) if a.dtype.is_complex else tf.zeros_like(alpha)
        skip = tf.logical_and(tf.equal(xnorm, 0), tf.equal(alpha_im, 0))
        norm = tf.sqrt(tf.square(tf.abs(alpha)) + tf.square(xnorm))
        beta = tf.where(alpha_re >= 0, -norm, norm)
        beta = tf.where(skip, alpha_re, beta)
        beta_c = tf.cast(beta, a.dtype)
        safe_beta = tf.where(skip, tf.ones_like(beta_c), beta_c)
        tau = tf.where(skip, tf.zeros_like(alpha), (beta_c - alpha) / safe_beta)
        denom = tf.where(skip, tf.ones_like(alpha), alpha - beta_c)
        v = tf.where(rows > j, x / _ax(denom, -1), tf.zeros_like(x))
        v = tf.where(tf.equal(rows, j), tf.ones_like(v), v)
        # apply H^H = I - conj(tau) v v^H to the columns right of j
        w = tf.linalg.matvec(a, tf.math.conj(v), adjoint_a=False, transpose_a=True)
        w = tf.where(cols > j, w, tf.zeros_like(w))
        a = a - _ax(tf.math.conj(tau), -1, -1) * _ax(v, -1) * _ax(w, -2)
        stored = tf.where(tf.equal(rows, j), _ax(beta_c, -1), tf.where(rows > j, v, col))
        a = tf.where(tf.equal(cols, j)[None, :], _ax(stored, -1), a)
        taus = tf.where(tf.equal(tf.range(k), j), _ax(tau, -1), taus)
        return j + 1, a, taus

    _, a, taus = tf.while_loop(lambda j, *_: j < k, body, (tf.constant(0), a, taus0))
    return [a, taus]


def _qr_from_geqrf(x):
    a, taus = _lax_linalg.geqrf(x)
    return lax.linalg.householder_product(a, taus)


@rule("householder_product", dtypes=_LAPACK,
      cases=[case.random(_qr_from_geqrf, shapes=[(5, 3)], name="Q of a QR"),
             case.random(lax.linalg.householder_product, shapes=[(2, 4, 3), (2, 2)],
                         name="arbitrary taus, batch"),
             # JAX takes only shapes it proves m >= n >= k for
             case.random(lax.linalg.householder_product, shapes=[(2, 5, 3), (2, 3)],
                         name="symbolic batch and sizes",
                         convert_kw=_poly("(b, n + 2, n)", "(b, n)"))])
def householder_product_accumulated(ctx, a, taus, **_):
    """The first n columns of H(0) H(1) ... H(k-1), H(i) = I - tau_i v_i v_i^H, with v_i
    read below the diagonal of column i (unit entry implied), as LAPACK's orgqr/ungqr."""
    shape = ctx.shape(ctx.avals_in[0])
    m, n = shape[-2:]
    nb, k = len(shape) - 2, ctx.shape(ctx.avals_in[1])[-1]
    rows = tf.range(m, dtype=tf.int32)
    eye = (tf.eye(m, n, dtype=a.dtype) if ctx.target == "tf" else   # MatrixDiagV3: no TFLite op
           tf.cast(tf.equal(rows[:, None], tf.range(n, dtype=tf.int32)[None, :]), a.dtype))
    q = tf.broadcast_to(eye, [*shape[:-2], m, n])
    if ctx.avals_in[1].shape[-1] == 0:
        return q

    def body(i, q):
        col = _col(a, i, nb)
        v = tf.where(rows > i, col, tf.where(tf.equal(rows, i), tf.ones_like(col),
                                             tf.zeros_like(col)))
        tau = tf.gather(taus, i, axis=nb)
        w = tf.linalg.matvec(q, tf.math.conj(v), transpose_a=True)  # v^H Q
        return i - 1, q - _ax(tau, -1, -1) * _ax(v, -1) * _ax(w, -2)

    return tf.while_loop(lambda i, _: i >= 0, body, (tf.convert_to_tensor(k - 1), q))[1]


# -- lu --------------------------------------------------------------------------------

def _pivot_magnitude(col):
    # LAPACK's i?amax compares |re| + |im| for complex numbers, not the modulus
    if col.dtype.is_complex:
        return tf.abs(tf.math.real(col)) + tf.abs(tf.math.imag(col))
    return tf.abs(col)


def _swap_rows(x, i, p, rows, nb):
    """Swap row i (a scalar) with row p (one per batch element) of [..., m, n] x."""
    row_i = tf.gather(x, i, axis=nb)
    row_p = tf.squeeze(tf.gather(x, _ax(p, -1), axis=nb, batch_dims=nb), -2)
    is_i = tf.equal(rows, i)[:, None]
    is_p = _ax(tf.equal(rows, _ax(p, -1)), -1)
    return tf.where(is_i, _ax(row_p, -2), tf.where(is_p, _ax(row_i, -2), x))


@rule("lu", dtypes=_LAPACK,
      cases=[case.random(lax.linalg.lu, shapes=[(5, 5)], name="square"),
             case.random(lax.linalg.lu, shapes=[(2, 4, 4)], name="batch"),
             case.random(lax.linalg.lu, shapes=[(3, 5)], name="wide"),
             case.random(lax.linalg.lu, shapes=[(5, 3)], name="tall"),
             case("singular: zero column is skipped", lax.linalg.lu,
                  [[0.0, 1.0, 2.0], [0.0, 3.0, 4.0], [0.0, 5.0, 7.0]]),
             case("ties pick the first row", lax.linalg.lu, [[1.0, 2.0], [-1.0, 3.0]]),
             case("NaN pivots: a first NaN is kept, later ones skipped", lax.linalg.lu,
                  [[1.0, 2.0, 0.0], [2.0, float("nan"), 1.0], [0.0, 1.0, 3.0]]),
             case("NaN below a finite candidate is never the pivot", lax.linalg.lu,
                  [[1.0, float("nan")], [float("nan"), 2.0]]),
             case("huge pivot: l = x * (1/pivot) underflows as in getf2", lax.linalg.lu,
                  [[3e38, 1e38], [1e38, 2e38]], dtypes=["float32"]),
             case.random(lax.linalg.lu, shapes=[(2, 4, 4)], name="symbolic batch and size",
                         convert_kw=_poly("(b, n, n)")),
             case.random(lax.linalg.lu, shapes=[(2, 3, 5)], name="wide, symbolic batch",
                         convert_kw=_poly("(b, 3, 5)"))])
def lu_partial_pivoting(ctx, a, **_):
    """getrf: partial pivoting (first largest |re|+|im| in the column), unit-lower L and
    U packed in one matrix, 0-based pivots and the resulting row permutation. A zero
    pivot leaves its column unscaled, as LAPACK does."""
    shape = ctx.shape(ctx.avals_in[0])
    m, n = shape[-2:]
    nb = len(shape) - 2
    k = _min(m, n)
    rows, cols = tf.range(m, dtype=tf.int32), tf.range(n, dtype=tf.int32)
    batch = shape[:-2]
    perm0 = tf.broadcast_to(rows, [*batch, m])
    piv0 = tf.zeros([*batch, k], tf.int32)
    tiny = float(np.finfo(a.dtype.real_dtype.as_numpy_dtype).tiny)

    def body(j, a, perm, piv):
        col = tf.gather(a, j, axis=nb + 1)
        # i?amax: the first candidate (row j) wins if it is NaN; a later NaN never does
        mag = _pivot_magnitude(col)
        nan = tf.math.is_nan(mag)
        mag = tf.where(tf.logical_and(rows >= j, tf.logical_not(nan)), mag, -tf.ones_like(mag))
        p = tf.argmax(mag, axis=-1, output_type=tf.int32)
        p = tf.where(tf.gather(nan, j, axis=nb), j, p)
        a = _swap_rows(a, j, p, rows, nb)
        perm = tf.squeeze(_swap_rows(_ax(perm, -1), j, p, rows, nb), -1)
        piv = tf.where(tf.equal(tf.range(k), j), _ax(p, -1), piv)
        col = tf.gather(a, j, axis=nb + 1)
        pivot = _ax(tf.gather(col, j, axis=nb), -1)
        # JAX's CPU runtime reads a subnormal as 0 (TFLite's kernels do not all do so)
        zero = tf.abs(pivot) < tiny
        safe = tf.where(zero, tf.ones_like(pivot), pivot)
        l = tf.where(rows > j, col * (1 / safe), tf.zeros_like(col))   # getf2 scales by 1/pivot
        l = tf.where(zero, tf.zeros_like(l), l)
        u = tf.where(cols > j, tf.gather(a, j, axis=nb), tf.zeros_like(tf.gather(a, 0, axis=nb)))
        trailing = tf.logical_and((rows > j)[:, None], (cols > j)[None, :])
        a = tf.where(trailing, a - _ax(l, -1) * _ax(u, -2), a)  # no 0 * NaN elsewhere
        below = tf.logical_and((rows > j)[:, None], tf.equal(cols, j)[None, :])
        below = tf.logical_and(below, _ax(tf.logical_not(zero), -1))
        a = tf.where(below, _ax(l, -1), a)
        return j + 1, a, perm, piv

    if 0 in ctx.avals_in[0].shape[-2:]:
        return [a, piv0, perm0]
    _, lu, perm, piv = tf.while_loop(lambda j, *_: j < k, body,
                                     (tf.constant(0, tf.int32), a, perm0, piv0))
    return [lu, piv, perm]


def _pivots_to_perm(pivots, size: int, shape: list):
    """``shape``: the pivots' shape (ints, or TF scalars for symbolic dimensions)."""
    *batch, k = shape
    nb = len(batch)
    rows = tf.range(size, dtype=tf.int32)
    perm0 = tf.broadcast_to(rows, [*batch, size])
    if (isinstance(k, int) and k == 0) or size == 0:
        return perm0

    def body(i, perm):
        p = tf.gather(pivots, i, axis=nb)
        return i + 1, tf.squeeze(_swap_rows(_ax(perm, -1), i, p, rows, nb), -1)

    return tf.while_loop(lambda i, _: i < k, body, (tf.constant(0, tf.int32), perm0))[1]


@rule("lu_pivots_to_permutation", dtypes="int32",
      cases=[case("swaps in order", lambda p: lax.linalg.lu_pivots_to_permutation(p, 5),
                  [3, 3, 4, 3]),
             case("batch", lambda p: lax.linalg.lu_pivots_to_permutation(p, 3),
                  [[2, 1, 2], [0, 2, 2]]),
             case("symbolic batch", lambda p: lax.linalg.lu_pivots_to_permutation(p, 3),
                  [[2, 1, 2], [0, 2, 2], [1, 1, 2]], convert_kw=_poly("(b, 3)"))])
def lu_pivots_to_permutation_by_swaps(ctx, pivots, *, permutation_size, **_):
    """Apply the row swaps i <-> pivots[i], in order, to the identity permutation."""
    return _pivots_to_perm(pivots, int(permutation_size), ctx.shape(ctx.avals_in[0]))


# -- triangular_solve ------------------------------------------------------------------

def _tri_solve_fn(**params):
    def f(a, b):
        return lax.linalg.triangular_solve_p.bind(a, b, **{
            "left_side": False, "lower": False, "transpose_a": False, "conjugate_a": False,
            "unit_diagonal": False, **params})
    return f


def _tri_args(a_shape, b_shape):
    def make(rng, dtype):
        a = rng.standard_normal(a_shape) + 3 * np.eye(a_shape[-1])
        b = rng.standard_normal(b_shape)
        if np.dtype(dtype).kind == "c":
            a = a + 1j * rng.standard_normal(a_shape)
            b = b + 1j * rng.standard_normal(b_shape)
        return [a.astype(dtype), b.astype(dtype)]
    return make


#: every combination of side, triangle, transpose and conjugate, unit diagonal, symbolic
#: dimensions (linalg_tflite's rule runs them too)
TRIANGULAR_SOLVE_CASES = [
    case.custom(f"{side} lower={lo} transpose={tr} conjugate={cj}",
                _tri_solve_fn(left_side=side == "left", lower=lo, transpose_a=tr, conjugate_a=cj),
                _tri_args((2, 4, 4), (2, 4, 3) if side == "left" else (2, 3, 4)))
    for side in ("left", "right") for lo in (False, True) for tr in (False, True)
    for cj in (False, True)] + [
    case.custom("unit diagonal", _tri_solve_fn(left_side=True, lower=True, unit_diagonal=True),
                _tri_args((4, 4), (4, 2))),
    case.custom("left, symbolic batch and sizes", _tri_solve_fn(left_side=True, lower=True),
                _tri_args((2, 4, 4), (2, 4, 3)), convert_kw=_poly("(b, n, n)", "(b, n, k)")),
    case.custom("right transposed, symbolic batch", _tri_solve_fn(transpose_a=True),
                _tri_args((2, 4, 4), (2, 3, 4)), convert_kw=_poly("(b, 4, 4)", "(b, 3, 4)"))]


@rule("triangular_solve", dtypes="inexact", cases=TRIANGULAR_SOLVE_CASES)
def triangular_solve_by_tf(ctx, a, b, *, left_side, lower, transpose_a, conjugate_a,
                           unit_diagonal, **_):
    """op(A) X = B or X op(A) = B with op one of A, A^T, conj(A), A^H; only the named
    triangle of A is read (and not its diagonal when unit_diagonal)."""
    dtype = b.dtype
    # TF has no f16/bf16 kernel: solve in f32 and round once.
    if dtype in (tf.float16, tf.bfloat16):
        a, b = tf.cast(a, tf.float32), tf.cast(b, tf.float32)
    a = tf.linalg.band_part(a, -1, 0) if lower else tf.linalg.band_part(a, 0, -1)
    if unit_diagonal:
        a = tf.linalg.set_diag(a, tf.ones_like(tf.linalg.diag_part(a)))
    # X op(A) = B  <=>  op(A)^T X^T = B^T: the same solve with transpose toggled.
    transpose = transpose_a if left_side else not transpose_a
    if not left_side:
        b = tf.linalg.matrix_transpose(b)
    # TF offers A and A^H; A^T is conj(A)^H, conj(A) is conj(A) itself.
    if a.dtype.is_complex and conjugate_a != transpose:
        a = tf.math.conj(a)
    x = tf.linalg.triangular_solve(a, b, lower=lower, adjoint=transpose)
    if not left_side:
        x = tf.linalg.matrix_transpose(x)
    return tf.cast(x, dtype)


# -- tridiagonal_solve -----------------------------------------------------------------

def _tridiag_args(n, k, singular=False):
    def make(rng, dtype):
        dl, d, du = rng.standard_normal((3, n)).astype(dtype)
        dl[0] = du[-1] = 0
        if singular:
            dl[:], d[:], du[:] = 0, 0, 0
            d[0] = 1
        return [dl, d, du, rng.standard_normal((n, k)).astype(dtype)]
    return make


@rule("tridiagonal_solve", dtypes=["float32", "float64", "complex64", "complex128"],
      cases=[case.custom("random", lambda *a: lax.linalg.tridiagonal_solve(*a),
                         _tridiag_args(6, 2)),
             case.custom("singular gives NaN", lambda *a: lax.linalg.tridiagonal_solve(*a),
                         _tridiag_args(3, 1, singular=True), dtypes=["float32", "float64"]),
             case.custom("symbolic sizes", lambda *a: lax.linalg.tridiagonal_solve(*a),
                         _tridiag_args(6, 2), convert_kw=_poly("(n,)", "(n,)", "(n,)", "(n, k)"))])
def tridiagonal_solve_by_tf(ctx, dl, d, du, b, *, perturb_singular=False, **_):
    """Gaussian elimination with partial pivoting, as LAPACK's gtsv (a singular system
    gives NaN); perturb_singular follows the same dgtsvx-style perturbation in both."""
    return tf.linalg.tridiagonal_solve(tf.stack([du, d, dl], axis=-2), b,
                                       diagonals_format="compact", partial_pivoting=True,
                                       perturb_singular=bool(perturb_singular))


# -- custom_linear_solve ---------------------------------------------------------------

def _diagonal_solve(d, b):
    # a user-written solver with constants closed over in both matvec and solve
    return lax.custom_linear_solve(lambda x: d * x, b, lambda _, y: y / d,
                                   lambda _, y: y / d)


@rule("custom_linear_solve",
      cases=[case.custom("jnp.linalg.solve", jnp.linalg.solve,
                         lambda rng, dt: [(rng.standard_normal((3, 3)) + 3 * np.eye(3)).astype(dt),
                                          rng.standard_normal((3,)).astype(dt)],
                         dtypes=["float32", "float64"]),
             case.custom("user solver", _diagonal_solve,
                         lambda rng, dt: [(rng.random(4) + 1).astype(dt),
                                          rng.standard_normal(4).astype(dt)],
                         dtypes=["float32", "float64"]),
             case.custom("user solver, symbolic size", _diagonal_solve,
                         lambda rng, dt: [(rng.random(4) + 1).astype(dt),
                                          rng.standard_normal(4).astype(dt)],
                         dtypes=["float32", "float64"], convert_kw=_poly("(n,)", "(n,)")),
             case.custom("jnp.linalg.solve, symbolic batch and size", jnp.linalg.solve,
                         lambda rng, dt: [(rng.standard_normal((2, 3, 3))
                                           + 3 * np.eye(3)).astype(dt),
                                          rng.standard_normal((2, 3, 2)).astype(dt)],
                         dtypes=["float32", "float64"],
                         convert_kw=_poly("(b, n, n)", "(b, n, k)"))])
def custom_linear_solve_by_solve(ctx, *args, const_lengths, jaxprs, **_):
    """Run the ``solve`` jaxpr on its constants and b, as JAX's own impl does; matvec and
    the transpose solvers only matter for differentiation."""
    lengths = [int(n) for n in const_lengths]
    start = sum(lengths[:2])
    solve_consts = list(args[start:start + lengths[2]])
    b = list(args[sum(lengths):])
    return ctx.lower_jaxpr(jaxprs.solve, *solve_consts, *b)
