"""Speed of converted models against what a user would pick instead.

    python benchmarks/run.py                    # all models, our columns
    python benchmarks/run.py --peer             # + the old jax2tf (creates its venv once)
    python benchmarks/run.py --small            # small sizes, one quick round (CI smoke)
    python benchmarks/run.py --scaling          # conversion time per equation, large programs
    python benchmarks/run.py mlp cnn            # some models

The models (``models.py``): a flax MLP, CNN and transformer block, a 100-step scan RNN, a
Newton while_loop and jax.random sampling. For each, call times are medians of repeated
batches, measured in alternating rounds within one process:

- ``jax.jit``: the reference (ratios are to it; < 1 is faster than JAX);
- ``tf``: our converted graph in a ``tf.function`` (plain TF ops);
- ``tflite``: our TFLite export in the LiteRT interpreter with 2 threads;
- ``old``: the old op-by-op jax2tf (jax 0.7.1, ``enable_xla=False``, the last release with
  the mode), run by ``peer.py`` in its own process and virtualenv against its own jax.jit;
  ``tf/old`` is our graph's time over its graph's time (both TF 2.21; < 1 is faster);
- the op counts of our graph and the old one.

Ratios are printed, not asserted; a model that fails to convert is a row and exit code 1.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import tensorflow as tf  # noqa: E402

import models  # noqa: E402
from core import convert  # noqa: E402
from core.export_tflite import interpreter, tflite_model  # noqa: E402
from timing import op_count, side_by_side  # noqa: E402

PEER_VENV = os.path.expanduser("~/.cache/jaxtf/jax2tf-0.7.1")
PEER_PACKAGES = ["jax==0.7.1", "jaxlib==0.7.1", "tensorflow==2.21.0", "flax==0.12.0"]


def peer_python() -> str:
    """The old jax2tf's interpreter, its virtualenv created on first use."""
    python = os.path.join(PEER_VENV, "bin", "python")
    if not os.path.exists(python):
        print(f"creating {PEER_VENV} ({', '.join(PEER_PACKAGES)}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", PEER_VENV], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def run_peer(names, small) -> dict:
    out = subprocess.run([peer_python(), os.path.join(HERE, "peer.py"), *(["--small"] if small else []),
                          *names], capture_output=True, text=True)
    rows = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["model"]] = row
    if out.returncode:
        print(f"old jax2tf failed: {out.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
    return rows


def tflite_call(converted, args, threads: int = 2):
    specs = [tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)) for a in args]
    it = interpreter(tflite_model(tf.function(converted, autograph=False), specs), threads)
    it.allocate_tensors()
    ins, outs = it.get_input_details(), it.get_output_details()

    def call():
        for d, a in zip(ins, args):
            it.set_tensor(d["index"], a)
        it.invoke()
        return [it.get_tensor(d["index"]) for d in outs]
    return call


def bench(name: str, small: bool, peer: dict) -> dict:
    fn, args = models.build(name, small)
    jitted = jax.jit(fn)
    want = np.asarray(jitted(*args))
    t0 = time.perf_counter()
    converted = convert(fn, with_gradient=False)
    graph = tf.function(converted, autograph=False)
    tf_args = [tf.constant(a) for a in args]
    concrete = graph.get_concrete_function(*tf_args)
    n_ops = op_count(concrete.graph.as_graph_def(), [t.op.name for t in concrete.outputs])
    graph(*tf_args)
    t_convert = time.perf_counter() - t0
    run_tflite = tflite_call(convert(fn, with_gradient=False, target="tflite"), args)
    for got in (graph(*tf_args).numpy(), run_tflite()[0]):   # the same numbers as JAX
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    t_jax, t_tf, t_lite = side_by_side(
        [lambda: jax.block_until_ready(jitted(*args)),
         lambda: [o.numpy() for o in tf.nest.flatten(graph(*tf_args))], run_tflite], small)
    row = {"model": name, "jax_ms": t_jax * 1e3, "tf": t_tf / t_jax, "tflite": t_lite / t_jax,
           "ops": n_ops, "convert_s": t_convert}
    old = peer.get(name)
    if old:
        row.update(old=old["tf"] / old["jax"], tf_over_old=t_tf / old["tf"], old_ops=old["ops"])
    return row


def _fmt(row, key, spec):
    return format(row[key], spec) if key in row else format("-", ">" + spec.split(".")[0].rstrip("df"))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("models", nargs="*", metavar="MODEL", help=", ".join(models.MODELS))
    p.add_argument("--peer", action="store_true", help="also run the old jax2tf (jax 0.7.1)")
    p.add_argument("--small", action="store_true", help="small sizes, one quick round")
    p.add_argument("--scaling", action="store_true", help="conversion time per equation")
    a = p.parse_args(argv)
    names = a.models or list(models.MODELS)
    if set(names) - set(models.MODELS):
        p.error(f"unknown model(s) {sorted(set(names) - set(models.MODELS))}; "
                f"choose from {', '.join(models.MODELS)}")
    print(f"{'model':12} {'jax.jit':>9} {'tf':>6} {'tflite':>7} {'old':>6} {'tf/old':>7} "
          f"{'ops':>5} {'old ops':>7} {'convert':>8}   (ratios: time / jax.jit's)")
    failed = []
    for name in names:
        # the peer runs right after each of our models, so both see the same machine load
        peer = run_peer([name], a.small) if a.peer else {}
        try:
            row = bench(name, a.small, peer)
        except Exception as exc:  # a model that does not convert is a row, not a crash
            print(f"{name:12} FAILED: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            failed.append(name)
            continue
        print(f"{name:12} {row['jax_ms']:7.3f}ms {row['tf']:6.2f} {row['tflite']:7.2f} "
              f"{_fmt(row, 'old', '6.2f')} {_fmt(row, 'tf_over_old', '7.2f')} {row['ops']:5d} "
              f"{_fmt(row, 'old_ops', '7d')} {row['convert_s']:7.2f}s", flush=True)
    if a.scaling:
        scaling(small=a.small)
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def scaling(small: bool) -> None:
    """Conversion (jaxpr to TF graph, traced once) per equation, for chains of growing
    length: a flat time per equation means conversion stays linear."""
    print(f"\n{'equations':>9} {'convert':>9} {'ms/eqn':>7}")
    for n in ((50, 200) if small else (500, 1000, 2000, 4000)):
        def chain(x, n=n):
            for i in range(n // 4):
                x = jnp.sin(x) * 1.5 + jnp.float32(i) - jnp.cos(x)
            return x
        x = np.ones((8, 8), np.float32)
        n_eqns = len(jax.make_jaxpr(chain)(x).eqns)
        t0 = time.perf_counter()
        tf.function(convert(chain, with_gradient=False), autograph=False) \
            .get_concrete_function(tf.TensorSpec(x.shape, tf.float32))
        t = time.perf_counter() - t0
        print(f"{n_eqns:9d} {t:8.2f}s {t / n_eqns * 1e3:7.2f}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
