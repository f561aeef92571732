"""The old op-by-op jax2tf (jax 0.7.1, ``native_serialization=False, enable_xla=False``) on
the benchmark models, run inside its own virtualenv by ``run.py --peer``. Prints one JSON
line per model: jax.jit's and the TF graph's time per call (measured in alternating
rounds), the graph's op count, and the largest difference from jax.jit.

    <venv>/bin/python benchmarks/peer.py [--small] mlp cnn ...
"""
from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from jax.experimental import jax2tf  # noqa: E402

import models  # noqa: E402
from timing import op_count, side_by_side  # noqa: E402


def main(argv) -> int:
    small = "--small" in argv
    for name in [a for a in argv if not a.startswith("--")]:
        fn, args = models.build(name, small)
        jitted = jax.jit(fn)
        graph = tf.function(jax2tf.convert(fn, native_serialization=False, enable_xla=False,
                                           with_gradient=False), autograph=False)
        tf_args = [tf.constant(a) for a in args]
        concrete = graph.get_concrete_function(*tf_args)
        want = np.asarray(jitted(*args))
        got = graph(*tf_args).numpy()
        t_jax, t_tf = side_by_side(
            [lambda: jax.block_until_ready(jitted(*args)),
             lambda: [o.numpy() for o in tf.nest.flatten(graph(*tf_args))]], small)
        print(json.dumps({"model": name, "jax": t_jax, "tf": t_tf,
                          "ops": op_count(concrete.graph.as_graph_def(),
                                          [t.op.name for t in concrete.outputs]),
                          "max_abs_diff": float(np.max(np.abs(got - want)))}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
