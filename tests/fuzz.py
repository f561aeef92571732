"""A differential fuzzer: every registered rule, every dtype it claims, values heavy in
the edge values that break converters, against ``jax.jit`` (the oracle).

Three kinds of draw, all from one seeded numpy generator (a run is reproduced by its seed):

- *values*: each of the rule's own cases, its shapes and parameters kept, its operands
  refilled with edge-heavy values (NaN, +-inf, +-0, subnormals, the largest and smallest
  finite, integer min/max, shift amounts at and past the bit width, ...);
- *shapes*: for elementwise, comparison, conversion and reduction primitives, the
  primitive (with the parameters of a case) bound on drawn shapes: 0-size and size-1
  dimensions, scalars, operands broadcast to each other; conversions to every dtype;
  reductions over drawn axes;
- *programs*: chains of 2-6 elementwise equations on one float dtype.

Converted outputs are compared by :func:`core.testkit.run_function` (the per-dtype
tolerances, NaN and inf positions) with the signs of zeros. A disagreement on an
elementwise draw is shrunk by bisection to the one element that shows it, reported as
a ready-to-paste rule case.

    python tests/fuzz.py [--long] [--seed N] [--target tf|tflite|onnx|tfjs] [-k REGEX]
                         [--fraction F]

For an export target, the rules written for it and the generic elementwise rules are
drawn; with -k, every rule the pattern matches.
"""
from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from typing import Any, Callable

import numpy as np

if __name__ == "__main__":
    import os
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import ml_dtypes
from jax import lax

from core.registry import build_registry
from core.testkit import np_dtype, run_function
from core.testing import first_divergence

X64_DTYPES = {"int64", "uint64", "float64", "complex128"}
#: Outcomes that are no disagreement: a clear refusal, or JAX itself refused the draw.
QUIET = {"pass", "refused", "no_rule", "unsupported", "jax_error"}

#: Families whose cases' operands may be refilled with any values: the numbers they give
#: for NaN, inf, extremes are defined by JAX. Linear algebra (undefined on singular or
#: non-finite input), FFT, PRNG, control flow, calls and index operands (of another dtype
#: than the data, or shaped otherwise) are left alone.
VALUE_FAMILIES = re.compile(
    r"^rules_(lax\.(elementwise|special|comparison|bitwise|conversion|narrow|tfjs|onnx|reductions"
    r"|cumulative|structural|slicing|sorting|dot|indexing)|nn\.(activations|conv|windows))$")
#: Primitives whose result depends on the order of a sum or product: their operands get
#: values whose sums are exact in any order (small integers, +-0, +-inf, NaN).
ORDER_SENSITIVE = {"reduce_sum", "reduce_prod", "cumsum", "cumprod", "cumlogsumexp",
                   "add_any", "dot_general", "conv_general_dilated", "reduce_and",
                   "ragged_dot_general", "reduce_window_sum", "reduce_window",
                   "select_and_scatter_add", "select_and_gather_add", "scatter-add",
                   "scatter-sub", "scatter-mul"}
#: Elementwise primitives: operands and result share one shape.
ELEMENTWISE = {
    "abs", "acos", "acosh", "add", "add_any", "and", "asin", "asinh", "atan", "atan2",
    "atanh", "bessel_i0e", "bessel_i1e", "cbrt", "ceil", "clamp", "clz", "complex", "conj",
    "convert_element_type", "cos", "cosh", "digamma", "div", "eq", "erf", "erf_inv", "erfc",
    "exp", "exp2", "expm1", "floor", "ge", "gt", "igamma", "igammac", "imag",
    "integer_pow", "is_finite", "le", "lgamma", "log", "log1p", "logistic", "lt", "max",
    "min", "mul", "mulhi", "ne", "neg", "nextafter", "not", "or", "polygamma",
    "population_count", "pow", "real", "reduce_precision", "regularized_incomplete_beta",
    "rem", "round", "rsqrt", "select_n", "shift_left", "shift_right_arithmetic",
    "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square", "sub", "tan", "tanh",
    "xor", "zeta", "erf_inv", "igamma_grad_a", "random_gamma_grad"}
REDUCTIONS = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and",
              "reduce_or", "reduce_xor", "argmax", "argmin"}
#: Operands that pick rather than compute (select_n's predicate): drawn in range.
INDEX_OPERANDS = {"select_n": (0,)}
SHAPES = [(), (0,), (1,), (7,), (2, 3), (1, 4), (3, 0, 2), (2, 1, 3), (16,)]
CONVERT_TO = ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
              "uint64", "bfloat16", "float16", "float32", "float64", "complex64", "complex128"]
