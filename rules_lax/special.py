"""Special functions: erf, erfc, erf_inv, lgamma, digamma, polygamma, zeta, bessel_i0e,
bessel_i1e, igamma, igammac, igamma_grad_a and regularized_incomplete_beta.

JAX is the oracle, and these functions are approximations whose last digits depend on the
algorithm, so each rule reproduces the algorithm JAX's lowering uses:
- where XLA expands the op itself (CHLO: erf, erfc, erf_inv, lgamma, digamma, polygamma,
  zeta), the same published approximation (Cephes/Eigen rational functions, Giles'
  erfinv polynomials, Lanczos g=7 n=9, Euler-Maclaurin zeta) is written with plain TF
  arithmetic. TF's own kernels differ from it beyond the f32 tolerance near lgamma's
  zeros, for erfinv near +-1, for polygamma at negative x and for zeta at q = inf; the
  arithmetic forms also export to TFLite.
- where TF's kernel was measured to agree with JAX over wide ranges (f64 erf and erfc,
  bessel_i1e) it is used directly.
- where JAX itself lowers with ``mlir.lower_fun`` (bessel_i0e, igamma, igammac,
  igamma_grad_a, regularized_incomplete_beta) the rule lowers the very same JAX function,
  made of other primitives (while, select_n, lgamma, digamma, ...). TF's Igamma and
  Betainc kernels use other series and disagree with JAX beyond the f32 tolerance.
bfloat16 and float16 are computed in float32 and rounded back, as XLA does.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import numpy as np
import tensorflow as tf
from jax import lax
from jax._src.lax import special as _jax_special

from core.rule import case, rule, rules_of
from rules_lax import elementwise as _ew

_NAN, _INF = float("nan"), float("inf")


@dataclasses.dataclass(frozen=True)
class _Math:
    """The elementary functions the expansions below are written with: TF's own ops, or
    (``_TFLITE``) the float32 TFLite forms of rules_lax.elementwise, which keep NaN, make
    inf at run time (an inf constant becomes FLT_MAX in TFLite) and stay accurate where
    TFLite's kernels are not (log near 1 and above 2^127, exp near its overflow)."""
    log: Callable = tf.math.log
    log1p: Callable = tf.math.log1p
    exp: Callable = tf.exp
    is_inf: Callable = tf.math.is_inf
    inf: Callable = lambda like: _c(_INF, like)


_TF = _Math()
_TFLITE = _Math(log=_ew._log_f32, log1p=_ew._log1p_f32, exp=_ew._exp_f32,
                is_inf=_ew._is_inf, inf=_ew._inf)
# erf_inv's TFLite rule was measured with TF's Log1p (the converter expands it)
_TFLITE_ERFINV = dataclasses.replace(_TFLITE, log1p=tf.math.log1p)


def _in_f32(fn):
    """Run ``fn`` on float32 copies of half-precision operands and round the result back
    (XLA's materializeWithUpcast); float32/float64 run as they are."""
    def wrapped(*xs):
        dtype = xs[0].dtype
        if dtype in (tf.float16, tf.bfloat16):
            return tf.cast(fn(*[tf.cast(x, tf.float32) for x in xs]), dtype)
        return fn(*xs)
    return wrapped


def _c(value, like):
    """A scalar constant of ``like``'s dtype (a Python double rounded once, like XLA's
    getConstantLike)."""
    return tf.constant(value, like.dtype)


def _div_by_const(x, value):
    """x / value the way XLA computes it: its simplifier rewrites division by a constant
    as multiplication by the constant's reciprocal (rounded in x's dtype)."""
    dt = x.dtype.as_numpy_dtype
    return x * tf.constant(dt(1) / dt(value), x.dtype)


def _horner(x, coeffs):
    p = _c(coeffs[0], x)
    for c in coeffs[1:]:
        p = p * x + _c(c, x)
    return p


def _f64(x):
    return x.dtype == tf.float64


# ---------------------------------------------------------------------------------------
# erf, erfc, erf_inv

_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
              -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
              -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
             -7.37332916720468e-03, -1.42647390514189e-02)


