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

#: Modules whose import defines primitives; imported so the table does not depend on what
#: the calling program happened to import.
_PRIMITIVE_MODULES = ("jax.numpy", "jax.scipy.special", "jax.random", "jax.nn",
                      "jax._src.lax.linalg", "jax._src.checkify", "jax._src.pallas.core",
                      "jax.experimental.shard_map")

STATUSES = ("covered", "partial", "overridden", "shadowed", "missing", "failed to load")


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


def _status(reg: Registry, name: str) -> str:
    rules = _tf_rules(reg, name)
    if not rules:
        return "missing"
    if any(new.primitive == name for new, _ in reg.replaced):
        return "overridden"
    builtin = {"rules_lax", "rules_nn", "rules_random"}
    top = rules[0]
    if top.package not in builtin and any(r.package in builtin for r in rules[1:]):
        return "shadowed"          # a plugin outranks a built-in without declaring it
    if any(r.when is None and not r.needs_xla for r in rules):
        return "covered"
    return "partial"


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
            "plugin": ", ".join(dict.fromkeys(r.package for r in rules)),
            "rules": [r.id for r in rules],
            "dtypes": dts,
            "devices": sorted(set().union(*(r.devices for r in rules))) if rules else [],
            "needs_xla": bool(rules) and all(r.needs_xla for r in rules),
        })
    failed = [p for p in reg.plugins if p.error]
    for p in failed:
        rows.append({"primitive": f"<{p.name}>", "status": "failed to load", "plugin": p.name,
                     "rules": [], "dtypes": [], "devices": [], "needs_xla": False,
                     "error": p.error})
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
    lines = ["| primitive | status | package | dtypes | " + "".join(f"{t} | " for t in targets)
             + "rules |", "|---|---|---|---|" + "---|" * len(targets) + "---|"]
    for r in rows:
        cols = "".join(f"{compact_dtypes(t.get(r['primitive'], {}).get('dtypes', [])) or '-'} | "
                       for t in targets.values())
        lines.append(f"| `{r['primitive']}` | {r['status']} | {r['plugin'] or '-'} | "
                     f"{compact_dtypes(r['dtypes']) or '-'} | {cols}"
                     f"{', '.join(f'`{x}`' for x in r['rules']) or '-'} |")
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


def _with_condition(cand, dtypes):
    """A candidate with its ``when=`` condition evaluated on a stand-in equation with
    operands of ``dtypes`` and no parameters (conditions on parameters cannot be judged
    here and count as met)."""
    import dataclasses
    import types
    import jax.numpy as jnp
    from jax import core as jcore
    if cand.reason is not None or cand.rule.when is None:
        return cand
    try:
        avals = [jcore.ShapedArray((), jnp.dtype(d)) for d in dtypes]
        var = lambda a: types.SimpleNamespace(aval=a)
        eqn = types.SimpleNamespace(invars=[var(a) for a in avals], outvars=[var(avals[0])],
                                    params={}, primitive=types.SimpleNamespace(
                                        name=cand.rule.primitive))
        reason = cand.rule.when(eqn)
    except Exception:
        return cand
    return dataclasses.replace(cand, reason=reason) if reason else cand


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


def check(function: str, argspecs: Sequence[str], device="cpu", allow_xla=False,
          registry: Registry | None = None, target: str = "tf") -> tuple[list[str], list, str]:
    """The whole-program pre-flight report of ``MODULE:FUNCTION`` on the given inputs:
    the primitives it needs with the rule selected for each (and counts), the gaps, and
    for an export target the TargetError text of the ops its runtime refuses ("" if none)."""
    import jax
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
    counts: dict[tuple[str, str], int] = {}
    for eqn in all_eqns(closed):
        try:
            rid = reg.select(eqn, device, allow_xla, target=target).id
        except NoRuleError:
            rid = "(no usable rule)"
        key = (eqn.primitive.name, rid)
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{name:28} x{n:<5} {rid}" for (name, rid), n in sorted(counts.items())]
    gaps = reg.check(closed, device, allow_xla, target=target)
    refused = ""
    if not gaps and target != "tf":
        from core.converter import convert
        try:
            convert(fn, device=device, allow_xla=allow_xla, registry=reg,
                    target=target).trace(*specs)
        except TargetError as exc:
            refused = str(exc)
    return lines, gaps, refused


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
    sub.add_parser("plugins", help="rule packages: source, distribution, rule count, errors")
    ck = sub.add_parser("check", help="pre-flight report for a function on example inputs")
    ck.add_argument("function", help="MODULE:FUNCTION")
    ck.add_argument("args", nargs="*", help="input specs such as f32[8,784] i32[]")
    ck.add_argument("--device", default="cpu")
    ck.add_argument("--allow-xla", action="store_true")
    ck.add_argument("--target", default="tf", help="export target: tf (default), tflite, onnx, tfjs")
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
            print(f"{'primitive':30} {'status':10} {'package':14} {'dtypes':28} rules")
            for r in rows:
                print(f"{r['primitive']:30} {r['status']:10} {r['plugin'] or '-':14} "
                      f"{compact_dtypes(r['dtypes']) or '-':28} {', '.join(r['rules']) or '-'}")
            print(f"\n{summary(rows)}")
        return 0
    if args.cmd == "explain":
        dts = args.dtype or ["float32"]
        cands = reg.candidates(args.primitive, dts, args.device, args.allow_xla,
                               target=args.target)
        if not cands:
            print(f"no rule lowers {args.primitive!r}"
                  + ("; `python -m core.registry plugins` shows packages that failed to load"
                     if any(p.error for p in reg.plugins) else ""))
            return 1
        cands = [_with_condition(c, dts) for c in cands]
        chosen = next((c for c in cands if c.reason is None), None)
        print(f"{args.primitive} on {', '.join(dts)}, device {args.device}, "
              f"allow_xla={args.allow_xla}, target {args.target}; candidates best first:")
        from core.targets import get as _target
        tgt = _target(args.target)
        for c in cands:
            mark = "TAKEN   " if c is chosen else "rejected" if c.reason else "shadowed"
            why = c.reason or ("applies and ranks highest" if c is chosen else
                               "applies, but a higher-ranked rule is taken")
            if c.reason is None and args.target != "tf":
                verdicts = {tgt.verdict(c.rule.id, d) for d in dts}
                why += ("; its cases' ops are all accepted by " + args.target
                        if verdicts == {"ok"} else
                        "; not measured for " + args.target if None in verdicts else
                        f"; but {args.target} refuses "
                        + ", ".join(sorted(v for v in verdicts if v != "ok")))
            print(f"  {mark} {c.rule.id} ({c.rule.package}) priority {c.rule.priority} "
                  f"dtypes {{{', '.join(c.rule.dtype_spec)}}}: {why}")
        return 0 if chosen else 1
    if args.cmd == "plugins":
        for rec in reg.plugins:
            print(f"{rec.name:20} {rec.source:12} {rec.distribution or '-':20} "
                  f"{rec.version or '-':8} {rec.rule_count:4} rules"
                  + (f"  FAILED: {rec.error}" if rec.error else ""))
        return 0
    if args.cmd == "check":
        lines, gaps, refused = check(args.function, args.args, args.device, args.allow_xla,
                                     reg, target=args.target)
        print(f"{args.function} uses {len(lines)} primitives:")
        print("\n".join("  " + ln for ln in lines))
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
