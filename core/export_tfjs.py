"""The TensorFlow.js runtime of target ``"tfjs"`` (see :mod:`core.export`).

    f_tf = convert(f, target="tfjs")
    model = export(f_tf, [tf.TensorSpec([1, 28, 28, 1], tf.float32)])  # dir: model.json
    outputs = run(model, [x])                                           # numpy, tfjs in node

The TF function is frozen with this process's TensorFlow into a GraphDef (control flow
lowered to Switch/Merge/Enter/Exit, as ``tensorflowjs_converter`` does by default; a
``Case`` becomes ``_SwitchN``, which TF.js does not have), converted with the
``tensorflowjs`` 4.22 converter's own steps (its op check, grappler, weight extraction)
and run by ``@tensorflow/tfjs`` 4.22 in node on the pure-JS ``cpu`` backend
(``core/tfjs_run.mjs``), always with ``executeAsync`` (models with control flow need it;
``jaxtf.json`` says which do).

The toolchain lives outside the project's venv (``tensorflowjs`` pins TensorFlow 2.19):
a venv and a ``node_modules`` in ``~/.cache/jaxtf/tfjs`` (or ``$JAXTF_TFJS_HOME``), made
by ``python -m core.export_tfjs setup``. The converter is one process kept running
between calls (it takes ~15 s to import TensorFlow; then ~20 ms per single-op graph);
node is one process per :func:`run_many` / :func:`run_ones` batch (~0.4 s to start, a
few ms per small model). A model that runs longer than ``$JAXTF_TFJS_TIMEOUT`` seconds
(300) is killed and reported as a crash; a process that dies is restarted after the job
that killed it.

What the converter gives is repaired where TF.js would compute a different number or
fail, each keeping TF's meaning: a fused MatMul/Conv2D activation the cpu backend cannot
apply (``Tanh``) is split out again; a ``Cast`` int32 -> float32 is followed by ``* 1.0``
(the cpu backend keeps the int32 values unrounded); sizes 0 in shapes are written back
(the converter drops them, TF.js then reads NaN).

Dtypes: TF.js has float32, int32, bool (and complex64). Its loader silently reads int64,
uint8/16/32, int8/16 as int32 and float64, float16, bfloat16 as float32, so a graph with
a tensor of any other dtype is refused at export (:class:`TfjsExportError`); complex64
too (its cpu backend's complex ops give NaN when they broadcast). Arguments given to
:func:`run` are cast to the model's input dtypes only when that is exact (an int64 array
of int32 values for an int32 input); otherwise :func:`run` raises.

Measured wrong numbers of TF.js 4.22's cpu backend itself, which no conversion step can
repair (a rule for target "tfjs" must avoid them): int32 ``Mul``, ``Square``,
``SquaredDifference``, ``Prod``, ``Pow``, ``MatMul``/``BatchMatMulV2`` compute in
doubles (wrong once a product passes 2**53), int32 ``Abs`` in float32 (wrong past
2**24), int32 ``Mean`` rounds instead of truncating; float ``Sign(NaN)`` is 0,
``FloorDiv`` gives 0 where TF gives NaN or ±inf; ``BitwiseAnd`` converts but does not
run. Subnormals are not flushed (XLA and TF on CPU flush them): ``x > 0``, ``ceil``,
``log``, ``sign`` of a subnormal differ from JAX.

The artifact is a directory holding ``model.json``, the weight shards and ``jaxtf.json``
(the order, node names and dtypes of the function's inputs and outputs, the op types
after conversion, and ``needs_async``).

This file also runs inside the converter's venv (:func:`_serve`), so it imports nothing
beyond the standard library at module level.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any, Callable, Sequence

TFJS_VERSION = "4.22.0"
#: what ``setup`` installs into the converter's venv (tensorflowjs 4.22 pins TF 2.19 and
#: only imports with ydf 0.11, whose newer releases broke tensorflow_decision_forests)
PIP_PACKAGES = (f"tensorflowjs=={TFJS_VERSION}", "ydf==0.11.0", "tensorflow==2.19.0")
NPM_PACKAGES = (f"@tensorflow/tfjs@{TFJS_VERSION}",)
SETUP_COMMAND = "python -m core.export_tfjs setup"
#: dtypes a model may hold. TF.js also has complex64, but its cpu backend's complex
#: binary ops give NaN when they broadcast (tf.add(complex [4], complex scalar), 4.22.0),
#: and few of its kernels take complex at all: refused like the dtypes it lacks.
TFJS_DTYPES = ("float32", "int32", "bool")
#: ops after which TF.js's GraphModel.execute/predict throw (tfjs-converter's
#: CONTROL_FLOW_OPS and DYNAMIC_SHAPE_OPS): such models need executeAsync
ASYNC_OPS = frozenset({"Switch", "Merge", "Enter", "Exit", "NextIteration", "StatelessIf",
                       "StatelessWhile", "If", "While", "NonMaxSuppressionV2",
                       "NonMaxSuppressionV3", "NonMaxSuppressionV5", "Where"})
_RUNNER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tfjs_run.mjs")
_SIDECAR = "jaxtf.json"


def _errors():
    from core import errors
    return errors


try:
    from core.errors import JaxtfError
except ImportError:             # inside the converter's venv: no jaxtf there
    class JaxtfError(Exception):
        pass


class TfjsExportError(JaxtfError, ValueError):
    """The tensorflowjs converter refused the graph (ops TF.js does not have, or dtypes
    it does not have); the message names them, ``.ops`` lists the op types."""

    def __init__(self, message: str, ops: Sequence[str] = ()):
        super().__init__(message)
        self.ops = list(ops)


class TfjsRunError(JaxtfError, RuntimeError):
    """TF.js (in node) failed to load or run a converted model."""


# ---------------------------------------------------------------------------------------
# the toolchain


def home() -> str:
    """Where the TF.js toolchain lives: ``$JAXTF_TFJS_HOME`` or ``~/.cache/jaxtf/tfjs``."""
    return os.path.abspath(os.path.expanduser(
        os.environ.get("JAXTF_TFJS_HOME") or os.path.join("~", ".cache", "jaxtf", "tfjs")))


def _venv_python() -> str:
    return os.path.join(home(), "venv", "bin", "python")


def _node() -> str | None:
    return shutil.which("node")


def _missing() -> list[str]:
    missing = []
    if not os.path.exists(os.path.join(home(), "venv", "ok")):
        missing.append(f"the converter's venv ({os.path.join(home(), 'venv')})")
    if not os.path.exists(os.path.join(home(), "node_modules", "@tensorflow", "tfjs",
                                       "package.json")):
        missing.append(f"@tensorflow/tfjs in {os.path.join(home(), 'node_modules')}")
    if _node() is None:
        missing.append("node (Node.js 18 or newer) on PATH")
    return missing


def check_installed() -> None:
    """Raise MissingDependency unless the converter's venv, node and @tensorflow/tfjs are
    in place."""
    missing = _missing()
    if missing:
        raise _errors().MissingDependency(
            f"target 'tfjs' needs the TF.js toolchain (tensorflowjs {TFJS_VERSION} in its "
            f"own venv, @tensorflow/tfjs {TFJS_VERSION} and node); missing: "
            f"{'; '.join(missing)}. Install it with: {SETUP_COMMAND} "
            f"(into {home()}; set JAXTF_TFJS_HOME to put it elsewhere)")


def setup(python: str | None = None, log=print) -> None:
    """Make the toolchain in :func:`home` (idempotent): a venv with the tensorflowjs
    converter, and ``node_modules`` with @tensorflow/tfjs."""
    root = home()
    os.makedirs(root, exist_ok=True)
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SystemExit(f"setup: `{tool}` is not on PATH; install Node.js 18 or newer "
                             f"(with npm) first")
    venv = os.path.join(root, "venv")
    if os.path.exists(os.path.join(venv, "ok")):
        log(f"converter venv: {venv} (already made)")
    else:
        python = python or os.environ.get("JAXTF_TFJS_PYTHON") or _pick_python()
        log(f"converter venv: {python} -m venv {venv}")
        if subprocess.run([python, "-m", "venv", "--clear", venv]).returncode != 0:
            raise SystemExit(f"setup: `{python} -m venv` failed; install the venv module "
                             f"(e.g. apt-get install python3-venv) or set JAXTF_TFJS_PYTHON "
                             f"to a Python 3.9-3.12 that has it")
        pip = [_venv_python(), "-m", "pip", "install", "-q", *PIP_PACKAGES]
        log("converter venv: " + " ".join(pip[2:]) + "  (a few minutes)")
        if subprocess.run(pip).returncode != 0:
            raise SystemExit("setup: pip install failed (see above)")
        probe = [_venv_python(), "-c", "import tensorflowjs; print(tensorflowjs.__version__)"]
        res = subprocess.run(probe, capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if res.returncode != 0 or TFJS_VERSION not in res.stdout:
            raise SystemExit("setup: tensorflowjs does not import in the new venv:\n"
                             + res.stderr[-2000:])
        with open(os.path.join(venv, "ok"), "w") as f:
            f.write(res.stdout)
        log(f"converter venv: tensorflowjs {res.stdout.strip()} imports")
    if os.path.exists(os.path.join(root, "node_modules", "@tensorflow", "tfjs",
                                   "package.json")):
        log(f"node_modules: {os.path.join(root, 'node_modules')} (already made)")
    else:
        with open(os.path.join(root, "package.json"), "w") as f:
            json.dump({"private": True, "name": "jaxtf-tfjs-runtime", "description":
                       "made by `python -m core.export_tfjs setup`", "dependencies": {}}, f)
        npm = ["npm", "install", "--prefix", root, "--save-exact", "--no-audit", "--no-fund",
               *NPM_PACKAGES]
        log("node_modules: " + " ".join(npm))
        if subprocess.run(npm).returncode != 0:
            raise SystemExit("setup: npm install failed (see above)")
    missing = _missing()
    if missing:
        raise SystemExit("setup: still missing: " + "; ".join(missing))
    log(f"ready: {runtime_name()}")


def _pick_python() -> str:
    """A Python that tensorflow 2.19 has wheels for (3.9-3.12): this one, else one on PATH."""
    if (3, 9) <= sys.version_info[:2] <= (3, 12):
        return sys.executable
    for name in ("python3.12", "python3.11", "python3.10", "python3.9"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("setup: tensorflowjs needs a Python 3.9-3.12 (TensorFlow 2.19); set "
                     "JAXTF_TFJS_PYTHON to one")


def runtime_name() -> str:
    check_installed()
    node = subprocess.run([_node(), "--version"], capture_output=True, text=True).stdout
    return (f"@tensorflow/tfjs {TFJS_VERSION} (cpu backend) in node {node.strip()} "
            f"(tensorflowjs converter {TFJS_VERSION})")


# ---------------------------------------------------------------------------------------
# conversion


def export(fn: Callable, input_signature: Sequence[Any]) -> str:
    """A TF.js graph model (a directory: model.json, weight shards, jaxtf.json) of ``fn``
    traced on ``input_signature`` (``tf.TensorSpec``s)."""
    check_installed()
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import \
        convert_variables_to_constants_v2
    specs = list(input_signature)
    fn, specs = carry_uint32(fn, specs)
    concrete = fn.get_concrete_function(*specs) if hasattr(fn, "get_concrete_function") \
        else tf.function(fn, autograph=False).get_concrete_function(*specs)
    # what tensorflowjs_converter does to a SavedModel's function (control flow lowered)
    frozen = convert_variables_to_constants_v2(concrete, lower_control_flow=True,
                                               aggressive_inlining=True)
    inputs = [t for t in frozen.inputs if t.dtype != tf.resource]
    from tensorflow.python.util import deprecation
    with deprecation.silence():                                # without unused nodes
        graph_def = tf.compat.v1.graph_util.extract_sub_graph(
            frozen.graph.as_graph_def(), sorted({t.op.name for t in [*frozen.outputs, *inputs]}))
    job = _job(graph_def, inputs, frozen.outputs)
    res = _convert_jobs([job])[0]
    if isinstance(res, Exception):
        raise res
    return res


def carry_uint32(fn: Callable, specs: list) -> tuple[Callable, list]:
    """TF.js has no uint32: a uint32 input (PRNG key data) becomes an int32 input holding
    its bits, passed to the converted function as ``tf.bitcast(bits, tf.uint32)``, which
    target 'tfjs' unwraps (``RuleContext.carry_in``): the model has no uint32 tensor.
    Feed ``key_data.view(np.int32)`` (``run`` does it for uint32 arrays); uint32 results
    come out as int32 bits too.
    An int64 input of a function converted by jaxtf without JAX's x64 mode is an int32
    input: the converted function casts it to int32 first anyway (JAX sees int32); any
    other function keeps its int64 input (and is refused: TF.js has no int64)."""
    import jax
    import tensorflow as tf
    from core.converter import _Converted
    inner = getattr(fn, "python_function", fn)    # traced here: the bitcast stays visible
    held = [s.dtype == tf.uint32 for s in specs]
    narrowed = [s.dtype == tf.int64 and isinstance(inner, _Converted)
                and not jax.config.jax_enable_x64 for s in specs]
    if not any(held) and not any(narrowed):
        return fn, specs

    def on_bits(*xs):
        return inner(*[tf.bitcast(x, tf.uint32) if h else x for x, h in zip(xs, held)])
    return (tf.function(on_bits, autograph=False),
            [tf.TensorSpec(s.shape, tf.int32, s.name) if h or n else s
             for s, h, n in zip(specs, held, narrowed)])


def export_graphs(graphs) -> list:
    """For the probe: each (v1 graph, feeds, outputs) as a TF.js model directory, or the
    exception; all converted by one converter process."""
    check_installed()
    jobs = [_job(g.as_graph_def(), list(ins), list(outs)) for g, ins, outs in graphs]
    return _convert_jobs(jobs)


def _job(graph_def, inputs, outputs) -> dict:
    return {"graph": graph_def.SerializeToString(),
            "inputs": [t.name for t in inputs], "outputs": [t.name for t in outputs]}


def _convert_jobs(jobs: list[dict]) -> list:
    """Convert ``jobs`` in the converter process (kept running between calls: it takes
    ~15 s to import TensorFlow); restarted after a job that killed it."""
    tmp = tempfile.mkdtemp(prefix="jaxtf_tfjs_")
    manifest = []
    for i, job in enumerate(jobs):
        path = os.path.join(tmp, f"{i}.pb")
        with open(path, "wb") as f:
            f.write(job["graph"])
        manifest.append({"graph": path, "inputs": job["inputs"], "outputs": job["outputs"],
                         "out_dir": os.path.join(tmp, f"model_{i}")})
    jobs_file, results = os.path.join(tmp, "jobs.json"), os.path.join(tmp, "results.jsonl")
    with open(jobs_file, "w") as f:
        json.dump(manifest, f)
    open(results, "w").close()
    while True:
        server = _Converter.get()
        if server.ask(f"{jobs_file}\t{results}"):
            break
        lines = _read_lines(results)        # it died on the job at position len(lines)
        if len(lines) >= len(jobs):
            break
        with open(results, "a") as f:
            f.write(json.dumps({"error": f"the converter crashed ({server.exit_reason()})"})
                    + "\n")
    out = []
    for m, line in zip(manifest, _read_lines(results)):
        os.remove(m["graph"])
        res = json.loads(line)
        if "error" in res:
            out.append(TfjsExportError(res["error"], res.get("ops", ())))
        else:
            out.append(m["out_dir"])
    return out


class _Converter:
    """The converter's venv running :func:`_serve`: one request (a jobs file and a results
    file) per line on its stdin, answered by a marker line on its stdout."""
    READY, DONE = "@@jaxtf-tfjs-ready@@", "@@jaxtf-tfjs-done@@"
    _current: "_Converter | None" = None

    @classmethod
    def get(cls) -> "_Converter":
        if cls._current is None or cls._current.proc.poll() is not None:
            cls._current = cls()
        return cls._current

    def __init__(self):
        import atexit
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONPATH", None)
        cmd = [_venv_python(), "-u", "-c", "import runpy, sys; sys.argv = sys.argv[1:]; "
               "runpy.run_path(sys.argv[0], run_name='__main__')",
               os.path.abspath(__file__), "_serve"]
        self.log = tempfile.NamedTemporaryFile(prefix="jaxtf_tfjs_converter_", suffix=".log",
                                               delete=False)
        self.proc = subprocess.Popen(cmd, cwd=tempfile.gettempdir(), env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log)
        atexit.register(self.close)
        if not self._wait(self.READY):
            raise TfjsExportError(f"the tensorflowjs converter failed to start "
                                  f"({self.exit_reason()}); its venv is {_venv_python()} "
                                  f"(remake it with {SETUP_COMMAND} after removing "
                                  f"{os.path.join(home(), 'venv')})")

    def _wait(self, marker: str) -> bool:
        for line in self.proc.stdout:
            if line.rstrip("\n") == marker:
                return True
        self.proc.wait()
        return False

    def ask(self, request: str) -> bool:
        """Send a request; whether it was answered (False: the process died)."""
        self.log_start = os.path.getsize(self.log.name)
        try:
            self.proc.stdin.write(request + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.proc.wait()
            return False
        return self._wait(self.DONE)

    def exit_reason(self) -> str:
        with open(self.log.name, errors="replace") as f:
            f.seek(getattr(self, "log_start", 0))    # what it wrote since the request
            tail = f.read()[-1500:].strip()
        return f"exit {self.proc.returncode}" + (f": {tail}" if tail else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if _Converter._current is self:
            _Converter._current = None


def _read_lines(path: str) -> list[str]:
    with open(path) as f:
        return [ln for ln in f.read().split("\n") if ln]


def _serve() -> None:
    """In the converter's venv: import once, then convert each requested batch."""
    import tensorflow  # noqa: F401
    from tensorflowjs.converters import tf_saved_model_conversion_v2  # noqa: F401
    print(_Converter.READY, flush=True)
    for line in sys.stdin:
        _convert(*line.rstrip("\n").split("\t"))
        print(_Converter.DONE, flush=True)


