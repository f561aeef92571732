"""The differential fuzzer (tests/fuzz.py) on a fixed seed and a small budget, and the
disagreements it found that are TF's runtime, pinned as strict expected failures.

Each shard runs a fixed sample of (rule, dtype) pairs of its families (the same sample on
every run: the seed is fixed); a deeper run is ``python tests/fuzz.py --long``. Every
disagreement it finds must be one of LIMITATIONS (TF's runtime, documented in README),
recognised by its one-element shrunk case; anything else fails with the case to keep.
"""
from __future__ import annotations

import re

import jax
import ml_dtypes
import numpy as np
import pytest
import tensorflow as tf
from jax import lax

from core import convert

from core.registry import build_registry
from core.testkit import run_function
from tests import fuzz

REGISTRY = build_registry(strict=True, entry_points=False)
SEED = 16
#: (pattern over "rule id[primitive]", share of its (rule, dtype) pairs run in CI)
SHARDS = {
    "elementwise": (r"^rules_lax\.elementwise:", 0.12),
    "special": (r"^rules_lax\.special:(?!igamma|regularized)", 0.4),
    "comparison": (r"^rules_lax\.(comparison|bitwise):", 0.1),
    "conversion": (r"^rules_lax\.conversion:", 0.2),
    "reductions": (r"^rules_lax\.(reductions|cumulative):", 0.1),
    "structural": (r"^rules_lax\.(structural|slicing|sorting):", 0.03),
}


def _subnormal(v) -> bool:
    """Any element of ``v`` (or a part of it) is a subnormal number."""
    v = np.asarray(v)
    if v.dtype.kind not in "fcV":
        return False
    real = {"complex64": np.float32, "complex128": np.float64}.get(v.dtype.name, v.dtype)
    tiny = float(ml_dtypes.finfo(real).tiny)
    parts = [v.real, v.imag] if v.dtype.kind == "c" else [v]
    return any(np.any((np.abs(p.astype(np.float64)) < tiny) & (p != 0)) for p in parts)


#: Disagreements the fuzzer finds that are not fixed: a regex over the finding's name
#: ("rule id[primitive]:kind:label:dtype"), whether its one-element shrunk case must hold
#: a subnormal operand, and the reason. README's limitations section says what each
#: means in practice; the cases below (LIMITATION_CASES) pin each as a strict failure.
OPEN = [
    (r"\[(pow|atan2)\]:.*:(b?float\d+)$", True,
     "TF's Atan2 and Pow kernels may misread subnormal operands "
     "(pow(NaN, 5e-324) = 1, atan2(0, 5e-324) = pi/4), and XLA flushes some, depending on "
     "the thread's floating-point mode (seen in a plain script, not under pytest: so not "
     "pinned)"),
    (r"\[(igamma|igammac|igamma_grad_a)\]:.*:float32$", True,
     "TF's float32 Log reads a subnormal as the smallest normal number"),
    (r"\[log\]:.*:float32$", True,
     "the float32 log of a subnormal depends on where the element falls, in JAX and in TF "
     "alike: their vectorized loops flush it to zero (-inf), their remainders give "
     "-103.97208 for any subnormal; which elements take which loop differs between XLA and "
     "Eigen and between CPUs (test_log_of_subnormal_is_one_of_two_values)"),
    (r"\[(div|integer_pow)\]:.*:complex(64|128)$", False,
     "complex quotients whose parts underflow: XLA fuses multiply-adds (the sign of a zero "
     "part differs), and flushes subnormal parts"),
    (r"\[(sqrt|rsqrt|sin|cos|tan|sinh|cosh|asinh|acosh|atanh|asin|acos|atan|log1p|pow)\]"
     r":.*:complex(64|128)$", False,
     "TF's complex kernels at infinite, NaN, signed-zero and subnormal parts follow other "
     "formulas than XLA's (ordinary values agree within the tolerance)"),
    (r"\[reduce_(max|min)\]:.*:(b?float\d+)$", lambda f: "sign of zero differs" in f.detail,
     "TF's Max/Min reducers do not order -0.0 below +0.0 (the zero that wins depends on "
     "the order), XLA's do; a fix would be a pass over every element of reduce_max"),
    (r"\[approx_top_k\]:.*:(b?float\d+)$", lambda f: _ties_or_nan(f.draw.args[0]),
     "XLA's CPU sort for approx_top_k is unstable beyond 16 elements (the order of ties) "
     "and compares NaN with plain < / > (no defined place); float32 max (a TopK kernel) "
     "is exact"),
    (r"(relu6_fused\[custom_jvp_call\]:values:hard_silu|reductions:reduce\[reduce\]:values:"
     r"two operands, order-dependent)", False,
     "XLA's CPU fuses a multiply and an add into one rounding (FMA): a product that "
     "underflows or rounds, then added, differs (found: the sign of zero of "
     "hard_silu(x) + relu6(2x) at -1.2e-38; a - b * c folded in a reduce)"),
]