def _erf(x):
    if _f64(x):
        # TF's double Erf kernel returns NaN at +-inf where JAX gives +-1; erf is +-1.0
        # exactly from |x| = 5.93 on (in both), so clip instead of selecting.
        return tf.math.erf(tf.clip_by_value(x, _c(-6.0, x), _c(6.0, x)))
    # XLA's single-precision erf (Eigen's): x*P(x^2)/Q(x^2) on x clamped to [-4, 4].
    x = tf.clip_by_value(x, _c(-4.0, x), _c(4.0, x))
    x2 = x * x
    y = x * _horner(x2, _ERF_ALPHA) / _horner(x2, _ERF_BETA)
    return tf.clip_by_value(y, _c(-1.0, x), _c(1.0, x))


def _special_inputs():
    return [-np.inf, -5.0, -3.9, -1.0, -0.5, -1e-3, 0.0, 1e-30, 0.3, 0.99, 1.0, 2.5, 4.5,
            np.inf, np.nan]


@rule("erf", dtypes="floating",
      cases=[case("edges and tails", lax.erf, _special_inputs()),
             case.random(lax.erf, shapes=[(4, 5)])])
def erf(ctx, x, **_):
    """XLA's erf approximation (f32 and narrower); TF's Erf for f64, fixed at +-inf."""
    return _in_f32(_erf)(x)


_ERFC_P = (2.326819970068386e-2, -1.387039388740657e-1, 3.687424674597105e-1,
           -5.824733027278666e-1, 6.210004621745983e-1, -4.944515323274145e-1,
           3.404879937665872e-1, -2.741127028184656e-1, 5.638259427386472e-1)
_ERFC_R = (-1.047766399936249e+1, 1.297719955372516e+1, -7.495518717768503e+0,
           2.921019019210786e+0, -1.015265279202700e+0, 4.218463358204948e-1,
           -2.820767439740514e-1, 5.641895067754075e-1)
_ERFC_T = (7.853861353153693e-5, -8.010193625184903e-4, 5.188327685732524e-3,
           -2.685381193529856e-2, 1.128358514861418e-1, -3.761262582423300e-1,
           1.128379165726710e+0)


def _erfc(x, finite_branches=True):
    if _f64(x):
        return tf.math.erfc(x)
    # XLA's single-precision erfc (Cephes erfcf): 1 - x T(x^2) for |x| < 1, otherwise
    # exp(-x^2)/|x| P(1/x^2) on [1, 2) and R(1/x^2) beyond, mirrored for x <= -1.
    # With finite_branches, each branch is computed on x clamped into its own range (|x|
    # >= 1 by max, |x| <= 1 by clip): the same numbers where it is taken, finite where it
    # is not, as a select may become c*a + (1-c)*b (tf2onnx), where an untaken inf turns
    # into NaN. TF's own select needs no clamps (they cost 8% of erfc's time).
    one = _c(1.0, x)
    ax = tf.abs(x)
    at = tf.maximum(ax, one) if finite_branches else ax
    x2 = at * at
    inv_x2 = one / x2
    poly = tf.where(at < _c(2.0, x), _horner(inv_x2, _ERFC_P), _horner(inv_x2, _ERFC_R))
    tail = tf.exp(-x2) * (one / at) * poly
    tail = tf.where(-x2 < _c(-88.72283905206835, x), tf.zeros_like(x), tail)
    tail = tf.where(x < _c(0.0, x), _c(2.0, x) - tail, tail)
    xs, xs2 = x, x2
    if finite_branches:
        xs = tf.clip_by_value(x, -one, one)
        xs2 = xs * xs
    return tf.where(ax < one, one - xs * _horner(xs2, _ERFC_T), tail)


@rule("erfc", dtypes="floating",
      cases=[case("edges and tails", lax.erfc, _special_inputs() + [9.0, 10.5, -10.0]),
             case.random(lax.erfc, shapes=[(4, 5)])])
def erfc(ctx, x, **_):
    """XLA's erfc approximation (f32 and narrower); TF's Erfc (same Cephes form) for f64.
    Branches are kept finite for every export target (see _erfc)."""
    return _in_f32(lambda v: _erfc(v, finite_branches=ctx.target != "tf"))(x)