def _convert(jobs_file: str, results_file: str) -> None:
    """In the converter's venv: convert each job, one JSON line of result per job."""
    import contextlib
    import io
    import tensorflow as tf
    from google.protobuf.json_format import MessageToDict
    from tensorflowjs.converters import tf_saved_model_conversion_v2 as conv
    with open(jobs_file) as f:
        jobs = json.load(f)
    done = len(_read_lines(results_file))
    with open(results_file, "a") as out:
        for job in jobs[done:]:
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    res = _convert_one(tf, conv, MessageToDict, job)
            except Exception as exc:
                msg, ops = _converter_message(exc)
                res = {"error": msg, "ops": ops}
            out.write(json.dumps(res) + "\n")
            out.flush()


def _converter_message(exc: Exception) -> tuple[str, list[str]]:
    """The converter's refusal as a message and the op types it names."""
    msg = str(exc).strip()
    prefix = "Unsupported Ops in the model "
    if msg.startswith(prefix):
        when, _, ops = msg[len(prefix):].partition("\n")
        names = sorted(o.strip() for o in ops.split(",") if o.strip())
        return (f"TF.js has no op {', '.join(names)}: the tensorflowjs converter refuses "
                f"the graph ({when.strip()})", names)
    if isinstance(exc, _DtypeRefusal):
        return msg, exc.ops
    return f"{type(exc).__name__}: {msg}"[:3000], []


