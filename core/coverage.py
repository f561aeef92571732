"""The coverage table and the ``python -m core.registry`` command line.

    python -m core.registry list [--status S] [--plugin P] [--primitive GLOB]
                                 [--dtype D] [--device D] [--target T] [--json | --markdown]
    python -m core.registry plugins
    python -m core.registry explain PRIMITIVE [--dtype D ...] [--device D] [--allow-xla]
                                    [--target T]
    python -m core.registry check MODULE:FUNCTION ARGSPEC... [--device D] [--allow-xla]
                                  [--target T]
"""
from __future__ import annotations

import argparse
import fnmatch
import importlib
import json
import sys
from typing import Sequence

from core import dtypes as _dtypes
from core.registry import Registry, default_registry
from core.statuses import NO_RULE, declared_condition, refused_forms

#: Modules whose import defines primitives; imported so the table does not depend on what
#: the calling program happened to import.
_PRIMITIVE_MODULES = ("jax.numpy", "jax.scipy.special", "jax.random", "jax.nn",
                      "jax._src.lax.linalg", "jax._src.checkify", "jax._src.pallas.core",
                      "jax.experimental.shard_map", "jax.experimental.multihost_utils")

STATUSES = ("covered", "partial", "overridden", "shadowed", "unsupported", "internal",
            "not written", "missing", "failed to load")


def all_jax_primitives() -> list[str]:
    """Names of every primitive the installed JAX can lower."""
    import jax  # noqa: F401  (importing a module registers its primitives' lowerings)
    for mod in _PRIMITIVE_MODULES:
        try:
            importlib.import_module(mod)
        except Exception:  # an optional part of JAX that does not import here
            pass
    from jax._src.interpreters import mlir
    names = {p.name for p in mlir._lowerings}
    for table in mlir._platform_specific_lowerings.values():
        names.update(p.name for p in table)
    return sorted(names)


def _tf_rules(reg: Registry, name: str) -> list:
    """The rules for the default target (rules written only for an export target are
    shown by ``list --target``)."""
    return [r for r in reg.rules(name) if r.targets is None or "tf" in r.targets]


def _takes_all(r) -> bool:
    """The rule takes every valid form (no condition, or one declared to reject none)."""
    return not r.needs_xla and refused_forms(r) is None


def _status(reg: Registry, name: str) -> str:
    rules = _tf_rules(reg, name)
    if not rules:
        return NO_RULE.get(name, ("missing",))[0]
    if any(new.primitive == name for new, _ in reg.replaced):
        return "overridden"
    builtin = {"rules_lax", "rules_nn", "rules_random"}
    top = rules[0]
    if top.package not in builtin and any(r.package in builtin for r in rules[1:]):
        return "shadowed"          # a plugin outranks a built-in without declaring it
    return "covered" if any(_takes_all(r) for r in rules) else "partial"


def _notes(reg: Registry, name: str) -> str:
    """Why a primitive has no rule, or the valid forms its rules refuse (partial)."""
    rules = _tf_rules(reg, name)
    if not rules:
        return NO_RULE.get(name, ("", "nobody has looked at it yet"))[1]
    if any(_takes_all(r) for r in rules):
        return ""
    forms = dict.fromkeys(refused_forms(r) or "emits Xla* ops (allow_xla=True)" for r in rules)
    return "refuses " + "; ".join(forms)


def _symbolic(rules) -> str:
    """Symbolic (polymorphic) dimensions: "yes" when the forms the primitive takes are all
    lowered with symbolic dimensions, "some" when only some are, "no" when none are."""
    if not rules:
        return "-"
    general = [r for r in rules if _takes_all(r)]
    if general and any(r.polymorphic for r in general):
        return "yes"
    if not general and all(r.polymorphic for r in rules):
        return "yes"
    return "some" if any(r.polymorphic for r in rules) else "no"