# Giles, "Approximating the erfinv function" (GPU Gems 2011): the polynomials XLA uses.
_ERFINV32_LT5 = (2.81022636e-08, 3.43273939e-07, -3.5233877e-06, -4.39150654e-06,
                 0.00021858087, -0.00125372503, -0.00417768164, 0.246640727, 1.50140941)
_ERFINV32_GE5 = (-0.000200214257, 0.000100950558, 0.00134934322, -0.00367342844,
                 0.00573950773, -0.0076224613, 0.00943887047, 1.00167406, 2.83297682)
_ERFINV64_LT625 = (
    -3.6444120640178196996e-21, -1.685059138182016589e-19, 1.2858480715256400167e-18,
    1.115787767802518096e-17, -1.333171662854620906e-16, 2.0972767875968561637e-17,
    6.6376381343583238325e-15, -4.0545662729752068639e-14, -8.1519341976054721522e-14,
    2.6335093153082322977e-12, -1.2975133253453532498e-11, -5.4154120542946279317e-11,
    1.051212273321532285e-09, -4.1126339803469836976e-09, -2.9070369957882005086e-08,
    4.2347877827932403518e-07, -1.3654692000834678645e-06, -1.3882523362786468719e-05,
    0.0001867342080340571352, -0.00074070253416626697512, -0.0060336708714301490533,
    0.24015818242558961693, 1.6536545626831027356)
_ERFINV64_LT16 = (
    2.2137376921775787049e-09, 9.0756561938885390979e-08, -2.7517406297064545428e-07,
    1.8239629214389227755e-08, 1.5027403968909827627e-06, -4.013867526981545969e-06,
    2.9234449089955446044e-06, 1.2475304481671778723e-05, -4.7318229009055733981e-05,
    6.8284851459573175448e-05, 2.4031110387097893999e-05, -0.0003550375203628474796,
    0.00095328937973738049703, -0.0016882755560235047313, 0.0024914420961078508066,
    -0.0037512085075692412107, 0.005370914553590063617, 1.0052589676941592334,
    3.0838856104922207635)
_ERFINV64_GE16 = (
    -2.7109920616438573243e-11, -2.5556418169965252055e-10, 1.5076572693500548083e-09,
    -3.7894654401267369937e-09, 7.6157012080783393804e-09, -1.4960026627149240478e-08,
    2.9147953450901080826e-08, -6.7711997758452339498e-08, 2.2900482228026654717e-07,
    -9.9298272942317002539e-07, 4.5260625972231537039e-06, -1.9681778105531670567e-05,
    7.5995277030017761139e-05, -0.00021503011930044477347, -0.00013871931833623122026,
    1.0103004648645343977, 4.8499064014085844221)


def _erf_inv(x, m=_TF):
    # w <= 37 for |x| < 1 (in f64); capped, it stays finite at |x| = 1 (inf there, where
    # the polynomials would give inf or NaN in a branch the last select does not take).
    w = tf.minimum(-m.log1p(-x * x), _c(100.0, x))
    if not _f64(x):
        lt5 = w < _c(5.0, x)
        w = tf.where(lt5, w - _c(2.5, x), tf.sqrt(w) - _c(3.0, x))
        p = tf.where(lt5, _c(_ERFINV32_LT5[0], x), _c(_ERFINV32_GE5[0], x))
        for lo, hi in zip(_ERFINV32_LT5[1:], _ERFINV32_GE5[1:]):
            p = tf.where(lt5, _c(lo, x), _c(hi, x)) + p * w
    else:
        # Three branches of different polynomial degree (23, 19, 17 coefficients),
        # evaluated in lockstep like XLA: the shorter ones stop early.
        lt625, lt16 = w < _c(6.25, x), w < _c(16.0, x)
        w = tf.where(lt625, w - _c(3.125, x),
                     tf.sqrt(w) - tf.where(lt16, _c(3.25, x), _c(5.0, x)))

        def coeff(i):
            c = _c(_ERFINV64_LT625[i], x)
            if i < 19:
                c = tf.where(lt625, c, _c(_ERFINV64_LT16[i], x))
            if i < 17:
                c = tf.where(lt16, c, _c(_ERFINV64_GE16[i], x))
            return c
        p = coeff(0)
        for i in range(1, 23):
            step = coeff(i) + p * w
            p = step if i < 17 else tf.where(lt16 if i < 19 else lt625, step, p)
    # erfinv(+-1) = +-inf (as x / +0); the polynomial is indeterminate there.
    ax = tf.abs(x)
    return tf.where(ax == _c(1.0, x), x / (_c(1.0, x) - ax), p * x)