class _DtypeRefusal(Exception):
    def __init__(self, message, ops):
        super().__init__(message)
        self.ops = ops


def _convert_one(tf, conv, MessageToDict, job: dict) -> dict:
    graph_def = tf.compat.v1.GraphDef()
    with open(job["graph"], "rb") as f:
        graph_def.ParseFromString(f.read())
    graph_def = _strip_asserts(tf, graph_def, [n.split(":")[0] for n in
                                               job["inputs"] + job["outputs"]])
    with tf.Graph().as_default() as graph:
        tf.import_graph_def(graph_def, name="")
    ins = [graph.get_tensor_by_name(n) for n in job["inputs"]]
    outs = [graph.get_tensor_by_name(n) for n in job["outputs"]]
    signature = conv._build_signature_def(graph, ins, outs)
    optimized = conv.optimize_graph(graph, signature)
    _unfuse_activations(optimized)
    _round_int_to_float_casts(tf, optimized)
    _check_dtypes(tf, optimized)
    ops = sorted({n.op for n in optimized.node}
                 | {n.op for fn in optimized.library.function for n in fn.node_def})
    weights = conv.extract_weights(optimized)
    os.makedirs(job["out_dir"], exist_ok=True)
    model_json = os.path.join(job["out_dir"], "model.json")
    conv.write_artifacts(MessageToDict(optimized), weights, model_json, tf.__version__,
                         signature)
    _zero_dims(model_json)
    names = {n.name for n in optimized.node}
    sidecar = {
        "inputs": [{"name": t.op.name, "dtype": t.dtype.name, "in_graph": t.op.name in names,
                    "shape": None if t.shape.rank is None else
                    [-1 if d is None else int(d) for d in t.shape.as_list()]} for t in ins],
        "outputs": [{"name": t.name, "dtype": t.dtype.name} for t in outs],
        "ops": ops, "needs_async": bool(ASYNC_OPS & set(ops)),
    }
    with open(os.path.join(job["out_dir"], _SIDECAR), "w") as f:
        json.dump(sidecar, f)
    return {"ok": True}