PROGRAM_UNARY = ["neg", "abs", "exp", "log", "sqrt", "sin", "tanh", "floor", "sign",
                 "log1p", "expm1", "logistic", "rsqrt", "cbrt", "square", "atan"]
PROGRAM_BINARY = ["add", "sub", "mul", "div", "max", "min", "pow", "atan2", "rem",
                  "nextafter"]


# -- values -------------------------------------------------------------------------------------

def edge_values(dtype) -> np.ndarray:
    """The values that break converters, for one numpy dtype."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return np.array([False, True])
    if dt.kind in "iu":
        info, bits = np.iinfo(dt), dt.itemsize * 8
        vals = [0, 1, 2, 3, 7, info.max, info.max - 1, info.min, info.min + 1, bits - 1,
                bits, bits + 1, 2 * bits, 2 ** (bits - 1) - 1, 2 ** (bits // 2)]
        if dt.kind == "i":
            vals += [-1, -2, -7, -bits, -(bits + 1)]
        return np.array([v for v in vals if info.min <= v <= info.max]).astype(dt)
    if dt.kind == "c":
        part = edge_values(np.float32 if dt == np.complex64 else np.float64)
        pick = part[[0, 1, 2, 3, 4, 5, 7, 9, 11, 13, 15]]
        return (pick[:, None] + 1j * pick[None, :]).ravel().astype(dt)
    fi = ml_dtypes.finfo(dt)
    sub = float(fi.smallest_subnormal)
    vals = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, sub, -sub, float(fi.tiny),
            -float(fi.tiny), float(fi.max), -float(fi.max), 0.5, -0.5, 2.0, -2.0,
            float(fi.tiny) / 2, 3 * sub, float(fi.eps), 1 - float(fi.epsneg), 1 + float(fi.eps),
            -1 - float(fi.eps), np.pi, -np.pi / 2, 1e-3, 1e3, -1e5, 10.0, 0.1, 88.72, 89.5,
            709.78, 710.0, 1e20, -1e20, 3.0, -3.0, 0.25, 1.5, 2.5, -2.5, 2 ** 24 + 1,
            float(fi.max) / 2, float(np.sqrt(float(fi.max)))]
    with np.errstate(over="ignore"):
        return np.array(vals, np.float64).astype(dt)


def exact_sum_values(dtype) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind in "biu":
        return edge_values(dt)
    vals = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 2.0, 3.0, -4.0, 0.5]
    if dt.kind == "c":
        v = np.array(vals[3:])
        return (v[:, None] + 1j * v[None, ::-1]).ravel().astype(dt)
    return np.array(vals).astype(dt)


def draw_values(rng: np.random.Generator, shape, dtype, exact_sums=False) -> np.ndarray:
    """Values of one operand: mostly edge values, the rest ordinary numbers at all scales."""
    dt = np.dtype(dtype)
    edges = exact_sum_values(dt) if exact_sums else edge_values(dt)
    n = int(np.prod(shape, dtype=np.int64))
    out = edges[rng.integers(0, len(edges), n)]
    if dt.kind in "fcV" and not exact_sums:
        ordinary = rng.random(n) < 0.3
        scale = 10.0 ** rng.uniform(-4, 4, n)
        vals = rng.standard_normal(n) * scale
        if dt.kind == "c":
            vals = vals + 1j * rng.standard_normal(n) * scale
        with np.errstate(over="ignore"):
            out = np.where(ordinary, vals.astype(dt), out)
    elif dt.kind in "iu" and not exact_sums:
        ordinary = rng.random(n) < 0.3
        info = np.iinfo(dt)
        vals = rng.integers(info.min, info.max, n, dtype=dt, endpoint=True)
        out = np.where(ordinary, vals, out)
    return np.asarray(out, dt).reshape(shape)


# -- draws --------------------------------------------------------------------------------------

@dataclasses.dataclass
class Draw:
    """One fuzz case: ``fn(*args)`` exercising ``rule`` on ``dtype``."""
    rule: Any
    dtype: str
    kind: str                       # "values" | "shapes" | "program"
    label: str
    fn: Callable
    args: list
    elementwise: bool = False       # shrinkable element by element
    flat_fn: Callable | None = None  # fn on 1-D operands of one shape, when fn broadcasts
    convert_kw: dict = dataclasses.field(default_factory=dict)

    @property
    def name(self) -> str:
        rid = self.rule.id if self.rule is not None else "program"
        return f"{rid}[{self.rule.primitive if self.rule else ''}]:{self.kind}:{self.label}:{self.dtype}"


def _x64(d: "Draw"):
    return jax.enable_x64(d.dtype in X64_DTYPES or "64" in d.label.split("->")[-1])


def _primary_eqn(closed, primitive: str):
    from core.registry import all_eqns
    for e in all_eqns(closed):
        if e.primitive.name == primitive:
            return e
    return None


def _refill(rng, rule, c, dtype, args):
    """A case's operands with new, edge-heavy values; shapes, dtypes and parameters kept."""
    exact = rule.primitive in ORDER_SENSITIVE
    first = np.shape(args[0]) if args else None
    skip = INDEX_OPERANDS.get(rule.primitive, ())
    out = []
    for i, a in enumerate(args):
        a = np.asarray(a)
        same_kind = a.dtype == np.dtype(np_dtype(dtype)) and a.dtype.kind in "biufcV"
        if same_kind and i not in skip and (i == 0 or a.shape == first
                                            or rule.primitive in ELEMENTWISE):
            a = draw_values(rng, a.shape, a.dtype, exact)
        out.append(a)
    return out