@rule("erf_inv", dtypes="floating",
      cases=[case("domain edges", lax.erf_inv,
                  [-1.0, -0.999999, -0.9997, -0.5, 0.0, 1e-20, 0.25, 0.9, 0.99993, 0.99999994,
                   1.0, 1.5, -2.0, np.inf, np.nan]),
             case.custom("uniform in (-1, 1)", lax.erf_inv,
                         lambda rng, dt: [rng.uniform(-1, 1, (50,)).astype(dt)])])
def erf_inv(ctx, x, **_):
    """Giles' polynomials as XLA evaluates them (TF's Erfinv uses another method)."""
    return _in_f32(_erf_inv)(x)


# ---------------------------------------------------------------------------------------
# lgamma, digamma, polygamma, zeta: Lanczos approximation with g = 7, n = 9, as in XLA.

_LANCZOS_G = 7.0
_LANCZOS_BASE = 0.99999999999980993227684700473478
_LANCZOS = (676.520368121885098567009190444019, -1259.13921672240287047156078755283,
            771.3234287776530788486528258894, -176.61502916214059906584551354,
            12.507343278686904814458936853, -0.13857109526572011689554707,
            9.984369578019570859563e-6, 1.50563273514931155834e-7)


def _lanczos_parts(x, with_derivative=False, m=_TF):
    """z (x-1, or -x where the reflection is used), a(z), a'(z), log(t(z)) and min(x, 1/2)
    (x where the reflection is used, finite for x > -inf where it is not)."""
    reflect = x < _c(0.5, x)
    xr = tf.minimum(x, _c(0.5, x))
    z = tf.where(reflect, -xr, x - _c(1.0, x))
    a, da = _c(_LANCZOS_BASE, x), tf.zeros_like(x)
    for k, coeff in enumerate(_LANCZOS, start=1):
        zk = z + _c(k, x)
        if with_derivative:
            da = da - _c(coeff, x) / (zk * zk)
        a = a + _c(coeff, x) / zk
    g_half = _LANCZOS_G + 0.5
    # log(t) = log(g + 1/2) + log1p(z / (g + 1/2)), more accurate than log(g + 1/2 + z).
    t = _c(g_half, x) + z
    log_t = _c(math.log(g_half), x) + m.log1p(_div_by_const(z, g_half))
    return reflect, z, a, da, t, log_t, xr


def _lgamma(x, m=_TF):
    # x is clipped to [-2^(p+1), max finite] first: beyond, x is an integer (a pole, +inf)
    # or +inf, and so is lgamma of the bound; every select below then has finite branches.
    info = np.finfo(x.dtype.as_numpy_dtype)
    x = tf.clip_by_value(x, _c(-2.0 ** (info.nmant + 1), x), _c(info.max, x))
    reflect, z, a, _, t, log_t, xr = _lanczos_parts(x, m=m)
    # (z + 1/2) log t - t, arranged so that t does not overflow.
    r = (z + _c(0.5, x) - t / log_t) * log_t
    lg = _c((math.log(2) + math.log(math.pi)) / 2, x) + r + m.log(a)
    # Reflection lgamma(x) = log(pi) - lgamma(1-x) - log|sin(pi x)|, with sin taken on the
    # fractional part of |x| folded into [0, 1/2] so integers give exactly log(0) = -inf
    # (then +inf results: lg is finite there). x >= 1/2 takes min(x, 1/2), so that the
    # term stays finite where it is not used, and lg enters with its sign: the same sum.
    ax = tf.abs(xr)
    frac = ax - tf.floor(ax)
    frac = tf.where(_c(0.5, x) < frac, _c(1.0, x) - frac, frac)
    log_sin = m.log(tf.sin(_c(math.pi, x) * frac))
    return (tf.where(reflect, _c(-1.0, x), _c(1.0, x)) * lg
            + tf.where(reflect, _c(math.log(math.pi), x) - log_sin, tf.zeros_like(x)))