def _strip_asserts(tf, graph_def, keep: list[str]):
    """Without its ``Assert`` nodes (and what only they used: the ``StringFormat`` of their
    messages), which TF.js does not have: jaxtf's checks of symbolic-dimension
    constraints are not made in TF.js (nor in TFLite, whose converter drops them too)."""
    asserts = {n.name for n in graph_def.node if n.op == "Assert"}
    if not asserts:
        return graph_def
    for node in graph_def.node:
        kept = [i for i in node.input if i.lstrip("^").split(":")[0] not in asserts]
        if len(kept) != len(node.input):
            del node.input[:]
            node.input.extend(kept)
    return tf.compat.v1.graph_util.extract_sub_graph(graph_def, keep)


#: activations TF.js's cpu backend applies inside a fused MatMul/Conv2D (its
#: applyActivation); grappler also fuses Tanh (and others) there, which then fail at run
#: time with "Activation tanh has not been implemented for the CPU backend"
_TFJS_FUSED_ACTIVATIONS = {"Relu", "Relu6", "Elu", "LeakyRelu", "Prelu", "Sigmoid"}


def _unfuse_activations(graph_def) -> None:
    """Split each fused op whose activation TF.js cannot apply into the fused op without
    it and the activation as its own node (named as the fused op was, so its consumers
    need no change)."""
    nodes = list(graph_def.node)
    for node in nodes:
        if not node.op.startswith(("_Fused", "Fused")) or "fused_ops" not in node.attr:
            continue
        fused = [op.decode() for op in node.attr["fused_ops"].list.s]
        if len(fused) < 2 or fused[-1] in _TFJS_FUSED_ACTIVATIONS or \
                fused[-1] not in ("Tanh", "Softplus", "Softsign", "Selu"):
            continue
        act = graph_def.node.add()
        act.name, act.op = node.name, fused[-1]
        act.attr["T"].CopyFrom(node.attr["T"])
        act.device = node.device
        node.name += "/jaxtf_unfused"
        act.input.append(node.name)
        del node.attr["fused_ops"].list.s[-1]