def coverage(registry: Registry | None = None) -> list[dict]:
    """One row per known primitive (JAX's and every custom one a plugin lowers)."""
    reg = registry or default_registry()
    names = sorted(set(all_jax_primitives()) | set(reg.primitives()))
    rows = []
    for name in names:
        rules = _tf_rules(reg, name)
        dts = [d for d in _dtypes.ALL_CONCRETE if any(d in r.dtypes for r in rules)]
        dts += sorted({d for r in rules for d in r.dtypes} - set(_dtypes.ALL_CONCRETE))
        rows.append({
            "primitive": name,
            "status": _status(reg, name),
            "notes": _notes(reg, name),
            "symbolic": _symbolic(rules),
            "plugin": ", ".join(dict.fromkeys(r.package for r in rules)),
            "rules": [r.id for r in rules],
            "dtypes": dts,
            "devices": sorted(set().union(*(r.devices for r in rules))) if rules else [],
            "needs_xla": bool(rules) and all(r.needs_xla for r in rules),
        })
    failed = [p for p in reg.plugins if p.error]
    for p in failed:
        rows.append({"primitive": f"<{p.name}>", "status": "failed to load", "notes": p.error,
                     "symbolic": "-", "plugin": p.name, "rules": [], "dtypes": [],
                     "devices": [], "needs_xla": False, "error": p.error})
    return rows


def target_coverage(target: str, registry: Registry | None = None) -> list[dict]:
    """One row per primitive for an export target: the dtypes its rules lower there (as
    measured by ``python -m core.probe``: every op of the rule's cases accepted), and for
    each other dtype the op the target refuses."""
    from core.targets import get
    tgt = get(target)
    reg = registry or default_registry()
    rows = []
    for row in coverage(reg):
        name = row["primitive"]
        ok, refused, unknown = [], {}, []
        for dt in row["dtypes"]:
            rules = [r for r in reg.ranked(name, target) if dt in r.dtypes
                     and (r.targets is None or target in r.targets)]
            verdicts = [(r, tgt.verdict(r.id, dt)) for r in rules]
            good = [r for r, v in verdicts if v == "ok"]
            if good:
                ok.append(dt)
                row.setdefault("target_rules", {})[dt] = good[0].id
            elif any(v is None for _, v in verdicts) or not verdicts:
                unknown.append(dt)
            else:
                refused[dt] = next(v for _, v in verdicts if v)
        status = row["status"]
        if status in ("covered", "partial", "overridden", "shadowed"):
            status = ("covered" if not refused and not unknown else
                      "partial" if ok else "refused" if refused else "unmeasured")
        rows.append(dict(row, status=status, dtypes=ok, refused=refused, unmeasured=unknown,
                         target=target))
    return rows


def compact_dtypes(dts: Sequence[str]) -> str:
    s = set(dts)
    for group in ("all", "numeric", "inexact", "integer", "floating", "signed", "unsigned",
                  "complex", "bool"):
        members = set(_dtypes.GROUPS[group])
        if members <= s:
            s = (s - members) | {group}
    return ",".join(sorted(s))


def markdown_table(rows: list[dict], targets: dict[str, dict[str, dict]] | None = None) -> str:
    """The coverage table; ``targets``: {target: {primitive: its target_coverage row}}
    adds a column per export target with the dtypes that lower there."""
    targets = targets or {}
    lines = ["| primitive | status | package | dtypes | symbolic | "
             + "".join(f"{t} | " for t in targets) + "rules | notes |",
             "|---|---|---|---|---|" + "---|" * len(targets) + "---|---|"]
    for r in rows:
        cols = "".join(f"{compact_dtypes(t.get(r['primitive'], {}).get('dtypes', [])) or '-'} | "
                       for t in targets.values())
        notes = r["notes"].replace("|", "\\|")
        lines.append(f"| `{r['primitive']}` | {r['status']} | {r['plugin'] or '-'} | "
                     f"{compact_dtypes(r['dtypes']) or '-'} | {r['symbolic']} | {cols}"
                     f"{', '.join(f'`{x}`' for x in r['rules']) or '-'} | {notes or '-'} |")
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return ", ".join(f"{counts[k]} {k}" for k in STATUSES if k in counts) + \
        f" of {len(rows)} primitives"