def _digamma(x, m=_TF):
    reflect, z, a, da, t, log_t, xr = _lanczos_parts(x, with_derivative=True, m=m)
    dg = log_t + da / a - _c(_LANCZOS_G, x) / t
    # Reflection digamma(x) = digamma(1-x) - pi cot(pi x), with x shifted into
    # [-1/2, 1/2] first so that pi*x keeps its precision (and x >= 1/2, where it is not
    # used, taken as 1/2, where cot is finite).
    rx = xr + tf.abs(tf.floor(xr + _c(0.5, x)))
    pi_rx = _c(math.pi, x) * rx
    dg = tf.where(reflect, dg - _c(math.pi, x) * tf.cos(pi_rx) / tf.sin(pi_rx), dg)
    # NaN at the poles 0, -1, -2, ...: sqrt(-1), added (a NaN constant in a select would
    # be an operand that is not finite where it is not taken).
    pole = tf.logical_and(x <= _c(0.0, x), tf.equal(x, tf.floor(x)))
    return dg + tf.sqrt(-tf.cast(pole, x.dtype))


_GAMMA_INPUTS = [-np.inf, -3.0, -2.5, -2.4570247, -1e-7, 0.0, 1e-30, 0.5, 0.99999, 1.0,
                 1.4616321, 2.0, 2.0002, 3.5, 171.0, 1e20, np.inf, np.nan]


@rule("lgamma", dtypes="floating",
      cases=[case("poles, zeros and tails", lax.lgamma, _GAMMA_INPUTS),
             case.random(lax.lgamma, shapes=[(4, 5)])])
def lgamma(ctx, x, **_):
    """XLA's Lanczos lgamma; TF's Lgamma kernel differs beyond 1e-6 near lgamma's zeros."""
    return _in_f32(_lgamma)(x)


@rule("digamma", dtypes="floating",
      cases=[case("poles and tails", lax.digamma, _GAMMA_INPUTS),
             case.random(lax.digamma, shapes=[(4, 5)])])
def digamma(ctx, x, **_):
    """XLA's Lanczos digamma (NaN at the poles 0, -1, -2, ...)."""
    return _in_f32(_digamma)(x)


# Bernoulli-number coefficients (2k)!/B_2k of the Euler-Maclaurin tail, highest first.
_ZETA_COEFFS = (-7.1661652561756670113e18, 1.8152105401943546773e17, -4.5979787224074726105e15,
                1.1646782814350067249e14, -2.950130727918164224e12, 7.47242496e10,
                -1.8924375803183791606e9, 47900160.0, -1209600.0, 30240.0, -720.0, 12.0)


def _zeta(s, q, m=_TF):
    """Hurwitz zeta as XLA expands it: 10 terms of the sum, then a 12-term Euler-Maclaurin
    tail (Johansson 2015, eq. 5); TF's Zeta differs at q = inf."""
    zero, one = _c(0.0, q), _c(1.0, q)
    acc, power_sum = q, tf.pow(q, -s)
    for _ in range(9):
        acc = acc + one
        power_sum = power_sum + tf.pow(acc, -s)
    acc = acc + one
    acc_pow = tf.pow(acc, -s)
    correction = acc_pow * acc / (s - one)
    inv_acc2 = one / (acc * acc)
    horner = zero
    n2 = 2 * len(_ZETA_COEFFS) - 1
    for i, coeff in enumerate(_ZETA_COEFFS[:-1]):
        factor = (s + _c(n2 - 1 - 2 * i, s)) * (s + _c(n2 - 2 - 2 * i, s))
        horner = factor * (inv_acc2 * (horner + _c(1.0 / coeff, q)))
    tail = acc_pow * (_c(0.5, q) + s / acc * (_c(1.0 / _ZETA_COEFFS[-1], q) + horner))
    result = power_sum + correction + tail
    # The plain sum alone when the tail cannot matter.
    tiny = _c(np.finfo(q.dtype.as_numpy_dtype).smallest_subnormal, q)
    result = tf.where(tf.abs(acc_pow) < tf.abs(power_sum) * tiny, power_sum, result)
    nan, inf = _c(_NAN, s), m.inf(s)
    result = tf.where(s < one, nan, result)
    q_le_0 = q <= zero
    s_is_int = tf.equal(s, tf.floor(s))
    result = tf.where(tf.logical_and(q_le_0, tf.logical_not(s_is_int)), nan, result)
    # Poles at integer q <= 0: +inf for even integer s, NaN otherwise.
    s_even = tf.logical_and(s_is_int, tf.equal(tf.math.floormod(s, _c(2.0, s)), zero))
    at_pole = tf.logical_and(q_le_0, tf.equal(q, tf.floor(q)))
    result = tf.where(at_pole, tf.where(s_even, inf, nan), result)
    return tf.where(tf.equal(s, one), inf, result)