def _round_int_to_float_casts(tf, graph_def) -> None:
    """TF.js's cpu backend casts int32 to float32 without rounding (it keeps the
    Int32Array: 2**31 - 1 stays 2147483647, and ``cast(x) == 2.0**31`` is False). Each
    such Cast is followed by a multiplication by 1.0 (the identity in TF; in TF.js it
    writes a Float32Array, which rounds), named as the Cast was."""
    one = tf.make_tensor_proto(1.0, tf.float32)
    for node in list(graph_def.node):
        if node.op != "Cast" or node.attr["DstT"].type != tf.float32.as_datatype_enum or \
                node.attr["SrcT"].type != tf.int32.as_datatype_enum:
            continue
        name = node.name
        node.name += "/jaxtf_unrounded"
        const = graph_def.node.add()
        const.name, const.op = name + "/jaxtf_one", "Const"
        const.attr["dtype"].type = tf.float32.as_datatype_enum
        const.attr["value"].tensor.CopyFrom(one)
        mul = graph_def.node.add()
        mul.name, mul.op = name, "Mul"
        mul.attr["T"].type = tf.float32.as_datatype_enum
        mul.input.extend([node.name, const.name])


def _zero_dims(model_json: str) -> None:
    """The converter writes shapes with MessageToDict, which drops a dimension's size 0
    (proto3 default): TF.js then reads it as NaN and refuses a [0, 3] input of a [0, 3]
    placeholder. Put the 0s back."""
    def fix(node):
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "dim" and isinstance(v, list):
                    node[k] = [{**d, "size": "0"} if isinstance(d, dict) and "size" not in d
                               else d for d in v]
                else:
                    fix(v)
        elif isinstance(node, list):
            for v in node:
                fix(v)
    with open(model_json) as f:
        data = json.load(f)
    fix(data)
    with open(model_json, "w") as f:
        json.dump(data, f)