def _filter(rows, args, reg: Registry):
    if args.status:
        rows = [r for r in rows if r["status"] == args.status]
    if args.plugin:
        rows = [r for r in rows if args.plugin in r["plugin"].split(", ")]
    if args.primitive:
        pat = args.primitive if any(c in args.primitive for c in "*?[") else f"*{args.primitive}*"
        rows = [r for r in rows if fnmatch.fnmatch(r["primitive"], pat)]
    if args.dtype or args.device:
        dt, dev = args.dtype or "float32", args.device or "cpu"
        rows = [r for r in rows if any(c.reason is None for c in reg.candidates(
            r["primitive"], [dt], dev, args.allow_xla))]
    return rows


def _dtype_of(name: str):
    """A dtype from its name, PRNG key types (``key<fry>``) included."""
    import jax
    import jax.numpy as jnp
    if name in _dtypes.KEY_DTYPES:
        impl = {"fry": "threefry2x32", "rbg": "rbg", "urbg": "unsafe_rbg"}[name[4:-1]]
        return jax.random.key(0, impl=impl).dtype
    return jnp.dtype(name)


class _Unknown(BaseException):      # not caught by a condition's own `except Exception`
    """A condition read something a stand-in equation does not know."""


class _StandInAval:
    def __init__(self, dtype):
        self.dtype = dtype

    def __getattr__(self, name):        # shape, ndim, ...: not known from dtypes alone
        raise _Unknown(name)


class _StandInParams(dict):
    def __getitem__(self, key):
        raise _Unknown(key)

    get = __contains__ = __getitem__

    def items(self):
        raise _Unknown("params")

    keys = values = __iter__ = items


class _StandInVars(list):
    """The operands, to iterate over; their number and positions are not known."""
    def __len__(self):       # TypeError: iterating still works (no length hint)
        raise TypeError("the number of operands is not known")

    def __getitem__(self, i):
        raise _Unknown("position")


def _with_condition(cand, dtypes) -> tuple:
    """``(candidate, determined)``: a candidate's ``when=`` condition evaluated on a
    stand-in equation that knows only the operand dtypes. ``determined`` is False when the
    condition read anything else (parameters, shapes): it is then left to the real
    equation. Conditions declared to reject no valid program are not evaluated."""
    import dataclasses
    import types
    import jax.numpy as jnp
    if cand.reason is not None or refused_forms(cand.rule) is None:
        return cand, True    # rejected, no condition, or one that rejects no valid program
    try:
        var = lambda d: types.SimpleNamespace(aval=_StandInAval(_dtype_of(d)))
        eqn = types.SimpleNamespace(invars=_StandInVars(var(d) for d in dtypes),
                                    outvars=_StandInVars([var(dtypes[0])]),
                                    params=_StandInParams(), primitive=types.SimpleNamespace(
                                        name=cand.rule.primitive))
        reason = cand.rule.when(eqn)
    except (Exception, _Unknown):
        return cand, False
    name = getattr(cand.rule.when, "__qualname__", "its condition")
    return (dataclasses.replace(cand, reason=f"its condition {name} declines operands of "
                                f"these dtypes: {reason}") if reason else cand), True