@rule("zeta", dtypes="floating",
      cases=[case("poles and domain", lax.zeta,
                  [1.0, 2.0, 2.0, 3.0, 4.0, 0.5, 2.5, 3.0, np.nan, 2.0],
                  [1.0, 0.0, -2.0, -2.0, 1.5, 1.0, -1.5, 1e-3, 1.0, np.inf]),
             case.custom("s > 1", lax.zeta, lambda rng, dt: [
                 rng.uniform(1, 20, (30,)).astype(dt), rng.uniform(-4, 30, (30,)).astype(dt)])])
def zeta(ctx, s, q, **_):
    """XLA's Euler-Maclaurin expansion, written with TF arithmetic."""
    return _in_f32(_zeta)(s, q)


def _polygamma(n, x, m=_TF):
    # psi^(n)(x) = (-1)^(n+1) n! zeta(n+1, x) for n = 1, 2, ...; digamma for n = 0.
    # (XLA takes rem(n, 2); floormod agrees wherever the result is not NaN, and exports.)
    one = _c(1.0, x)
    sign = _c(2.0, x) * tf.math.floormod(n, _c(2.0, x)) - one
    result = sign * m.exp(_lgamma(n + one, m)) * _zeta(n + one, x, m)
    result = tf.where(tf.equal(n, _c(0.0, x)), _digamma(x, m), result)
    not_natural = tf.logical_or(tf.not_equal(n, tf.floor(n)), n < _c(0.0, x))
    return tf.where(not_natural, _c(_NAN, x), result)


@rule("polygamma", dtypes="floating",
      cases=[case("orders and poles", lax.polygamma,
                  [0.0, 1.0, 1.0, 2.0, 3.0, 5.0, 1.5, -1.0, 2.0, 1.0, np.nan],
                  [0.5, 0.0, -2.0, 3.5, -2.5, 10.0, 1.0, 1.0, -6.53, 1e-3, 1.0]),
             case.custom("random orders", lax.polygamma, lambda rng, dt: [
                 rng.integers(0, 6, (30,)).astype(dt), rng.uniform(-10, 30, (30,)).astype(dt)])])
def polygamma(ctx, n, x, **_):
    """XLA's expansion: sign * n! * zeta(n+1, x), digamma for n = 0, NaN unless n is a
    natural number. TF's Polygamma differs at negative x."""
    return _in_f32(_polygamma)(n, x)


# ---------------------------------------------------------------------------------------
# Bessel functions (Cephes Chebyshev series).

_BESSEL_INPUTS = [-np.inf, -100.0, -8.0, -7.9, -1.0, -1e-30, -0.0, 0.0, 1e-8, 0.5, 8.0, 8.1,
                  50.0, 1e30, np.inf, np.nan]


@rule("bessel_i0e", dtypes="floating",
      cases=[case("edges", lax.bessel_i0e, _BESSEL_INPUTS),
             case.random(lax.bessel_i0e, shapes=[(4, 5)])])
def bessel_i0e(ctx, x, **_):
    """JAX's own lowering (Cephes Chebyshev series in plain arithmetic)."""
    return ctx.lower_fun(_jax_special.bessel_i0e_impl, x)[0]


@rule("bessel_i1e", dtypes="floating",
      cases=[case("edges", lax.bessel_i1e, _BESSEL_INPUTS),
             case.random(lax.bessel_i1e, shapes=[(4, 5)])])
