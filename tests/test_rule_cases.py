"""Every rule's own test cases, for every dtype the rule claims, against jax.jit.

64-bit dtypes run with JAX's x64 mode switched on for the case, so a rule that claims
float64 is really checked on float64.
"""
from __future__ import annotations

import jax
import pytest

from core.registry import build_registry
from core.testing import run_rule_case

REGISTRY = build_registry(strict=True, entry_points=False)  # a broken built-in fails here
X64_DTYPES = {"int64", "uint64", "float64", "complex128"}


def _params():
    out = []
    for r in REGISTRY.rules():
        for c in r.cases:
            for dt in r.concrete_dtypes():
                if c.applies_to(dt):
                    out.append(pytest.param(r, c, dt, id=f"{r.id}[{r.primitive}]:{c.name}:{dt}"))
    return out


def test_every_rule_has_cases():
    lacking = sorted({r.id for r in REGISTRY.rules() if not r.cases})
    assert not lacking, f"rules without test cases: {lacking}"


@pytest.mark.parametrize("rule, case, dtype", _params())
def test_rule_agrees_with_jax(rule, case, dtype):
    with jax.enable_x64(dtype in X64_DTYPES):
        outcome = run_rule_case(rule, case, dtype, REGISTRY)
    assert outcome.status != "mismatch", f"WRONG NUMBERS: {outcome.detail}"
    assert outcome.ok, f"{outcome.status}: {outcome.detail}"
