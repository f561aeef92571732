import os
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_RUN = [0]


def pytest_runtest_teardown(item):
    """Every 200 tests, drop JAX's compiled executables: the oracle's ``jax.jit(case.fn)``
    keeps one per case for as long as the case lives (all run long), and a pytest-xdist
    worker grew to 11.7 GB and was killed for memory near the end of a CI run."""
    _RUN[0] += 1
    if _RUN[0] % 200 == 0 and "jax" in sys.modules:
        sys.modules["jax"].clear_caches()


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist's default "load" distribution, the tests of one rule case (one
    per dtype: ``test_rule_cases.py::test_...[<rule>:<case>:<dtype>]``) go to one
    worker, which runs all the dtypes in one conversion (tests/test_rule_cases.py).
    xdist's own ``--dist loadgroup`` cannot do it with pytest 9: it renames
    ``item._nodeid``, which pytest 9 no longer reads."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByCase(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            if "test_rule_cases.py::test_" in nodeid and nodeid.endswith("]"):
                return nodeid.rsplit(":", 1)[0]
            return nodeid
    return ByCase(config, log)