def _bind(prim, params, shapes_in, out_shape):
    """``prim`` bound with ``params`` on operands broadcast to ``out_shape``."""
    def fn(*xs):
        xs = [jnp.broadcast_to(x, out_shape) if np.shape(x) != out_shape else x for x in xs]
        return prim.bind(*xs, **params)
    return fn


def _draw_shape(rng):
    return SHAPES[rng.integers(0, len(SHAPES))]


def _broadcastable(rng, shape):
    """A shape that broadcasts to ``shape``: some leading dims dropped, some set to 1."""
    s = list(shape[rng.integers(0, len(shape) + 1):]) if shape else []
    return tuple(1 if rng.random() < 0.4 else d for d in s)


def shape_draws(rng, rule, c, dtype, args, eqn) -> list[Draw]:
    """The primitive on drawn shapes (and, for conversions and reductions, drawn params)."""
    prim, name = eqn.primitive, eqn.primitive.name
    params = dict(eqn.params)
    in_dtypes = [np.dtype(v.aval.dtype) for v in eqn.invars]
    out = []
    if name in ELEMENTWISE and all(v.aval.shape == eqn.outvars[0].aval.shape
                                   for v in eqn.invars):
        shape = _draw_shape(rng)
        shapes = [_broadcastable(rng, shape) if len(in_dtypes) > 1 and rng.random() < 0.5
                  else shape for _ in in_dtypes]
        variants = [params]
        if name == "convert_element_type":
            variants = [dict(params, new_dtype=np_dtype(t)) for t in CONVERT_TO
                        if rng.random() < 0.5 or t == "float32"]
        for p in variants:
            new = [(_select_pred(rng, s, dt, len(in_dtypes) - 1) if name == "select_n" and i == 0
                    else draw_values(rng, s, dt, name in ORDER_SENSITIVE))
                   for i, (s, dt) in enumerate(zip(shapes, in_dtypes))]
            label = f"{'x'.join(map(str, shape)) or 'scalar'}" + (
                f"->{np.dtype(p['new_dtype']).name}" if name == "convert_element_type" else "")
            out.append(Draw(rule, dtype, "shapes", label, _bind(prim, p, shapes, shape), new,
                            elementwise=True, flat_fn=lambda *xs, p=p: prim.bind(*xs, **p)))
    elif name in REDUCTIONS and len(eqn.invars) == 1:
        shape = [(0, 3), (2, 3, 4), (5,), (1, 6), (3, 1, 2)][rng.integers(0, 5)]
        nd = len(shape)
        axes = tuple(sorted(int(a) for a in rng.choice(nd, rng.integers(1, nd + 1), False)))
        p = dict(params, axes=axes) if "axes" in params else dict(params, axes=(axes[0],))
        if name in ("argmax", "argmin"):
            if 0 in shape:
                return out
            p["axes"] = (axes[0],)
        x = draw_values(rng, shape, in_dtypes[0], name in ORDER_SENSITIVE)
        out.append(Draw(rule, dtype, "shapes", f"{'x'.join(map(str, shape))} axes={p['axes']}",
                        lambda x, p=p: prim.bind(x, **p), [x]))
    return out


def _select_pred(rng, shape, dt, n_cases):
    if dt == np.bool_:
        return rng.random(shape) < 0.5
    return rng.integers(0, n_cases, shape).astype(dt)


def _case_args(rule, dtype):
    """(case, its operands) for each of the rule's cases that applies to ``dtype``."""
    for c in rule.cases:
        if not c.applies_to(dtype) or c.convert_kw:
            continue
        try:
            with np.errstate(all="ignore"):
                yield c, c.make_args(np.random.default_rng(0), np.dtype(np_dtype(dtype)))
        except Exception:
            continue


