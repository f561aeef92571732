"""Export targets: where a converted graph is meant to run, and which TF ops that runtime
accepts.

A target is data kept in one place:

- ``tf``: TensorFlow itself (SavedModel, TF Serving). Every plain TF op is accepted; this
  is the default and the exact, fastest-in-TF lowering.
- ``tflite``: LiteRT / TFLite with builtin ops only (no Flex ops). The TF op types and
  operand dtypes it accepts are read from the runtime: ``python -m core.probe tflite``
  converts every op (type, operand and result dtypes) that jaxtf's rules emit with
  ``TFLiteConverter`` (``supported_ops=[TFLITE_BUILTINS]``), runs it in the LiteRT
  interpreter, and writes what passed to ``core/target_ops/tflite.json``.

Rules declare ``targets=`` when they are written for one target only; the registry tries
those first for that target and falls back to the generic rules. The pre-flight of
``convert(f, target=...)`` has an :class:`OpChecker` watch every equation while the
program is lowered (the traced lowering itself; called eagerly, a scratch graph first),
checks each op the selected rules emitted against the target's table, and names the
equation, its source line and the op the runtime would refuse (:func:`format_refusals`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any

_TABLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "target_ops")

#: Op types that carry no computation of their own: graph plumbing that every target
#: takes (their operands are checked where they are computed).
_PLUMBING = frozenset({"Placeholder", "NoOp", "Identity", "IdentityN", "StopGradient"})


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    description: str
    table: str | None = None          # file in core/target_ops, or None: every TF op
    way_out: str = ""                 # what a user can do when an op is refused
    zero_size: bool = True            # inputs/outputs with a 0 dimension are possible
    runtime: str | None = None        # module of core that exports to and runs the target
    inf_at_run_time: bool = False     # its converter folds ±inf constants to ±max finite
    loop_copies_in_order: bool = False  # a loop's outputs overwrite its inputs one by one
    dtypes: frozenset | None = None   # the only dtypes its models can hold (None: any)
    carried: tuple = ()               # (JAX dtype, dtype that holds its bits in the graph)
    wrong: tuple = ()                 # (op type, signature, why): runs, but wrong numbers

    def carrier(self, dtype_name: str) -> str | None:
        """The dtype whose tensors hold ``dtype_name``'s bits on this target, or None when
        it is held as itself (TF.js has no uint32: uint32 and key data are int32 bits)."""
        for jax_dtype, holder in self.carried:
            if dtype_name == jax_dtype or (dtype_name.startswith("key<")
                                           and jax_dtype == "uint32"):
                return holder
        return None

    @functools.cached_property
    def _data(self) -> dict:
        path = os.path.join(_TABLE_DIR, self.table)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"target {self.name!r} has no op table yet ({path}); make it with "
                f"`python -m core.probe {self.name}`")
        with open(path) as f:
            return json.load(f)

    @functools.cached_property
    def accepted(self) -> dict[str, frozenset[str]] | None:
        """op type -> accepted dtype signatures (see :func:`op_signature`), or None."""
        if self.table is None:
            return None
        return {op: frozenset(sigs) for op, sigs in self._data["accepted"].items()}

    def verdict(self, rule_id: str, dtype: str) -> str | None:
        """What the probe measured for a rule's cases on ``dtype``: "ok", the first op
        the target refuses, or None (not measured, e.g. a plugin added since)."""
        if self.table is None:
            return "ok"
        return self._data.get("rules", {}).get(rule_id, {}).get(dtype)

    def refuses(self, op) -> str | None:
        """Why this target's runtime refuses the TF operation ``op``, or None."""
        table = self.accepted
        if table is None or op.type in _PLUMBING:
            return None
        sig = op_signature(op)
        sigs = table.get(op.type)
        if sigs is None:
            return f"{op.type} is not a {self.description} op"
        if carries_functions(op):
            # a loop or branch: its body's ops are checked one by one; what it carries
            # must be of dtypes the runtime's loops and branches were seen to carry
            known = {d for sg in sigs for d in sg.replace("->", ",").split(",")}
            bad = sorted({t.dtype.name for t in op.inputs} - known)
            return (f"{op.type} carrying {', '.join(bad)} is not accepted by "
                    f"{self.description}" if bad else None)
        for op_type, wrong_sig, why in self.wrong:
            if op.type == op_type and sig == wrong_sig:
                return f"{op.type} on ({sig}) gives wrong numbers in {self.description}: {why}"
        if sig not in sigs:
            return (f"{op.type} on ({sig}) is not accepted by {self.description} "
                    f"(it takes {', '.join(sorted(sigs)[:4])}{', ...' if len(sigs) > 4 else ''})")
        return None


