"""Harness cases jaxtf is known not to pass, each with its reason.

The conformance tests mark these as strict expected failures, so a fix makes the test
fail until the entry is removed here. Keys are regular expressions over a harness case's
``fullname``; the value is the status the case is expected to end with (another status,
or a pass, fails the test: a new error cannot hide behind a known mismatch) and the
one-line reason.
"""
from __future__ import annotations

import re

import jax

KNOWN: dict[str, tuple[str, str]] = {
    r"^sort_multiple_arrays_num_arrays_(2_shape_int32_100_axis_0_isstable_False_num_keys_1|"
    r"3_shape_int32_100_axis_0_isstable_False_num_keys_[12])$": (
        "mismatch", "is_stable=False: XLA orders tied keys (and so the other operands) in "
        "an implementation-defined way; jaxtf sorts stably, also a valid order"),
    r"^approx_top_k_large_True_max_True_op_(bfloat16_2048|bfloat16_16_256|float16_16_256)_$|"
    r"^approx_top_k_large_True_max_False_op_bfloat16_16_256_$": (
        "mismatch", "XLA's CPU approx_top_k is an unstable sort for these dtypes: tied "
        "values come out in implementation-defined order; jaxtf returns the lower index "
        "first"),
}

KNOWN_X64: dict[str, tuple[str, str]] = {
    r"conv_general_dilated_preferred_lhs_complex64.*preferred_complex128": (
        "mismatch", "XLA computes this complex64 conv at complex64 precision before "
        "widening (~1e-7 relative), which no complex128 computation can match to 1e-12"),
}


#: Harness cases an export target's runtime is known not to pass (none may be silent:
#: each is listed here with its reason, and README says what it means in practice).
KNOWN_TARGET: dict[str, dict[str, tuple[str, str]]] = {"tflite": {}, "onnx": {}, "tfjs": {
    r"^dot_general_batch_dimensions_lhs_float32_8_4_3_3_4_rhs_float32_4_8_3_4_2_": (
        "mismatch", "TF.js's cpu MatMul sums float32 products in another order than XLA; one element "
        "cancels to -0.0151 from terms near 50 and is 1.2e-6 off (rtol 1e-5, atol 1e-6)"),
}}


#: Rule cases that fail in an export target's runtime, by target, then by a regex over
#: "rule id:case name:dtype", with the status they fail with (strict: another status, or
#: a pass, fails the test) and the reason.
KNOWN_TARGET_CASES: dict[str, dict[str, tuple[str, str]]] = {"tflite": {
    r"^rules_nn\.conv:conv_general_dilated:inf and nan:float32$": (
        "mismatch", "TFLite's Conv2D kernel (XNNPACK) clamps its output to +-3.4e38, so an "
        "inf input gives +-3.4e38 where XLA gives +-inf (NaN is kept)"),
    r"^rules_lax\.structural:broadcast_in_dim:(random 2x4:uint16|scalar:bfloat16)$": (
        "export_error", "the TFLite converter moves the Cast back to the narrow type in "
        "front of the BroadcastTo, then refuses a BroadcastTo of uint16/bfloat16 it made"),
    r"^rules_lax\.linalg:triangular_solve_by_tf:(left lower=True transpose=False "
    r"conjugate=False|unit diagonal|right lower=False transpose=True conjugate=False)"
    r":float16$": (
        "export_error", "the TFLite converter moves the Cast from float16 behind a Gather "
        "of the loop, then refuses the float16 Gather it made"),
    r"^rules_nn\.conv:conv_general_dilated:symbolic spatial, SAME with strides and "
    r"dilation:float32$": (
        "mismatch", "TFLite's CONV_2D sums the window in another order than XLA; on this "
        "case terms of ~50 cancel to -0.0138 and one element differs by 3.8e-6 absolute "
        "(as onnxruntime's Conv below)"),
}, "onnx": {
    r"^rules_(lax\.onnx:conv_general_dilated_onnx|nn\.conv:conv_general_dilated):symbolic .*SAME "
    r"with strides.*:float32$": (
        "mismatch", "onnxruntime's Conv sums the window in another order than XLA; on this "
        "case terms cancel and one element differs by ~1e-5 absolute (integer and float16 "
        "convolutions of the same case match)"),
}, "tfjs": {
    r"^rules_random\.keys:random_bits_tflite:threefry2x32: (8 bits of \(n, 3\)|bits of 8, 16, "
    r"32).*:key<fry>$": (
        "refused", "8- and 16-bit random bits are uint8/uint16 results, which TF.js cannot "
        "hold (its 32-bit bits run, see the other cases)"),
    r"^rules_lax\.bitwise:(population_count|count_leading_zeros)_portable:.*:uint32$": (
        "refused", "the portable popcount/clz count uint32 in int64, which TF.js has not"),
}}


def expected_target_case(target: str, case_id: str) -> tuple[str, str] | None:
    for pattern, known in KNOWN_TARGET_CASES.get(target, {}).items():
        if re.search(pattern, case_id):
            return known
    return None


def xfail_as_known(outcome, known: tuple[str, str]) -> None:
    """A strict expected failure: ``outcome`` must end with the known status, then the
    test is marked xfail with the reason."""
    import pytest
    status, reason = known
    assert outcome.status == status, (
        f"known failure ({status}: {reason}) now gives {outcome.status}: "
        f"{outcome.detail[:500]}; update tests/known_failures.py")
    pytest.xfail(f"{reason} [{status}]")


def expected_failure(harness, target: str = "tf") -> tuple[str, str] | None:
    """(status, reason) of a known failure of this harness case on ``target``, or None."""
    table = dict(KNOWN, **(KNOWN_X64 if jax.config.jax_enable_x64 else {}),
                 **KNOWN_TARGET.get(target, {}))
    for pattern, known in table.items():
        if re.search(pattern, harness.fullname):
            return known
    return None