def rule_draws(rng, rule, dtype, rounds: int) -> list[Draw]:
    if not VALUE_FAMILIES.match(rule.id.split(":")[0]):
        return []
    draws = []
    for c, args in _case_args(rule, dtype):
        for r in range(rounds):
            new = _refill(rng, rule, c, dtype, args)
            if all(np.array_equal(a, b, equal_nan=np.asarray(a).dtype.kind in "fc")
                   for a, b in zip(args, new)) and r:
                break                          # nothing to refill: one run is enough
            draws.append(Draw(rule, dtype, "values", f"{c.name}#{r}", c.fn, new,
                              elementwise=rule.primitive in ELEMENTWISE))
    # shapes: from the first case that reaches the primitive
    if rule.primitive in ELEMENTWISE | REDUCTIONS:
        for c, args in _case_args(rule, dtype):
            try:
                with jax.enable_x64(dtype in X64_DTYPES):
                    eqn = _primary_eqn(jax.make_jaxpr(c.fn)(*args), rule.primitive)
            except Exception:
                continue
            if eqn is not None:
                for _ in range(rounds):
                    draws += shape_draws(rng, rule, c, dtype, args, eqn)
                break
    return draws


def program_draws(rng, n: int, dtypes=("float32", "float16", "bfloat16", "float64")):
    """Chains of 2-6 elementwise equations over two inputs of one float dtype."""
    out = []
    for i in range(n):
        dt = dtypes[rng.integers(0, len(dtypes))]
        steps = []
        for _ in range(rng.integers(2, 7)):
            if rng.random() < 0.5:
                steps.append((PROGRAM_UNARY[rng.integers(0, len(PROGRAM_UNARY))], None))
            else:
                steps.append((PROGRAM_BINARY[rng.integers(0, len(PROGRAM_BINARY))],
                              int(rng.integers(0, 3))))

        def chain(x, y, steps=tuple(steps)):
            vals = [x, y]
            for op, other in steps:
                f = getattr(lax, op)
                vals.append(f(vals[-1]) if other is None else f(vals[-1], vals[other]))
            return vals

        def fn(x, y, chain=chain):
            return chain(x, y)[-1]
        shape = (24,)
        args = [draw_values(rng, shape, np_dtype(dt)) for _ in range(2)]
        label = " . ".join(op if o is None else f"{op}(_, v{o})" for op, o in steps)
        out.append(Draw(None, dt, "program", f"#{i} {label}", fn, args, flat_fn=chain))
    return out


# -- running ------------------------------------------------------------------------------------

@dataclasses.dataclass
class Finding:
    draw: Draw
    status: str
    detail: str
    shrunk: str = ""
    one: list | None = None         # the operands of the one element that disagrees
    name: str = ""                  # what it is matched by: the draw's name, or for a
                                    # program the primitive of the equation that differs

    def __post_init__(self):
        self.name = self.name or self.draw.name


def run_draw(d: Draw, registry, target: str = "tf"):
    """Run one draw: the rule pinned where it serves ``target`` (else what a user gets)."""
    kw = dict(registry=registry, target=target, signed_zeros=True, **d.convert_kw)
    if d.rule is not None and (target == "tf" or (d.rule.targets and target in d.rule.targets)):
        kw.update(prefer={d.rule.primitive: d.rule.id})
    with _x64(d):
        return run_function(d.fn, d.args, **kw)


def shrink(d: Draw, registry, target: str) -> tuple[str, list | None]:
    """Bisect an elementwise draw down to the one element that disagrees (or the smallest
    run of elements when no part of it disagrees alone); returns it as text (the operands
    to put in a rule case) and those operands."""
    try:
        shape = np.broadcast_shapes(*[np.shape(a) for a in d.args])
    except ValueError:
        return "", None
    flat = [np.broadcast_to(a, shape).ravel() for a in d.args]
    if not flat or not flat[0].size:
        return "", None
    def differs(lo, hi):
        part = dataclasses.replace(d, args=[a[lo:hi] for a in flat], fn=_flat_fn(d))
        return run_draw(part, registry, target).status not in QUIET

    lo, hi = 0, flat[0].size
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if differs(lo, mid):
            hi = mid
        elif differs(mid, hi):
            lo = mid
        else:       # only the two halves together: the oracle's result depends on where
            break   # an element falls (XLA's vectorized loop and its remainder)
    one = [a[lo:hi] for a in flat]
    if (lo, hi) == (0, flat[0].size) and not differs(lo, hi):  # (a cut part was run)
        return "(does not disagree on its operands flattened)", None
    vals = ", ".join(f"[{', '.join(map(_lit, a))}]" for a in one)
    note = "" if hi - lo == 1 else f" ({hi - lo} elements: no smaller part disagrees)"
    return f"{d.rule.primitive if d.rule else 'program'} on {d.dtype}: ({vals}){note}", one