def bessel_i1e(ctx, x, **_):
    """TF's BesselI1e kernel: the Cephes series XLA's expansion also uses (an odd
    function: -0.0 gives -0.0, which TF's kernel does not keep)."""
    return tf.where(tf.math.equal(x, 0), x, _in_f32(tf.math.special.bessel_i1e)(x))


# ---------------------------------------------------------------------------------------
# Incomplete gamma and beta: JAX's own decompositions (series and continued fractions in
# while loops), lowered through the rules of the primitives they use.

def _positive(rng, dt, shape=(5, 6)):
    return np.exp(rng.uniform(-4, 4, shape)).astype(dt)


_IGAMMA_A = [0.0, 0.0, 1.0, 2.0, -1.0, 1.0, np.nan, 1.0, 0.5, 3.0, 30.0, 1e-3, 5.0, np.inf]
_IGAMMA_X = [0.0, 1.0, 0.0, np.inf, 1.0, -1.0, 1.0, np.nan, 0.5, 10.0, 25.0, 2.0, 1e-4, 1.0]


def _igamma_rule(prim_name, impl, doc):
    def lower(ctx, a, x, **_):
        return ctx.lower_fun(_jax_special._up_and_broadcast(impl), a, x)[0]
    return rule(prim_name, dtypes="floating", name=prim_name, doc=doc,
                cases=[case("domain edges", getattr(lax, prim_name), _IGAMMA_A, _IGAMMA_X),
                       case.custom("positive", getattr(lax, prim_name),
                                   lambda rng, dt: [_positive(rng, dt), _positive(rng, dt)])])(lower)


igamma = _igamma_rule("igamma", _jax_special.igamma_impl,
                      "JAX's igamma_impl: series for x < a, continued fraction otherwise.")
igammac = _igamma_rule("igammac", _jax_special.igammac_impl,
                       "JAX's igammac_impl: complement of the same series/fraction.")
igamma_grad_a = _igamma_rule("igamma_grad_a", _jax_special.igamma_grad_a_impl,
                             "JAX's igamma_grad_a_impl (TF's IgammaGradA uses other edge "
                             "values).")


@rule("regularized_incomplete_beta", dtypes="floating",
      cases=[case("harness values", lax.betainc,
                  [-1.6, -1.4, -1.0, 0.0, 0.1, 0.3, 1, 1.4, 1.6, 0.0, 2.0, np.nan],
                  [-1.6, 1.4, 1.0, 0.0, 0.2, 0.1, 1, 1.4, -1.6, 3.0, 0.0, 1.0],
                  [1.0, -1.0, 2.0, 1.0, 0.3, 0.3, -1.0, 2.4, 1.6, 0.5, 0.5, 0.5]),
             case.custom("positive", lax.betainc, lambda rng, dt: [
                 _positive(rng, dt, (20,)), _positive(rng, dt, (20,)),
                 rng.uniform(0, 1, (20,)).astype(dt)])])
def regularized_incomplete_beta(ctx, a, b, x, **_):
    """JAX's continued fraction (Lentz); TF's Betainc differs beyond the f32 tolerance."""
    return ctx.lower_fun(_jax_special._up_and_broadcast(
        _jax_special.regularized_incomplete_beta_impl), a, b, x)[0]


# ---------------------------------------------------------------------------------------
# TFLite (float32): the same expansions written with the TFLite forms of _TFLITE.

def _target_rule(target, prim_name, fn, cases, doc):
    def lower(ctx, *xs, **_):
        return fn(*xs)
    return rule(prim_name, dtypes="float32", targets=target, cases=cases,
                name=f"{prim_name}_{target}", doc=f"{prim_name}: XLA's expansion with {doc}."
                )(lower)


def _tflite_rule(prim_name, fn, cases):
    return _target_rule("tflite", prim_name, fn, cases,
                        "TFLite-safe log/exp/inf (builtin ops only)")


erf_inv_tflite = _tflite_rule("erf_inv", lambda x: _erf_inv(x, _TFLITE_ERFINV),
                              rules_of(erf_inv)[0].cases)
lgamma_tflite = _tflite_rule("lgamma", lambda x: _lgamma(x, _TFLITE), [
    case("poles, zeros, tails and extremes", lax.lgamma,
         _GAMMA_INPUTS + [3.4e38, -3.4e38, -5.0083003, -4.0394807, 1e-45, -1e-45])])
