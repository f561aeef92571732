"""Exported artifacts: one runtime module per export target, behind one interface.

    f_tf = convert(f, target="tflite")
    rt = runtime("tflite")                                  # core.export_tflite
    model = rt.export(f_tf, [tf.TensorSpec([1, 28, 28, 1], tf.float32)])
    outputs = rt.run(model, [x])                            # numpy, run by the target's runtime

Each runtime module (``core.export_tflite``, ``core.export_onnx``, ``core.export_tfjs``)
provides the same functions:

- ``check_installed()``: raise :class:`core.errors.MissingDependency` naming what to
  install when the target's converter or runtime is missing;
- ``runtime_name()``: the converter and runtime, with versions (for reports);
- ``export(fn, input_signature) -> artifact``: the artifact (bytes, or a directory) of a
  TF function traced on ``tf.TensorSpec``s, made by the target's own converter;
- ``save(artifact, path) -> [paths written]``;
- ``run(artifact, args) -> [numpy outputs]`` and ``run_many([(artifact, args)])`` (each
  outputs or the exception; one runtime process for all where starting one is slow);
- for ``python -m core.probe``: ``export_graphs([(v1 graph, feeds, outputs)])`` (each
  artifact or the exception) and ``run_ones(artifacts)`` ("ok", "error ..." or
  "crash ..." per artifact, each run on ones, a crash not fatal).
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import tempfile
from typing import Any, Sequence

from core.export_tflite import run_tflite, tflite_model  # noqa: F401  (public since 0.1)


def runtime(target: str):
    """The runtime module of an export target (``"tflite"``, ``"onnx"``, ``"tfjs"``)."""
    from core import targets
    t = targets.get(target)
    if t.runtime is None:
        raise ValueError(f"target {target!r} is TensorFlow itself: no export runtime")
    return importlib.import_module(t.runtime)


def each_or_error(fn, items) -> list:
    """``fn(*item)`` for each item: its result, or the exception it raised (the batch
    goes on), as ``run_many`` and ``export_graphs`` return them."""
    out = []
    for item in items:
        try:
            out.append(fn(*item))
        except Exception as exc:
            out.append(exc)
    return out


def save_bytes(model: bytes, path: str, suffix: str) -> list[str]:
    """Write a one-file artifact to ``path`` (``suffix`` added if missing)."""
    path = path if path.endswith(suffix) else path + suffix
    with open(path, "wb") as f:
        f.write(model)
    return [path]


def run_ones_in_children(artifacts: Sequence[Any], module: str, suffix: str) -> list[str]:
    """Run each artifact on ones with ``module.ones_once(path)`` in a child process that
    is restarted after a crash; "ok", "error ..." or "crash (exit N)" per artifact.
    Artifacts that are bytes are written to files first; strings are paths already."""
    tmp = tempfile.mkdtemp(prefix="jaxtf_probe_")
    paths = []
    for i, a in enumerate(artifacts):
        if isinstance(a, (bytes, bytearray)):
            p = os.path.join(tmp, f"{i}{suffix}")
            with open(p, "wb") as f:
                f.write(a)
            a = p
        paths.append(a)
    plist, out = os.path.join(tmp, "artifacts.txt"), os.path.join(tmp, "results.txt")
    with open(plist, "w") as f:
        f.write("\n".join(paths))
    open(out, "w").close()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    while True:
        proc = subprocess.run([sys.executable, "-c",
                               f"from core.export import _ones_worker; "
                               f"_ones_worker({module!r}, {plist!r}, {out!r})"], cwd=root)
        with open(out) as f:
            n = sum(1 for _ in f)
        if n >= len(paths):
            break
        if proc.returncode != 0:          # the artifact at position n crashed the runtime
            with open(out, "a") as f:
                f.write(f"crash (exit {proc.returncode})\n")
    with open(out) as f:
        return f.read().split("\n")[:len(paths)]


def _ones_worker(module: str, paths_file: str, out_file: str) -> None:
    once = importlib.import_module(module).ones_once
    with open(paths_file) as f:
        paths = f.read().split("\n")
    with open(out_file) as f:
        done = sum(1 for _ in f)
    with open(out_file, "a") as out:
        for path in paths[done:]:
            try:
                once(path)
                out.write("ok\n")
            except Exception as exc:
                out.write("error " + str(exc).replace("\n", " ")[:200] + "\n")
            out.flush()


# --------------------------------------------------------------------------------------
# One call that writes every artifact and checks each against jax.jit.

#: export format -> the conversion target its graph is made for
FORMATS = {"saved_model": "tf", "tflite": "tflite", "onnx": "onnx", "tfjs": "tfjs"}
_SHORT = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
          "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8",
          "u16": "uint16", "u32": "uint32", "c64": "complex64", "bool": "bool"}


def parse_spec(spec: str):
    """``f32[8,784]``, ``float32[b, 784]``, ``i32[]`` -> ``(shape, dtype name)``; a name
    in place of a size is a symbolic dimension (kept as that string)."""
    head, _, rest = spec.replace(" ", "").partition("[")
    if not rest.endswith("]") or not head:
        raise ValueError(f"cannot read input spec {spec!r}; write it as f32[8,784] "
                         f"(dtype, then the shape; a name such as b for a symbolic size)")
    dims = tuple(int(d) if d.lstrip("-").isdigit() else d
                 for d in rest[:-1].split(",") if d)
    import numpy as np
    dtype = _SHORT.get(head, head)
    if dtype != "bfloat16":
        try:
            np.dtype(dtype)
        except TypeError:
            raise ValueError(f"unknown dtype {head!r} in input spec {spec!r}; use one of "
                             f"{', '.join(_SHORT)} or a numpy dtype name") from None
    return dims, dtype


def load_object(ref: str):
    """``package.module:name.attr`` -> the object (a function, a pytree, ...)."""
    mod_name, _, attr = ref.partition(":")
    if not attr:
        raise ValueError(f"expected MODULE:NAME (e.g. examples.convert_mlp:predict), "
                         f"got {ref!r}")
    obj = importlib.import_module(mod_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@dataclasses.dataclass
class Exported:
    """One written artifact and how it compared with ``jax.jit`` on a random input."""
    format: str
    paths: list[str]
    size: int                       # bytes on disk
    max_error: float | None         # largest |difference| over all outputs (None: not run)
    matches: bool | None            # within the per-dtype tolerances of core.testkit
    ms_per_call: float | None
    detail: str = ""

    def row(self) -> str:
        err = "-" if self.max_error is None else f"{self.max_error:.3g}"
        ok = {True: "ok", False: "MISMATCH", None: "not run"}[self.matches]
        ms = "-" if self.ms_per_call is None else f"{self.ms_per_call:.3g}"
        return (f"{self.format:12} {_size(self.size):>9} {err:>10} {ok:9} {ms:>9}  "
                f"{self.paths[0] if self.paths else ''}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _disk_size(paths) -> int:
    total = 0
    for p in paths:
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
        elif os.path.exists(p):
            total += os.path.getsize(p)
    return total


def random_inputs(specs, sizes: dict | None = None, seed: int = 0) -> list:
    """Inputs for the check: normal floats, small non-negative integers, random bools;
    symbolic dimensions take ``sizes[name]`` (default 2)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    out = []
    for shape, dtype in specs:
        shape = tuple(d if isinstance(d, int) else (sizes or {}).get(d, 2) for d in shape)
        dt = _np_dtype(dtype)
        if np.dtype(dt).kind == "b":
            out.append(rng.random(shape) < 0.5)
        elif np.dtype(dt).kind in "iu":
            out.append(rng.integers(0, 10, shape).astype(dt))
        else:
            out.append(rng.standard_normal(shape).astype(dt))
    return out