def _check_dtypes(tf, graph_def) -> None:
    """Refuse tensors of dtypes TF.js does not have (it would read them as int32/float32)."""
    with tf.Graph().as_default() as g:
        tf.import_graph_def(graph_def, name="")
    bad: dict[str, set] = {}
    for op in g.get_operations():
        dts = [t.dtype.name for t in list(op.inputs) + list(op.outputs)
               if t.dtype.name != "variant"]        # a TensorList: TF.js has those
        if "element_dtype" in op.node_def.attr:     # ... of items of this dtype
            dts.append(tf.as_dtype(op.get_attr("element_dtype")).name)
        for dt in dts:
            if dt not in TFJS_DTYPES:
                bad.setdefault(dt, set()).add(op.type)
    if bad:
        what = "; ".join(f"{dt} (in {', '.join(sorted(ops))})" for dt, ops in sorted(bad.items()))
        why = ("its loader would read it as int32 or float32, giving wrong numbers"
               if set(bad) - {"complex64"} else "")
        if "complex64" in bad:
            why += ("; " if why else "") + "TF.js's complex64 arithmetic gives NaN when it " \
                                          "broadcasts"
        raise _DtypeRefusal(f"TF.js has no dtype {', '.join(sorted(bad))} ({why}): tensors "
                            f"of {what}", sorted({o for ops in bad.values() for o in ops}))