TARGETS: dict[str, Target] = {
    "tf": Target("tf", "TensorFlow"),
    "tflite": Target(
        "tflite", "TFLite/LiteRT builtin", table="tflite.json", zero_size=False,
        runtime="core.export_tflite", inf_at_run_time=True, loop_copies_in_order=True,
        way_out=("convert with target='tf' and use the TFLite converter's Flex ops "
                 "(SELECT_TF_OPS) instead, or register a rule written for target='tflite' "
                 "(a plugin, see docs/writing_rules.md)")),
    "onnx": Target(
        "onnx", "tf2onnx (opset 18) + onnxruntime", table="onnx.json",
        runtime="core.export_onnx",
        # onnxruntime loads no complex tensor ("MLDataType for tensor(complex64) is not
        # registered"), not even one only passed through
        dtypes=frozenset({"bool", "int8", "int16", "int32", "int64", "uint8", "uint16",
                          "uint32", "uint64", "float16", "bfloat16", "float32", "float64"}),
        wrong=(("Log", "float64->float64", "it is computed in float32 (log(1e-300) gave "
                "-inf, log(88.72) 4.485485553741455; found by tests/fuzz.py)"),),
        way_out=("use target='tf' or 'tflite', or register a rule written for "
                 "target='onnx' (a plugin, see docs/writing_rules.md)")),
    "tfjs": Target(
        "tfjs", "TensorFlow.js (tensorflowjs converter, tfjs in node)", table="tfjs.json",
        runtime="core.export_tfjs", dtypes=frozenset({"float32", "int32", "bool"}),
        carried=(("uint32", "int32"),),
        way_out=("use target='tf' or 'tflite', or register a rule written for "
                 "target='tfjs' (a plugin, see docs/writing_rules.md)")),
}


#: Primitives whose generic rules move or add bits without reading them as numbers: they
#: are exact on a carried dtype (uint32 held as int32 bits: the same wrapping sums, the
#: same equalities). Any other primitive on a carried dtype needs a rule written for the
#: target (see Rule.reject_reason); a generic one would read the bits as signed.
BIT_AGNOSTIC = frozenset({
    "reshape", "broadcast_in_dim", "squeeze", "expand_dims", "slice", "dynamic_slice",
    "dynamic_update_slice", "concatenate", "transpose", "rev", "select_n", "gather", "pad",
    "copy", "copy_p", "add", "sub", "neg", "eq", "ne", "split", "pjit", "jit", "closed_call",
    "core_call", "remat", "checkpoint", "custom_jvp_call", "custom_vjp_call", "while", "cond",
    "scan", "optimization_barrier", "random_wrap", "random_unwrap", "random_clone",
    "stop_gradient", "reduce_sum", "cumsum", "iota", "stack", "unstack", "tile",
    "device_put", "pvary", "squeeze_p"})


def preflight_disabled() -> bool:
    """``JAXTF_NO_PREFLIGHT=1`` skips the op check (to see what the target's own converter
    says, e.g. while writing a rule or probing a runtime); never needed by users."""
    return os.environ.get("JAXTF_NO_PREFLIGHT", "").strip().lower() in ("1", "true", "yes")


def has_table(name: str) -> bool:
    """Whether target ``name`` has a measured op table (``tf`` needs none)."""
    t = get(name)
    return t.table is not None and os.path.exists(os.path.join(_TABLE_DIR, t.table))


def get(name: str) -> Target:
    try:
        return TARGETS[name]
    except KeyError:
        raise ValueError(f"unknown target {name!r}; known targets are {sorted(TARGETS)}") \
            from None


_FUNCTION_ATTRS = ("body", "cond", "then_branch", "else_branch", "branches", "f")


def carries_functions(op) -> bool:
    """Whether ``op`` runs functions (While, If, Case, calls): their ops are emitted into
    their own graphs and checked there."""
    attrs = op.node_def.attr
    return any(a in attrs and (attrs[a].func.name or attrs[a].list.func)
               for a in _FUNCTION_ATTRS)


def op_signature(op) -> str:
    """``in1,in2->out`` over the distinct dtypes of an op's data inputs and outputs, e.g.
    ``float32,int32->float32`` for a ConcatV2 of floats (its axis is int32)."""
    ins = sorted({t.dtype.name for t in op.inputs})
    outs = sorted({t.dtype.name for t in op.outputs})
    return ",".join(ins) + "->" + ",".join(outs)