def ms_per_call(call, budget_s: float = 1.0, max_calls: int = 100) -> float:
    """Median wall time of ``call()`` in ms, after one warm-up call."""
    import statistics
    import time
    call()
    times, t_end = [], time.perf_counter() + budget_s
    while len(times) < max_calls and (not times or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _np_dtype(name: str):
    import ml_dtypes
    import numpy as np
    return np.dtype(ml_dtypes.bfloat16) if name == "bfloat16" else np.dtype(name)


def export_model(fn, specs, out_dir: str, *, to=tuple(FORMATS), params=None,
                 check: bool = True, sizes: dict | None = None, progress=print,
                 **convert_kw) -> list[Exported]:
    """Convert ``fn`` for each format in ``to``, write the artifacts under ``out_dir`` and
    check each in its own runtime against ``jax.jit`` on one random input.

    :param fn: the JAX function; with ``params``, ``fn(params, *inputs)`` (e.g. a flax
        ``apply``): the SavedModel then holds the parameters as variables, the other
        formats as constants.
    :param specs: one ``(shape, dtype)`` or spec string (``"f32[b,28,28,1]"``) per input;
        a name in a shape is a symbolic dimension (it becomes ``polymorphic_shapes``).
    :param to: formats among ``saved_model``, ``tflite``, ``onnx``, ``tfjs``.
    :param sizes: sizes of the symbolic dimensions in the check run (default 2 each).
    :param convert_kw: passed to :func:`core.convert` for every format.
    """
    import time

    import jax
    import numpy as np
    import tensorflow as tf

    from core.converter import convert
    from core.dtypes import to_tf
    from core.module import to_module
    from core.testkit import Mismatch, assert_same
    specs = [parse_spec(s) if isinstance(s, str) else (tuple(s[0]), str(s[1]))
             for s in specs]
    unknown = [f for f in to if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose among {list(FORMATS)}")
    for f in to:                      # every missing tool named before any work is done
        if FORMATS[f] != "tf":
            runtime(FORMATS[f]).check_installed()
    symbolic = any(not isinstance(d, int) for shape, _ in specs for d in shape)
    if symbolic and "polymorphic_shapes" not in convert_kw:
        convert_kw["polymorphic_shapes"] = [
            "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"
            for shape, _ in specs]
    tf_specs = [tf.TensorSpec([d if isinstance(d, int) else None for d in shape],
                              to_tf(_np_dtype(dtype))) for shape, dtype in specs]
    apply = fn if params is not None else (lambda _, *xs: fn(*xs))
    params = params if params is not None else ()
    args = random_inputs(specs, sizes)
    want = [np.asarray(w) for w in jax.tree_util.tree_leaves(
        jax.jit(apply)(params, *args))] if check else []
    os.makedirs(out_dir, exist_ok=True)
    results = []
    for i, fmt in enumerate(to, 1):
        target = FORMATS[fmt]
        progress(f"[{i}/{len(to)}] {fmt}: converting (target {target!r})")
        t0 = time.time()
        module = to_module(apply, params, input_signature=tf_specs, target=target,
                           **convert_kw)
        if fmt == "saved_model":
            path = os.path.join(out_dir, "saved_model")
            tf.saved_model.save(module, path, signatures=module.serving_signatures,
                                options=tf.saved_model.SaveOptions(
                                    experimental_custom_gradients=True))
            paths = [path]

            loaded = tf.saved_model.load(path)        # kept: its variables live in it

            def runner(xs, served=loaded.serve):
                return [t.numpy() for t in tf.nest.flatten(
                    served(*[tf.constant(x) for x in xs]))]
        else:
            rt = runtime(target)
            artifact = rt.export(module.serve, tf_specs)
            paths = rt.save(artifact, os.path.join(out_dir, "model"))
            feed = [np.asarray(a, np.float32) if s[1] == "bfloat16" else a
                    for a, s in zip(args, specs)]
            runner = (lambda xs, rt=rt, artifact=artifact, feed=feed: rt.run(artifact, feed))
        progress(f"[{i}/{len(to)}] {fmt}: written in {time.time() - t0:.1f}s; checking")
        res = Exported(fmt, paths, _disk_size(paths), None, None, None)
        if check:
            try:
                gots = runner(args)
                if target == "tf":
                    res.ms_per_call = ms_per_call(lambda: runner(args))
                elif hasattr(runtime(target), "benchmark"):
                    res.ms_per_call = runtime(target).benchmark(artifact, feed)
                res.max_error = max([float(np.max(np.abs(
                    np.asarray(g, np.float64) - np.asarray(w, np.float64)), initial=0.0))
                    for g, w in zip(gots, want)
                    if np.asarray(w).dtype.kind in "fiub"] or [0.0])
                res.matches = len(gots) == len(want)
                for k, (g, w) in enumerate(zip(gots, want)):
                    assert_same(np.asarray(g).astype(w.dtype), w, what=f"output {k}")
            except Mismatch as exc:
                res.matches, res.detail = False, str(exc)[:500]
            except Exception as exc:
                res.matches, res.detail = False, f"{type(exc).__name__}: {exc}"[:500]
        results.append(res)
    return results


def format_report(results: list[Exported]) -> str:
    lines = [f"{'format':12} {'size':>9} {'max error':>10} {'vs JAX':9} {'ms/call':>9}  path"]
    lines += [r.row() for r in results]
    lines += [f"  {r.format}: {r.detail}" for r in results if r.detail]
    return "\n".join(lines)
