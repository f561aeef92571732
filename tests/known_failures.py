"""Harness cases jaxtf is known not to pass, each with its reason.

The conformance tests mark these as strict expected failures, so a fix makes the test
fail until the entry is removed here. Keys are regular expressions over a harness case's
``fullname``; the value is the one-line reason.
"""
from __future__ import annotations

import re

import jax

KNOWN: dict[str, str] = {
}

KNOWN_X64: dict[str, str] = {
    r"conv_general_dilated_preferred_lhs_complex64.*preferred_complex128":
        "XLA computes this complex64 conv at complex64 precision before widening "
        "(~1e-7 relative), which no complex128 computation can match to 1e-12",
}


def expected_failure(harness) -> str | None:
    table = dict(KNOWN, **(KNOWN_X64 if jax.config.jax_enable_x64 else {}))
    for pattern, reason in table.items():
        if re.search(pattern, harness.fullname):
            return reason
    return None
