"""The benchmark runs end to end on small sizes (a smoke test: the ratios it prints are not
asserted here; speed is measured by hand on an idle machine, see README)."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_benchmark_smoke():
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "run.py"),
                          "--small", "--scaling"], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    print(out.stdout)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    rows = {line.split()[0] for line in out.stdout.splitlines() if line.strip()}
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    import models
    assert set(models.MODELS) <= rows, out.stdout
    assert "ms/eqn" in out.stdout