def _ties_or_nan(x) -> bool:
    """``x`` holds a NaN, or two equal values (-0.0 == 0.0) along its last axis."""
    x = np.asarray(x, np.float64)
    s = np.sort(x, axis=-1)
    return bool(np.isnan(x).any() or (x.shape[-1] > 1 and (s[..., 1:] == s[..., :-1]).any()))


#: In the TFLite runtime (LiteRT's XNNPACK kernels flush subnormals; docs/writing_rules.md).
OPEN_TFLITE = [(r".", True, "LiteRT's XNNPACK kernels flush subnormal operands to zero")]
#: In onnxruntime (README's limitations).
OPEN_ONNX = [
    (r"\[integer_pow\]:.*:float16$", False,
     "onnxruntime computes a float16 step followed by a cast to float32 in float32, "
     "unrounded (an underflowing or overflowing float16 intermediate is not)"),
    (r".", True, "onnxruntime keeps subnormal operands (sign, ceil, sqrt, log, ...), XLA's "
     "CPU backend reads them as zero (README; pinned in tests/test_onnx_runtime.py)"),
]
#: In TF.js, which does not flush subnormals (README).
OPEN_TFJS = [(r".", True, "TF.js keeps subnormal operands, XLA's CPU backend flushes them")]
OPEN_TARGET = {"tflite": OPEN_TFLITE, "onnx": OPEN_ONNX, "tfjs": OPEN_TFJS}


def explained(f: fuzz.Finding, target: str = "tf") -> str | None:
    """The reason for a finding, if it is one of the open limitations. An entry's second
    element: False (the pattern suffices), True (the one-element shrunk case holds a
    subnormal operand), or a test of the finding."""
    for pattern, needs, reason in OPEN + OPEN_TARGET.get(target, []):
        if re.search(pattern, f.name) and (
                callable(needs) and needs(f) or needs is False
                or needs is True and f.one and any(map(_subnormal, f.one))):
            return reason
    return None


@pytest.mark.parametrize("shard", sorted(SHARDS))
def test_fuzz_finds_no_unexplained_disagreement(shard):
    pattern, fraction = SHARDS[shard]
    n, found = fuzz.fuzz(seed=SEED, rounds=1, programs=0, pattern=pattern,
                         fraction=fraction, registry=REGISTRY)
    bad = [f for f in found if not explained(f)]
    print(f"{shard}: {n} cases, {len(found)} disagreements, all explained" if not bad else "")
    assert n > 0
    assert not bad, f"{len(bad)} of {n} fuzz cases disagree with JAX:\n" + "\n".join(
        f"{f.status} {f.name}: {f.shrunk or f.detail[:400]}" for f in bad[:10])


