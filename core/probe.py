"""Read an export target's accepted ops from its tools: ``python -m core.probe tflite``
(or ``onnx``, ``tfjs``).

Every rule case of the installed rule packages (each dtype its rule claims) and a sample of
JAX's harness cases are lowered for the target without the pre-flight, and every TF op they
emit is recorded by type and operand/result dtypes (:func:`core.targets.op_signature`).
Each distinct one is then tried alone: one node, its inputs as placeholders (constants
copied), through the target's converter and run in its runtime on ones (the target's
runtime module in :mod:`core.export`). Ops that convert only as part of a pattern (loops,
branches, tensor lists) are accepted from whole programs that hold them, convert and run.
What passes is written to ``core/target_ops/<target>.json``; everything else is refused by
the pre-flight. Runs happen in a child process, so an op that crashes the runtime is
refused, not fatal.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

class Recorder:
    """An OpChecker stand-in that records every op emitted, by (type, signature)."""

    def __init__(self):
        self.all: dict[tuple[str, str], list] = {}      # every instance, by (type, dtypes)

    @property
    def ops(self) -> dict[tuple[str, str], object]:
        """The first instance of each distinct op."""
        return {k: found[0] for k, found in self.all.items()}

    def start(self):
        import tensorflow as tf
        g = tf.compat.v1.get_default_graph()
        return g, g.num_operations()

    def finish(self, mark, eqn, rule_id, origin=None):
        from core.targets import emitted_operations, op_signature
        g, n0 = mark
        for op in emitted_operations(g, n0):
            self.all.setdefault((op.type, op_signature(op)), []).append(op)


def _lower(fn, args, registry, target, prefer=None, convert_kw=None):
    """Lower ``fn`` on ``args`` for ``target`` into a scratch graph, as the pre-flight
    does (symbolic dimensions too); returns the recorder of every op emitted."""
    import jax
    from core.converter import convert
    conv = convert(fn, target=target, registry=registry, prefer=prefer, **(convert_kw or {}))
    closed = conv.trace(*args)                    # JAXTF_NO_PREFLIGHT is set by probe()
    _, in_tree = jax.tree_util.tree_flatten((tuple(args), {}))
    return conv.lower_checked(closed, in_tree, Recorder())


def corpus(registry, harness_sample: int, only: tuple[str, ...] = ()):
    """(rule, dtype, fn, make_args, prefer, x64) for every rule case x dtype, then harness
    cases (rule None, their name for dtype); ``only``: rules whose id, and harness groups
    whose name, contain one of these strings."""
    from core.testkit import np_dtype

    def wanted(name: str) -> bool:
        return not only or any(o in name for o in only)
    for r in registry.rules():
        if not wanted(r.id):
            continue
        for c in r.cases:
            for dt in r.concrete_dtypes():
                if not c.applies_to(dt):
                    continue
                yield (r, dt, c.fn,
                       lambda c=c, dt=dt: c.make_args(np.random.default_rng(0),
                                                      np.dtype(np_dtype(dt))),
                       {r.primitive: r.id}, dt in ("int64", "uint64", "float64", "complex128"),
                       c.convert_kw)
    if harness_sample:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        from tests.conformance import cpu_harnesses
        seen: dict[str, int] = {}
        for h in sorted(cpu_harnesses(), key=lambda h: h.fullname):
            if seen.get(h.group_name, 0) >= harness_sample or not wanted(h.group_name):
                continue
            seen[h.group_name] = seen.get(h.group_name, 0) + 1
            yield (None, h.fullname, h.dyn_fun,
                   lambda h=h: h.dyn_args_maker(np.random.RandomState(0)), None, False, {})


def single_node_graph(op):
    """A graph holding ``op`` alone (inputs: placeholders, or copies of constants;
    bfloat16 enters and leaves as float32, as in exported models)."""
    import tensorflow as tf
    g = tf.Graph()
    feeds = []
    with g.as_default():
        inputs = []
        for t in op.inputs:
            if t.op.type == "Const":
                inputs.append(tf.constant(tf.make_ndarray(t.op.get_attr("value")), t.dtype))
            else:       # a bfloat16 input is fed as float32 (TFLite models take no bf16)
                shape = t.shape if t.shape.rank is not None else None
                ph = tf.compat.v1.placeholder(
                    tf.float32 if t.dtype == tf.bfloat16 else t.dtype, shape)
                inputs.append(tf.cast(ph, t.dtype) if t.dtype == tf.bfloat16 else ph)
                feeds.append(ph)
        attrs = {k: v for k, v in op.node_def.attr.items()}
        node = g.create_op(op.type, inputs, [o.dtype for o in op.outputs], attrs=attrs,
                           name="probe")
        # a bfloat16 result is fetched as float32, as exported models return it
        outs = [tf.cast(o, tf.float32) if o.dtype == tf.bfloat16 else o
                for o in node.outputs]
    return g, feeds, outs


def probe(target: str, harness_sample: int = 3, verbose: bool = False,
          limit: int = 0, only: tuple[str, ...] = (), known: dict | None = None) -> dict:
    """The op table of ``target``. With ``known`` (an existing table) only ops it does not
    accept yet are tried, and the result is that table updated (see :func:`merge`)."""
    import jax
    import tensorflow as tf
    from core import targets
    from core.converter import convert
    from core.export import runtime
    from core.registry import build_registry
    if targets.get(target).table is None:
        raise SystemExit(f"target {target!r} accepts every TF op: nothing to probe")
    rt = runtime(target)
    rt.check_installed()
    os.environ["JAXTF_NO_PREFLIGHT"] = "1"
    registry = build_registry(strict=True, entry_points=False)
    t0 = time.time()
    ops: dict[tuple[str, str], object] = {}
    examples: dict[tuple[str, str], list] = {}     # up to 4 instances, static shapes first
    programs = []        # (keys, fn, args) of programs holding ops that carry functions
    cases = []           # (rule, dtype, keys) of every rule case lowered
    n = 0
    for rule, dt, fn, make_args, prefer, x64, convert_kw in corpus(registry, harness_sample,
                                                                  only):
        label = f"{rule.id}:{dt}" if rule else dt
        n += 1
        if limit and n > limit:
            break
        try:
            with jax.enable_x64(x64):
                args = make_args()
                rec = _lower(fn, args, registry, target, prefer, convert_kw)
        except Exception as exc:
            if verbose:
                print(f"skip {label}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        for k, op in rec.ops.items():
            ops.setdefault(k, op)
        for k, found in rec.all.items():
            keep = examples.setdefault(k, [])
            for op in found:
                if len(keep) < 4 and all(t.shape.is_fully_defined() for t in op.inputs):
                    keep.append(op)
            if not keep:
                keep.append(found[0])
        if rule is not None:
            cases.append((rule, dt, set(rec.ops)))
        if any(_has_function(op) for op in rec.ops.values()) and not x64 and not convert_kw:
            programs.append((set(rec.ops), fn, args, prefer))
    print(f"{n} programs lowered, {len(ops)} distinct ops ({time.time() - t0:.0f}s)",
          flush=True)
    accepted: dict[str, set[str]] = {k: set(v) for k, v in (known or {}).get(
        "accepted", {}).items()}
    refused: dict[str, str] = {}
    # each op alone; an op seen in several forms is tried in up to 4 of them (static
    # shapes first), since one form may fail for reasons of its own (placeholder inputs)
    todo = {k: list(examples.get(k, [op])) for k, op in ops.items()
            if not _has_function(op) and k[1] not in accepted.get(k[0], ())}
    while todo:
        keys = sorted(todo)
        made = rt.export_graphs([single_node_graph(todo[k].pop(0)) for k in keys])
        singles = [(k, m) for k, m in zip(keys, made) if not isinstance(m, Exception)]
        for (typ, sig), m in zip(keys, made):
            if isinstance(m, Exception):
                refused[f"{typ}({sig})"] = _short(m)
        for ((typ, sig), _), res in zip(singles, rt.run_ones([m for _, m in singles])):
            if res == "ok":
                accepted.setdefault(typ, set()).add(sig)
                refused.pop(f"{typ}({sig})", None)
            else:
                refused[f"{typ}({sig})"] = "runtime: " + res
        todo = {k: c for k, c in todo.items()
                if c and k[1] not in accepted.get(k[0], ())}
        print(f"single ops: {sum(map(len, accepted.values()))} accepted, {len(refused)} "
              f"refused ({time.time() - t0:.0f}s)", flush=True)
    # ops that carry functions: from whole programs that convert and run, picked greedily
    # (each program only if it holds an op not yet accepted), a few rounds
    pending = {k for k, op in ops.items()
               if _has_function(op) and k[1] not in accepted.get(k[0], ())}
    tried = set()
    for _ in range(3):
        whole, cover = [], set()
        for i, (keys, fn, args, prefer) in enumerate(programs):
            new = (keys & pending) - cover
            if i in tried or not new:
                continue
            tried.add(i)
            try:
                f_tf = tf.function(convert(fn, target=target, registry=registry,
                                           prefer=prefer), autograph=False)
                specs = [tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype))
                         for a in args]
                whole.append((keys, rt.export(f_tf, specs)))
                cover |= new
            except Exception as exc:
                if verbose:
                    print("whole program refused:", _short(exc))
        if not whole:
            break
        for (keys, _), res in zip(whole, rt.run_ones([m for _, m in whole])):
            if res == "ok":
                for typ, sig in keys & pending:
                    accepted.setdefault(typ, set()).add(sig)
                pending -= keys
    for typ, sig in sorted(pending):
        if sig not in accepted.get(typ, ()):
            refused[f"{typ}({sig})"] = "no whole program holding it converted and ran"
    print(f"done: {sum(map(len, accepted.values()))} accepted, {len(refused)} refused "
          f"({time.time() - t0:.0f}s)")
    function_types = {t for (t, _), op in ops.items() if _has_function(op)}
    function_types |= set((known or {}).get("function_types", ()))
    table = {"target": target, "tensorflow": tf.__version__, "runtime": rt.runtime_name(),
             "how": "python -m core.probe " + target + "".join(f" --only {o}" for o in only),
             "accepted": {k: sorted(v) for k, v in sorted(accepted.items())},
             "refused": dict(sorted(refused.items())),
             "function_types": sorted(function_types),
             "rules": rule_verdicts(cases, accepted, function_types)}
    return merge(known, table) if known else table


def merge(old: dict, new: dict) -> dict:
    """``old`` updated by a partial probe ``new``: accepted ops are the union, refused ones
    those neither accepts, and the verdicts of the rules ``new`` probed are replaced."""
    accepted = {k: sorted(set(old["accepted"].get(k, ())) | set(new["accepted"].get(k, ())))
                for k in set(old["accepted"]) | set(new["accepted"])}
    refused = {k: v for k, v in {**old["refused"], **new["refused"]}.items()
               if k.split("(", 1)[1][:-1] not in accepted.get(k.split("(", 1)[0], ())}
    return dict(new, how=old["how"], merged=[*old.get("merged", ()), new["how"]],
                accepted=dict(sorted(accepted.items())), refused=dict(sorted(refused.items())),
                rules=dict(sorted({**old.get("rules", {}), **new["rules"]}.items())))


def rule_verdicts(cases, accepted, function_types=()) -> dict:
    """rule id -> dtype -> "ok", or the first op its cases emit that the target refuses:
    what ``python -m core.registry list --target`` shows without lowering anything.
    Ops that carry functions (loops, branches) count by type, as the pre-flight does."""
    from core.targets import _PLUMBING
    out: dict[str, dict[str, str]] = {}
    for rule, dt, keys in cases:
        bad = sorted(f"{t}({s})" for t, s in keys
                     if t not in _PLUMBING and s not in accepted.get(t, ())
                     and not (t in function_types and t in accepted))
        verdict = out.setdefault(rule.id, {})
        if verdict.get(dt, "ok") == "ok":
            verdict[dt] = bad[0] if bad else "ok"
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def _has_function(op) -> bool:
    """Ops that convert only inside a whole program: loops and branches (they carry
    functions) and the tensor lists a loop stacks its results in (the converter lowers
    the reserve/set/stack pattern, not one op alone)."""
    from core.targets import carries_functions
    return carries_functions(op) or op.type.startswith("TensorList")


def _short(exc) -> str:
    msg = str(exc)
    for line in msg.splitlines():
        if "error:" in line:
            return line.split("error:", 1)[1].strip()[:200]
    return (type(exc).__name__ + ": " + msg.replace("\n", " "))[:200]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["tflite", "onnx", "tfjs"])
    p.add_argument("--harness-sample", type=int, default=3,
                   help="JAX harness cases per group added to the rule cases (default 3)")
    p.add_argument("--limit", type=int, default=0, help="at most N programs (for a try)")
    p.add_argument("--out", help="default: core/target_ops/<target>.json")
    p.add_argument("--only", action="append", default=[],
                   help="only rules whose id (and harness groups whose name) contain this; "
                        "repeatable; with --merge, after changing a few rules")
    p.add_argument("--merge", action="store_true",
                   help="update the existing table: try only ops it does not accept yet")
    p.add_argument("-v", action="store_true")
    args = p.parse_args(argv)
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "target_ops",
                                   f"{args.target}.json")
    known = None
    if args.merge:
        with open(out) as f:
            known = json.load(f)
    table = probe(args.target, args.harness_sample, args.v, args.limit, tuple(args.only),
                  known)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
        f.write("\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