def save(artifact: str, path: str) -> list[str]:
    """Copy the model directory to ``path``; the files written."""
    shutil.copytree(artifact, path, dirs_exist_ok=True)
    return sorted(os.path.join(path, f) for f in os.listdir(artifact))


# ---------------------------------------------------------------------------------------
# running in node


_NP_OF_TFJS = {"float32": "<f4", "int32": "<i4", "bool": "|u1"}


def run(artifact: str, args: Sequence[Any]) -> list:
    res = run_many([(artifact, args)])[0]
    if isinstance(res, Exception):
        raise res
    return res


def run_many(items) -> list:
    """Each (model directory, args) run in one node process: the outputs (numpy, in the
    TF function's output order and dtypes), or the exception."""
    import numpy as np
    check_installed()
    tmp = tempfile.mkdtemp(prefix="jaxtf_tfjs_run_")
    jobs, out = [], []
    for i, (artifact, args) in enumerate(items):
        try:
            info = _sidecar(artifact)
            feeds = _feeds(info, args, os.path.join(tmp, f"in{i}_"))
        except Exception as exc:
            out.append(exc)
            continue
        out.append((i, info))
        jobs.append({"model": artifact, "inputs": feeds,
                     "outputs": [o["name"] for o in info["outputs"]],
                     "out_prefix": os.path.join(tmp, f"out{i}_")})
    results = _node_jobs(jobs, "run", tmp)
    k = 0
    for j, slot in enumerate(out):
        if isinstance(slot, Exception):
            continue
        res, (_, info) = results[k], slot
        k += 1
        if "error" in res:
            out[j] = TfjsRunError(f"TF.js failed: {res['error']}")
            continue
        if "crash" in res:         # node died (killed under load, out of memory, ...)
            out[j] = TfjsRunError(
                f"the TF.js runner (node) died while running this model, before any "
                f"result: {res['crash'][:600]}. Nothing says the model is wrong: run it "
                f"again on a less loaded machine (JAXTF_TFJS_TIMEOUT raises the timeout)")
            continue
        vals = []
        for o, want in zip(res["outputs"], info["outputs"]):
            raw = np.fromfile(o["file"], dtype=_NP_OF_TFJS[o["dtype"]])
            a = raw.reshape(o["shape"])
            vals.append(a.astype(bool) if want["dtype"] == "bool" else
                        a.astype(np.dtype(want["dtype"]), copy=False))
        out[j] = vals
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def _sidecar(artifact: str) -> dict:
    with open(os.path.join(artifact, _SIDECAR)) as f:
        return json.load(f)


