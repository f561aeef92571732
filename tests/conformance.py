"""JAX's primitive harness suite through jaxtf: pass rate per harness group.

    python tests/conformance.py                      # every group (takes a while)
    python tests/conformance.py --group add --group cumsum -v   # some groups, show failures
    JAX_ENABLE_X64=1 python tests/conformance.py     # the same with 64-bit JAX
    python tests/conformance.py --target tflite --per-group 3   # through the LiteRT interpreter
    python tests/conformance.py --target onnx --per-group 3     # tf2onnx + onnxruntime

A case passes when ``convert(f)`` under ``tf.function`` gives ``jax.jit(f)``'s numbers
within the per-dtype tolerances of ``core.testkit`` and its graph has no Xla* op. With
``--target tflite`` (``onnx``, ``tfjs``) the case is converted with that target, exported
with the target's converter and run in its runtime (the LiteRT interpreter, onnxruntime,
tfjs in node: one process per case, slow); "refused" then
counts cases the pre-flight refused with a TargetError/NoRuleError (clear, never wrong),
"export" cases the pre-flight let through but the converter or interpreter rejected.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def in_sample(name: str, every: int) -> bool:
    """A deterministic 1-in-``every`` sample by case name (stable across processes)."""
    import zlib
    return every <= 1 or zlib.crc32(name.encode()) % every == 0


def per_group_sample(harnesses, n: int):
    """The first ``n`` cases of each group, by full name: a fixed sample."""
    seen: dict[str, int] = {}
    out = []
    for h in sorted(harnesses, key=lambda h: h.fullname):
        if seen.get(h.group_name, 0) < n:
            seen[h.group_name] = seen.get(h.group_name, 0) + 1
            out.append(h)
    return out


def cpu_harnesses(groups=None, pattern=None):
    from jax._src.internal_test_util import test_harnesses as th
    out = []
    for h in th.all_harnesses:
        if not h.filter("cpu"):
            continue
        if groups and h.group_name not in groups:
            continue
        if pattern and not re.search(pattern, h.fullname):
            continue
        out.append(h)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--group", action="append", help="harness group name (repeatable)")
    p.add_argument("-k", dest="pattern", help="regex on the case's full name")
    p.add_argument("-v", action="store_true", help="print each failing case and why")
    p.add_argument("--limit", type=int, default=0, help="at most N cases per group")
    p.add_argument("--sample", type=int, default=1, help="every N-th case of each group")
    p.add_argument("--per-group", type=int, default=0,
                   help="the first N cases of each group by name (the fixed sample of the "
                        "issue reports: --per-group 3)")
    p.add_argument("--target", default="tf", choices=["tf", "tflite", "onnx", "tfjs"],
                   help="export target; each case then runs in that target's runtime")
    p.add_argument("--dtype", help="only cases whose name mentions this dtype (e.g. float32)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 on any wrong number, Xla op, or failure not listed as known")
    args = p.parse_args(argv)
    import jax
    from core.testing import run_harness
    from tests.known_failures import expected_failure
    hs = cpu_harnesses(set(args.group) if args.group else None, args.pattern)
    if args.per_group:
        hs = per_group_sample(hs, args.per_group)
    if args.dtype:
        hs = [h for h in hs if args.dtype in h.fullname]
    per_group: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    t0 = time.time()
    seen: collections.Counter = collections.Counter()
    unexpected = []
    for h in hs:
        if not in_sample(h.fullname, args.sample):
            continue
        if args.limit and seen[h.group_name] >= args.limit:
            continue
        seen[h.group_name] += 1
        out = run_harness(h, target=args.target)
        xf = expected_failure(h, args.target)
        status = "xfail" if xf and out.status == xf[0] else out.status
        status = {"no_rule": "refused", "unsupported": "refused"}.get(status, status) \
            if args.target != "tf" else status
        per_group[h.group_name][status] += 1
        if status not in ("pass", "xfail", "refused"):
            unexpected.append(f"{status}: {h.fullname}: {out.detail[:300]}")
        if args.v and not out.ok:
            print(f"{status.upper():10} {h.fullname}: {out.detail[:600]}"
                  + (f"  [known: {xf[1]}]" if xf else ""), flush=True)
    total: collections.Counter = collections.Counter()
    print(f"\n{'group':28} {'cases':>6} {'pass':>6} {'xfail':>6} {'wrong':>6} "
          f"{'refused':>7} {'other':>6}  rate")
    for g in sorted(per_group):
        c = per_group[g]
        total.update(c)
        n = sum(c.values())
        other = n - c["pass"] - c["xfail"] - c["mismatch"] - c["refused"]
        print(f"{g:28} {n:6} {c['pass']:6} {c['xfail']:6} {c['mismatch']:6} {c['refused']:7} "
              f"{other:6}  {100 * c['pass'] / n:5.1f}%")
    n = sum(total.values())
    print(f"\nTOTAL target={args.target} x64={jax.config.jax_enable_x64}: {n} cases, "
          f"{total['pass']} pass "
          f"({100 * total['pass'] / max(n, 1):.1f}%), {total['mismatch']} wrong numbers, "
          f"{total['xla']} with Xla ops, {total['xfail']} known failures, breakdown "
          f"{dict(total)}; {time.time() - t0:.0f}s")
    if args.strict and unexpected:
        print("\nUNEXPECTED:\n" + "\n".join(unexpected))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