def _flat_fn(d: Draw):
    """The draw's function on 1-D operands (its own broadcasting done beforehand)."""
    return d.flat_fn or d.fn


def _lit(v) -> str:
    return repr(v.item() if hasattr(v, "item") else v)


def iter_draws(registry, seed: int, rounds: int, programs: int, target: str = "tf",
               pattern: str | None = None, fraction: float = 1.0):
    rng = np.random.default_rng(seed)
    rx = re.compile(pattern) if pattern else None
    for rule in registry.rules():
        if rule.targets is not None and target not in rule.targets:
            continue
        if target != "tf" and rule.targets is None and rule.primitive not in ELEMENTWISE \
                and not rx:
            continue         # for export targets: their rules and elementwise, unless -k
        if rx and not rx.search(f"{rule.id}[{rule.primitive}]"):
            continue
        for dt in rule.concrete_dtypes():
            if dt.startswith("key<"):
                continue
            sub = np.random.default_rng([seed, _stable_hash(f"{rule.id}:{rule.primitive}:{dt}")])
            if fraction < 1.0 and sub.random() >= fraction:
                continue
            yield from rule_draws(sub, rule, dt, rounds)
    if programs and (not rx or rx.search("program")):
        yield from program_draws(rng, programs)


def _stable_hash(s: str) -> int:
    import zlib
    return zlib.crc32(s.encode())


def fuzz(seed: int = 0, rounds: int = 1, programs: int = 20, target: str = "tf",
         pattern: str | None = None, fraction: float = 1.0, registry=None,
         do_shrink: bool = True, log=None) -> tuple[int, list[Finding]]:
    """Run the fuzzer; returns (number of cases run, findings)."""
    registry = registry or build_registry(strict=True, entry_points=False)
    n, found = 0, []
    for d in iter_draws(registry, seed, rounds, programs, target, pattern, fraction):
        n += 1
        try:
            out = run_draw(d, registry, target)
        except Exception as exc:                        # the harness itself: report it
            out = type("O", (), dict(status="error", detail=repr(exc)))()
        if out.status in QUIET:
            continue
        if d.kind == "program" and out.status == "mismatch":
            # a chain amplifies differences within the tolerance (log near 1 after a
            # 1-ulp difference): a finding only if one equation, fed JAX's values, differs
            with _x64(d):
                first = first_divergence(d.fn, d.args, registry)
            if first == "no divergence":
                continue
            out.detail = first
        f = Finding(d, out.status, out.detail)
        if d.kind == "program":      # named by the equation that differs; its operands
            prim = re.search(r" on .*? = (\w+) ", f.detail)  # among the chain's values
            f.name = f"program[{prim.group(1) if prim else '?'}]:program:{d.label}:{d.dtype}"
            with _x64(d):
                f.one = [np.asarray(v) for v in jax.jit(d.flat_fn)(*d.args)]
        if do_shrink and d.elementwise and out.status == "mismatch":
            try:
                f.shrunk, f.one = shrink(d, registry, target)
            except Exception as exc:
                f.shrunk = f"(shrinking failed: {exc!r})"
        found.append(f)
        if log:
            log(f)
    return n, found


def _print(f: Finding) -> None:
    print(f"\n{f.status.upper()} {f.name}\n  {f.detail[:600]}")
    if f.shrunk:
        print(f"  shrunk: {f.shrunk}")
    sys.stdout.flush()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--long", action="store_true", help="a deeper run (rounds=4, 300 programs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="tf", choices=["tf", "tflite", "onnx", "tfjs"])
    ap.add_argument("-k", dest="pattern", help="regex over 'rule id[primitive]' ('program')")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--programs", type=int)
    ap.add_argument("--fraction", type=float, default=1.0,
                    help="share of the (rule, dtype) pairs run (a fixed sample per seed)")
    args = ap.parse_args(argv)
    rounds = args.rounds or (4 if args.long else 1)
    programs = args.programs if args.programs is not None else (300 if args.long else 20)
    t0 = time.time()
    n, found = fuzz(args.seed, rounds, programs, args.target, args.pattern, args.fraction,
                    log=_print)
    print(f"\n{n} cases, {len(found)} disagreements, {time.time() - t0:.0f}s "
          f"(seed {args.seed}, target {args.target})")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
