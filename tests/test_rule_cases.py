"""Every rule's own test cases, for every dtype the rule claims, against jax.jit.

64-bit dtypes run with JAX's x64 mode switched on for the case, so a rule that claims
float64 is really checked on float64.

Export targets ("tflite", "onnx", "tfjs"): a rule written for one runs all its cases
through that target's converter and runtime (the LiteRT interpreter, onnxruntime, tfjs in
node) and must give JAX's numbers there. The cases of the generic rules run there too, a
fixed sample of them (``JAXTF_TFLITE_SAMPLE``, ``JAXTF_ONNX_SAMPLE``,
``JAXTF_TFJS_SAMPLE``: every N-th by name; 1 runs all), with the rules the target selects
(what a user gets): each must give JAX's numbers in the runtime or be refused by the
pre-flight, never a wrong number and never a model the pre-flight let through that the
converter then rejects.

The dtypes of one case run side by side in one conversion (one trace, one export, one
``jax.jit``), which halves the time of a case with several dtypes; a group that does not
pass runs each dtype alone, so each test reports its own dtype's outcome.
"""
from __future__ import annotations

import os
import zlib

import jax
import pytest

from core.registry import build_registry
from core.targets import get as get_target
from core.testkit import np_dtype, run_function, run_rule_case_dtypes
from tests.known_failures import expected_target_case, xfail_as_known

REGISTRY = build_registry(strict=True, entry_points=False)  # a broken built-in fails here
X64_DTYPES = {"int64", "uint64", "float64", "complex128"}
SAMPLE = {"tflite": int(os.environ.get("JAXTF_TFLITE_SAMPLE", "8")),
          "onnx": int(os.environ.get("JAXTF_ONNX_SAMPLE", "8")),
          "tfjs": int(os.environ.get("JAXTF_TFJS_SAMPLE", "24"))}
REFUSED = ("refused", "no_rule", "unsupported")


#: (target, rule id, case id, x64) -> the dtypes of one case that run side by side
_GROUPS: dict[tuple, list[str]] = {}
_OUTCOMES: dict[tuple, dict] = {}                 # what this process ran of each group


def _group(target, rule, case, dtype) -> tuple:
    return target, rule.id, id(case), dtype in X64_DTYPES


def _grouped(params, target="tf"):
    """Note each case's dtypes as one group (less those a target is known to fail on,
    which run alone); returns ``params``. (tests/conftest.py sends a case's tests to one
    pytest-xdist worker: a split group would run twice.)"""
    for p in params:
        *_, r, c, dt = p.values
        if not expected_target_case(target, f"{r.id}:{c.name}:{dt}"):
            _GROUPS.setdefault(_group(target, r, c, dt), []).append(dt)
    return params


def _outcome(rule, case, dtype, target="tf"):
    """The outcome of (rule, case, dtype): every dtype of its group runs in one
    conversion the first time one of them is asked for in this process
    (:func:`core.testkit.run_rule_case_dtypes`; a failing group runs each dtype alone)."""
    key = _group(target, rule, case, dtype)
    done = _OUTCOMES.setdefault(key, {})
    if dtype not in done:
        group = _GROUPS.get(key, [])
        group = [d for d in group if d not in done] if dtype in group else [dtype]
        with jax.enable_x64(key[-1]):
            done.update(run_rule_case_dtypes(rule, case, group, REGISTRY, target=target))
    return done.pop(dtype)


def _params(keep=lambda r, c, dt: True, once=False):
    """(rule, case, dtype) triples; ``once``: a case that a rule lowering several
    primitives shares among them (one ``@rule([...], cases=...)``) runs once; stacked
    ``@rule`` decorators give each primitive its own cases, and each of those runs."""
    out, seen = [], set()
    for r in REGISTRY.rules():
        for c in r.cases:
            for dt in r.concrete_dtypes():
                if not (c.applies_to(dt) and keep(r, c, dt)):
                    continue
                if once and (r.id, id(c), dt) in seen:
                    continue
                seen.add((r.id, id(c), dt))
                out.append(pytest.param(r, c, dt, id=f"{r.id}[{r.primitive}]:{c.name}:{dt}"))
    return out


def _for_target(target):
    """A rule declared for ``target``, on the dtypes that target's models can hold (or
    hold as the bits of another: uint32 and PRNG keys on TF.js)."""
    tgt = get_target(target)
    return lambda r, c, dt: bool(r.targets and target in r.targets) and (
        tgt.dtypes is None or dt in tgt.dtypes or tgt.carrier(dt) is not None)


def _generic_sample(target):
    def keep(r, c, dt) -> bool:
        if r.targets is not None or dt in X64_DTYPES or "complex" in dt:
            return False
        return zlib.crc32(f"{r.id}:{c.name}:{dt}".encode()) % SAMPLE[target] == 0
    return keep


def _per_target(keep_for):
    return [pytest.param(t, *p.values, id=f"{t}:{p.id}")
            for t in SAMPLE for p in _grouped(_params(keep_for(t), once=True), t)]


def test_every_rule_has_cases():
    lacking = sorted({r.id for r in REGISTRY.rules() if not r.cases})
    assert not lacking, f"rules without test cases: {lacking}"


@pytest.mark.parametrize("rule, case, dtype", _grouped(_params(
    lambda r, c, dt: r.targets is None or "tf" in r.targets, once=True)))
def test_rule_agrees_with_jax(rule, case, dtype):
    outcome = _outcome(rule, case, dtype)
    if outcome.status == "skipped":
        pytest.skip(outcome.detail)
    assert outcome.status != "mismatch", f"WRONG NUMBERS: {outcome.detail}"
    assert outcome.ok, f"{outcome.status}: {outcome.detail}"


@pytest.mark.parametrize("target, rule, case, dtype", _per_target(_for_target))
def test_target_rule_agrees_with_jax_in_runtime(target, rule, case, dtype):
    outcome = _outcome(rule, case, dtype, target)
    if outcome.status == "skipped":
        pytest.skip(outcome.detail)
    _judge(outcome, target, f"{rule.id}:{case.name}:{dtype}", refusal_ok=False)


@pytest.mark.parametrize("target, rule, case, dtype", _per_target(_generic_sample))
def test_generic_case_in_runtime_is_right_or_refused(target, rule, case, dtype):
    import numpy as np
    args = case.make_args(np.random.default_rng(0), np.dtype(np_dtype(dtype)))
    outcome = run_function(case.fn, args, registry=REGISTRY, target=target,
                           **case.convert_kw)
    _judge(outcome, target, f"{rule.id}:{case.name}:{dtype}", refusal_ok=True)


def _judge(outcome, target: str, case_id: str, refusal_ok: bool) -> None:
    known = expected_target_case(target, case_id)
    if known:
        xfail_as_known(outcome, known)
    assert outcome.status != "mismatch", f"WRONG NUMBERS in {target}: {outcome.detail}"
    assert outcome.ok or (refusal_ok and outcome.status in REFUSED), \
        f"{outcome.status}: {outcome.detail}"