@dataclasses.dataclass
class Refusal:
    """An op a target refuses, the equation whose rule emitted it, and the user's
    equation that one came from (itself, unless a rule's decomposition made it)."""
    eqn: Any
    rule_id: str
    op_type: str
    reason: str
    origin: Any = None


class OpChecker:
    """Collects, while a program is lowered, every emitted op the target refuses, with the
    equation it belongs to (ops of nested equations are attributed to the innermost)."""

    def __init__(self, target: Target):
        self.target = target
        self.refusals: list[Refusal] = []

    def start(self):
        import tensorflow as tf
        g = tf.compat.v1.get_default_graph()
        return g, g.num_operations()

    def finish(self, mark, eqn, rule_id: str, origin=None) -> None:
        g, n0 = mark
        for op in emitted_operations(g, n0):
            reason = self.target.refuses(op)
            if reason:
                self.refusals.append(Refusal(eqn, rule_id, op.type, reason, origin or eqn))


def new_operations(g, n0: int) -> list:
    """The operations created in graph ``g`` after it had ``n0`` of them (a graph hands
    out op ids in order, one per op, from its first op's id)."""
    n1 = g.num_operations()
    if n1 <= n0:
        return []
    try:
        ops = g._nodes_by_id
        base = getattr(g, "_jaxtf_first_op_id", None)   # on the graph: ids of dead graphs
        if base is None or base not in ops:              # are reused, so no id(g) cache
            base = min(ops.keys())
            g._jaxtf_first_op_id = base
        return [ops[i] for i in range(base + n0, base + n1)]
    except Exception:                  # pragma: no cover - a TF without that layout
        return g.get_operations()[n0:]


def function_graphs(op) -> list:
    """The graphs of the functions ``op`` runs (a loop's cond and body, a branch, a call)."""
    attrs, names = op.node_def.attr, []
    for a in _FUNCTION_ATTRS:
        if a in attrs:
            names += [attrs[a].func.name] if attrs[a].func.name else \
                [f.name for f in attrs[a].list.func]
    graphs = []
    for name in names:
        g = op.graph
        while g is not None:            # a function made inside a function graph may be
            fn = g._get_function(name)  # registered in the graph it is nested in
            if fn is not None:
                graphs.append(fn.graph)
                break
            g = getattr(g, "outer_graph", None)
    return graphs


def emitted_operations(g, n0: int) -> list:
    """The ops created in ``g`` after it had ``n0`` of them and, for those that run
    functions (a ``tf.while_loop`` a rule builds), the ops in their graphs, recursively.
    Each op is handed out once: a graph remembers those it gave (an inner equation's ops
    belong to the inner equation)."""
    out = []

    def visit(graph, ops):
        seen = getattr(graph, "_jaxtf_checked", None)
        if seen is None:
            seen = graph._jaxtf_checked = set()
        for op in ops:
            if op.name in seen:
                continue
            seen.add(op.name)
            out.append(op)
            if carries_functions(op):
                for fg in function_graphs(op):
                    visit(fg, fg.get_operations())

    visit(g, new_operations(g, n0))
    return out


def format_refusals(refusals: list[Refusal], target: Target, what: str) -> str:
    """The TargetError text: refused ops grouped by primitive and dtypes, counted, each with
    its source line, the rule and the TF op the runtime would refuse, and the way out."""
    from core.registry import eqn_dtypes, where
    groups: dict[tuple, list[Refusal]] = {}
    for r in refusals:
        groups.setdefault((r.eqn.primitive.name, eqn_dtypes(r.eqn), r.rule_id), []).append(r)
    n_eqns = len({id(r.eqn) for r in refusals})
    lines = [f"{n_eqns} equation{'s' if n_eqns != 1 else ''} in {what} cannot be lowered for "
             f"target {target.name!r}: {target.description} refuses the TF ops their rules "
             f"emit:"]
    for i, ((prim, dts, rid), rs) in enumerate(groups.items(), 1):
        eqns = {id(r.eqn) for r in rs}
        count = f" ({len(eqns)} equations)" if len(eqns) > 1 else ""
        lines.append(f"[{i}] {prim}  dtypes {{{', '.join(dts)}}}{count}  rule {rid}")
        origin = rs[0].origin or rs[0].eqn
        via = (f" (in the lowering of {origin.primitive.name} "
               f"{{{', '.join(eqn_dtypes(origin))}}})" if origin is not rs[0].eqn else "")
        lines.append(f"    at {where(origin)}{via}")
        for reason in dict.fromkeys(r.reason for r in rs):
            lines.append(f"    refused: {reason}")
    if target.way_out:
        lines.append(f"Ways out: {target.way_out}.")
    return "\n".join(lines)
