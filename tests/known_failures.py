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
}


def expected_failure(harness) -> str | None:
    table = dict(KNOWN, **(KNOWN_X64 if jax.config.jax_enable_x64 else {}))
    for pattern, reason in table.items():
        if re.search(pattern, harness.fullname):
            return reason
    return None
