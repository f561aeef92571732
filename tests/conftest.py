import os
import sys

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