def test_fuzz_tflite_rules_in_runtime():
    """A slice of the TFLite rules, through the converter and the LiteRT interpreter."""
    n, found = fuzz.fuzz(seed=SEED, rounds=1, programs=0, target="tflite",
                         pattern=r"^rules_lax\.(elementwise|special):\w+_tflite\[",
                         fraction=0.25, registry=REGISTRY)
    bad = [f for f in found if not explained(f, "tflite")]
    print(f"tflite: {n} cases, {len(found)} disagreements")
    assert n > 0
    assert not bad, f"{len(bad)} of {n} fuzz cases disagree with JAX in LiteRT:\n" + \
        "\n".join(f"{f.status} {f.name}: {f.shrunk or f.detail[:400]}" for f in bad[:10])


def test_fuzz_programs():
    n, found = fuzz.fuzz(seed=SEED, rounds=1, programs=8, pattern="^program$",
                         registry=REGISTRY)
    bad = [f for f in found if not explained(f)]
    assert n == 8 and not bad, "\n".join(f"{f.name}: {f.shrunk or f.detail[:400]}"
                                          for f in bad)


# -- the limitations, pinned: each must still disagree (strict), and only where stated -------

LIMITATION_CASES = {
    "igammac f32, subnormal x": (lax.igammac, [np.array([1e-3], np.float32),
                                               np.array([5.877472e-39], np.float32)]),
    "div c64, underflowing part": (lax.div, [np.array([1e-30j], np.complex64),
                                             np.array([-2 + 1e-30j], np.complex64)]),
    "sin c64, signed zero": (lax.sin, [np.array([-0.0 - 1j], np.complex64)]),
    "sqrt c128, NaN and inf parts": (lax.sqrt, [np.array([complex(np.nan, np.inf)])]),
    "reduce_max f32, +0.0 then -0.0": (lambda x: lax.reduce_max(x, (0,)),
                                       [np.float32([0.0, -0.0])]),
    "approx_min_k f64, ties past 16 elements": (
        lambda x: lax.approx_min_k(x, 2)[1], [np.float64([1.0] * 9 + [0.0] * 8 + [2.0])]),
    "f32 multiply-add, an underflowing product": (
        lambda x: jax.nn.hard_silu(x) + jax.nn.relu6(2 * x), [np.float32([-1.1754944e-38])]),
    "onnx: f16 integer_pow, underflowing square": (
        lambda x: lax.integer_pow(x, -2), [np.float16([0.004505157470703125])], "onnx"),
    "onnx: f16 product overflowing in a chain": (
        lambda x: (x * x) / x, [np.float16([300.0])], "onnx"),
    "onnx: log of a f32 subnormal": (lax.log, [np.float32([1.4e-45])], "onnx"),
}


def test_log_of_subnormal_is_one_of_two_values():
    """Not pinnable as a strict failure (which elements flush depends on the CPU's vector
    width), so the limitation is pinned to what it is: each element of a float32 log of a
    subnormal is, in JAX and in ours, one of the two values both libraries give, -inf
    (flushed) or -103.97208 (log(2**-150), their scalar loop's value for any subnormal)."""
    x = np.float32([1.4e-45, 5.877472e-39, 1e-40, 1.1754942e-38] * 17)
    ours = tf.function(convert(lax.log, registry=REGISTRY), autograph=False)(x).numpy()
    for name, y in (("jax", np.asarray(jax.jit(lax.log)(x))), ("ours", ours)):
        ok = np.isneginf(y) | (y == np.float32(-103.97208))
        assert ok.all(), f"{name}: log{x[~ok][:3]} = {y[~ok][:3]}"


@pytest.mark.parametrize("name", sorted(LIMITATION_CASES))
def test_known_limitation_still_differs(name):
    fn, args, *target = LIMITATION_CASES[name]
    with jax.enable_x64(args[0].dtype in (np.float64, np.complex128)):
        out = run_function(fn, args, registry=REGISTRY, signed_zeros=True,
                           target=(target or ["tf"])[0])
    assert out.status in ("mismatch", "pass")
    if out.status == "mismatch":
        pytest.xfail(f"{name} (README, limitations)")
    pytest.fail(f"{name} now agrees with JAX: drop it from LIMITATION_CASES, OPEN and "
                "README's limitations")