def _feeds(info: dict, args, prefix: str) -> list[dict]:
    """Write each argument as a raw little-endian buffer of the model's input dtype (cast
    only when exact); the node runner's description of it."""
    import numpy as np
    if len(args) != len(info["inputs"]):
        raise ValueError(f"the model takes {len(info['inputs'])} inputs, got {len(args)}")
    feeds = []
    for n, (spec, a) in enumerate(zip(info["inputs"], args)):
        a = np.asarray(a)
        want = np.dtype(spec["dtype"])
        if a.dtype == np.uint32 and want == np.int32:
            a = a.view(np.int32)              # uint32 is fed as its bits (carry_uint32)
        if a.dtype != want:
            b = a.astype(want)
            if a.dtype == bool or want == np.dtype(bool) or not np.array_equal(
                    b, a, equal_nan=a.dtype.kind in "fc"):
                raise TypeError(f"input {n} ({spec['name']}) is {spec['dtype']} in the model; "
                                f"a {a.dtype} argument does not convert to it exactly")
            a = b
        shape = spec["shape"]
        if shape is not None and (len(shape) != a.ndim or any(
                d not in (-1, s) for d, s in zip(shape, a.shape))):
            raise ValueError(f"input {n} ({spec['name']}) has shape {shape} in the model, "
                             f"got {list(a.shape)}")
        if not spec.get("in_graph", True):
            continue                  # unused input: the converter removed its placeholder
        path = f"{prefix}{n}.bin"
        np.ascontiguousarray(a).tofile(path)
        feeds.append({"name": spec["name"], "dtype": spec["dtype"], "shape": list(a.shape),
                      "file": path})
    return feeds


def _node_jobs(jobs: list[dict], mode: str, tmp: str) -> list[dict]:
    """Run ``jobs`` in one node process (restarted after the job that killed it)."""
    if not jobs:
        return []
    jobs_file, results = os.path.join(tmp, f"{mode}.json"), os.path.join(tmp, f"{mode}.jsonl")
    with open(jobs_file, "w") as f:
        json.dump({"mode": mode, "jobs": jobs}, f)
    open(results, "w").close()
    cmd = [_node(), _RUNNER, home(), jobs_file, results]
    timeout = float(os.environ.get("JAXTF_TFJS_TIMEOUT", "300"))
    while True:
        with open(os.path.join(tmp, "node.log"), "w+") as log:
            proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=log)
            why = _watch(proc, results, timeout)
            log.seek(0)
            err = log.read().strip()
        lines = _read_lines(results)
        if len(lines) >= len(jobs):
            break
        if why is None and proc.returncode == 0:
            raise TfjsRunError("the TF.js runner stopped early:\n" + err[-3000:])
        why = why or f"exit {proc.returncode}"
        with open(results, "a") as f:      # the job at position len(lines) killed node
            f.write(json.dumps({"crash": f"crash ({why}) {err[-300:]}".strip()}) + "\n")
    return [json.loads(ln) for ln in lines[:len(jobs)]]


def _watch(proc, results: str, timeout: float) -> str | None:
    """Wait for ``proc``; kill it when no job finished for ``timeout`` seconds (a model
    that loops forever), and say so."""
    import time
    size, last = -1, time.monotonic()
    while True:
        try:
            proc.wait(timeout=0.05)
            return None
        except subprocess.TimeoutExpired:
            pass
        now, new = time.monotonic(), os.path.getsize(results)
        if new != size:
            size, last = new, now
        elif now - last > timeout:
            proc.kill()
            proc.wait()
            return f"no result after {timeout:.0f} s (JAXTF_TFJS_TIMEOUT), killed"


def run_ones(artifacts: list[str]) -> list[str]:
    """For the probe: run each model on ones (unknown dimensions 1) in one node process
    (restarted after a crash): "ok", "error ..." or "crash ..." per model."""
    check_installed()
    tmp = tempfile.mkdtemp(prefix="jaxtf_tfjs_ones_")
    jobs = [{"model": a} for a in artifacts]
    out = []
    for res in _node_jobs(jobs, "ones", tmp):
        if "crash" in res:
            out.append(res["crash"].replace("\n", " ")[:300])
        elif "error" in res:
            out.append("error " + res["error"].replace("\n", " ")[:300])
        else:
            out.append("ok")
    shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["_serve"]:
        _serve()
    elif argv[:1] == ["setup"]:
        setup()
    elif argv[:1] == ["check"]:
        check_installed()
        print(runtime_name())
    else:
        raise SystemExit(f"usage: {SETUP_COMMAND}    (or: python -m core.export_tfjs check)")


if __name__ == "__main__":
    main(sys.argv[1:])