def explain(primitive: str, dtypes: Sequence[str], device: str = "cpu",
            allow_xla: bool = False, registry: Registry | None = None,
            target: str = "tf") -> dict:
    """The ranked candidate rules for ``primitive`` on operands of ``dtypes``, each with a
    verdict: "rejected" (with why), "conditional" (taken when its ``when=`` condition
    accepts the equation's parameters, which are unknown here; with the valid forms it
    refuses), "taken" (the first rule that applies unconditionally, or whose condition
    rejects no valid program), "shadowed" (applies, but ranks lower)."""
    from core.targets import get as _target
    reg = registry or default_registry()
    tgt = _target(target)
    cands = [_with_condition(c, dtypes) for c in
             reg.candidates(primitive, dtypes, device, allow_xla, target=target)]
    out, decided, after_condition = [], False, False
    for c, determined in cands:
        r, forms = c.rule, refused_forms(c.rule)
        cond = getattr(r.when, "__qualname__", None) if r.when is not None else None
        if c.reason is not None:
            verdict, why = "rejected", c.reason
        elif decided:
            verdict, why = "shadowed", "applies, but a higher-ranked rule is taken"
        elif forms is not None and not determined:
            verdict = "conditional"
            why = (f"taken when its condition {cond} accepts the equation (it reads its "
                   f"parameters or shapes, not known here); it refuses {forms}")
            after_condition = True
        else:
            verdict, decided = "taken", True
            why = ("applies when the conditional rules above decline" if after_condition
                   else "applies and ranks highest")
            if forms is not None:
                why += f"; its condition {cond} accepts operands of these dtypes"
            elif cond:
                why += f"; its condition {cond} {declared_condition(r)}"
        if verdict in ("taken", "conditional") and target != "tf":
            verdicts = {tgt.verdict(r.id, d) for d in dtypes}
            why += ("; its cases' ops are all accepted by " + target if verdicts == {"ok"}
                    else "; not measured for " + target if None in verdicts else
                    f"; but {target} refuses " + ", ".join(sorted(v for v in verdicts
                                                                  if v != "ok")))
        out.append({"rule": r.id, "package": r.package, "priority": r.priority,
                    "dtypes": list(r.dtype_spec), "condition": cond, "refuses": forms,
                    "polymorphic": r.polymorphic, "verdict": verdict, "why": why})
    no_rule = NO_RULE.get(primitive)
    return {"primitive": primitive, "dtypes": list(dtypes), "device": device,
            "allow_xla": allow_xla, "target": target, "candidates": out,
            "no_rule": {"status": no_rule[0], "reason": no_rule[1]} if no_rule else None}


def format_explain(report: dict) -> str:
    p = report["primitive"]
    if not report["candidates"]:
        nr = report["no_rule"]
        return (f"no rule lowers {p!r}: {nr['status']}: {nr['reason']}" if nr else
                f"no rule lowers {p!r}, and no status is declared for it (core/statuses.py)")
    lines = [f"{p} on {', '.join(report['dtypes'])}, device {report['device']}, "
             f"allow_xla={report['allow_xla']}, target {report['target']}; "
             f"candidates best first:"]
    marks = {"taken": "TAKEN   ", "conditional": "IF      ", "rejected": "rejected",
             "shadowed": "shadowed"}
    for c in report["candidates"]:
        lines.append(f"  {marks[c['verdict']]} {c['rule']} ({c['package']}) priority "
                     f"{c['priority']} dtypes {{{', '.join(c['dtypes'])}}}: {c['why']}")
    return "\n".join(lines)


def _parse_argspec(spec: str):
    """``f32[8,784]``, ``float32[8, 784]``, ``i32[]`` -> a jax.ShapeDtypeStruct."""
    import jax
    import numpy as np
    short = {"f16": "float16", "bf16": "bfloat16", "f32": "float32", "f64": "float64",
             "i8": "int8", "i16": "int16", "i32": "int32", "i64": "int64", "u8": "uint8",
             "u32": "uint32", "c64": "complex64", "bool": "bool"}
    head, _, rest = spec.replace(" ", "").partition("[")
    if not rest.endswith("]"):
        raise SystemExit(f"cannot read argument spec {spec!r}; write it as f32[8,784]")
    dims = tuple(int(d) for d in rest[:-1].split(",") if d)
    dtype = short.get(head, head)
    if dtype == "bfloat16":
        import jax.numpy as jnp
        return jax.ShapeDtypeStruct(dims, jnp.bfloat16)
    return jax.ShapeDtypeStruct(dims, np.dtype(dtype))


class _Recorder:
    """Sees each equation the interpreter lowers (the hook a target's op checker uses)."""

    def __init__(self):
        self.counts: dict[tuple[str, str, bool], int] = {}

    def start(self):
        return None

    def finish(self, _mark, eqn, rule_id, origin) -> None:
        key = (eqn.primitive.name, rule_id, origin is not None)
        self.counts[key] = self.counts.get(key, 0) + 1


