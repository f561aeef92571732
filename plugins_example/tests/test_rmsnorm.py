"""The plugin's own tests: its rule's cases through jaxtf's harness, plus a model using it."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from core import convert
from core.registry import build_registry
from core.rule import rules_of
from core.testkit import assert_same, run_rule_case
from jaxtf_rmsnorm import rms_norm, tf_rules

REGISTRY = build_registry(strict=True)          # the installed entry point must load cleanly
RULES = rules_of(tf_rules)
CASES = [pytest.param(r, c, dt, id=f"{c.name}:{dt}")
         for r in RULES for c in r.cases for dt in r.concrete_dtypes() if c.applies_to(dt)]


def test_entry_point_is_loaded():
    rec = {p.name: p for p in REGISTRY.plugins}["rmsnorm"]
    assert rec.source == "entry point" and rec.distribution == "jaxtf-rmsnorm"
    assert rec.error is None and rec.rule_count == 1
    assert [r.package for r in REGISTRY.rules("rms_norm")] == ["rmsnorm"]


@pytest.mark.parametrize("rule, case, dtype", CASES)
def test_rule_cases(rule, case, dtype):
    with jax.enable_x64(dtype == "float64"):
        outcome = run_rule_case(rule, case, dtype, REGISTRY)
    if outcome.status == "skipped":             # a rule for another device than this one
        pytest.skip(outcome.detail)
    assert outcome.ok, f"{outcome.status}: {outcome.detail}"


def test_in_a_model_with_grad_and_vmap():
    def layer(w, s, x):
        return jnp.tanh(rms_norm(x @ w, s)).sum()
    rng = np.random.default_rng(1)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    s = np.ones(8, np.float32)
    xs = rng.standard_normal((3, 5, 8)).astype(np.float32)
    per_example = jax.vmap(jax.grad(layer), in_axes=(None, None, 0))
    got = convert(per_example)(w, s, xs)
    assert_same(got.numpy(), np.asarray(jax.jit(per_example)(w, s, xs)))
