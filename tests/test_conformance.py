"""JAX's own primitive harness cases (jax._src.internal_test_util.test_harnesses), run
through ``convert`` under ``tf.function`` and compared with ``jax.jit`` on CPU.

Collected: every CPU case whose primitives all have a registered rule. A case that
passes must give JAX's numbers within ``core.testkit.TOLERANCES`` and have no Xla* op in
its graph. Known gaps are strict expected failures (``tests/known_failures.py``), so a
fix shows up as a failure until the entry is removed. Run with ``JAX_ENABLE_X64=1`` for
the 64-bit cases.
"""
from __future__ import annotations

import functools
import os

import numpy as np
import pytest

from core.registry import default_registry
from core.testing import harness_primitives, run_harness
from tests.conformance import cpu_harnesses, in_sample, per_group_sample
from tests.known_failures import expected_failure, xfail_as_known

pytestmark = pytest.mark.conformance

#: JAXTF_CONFORMANCE_SAMPLE=N runs every N-th case of each group; the default 3 keeps the
#: suite within CI's time (python tests/conformance.py runs every case).
SAMPLE = int(os.environ.get("JAXTF_CONFORMANCE_SAMPLE", "3"))


@functools.lru_cache(maxsize=None)
def _covered() -> frozenset[str]:
    return frozenset(default_registry().primitives())


def _params():
    # JAX builds some harness lists by iterating over sets, so their order changes from
    # process to process: sort, and sample by name, so every pytest-xdist worker collects
    # the same cases.
    hs = sorted(cpu_harnesses(), key=lambda h: h.fullname)
    return [pytest.param(h, id=h.fullname) for h in hs if in_sample(h.fullname, SAMPLE)]


def _check(harness, target: str = "tf") -> None:
    """Run one harness case for ``target``: JAX's numbers (in that target's runtime), a
    strict known failure, or (export targets) a clear refusal by the pre-flight."""
    missing = harness_primitives(harness) - _covered()
    if missing:
        pytest.skip(f"no rule yet for {sorted(missing)}")
    known = expected_failure(harness, target)
    outcome = run_harness(harness, target=target)
    if known:
        xfail_as_known(outcome, known)
    assert outcome.status != "mismatch", f"WRONG NUMBERS ({target}): {outcome.detail}"
    refused = ("refused", "no_rule", "unsupported") if target != "tf" else ()
    assert outcome.ok or outcome.status in refused, f"{outcome.status}: {outcome.detail}"


@pytest.mark.parametrize("harness", _params())
def test_harness(harness):
    _check(harness)


#: JAXTF_TFLITE_PER_GROUP=N (JAXTF_ONNX_PER_GROUP, JAXTF_TFJS_PER_GROUP): the first N cases of each group (by
#: name) go through the target's converter and runtime (`python tests/conformance.py
#: --target tflite` runs more).
PER_GROUP = {"tflite": int(os.environ.get("JAXTF_TFLITE_PER_GROUP", "1")),
             "onnx": int(os.environ.get("JAXTF_ONNX_PER_GROUP", "1")),
             "tfjs": int(os.environ.get("JAXTF_TFJS_PER_GROUP", "1"))}


@pytest.mark.parametrize("target, harness", [
    pytest.param(t, h, id=f"{t}:{h.fullname}") for t, n in PER_GROUP.items()
    for h in per_group_sample(cpu_harnesses(), n)])
def test_harness_in_target_runtime(target, harness):
    """Through an export target: JAX's numbers in its runtime, or a clear refusal by the
    pre-flight; never a wrong number, never a model the converter then rejects."""
    _check(harness, target)


def test_x64_sample_subprocess():
    """JAX's 64-bit harness cases (they exist only when JAX starts with x64 on), a sample
    of every group, in a child process: no wrong number, no Xla op, no unknown failure."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sample = os.environ.get("JAXTF_X64_SAMPLE", "12")
    proc = subprocess.run([sys.executable, os.path.join(root, "tests", "conformance.py"),
                           "--sample", sample, "--strict"], capture_output=True, text=True,
                          timeout=3000, env={**os.environ, "JAX_ENABLE_X64": "1",
                                             "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert "TOTAL target=tf x64=True" in proc.stdout, proc.stderr[-3000:]
    assert proc.returncode == 0, proc.stdout[-5000:]