def check(function: str, argspecs: Sequence[str], device="cpu", allow_xla=False,
          registry: Registry | None = None, target: str = "tf") -> tuple[list[dict], list, str]:
    """The whole-program pre-flight report of ``MODULE:FUNCTION`` on the given inputs:
    ``(uses, gaps, refused)``. ``uses``: one entry per (primitive, rule) with its count,
    read from a real lowering of the program into a scratch graph, so each equation's rule
    is the one selection takes on that equation, and equations a rule lowers whole (the
    body of a fused jax.nn.relu) or adds (its own decomposition, ``via`` "decomposition")
    are counted as conversion sees them. When some equation has no rule, ``uses`` is the
    static selection of every equation instead and ``gaps`` lists the others. ``refused``:
    for an export target, the TargetError text of the ops its runtime refuses ("" if none)."""
    import jax
    from core.converter import convert
    from core.errors import NoRuleError, TargetError
    from core.registry import all_eqns
    mod_name, _, fn_name = function.partition(":")
    if not fn_name:
        raise SystemExit(f"check expects MODULE:FUNCTION, got {function!r}")
    fn = importlib.import_module(mod_name)
    for part in fn_name.split("."):
        fn = getattr(fn, part)
    reg = registry or default_registry()
    specs = [_parse_argspec(a) for a in argspecs]
    closed = jax.make_jaxpr(fn)(*specs)
    gaps = reg.check(closed, device, allow_xla, target=target)
    counts: dict[tuple[str, str, bool], int] = {}
    refused = ""
    if gaps:
        for eqn in all_eqns(closed):
            try:
                rid = reg.select(eqn, device, allow_xla, target=target).id
            except NoRuleError:
                rid = "(no usable rule)"
            counts[(eqn.primitive.name, rid, False)] = \
                counts.get((eqn.primitive.name, rid, False), 0) + 1
    else:
        converted = convert(fn, device=device, allow_xla=allow_xla, registry=reg,
                            target=target, with_gradient=False)
        try:
            traced = converted.trace(*specs)
        except TargetError as exc:
            refused, traced = str(exc), closed
        in_tree = jax.tree_util.tree_flatten((tuple(specs), {}))[1]
        counts = converted.lower_checked(traced, in_tree, _Recorder()).counts
    uses = [{"primitive": p, "rule": r, "count": n,
             "via": "decomposition" if dec else "program"}
            for (p, r, dec), n in sorted(counts.items(), key=lambda kv: (kv[0][2], kv[0][:2]))]
    return uses, gaps, refused