digamma_tflite = _tflite_rule(
    "digamma", lambda x: _digamma(_ew._daz(x), _TFLITE), [
        case("poles, tails and subnormals (XLA takes them as the pole 0)", lax.digamma,
             _GAMMA_INPUTS + [1e-45, -1e-45, 1e-39, 3.4e38, -3.4e38])])
zeta_tflite = _tflite_rule("zeta", lambda s, q: _zeta(s, q, _TFLITE), rules_of(zeta)[0].cases)
polygamma_tflite = _tflite_rule("polygamma", lambda n, x: _polygamma(n, x, _TFLITE),
                                rules_of(polygamma)[0].cases)


# ONNX (float32): the same expansions with a log1p made of Log (ONNX has no Log1p).
_ONNX = _Math(log1p=_ew._log1p_onnx)


def _onnx_rule(prim_name, fn, cases):
    return _target_rule("onnx", prim_name, fn, cases, "log1p written with Log (no ONNX Log1p)")


erf_inv_onnx = _onnx_rule("erf_inv", lambda x: _erf_inv(x, _ONNX), rules_of(erf_inv)[0].cases)
# onnxruntime keeps subnormals, XLA:CPU takes them as zeros (poles here): _daz.
lgamma_onnx = _onnx_rule("lgamma", lambda x: _lgamma(_ew._daz(x), _ONNX),
                         rules_of(lgamma_tflite)[0].cases)
digamma_onnx = _onnx_rule("digamma", lambda x: _digamma(_ew._daz(x), _ONNX),
                          rules_of(digamma_tflite)[0].cases)
polygamma_onnx = _onnx_rule("polygamma", lambda n, x: _polygamma(n, _ew._daz(x), _ONNX),
                            rules_of(polygamma)[0].cases)


# Cephes i1ef (single precision): Chebyshev series for exp(-x) I1(x) / x on [0, 8] and for
# exp(-x) sqrt(x) I1(x) on [8, inf), the expansion XLA uses for float32.
_I1E_A = (9.38153738649577178388e-9, -4.44505912879632808065e-8, 2.00329475355213526229e-7,
          -8.56872026469545474066e-7, 3.47025130813767847674e-6, -1.32731636560394358279e-5,
          4.78156510755005422638e-5, -1.61760815825896745588e-4, 5.12285956168575772895e-4,
          -1.51357245063125314899e-3, 4.15642294431288815669e-3, -1.05640848946261981558e-2,
          2.47264490306265168283e-2, -5.29459812080949914269e-2, 1.02643658689847095384e-1,
          -1.76416518357834055153e-1, 2.52587186443633654823e-1)
_I1E_B = (-3.83538038596423702205e-9, -2.63146884688951950684e-8, -2.51223623787020892529e-7,
          -3.88256480887769039346e-6, -1.10588938762623716291e-4, -9.76109749136146840777e-3,
          7.78576235018280120474e-1)


def _chbevl(x, coeffs):
    b0, b1, b2 = _c(coeffs[0], x), tf.zeros_like(x), tf.zeros_like(x)
    for c in coeffs[1:]:
        b2, b1 = b1, b0
        b0 = x * b1 - b2 + _c(c, x)
    return _c(0.5, x) * (b0 - b2)


@rule("bessel_i1e", dtypes="float32", targets="tflite",
      cases=[case("edges", lax.bessel_i1e, _BESSEL_INPUTS + [-0.0, 1e-45, 7.999, 8.001]),
             case.random(lax.bessel_i1e, shapes=[(4, 5)])])
def bessel_i1e_tflite(ctx, x, **_):
    """Cephes i1ef in TFLite builtins (TF's BesselI1e kernel is not one)."""
    z = tf.abs(x)
    small = tf.less_equal(z, 8.0)
    lo = _chbevl(0.5 * tf.minimum(z, 8.0) - 2.0, _I1E_A) * _ew._clip(x, -8.0, 8.0)
    zb = tf.maximum(z, 8.0)
    hi = _chbevl(32.0 / zb - 2.0, _I1E_B) / _ew._sqrt_f32(zb)
    return tf.where(small, lo, _ew._copysign(hi, x))
