"""Every rule's own test cases, for every dtype the rule claims, against jax.jit.

64-bit dtypes run with JAX's x64 mode switched on for the case, so a rule that claims
float64 is really checked on float64.

Export target "tflite": a rule written for it runs all its cases through the TFLite
converter and the LiteRT interpreter and must give JAX's numbers there. The cases of the
generic rules run there too, a fixed sample of them (``JAXTF_TFLITE_SAMPLE``: every N-th
by name; 1 runs all), with the rules ``target="tflite"`` selects (what a user gets): each
must give JAX's numbers in the interpreter or be refused by the pre-flight, never a wrong
number and never a model the pre-flight let through that the converter then rejects.
"""
from __future__ import annotations

import os
import zlib

import jax
import pytest

from core.registry import build_registry
from core.testing import _np_dtype, run_function, run_rule_case
from tests.known_failures import expected_litert_case

REGISTRY = build_registry(strict=True, entry_points=False)  # a broken built-in fails here
X64_DTYPES = {"int64", "uint64", "float64", "complex128"}
TFLITE_SAMPLE = int(os.environ.get("JAXTF_TFLITE_SAMPLE", "6"))
REFUSED = ("refused", "no_rule", "unsupported")


def _params(keep=lambda r, c, dt: True, once=False):
    """(rule, case, dtype) triples; ``once``: a rule lowering several primitives runs
    each of its cases once (its cases are the same for all of them)."""
    out, seen = [], set()
    for r in REGISTRY.rules():
        for c in r.cases:
            for dt in r.concrete_dtypes():
                if not (c.applies_to(dt) and keep(r, c, dt)):
                    continue
                if once and (r.id, c.name, dt) in seen:
                    continue
                seen.add((r.id, c.name, dt))
                out.append(pytest.param(r, c, dt, id=f"{r.id}[{r.primitive}]:{c.name}:{dt}"))
    return out


def _for_tflite(r, c, dt) -> bool:
    return bool(r.targets and "tflite" in r.targets)


def _generic_sample(r, c, dt) -> bool:
    if r.targets is not None or dt in X64_DTYPES or "complex" in dt:
        return False
    return zlib.crc32(f"{r.id}:{c.name}:{dt}".encode()) % TFLITE_SAMPLE == 0


def test_every_rule_has_cases():
    lacking = sorted({r.id for r in REGISTRY.rules() if not r.cases})
    assert not lacking, f"rules without test cases: {lacking}"


@pytest.mark.parametrize("rule, case, dtype",
                         _params(lambda r, c, dt: r.targets is None or "tf" in r.targets))
def test_rule_agrees_with_jax(rule, case, dtype):
    with jax.enable_x64(dtype in X64_DTYPES):
        outcome = run_rule_case(rule, case, dtype, REGISTRY)
    assert outcome.status != "mismatch", f"WRONG NUMBERS: {outcome.detail}"
    assert outcome.ok, f"{outcome.status}: {outcome.detail}"


@pytest.mark.parametrize("rule, case, dtype", _params(_for_tflite, once=True))
def test_tflite_rule_agrees_with_jax_in_litert(rule, case, dtype):
    with jax.enable_x64(dtype in X64_DTYPES):
        outcome = run_rule_case(rule, case, dtype, REGISTRY, target="tflite")
    assert outcome.status != "mismatch", f"WRONG NUMBERS in LiteRT: {outcome.detail}"
    assert outcome.ok, f"{outcome.status}: {outcome.detail}"


@pytest.mark.parametrize("rule, case, dtype", _params(_generic_sample, once=True))
def test_generic_case_in_litert_is_right_or_refused(rule, case, dtype):
    import numpy as np
    args = case.make_args(np.random.default_rng(0), np.dtype(_np_dtype(dtype)))
    outcome = run_function(case.fn, args, registry=REGISTRY, target="tflite",
                           **case.convert_kw)
    known = expected_litert_case(f"{rule.id}:{case.name}:{dtype}")
    if known:
        status, reason = known
        assert outcome.status == status, (
            f"known failure ({status}: {reason}) now gives {outcome.status}: "
            f"{outcome.detail[:500]}; update tests/known_failures.py")
        pytest.xfail(f"{reason} [{status}]")
    assert outcome.status != "mismatch", f"WRONG NUMBERS in LiteRT: {outcome.detail}"
    assert outcome.ok or outcome.status in REFUSED, f"{outcome.status}: {outcome.detail}"