def format_uses(uses: list[dict]) -> list[str]:
    return [f"{u['primitive']:28} x{u['count']:<5} {u['rule']}"
            + ("   (in a rule's decomposition)" if u["via"] == "decomposition" else "")
            for u in uses]


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m core.registry",
                                description="Inspect jaxtf's rules and coverage.")
    sub = p.add_subparsers(dest="cmd", required=True)
    ls = sub.add_parser("list", help="one row per primitive: status, package, dtypes, rules")
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--plugin", help="only primitives this package has rules for")
    ls.add_argument("--primitive", help="a name pattern (glob, or a substring)")
    ls.add_argument("--dtype", help="only primitives with a rule that applies to this dtype")
    ls.add_argument("--device", help="only primitives with a rule that runs on this device")
    ls.add_argument("--allow-xla", action="store_true")
    ls.add_argument("--target", default="tf", help="export target: tf (default), tflite, onnx, tfjs; "
                    "shows the dtypes each primitive lowers to for that target's runtime")
    fmt = ls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array of objects")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    ex = sub.add_parser("explain", help="the ranked candidate rules for one primitive")
    ex.add_argument("primitive")
    ex.add_argument("--dtype", action="append", help="operand dtype(s); default float32")
    ex.add_argument("--device", default="cpu")
    ex.add_argument("--allow-xla", action="store_true")
    ex.add_argument("--target", default="tf", help="export target: tf (default), tflite, onnx, tfjs")
    ex.add_argument("--json", action="store_true", help="the candidates as a JSON object")
    sub.add_parser("plugins", help="rule packages: source, distribution, rule count, errors")
    ck = sub.add_parser("check", help="pre-flight report for a function on example inputs")
    ck.add_argument("function", help="MODULE:FUNCTION")
    ck.add_argument("args", nargs="*", help="input specs such as f32[8,784] i32[]")
    ck.add_argument("--device", default="cpu")
    ck.add_argument("--allow-xla", action="store_true")
    ck.add_argument("--target", default="tf", help="export target: tf (default), tflite, onnx, tfjs")
    ck.add_argument("--json", action="store_true", help="the report as a JSON object")
    args = p.parse_args(argv)
    reg = default_registry()

    if args.cmd == "list" and args.target != "tf":
        rows = _filter(target_coverage(args.target, reg), args, reg)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        print(f"{'primitive':30} {'status':10} {'lowers for ' + args.target:28} refused dtypes "
              "(the op the runtime refuses)")
        for r in rows:
            ref = "; ".join(f"{d}: {op}" for d, op in list(r["refused"].items())[:3])
            more = len(r["refused"]) - 3
            print(f"{r['primitive']:30} {r['status']:10} {compact_dtypes(r['dtypes']) or '-':28} "
                  f"{ref}{f' (+{more} more)' if more > 0 else ''}"
                  + (f" unmeasured: {','.join(r['unmeasured'])}" if r["unmeasured"] else ""))
        print(f"\n{summary(rows)} (target {args.target}; measured by python -m core.probe "
              f"{args.target}: a dtype lowers when every op of a rule's cases on it is "
              f"accepted; unmeasured: no case of a rule for that dtype was lowered there)")
        return 0
    if args.cmd == "list":
        rows = _filter(coverage(reg), args, reg)
        if args.json:
            print(json.dumps(rows, indent=1))
        elif args.markdown:
            from core.targets import TARGETS, has_table
            print(markdown_table(rows, {
                t: {r["primitive"]: r for r in target_coverage(t, reg)}
                for t in TARGETS if has_table(t)}))
            print(f"\n{summary(rows)}")
        else:
            print(f"{'primitive':30} {'status':11} {'package':14} {'dtypes':28} {'symbolic':8} "
                  "rules (notes: why no rule, or the valid forms refused)")
            for r in rows:
                what = ", ".join(r["rules"])
                what = f"{what}  ({r['notes']})" if what and r["notes"] else what or r["notes"]
                print(f"{r['primitive']:30} {r['status']:11} {r['plugin'] or '-':14} "
                      f"{compact_dtypes(r['dtypes']) or '-':28} {r['symbolic']:8} {what or '-'}")
            print(f"\n{summary(rows)}")
        return 0
    if args.cmd == "explain":
        report = explain(args.primitive, args.dtype or ["float32"], args.device,
                         args.allow_xla, reg, target=args.target)
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            print(format_explain(report))
        return 0 if any(c["verdict"] in ("taken", "conditional")
                        for c in report["candidates"]) else 1
    if args.cmd == "plugins":
        for rec in reg.plugins:
            print(f"{rec.name:20} {rec.source:12} {rec.distribution or '-':20} "
                  f"{rec.version or '-':8} {rec.rule_count:4} rules"
                  + (f"  FAILED: {rec.error}" if rec.error else ""))
        return 0
    if args.cmd == "check":
        uses, gaps, refused = check(args.function, args.args, args.device, args.allow_xla,
                                    reg, target=args.target)
        if args.json:
            print(json.dumps({"function": args.function, "uses": uses, "refused": refused,
                              "gaps": [{"primitive": g.primitive, "dtypes": list(g.dtypes),
                                        "where": g.where, "params": g.params,
                                        "candidates": [{"rule": c.rule.id, "reason": c.reason}
                                                       for c in g.candidates]}
                                       for g in gaps]}, indent=1))
            return 1 if gaps or refused else 0
        how = ("the rule selection gives each equation" if gaps else
               "the rule each equation takes when converted")
        print(f"{args.function} uses "
              f"{len({u['primitive'] for u in uses if u['via'] == 'program'})} primitives "
              f"({how}):")
        print("\n".join("  " + ln for ln in format_uses(uses)))
        if gaps:
            from core.registry import format_gaps
            print("\n" + format_gaps(gaps, args.device, args.allow_xla, args.function,
                                     reg.plugins, target=args.target))
            return 1
        if refused:
            print("\n" + refused)
            return 1
        print("\nevery equation has a rule: the program converts"
              + (f" for target {args.target}" if args.target != "tf" else ""))
        return 0
    return 2
