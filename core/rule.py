"""A rule: one primitive -> TF lowering, with its constraints and its own test cases.

``@rule`` only *marks* a function (it attaches a record); nothing global changes at import.
A registry is built later from whatever modules are handed to it, so a test can build one
from any subset of rule modules.

Calling convention: ``fn(ctx, *operands, **params)`` where ``ctx`` is a
:class:`core.interpreter.RuleContext`, ``operands`` are TF tensors (one per equation input)
and ``params`` are the equation's parameters. Return one tensor, or a sequence of tensors
when the primitive has multiple results.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from core import dtypes as _dtypes

DEVICES = ("cpu", "gpu", "tpu")
#: Export targets a rule may be written for (see core.targets for what each accepts).
TARGETS = ("tf", "tflite", "onnx", "tfjs")
_MARK = "__jaxtf_rules__"


@dataclasses.dataclass(frozen=True)
class Case:
    """A test case of a rule: ``fn`` is a JAX function that exercises the primitive and
    ``make_args(rng, dtype)`` builds its inputs for one dtype the rule claims.
    ``dtypes`` (optional) restricts the case to some of the rule's dtypes."""
    name: str
    fn: Callable
    make_args: Callable[[np.random.Generator, np.dtype], list]
    dtypes: frozenset[str] | None = None
    convert_kw: dict = dataclasses.field(default_factory=dict)   # e.g. polymorphic_shapes

    def applies_to(self, dtype_name: str) -> bool:
        return self.dtypes is None or dtype_name in self.dtypes


def random_values(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    """Ordinary random values of ``dtype`` (what ``case.random`` feeds a rule), for cases
    that mix them with edge values."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if np.issubdtype(dtype, np.unsignedinteger):
        return rng.integers(0, 100, shape).astype(dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-50, 50, shape).astype(dtype)
    if np.issubdtype(dtype, np.complexfloating):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return (rng.standard_normal(shape) * 3).astype(dtype)


class _CaseFactory:
    """``case(name, fn, *args)``: fixed inputs, each cast to the dtype under test unless it
    is already a numpy array with its own dtype. ``case.random(fn, shapes=[...])``: random
    inputs of the dtype under test. ``case.custom(name, fn, make_args)``: anything else."""

    def __call__(self, name: str, fn: Callable, *args: Any, dtypes=None,
                 convert_kw: dict | None = None) -> Case:
        def make_args(rng, dtype):
            return [a if isinstance(a, np.ndarray) else np.asarray(a, dtype) for a in args]
        return Case(name, fn, make_args, _dtypes.expand(dtypes) if dtypes else None,
                    dict(convert_kw or {}))

    def random(self, fn: Callable, *, shapes: Sequence[tuple], name: str | None = None,
               dtypes=None, convert_kw: dict | None = None) -> Case:
        def make_args(rng, dtype):
            return [random_values(rng, s, dtype) for s in shapes]
        label = name or "random " + " ".join("x".join(map(str, s)) or "scalar" for s in shapes)
        return Case(label, fn, make_args, _dtypes.expand(dtypes) if dtypes else None,
                    dict(convert_kw or {}))

    def custom(self, name: str, fn: Callable, make_args: Callable, *, dtypes=None,
               convert_kw: dict | None = None) -> Case:
        return Case(name, fn, make_args, _dtypes.expand(dtypes) if dtypes else None,
                    dict(convert_kw or {}))


case = _CaseFactory()


@dataclasses.dataclass(frozen=True)
class Rule:
    """A lowering and its constraints. ``id`` is ``module:function`` (shown in errors,
    ``list`` and ``explain``); ``package`` is filled in when a registry takes the rule."""
    primitive: str
    fn: Callable
    dtypes: frozenset[str]
    dtype_spec: tuple[str, ...]
    devices: frozenset[str]
    needs_xla: bool = False
    priority: int = 0
    cases: tuple[Case, ...] = ()
    when: Callable[[Any], str | None] | None = None
    replaces: str | None = None
    polymorphic: bool = True
    targets: frozenset[str] | None = None     # None: a generic rule, for every target
    primitive_obj: Any = dataclasses.field(default=None, compare=False)
    doc: str = ""
    id: str = ""
    package: str = "?"

    def reject_reason(self, dtype_names: Iterable[str], device: str, allow_xla: bool,
                      eqn=None, target: str = "tf") -> str | None:
        """Why this rule cannot lower an equation with these dtypes, or None if it can."""
        if self.targets is not None and target not in self.targets:
            return (f"written for target{'s' if len(self.targets) > 1 else ''} "
                    f"{', '.join(sorted(self.targets))}, not {target}")
        bad = sorted({d for d in dtype_names if not _dtypes.matches(d, self.dtypes)})
        if bad:
            return f"{', '.join(bad)} not in {_fmt(self.dtype_spec)}"
        if self.targets is None and target != "tf":
            held = _carried_refusal(self.primitive, dtype_names, target)
            if held:
                return held
        if device not in self.devices:
            return f"device {device} not in {{{', '.join(sorted(self.devices))}}}"
        if self.needs_xla and not allow_xla:
            return "emits Xla* ops; pass allow_xla=True to use it"
        if self.primitive_obj is not None and eqn is not None \
                and eqn.primitive is not self.primitive_obj:
            return (f"lowers a different primitive that is also named {self.primitive!r} "
                    f"(defined in {getattr(self.primitive_obj, '__module__', '?')})")
        if not self.polymorphic and eqn is not None and _has_symbolic_dims(eqn):
            return ("does not handle symbolic dimensions (polymorphic_shapes); convert with "
                    "concrete shapes for this part of the program")
        if self.when is not None and eqn is not None:
            reason = self.when(eqn)
            if reason:
                return reason
        return None

    @property
    def specificity(self) -> tuple[int, int, int]:
        """Larger is more specific: conditional rules, then fewer dtypes, then fewer devices."""
        return (self.when is not None, -len(self.dtypes), -len(self.devices))

    def concrete_dtypes(self) -> list[str]:
        """The dtypes the test-suite runs this rule's cases on."""
        return [d for d in _dtypes.ALL_CONCRETE + _dtypes.KEY_DTYPES
                if _dtypes.matches(d, self.dtypes)]

    def with_package(self, package: str) -> "Rule":
        return dataclasses.replace(self, package=package)


def _has_symbolic_dims(eqn) -> bool:
    from jax._src import core as jcore
    for v in (*eqn.invars, *eqn.outvars):
        if not all(jcore.is_constant_dim(d) for d in getattr(v.aval, "shape", ())):
            return True
    return False


def _fmt(spec: tuple[str, ...]) -> str:
    return "{" + ", ".join(spec) + "}"


def make_rule(primitive: Any, fn: Callable, *, dtypes="all", devices=DEVICES,
              needs_xla: bool = False, priority: int = 0, cases: Sequence[Case] = (),
              when: Callable | None = None, replaces: str | None = None,
              polymorphic: bool = True, targets=None, name: str | None = None,
              doc: str | None = None) -> Rule:
    """Build a Rule (what ``@rule`` attaches). Checks the declaration eagerly.

    ``primitive`` is a primitive name, or a ``jax.extend.core.Primitive`` object: then the
    rule lowers exactly that object, and another primitive that happens to carry the same
    name (from another package) is told apart."""
    primitive_obj = None
    if not isinstance(primitive, str) and hasattr(primitive, "name") and hasattr(primitive, "bind"):
        primitive_obj, primitive = primitive, primitive.name
    if not isinstance(primitive, str) or not primitive:
        raise TypeError(f"a rule's primitive must be a JAX primitive name, got {primitive!r}")
    devs = frozenset([devices] if isinstance(devices, str) else devices)
    unknown = devs - set(DEVICES)
    if unknown or not devs:
        raise ValueError(f"rule for {primitive!r}: unknown devices {sorted(unknown)}; "
                         f"known devices are {list(DEVICES)}")
    tgts = None
    if targets is not None:
        tgts = frozenset([targets] if isinstance(targets, str) else targets)
        if not tgts or tgts - set(TARGETS):
            raise ValueError(f"rule for {primitive!r}: unknown targets "
                             f"{sorted(tgts - set(TARGETS))}; known targets are {list(TARGETS)}")
    spec = (dtypes,) if isinstance(dtypes, str) else tuple(dtypes)
    rid = f"{getattr(fn, '__module__', '?')}:{name or getattr(fn, '__name__', '?')}"
    return Rule(primitive=primitive, fn=fn, dtypes=_dtypes.expand(spec), dtype_spec=spec,
                devices=devs, needs_xla=bool(needs_xla), priority=int(priority),
                cases=tuple(cases), when=when, replaces=replaces, polymorphic=bool(polymorphic),
                targets=tgts, primitive_obj=primitive_obj,
                doc=(doc or getattr(fn, "__doc__", None) or "").strip().split("\n")[0], id=rid)


def _carried_refusal(primitive: str, dtype_names, target: str) -> str | None:
    """Why a generic rule cannot lower ``primitive`` on a dtype the target holds as the
    bits of another (uint32 as int32 on TF.js): it would read those bits as signed."""
    from core.targets import BIT_AGNOSTIC, get
    tgt = get(target)
    if not tgt.carried or primitive in BIT_AGNOSTIC:
        return None
    held = sorted({f"{d} as {tgt.carrier(d)} bits" for d in dtype_names if tgt.carrier(d)})
    return (f"{target} holds {', '.join(held)}; this generic rule would read them as "
            f"signed numbers (a rule written for target {target!r} is needed)") if held else None


def rule(primitive: Any, *, dtypes="all", devices=DEVICES,
         needs_xla: bool = False, priority: int = 0, cases: Sequence[Case] = (),
         when: Callable | None = None, replaces: str | None = None,
         polymorphic: bool = True, targets=None, name: str | None = None,
         doc: str | None = None) -> Callable:
    """Mark ``fn`` as the lowering of ``primitive`` (a name or a Primitive object, or a
    list of them for a function that lowers several primitives).

    :param dtypes: dtype names or groups the rule handles (bool, signed, unsigned,
        integer, floating, complex, inexact, numeric, all, key, or concrete names).
        They are checked against the equation's operand dtypes (its result dtypes when it
        has no operands).
    :param devices: subset of ("cpu", "gpu", "tpu").
    :param needs_xla: the lowering emits Xla* TF ops; used only with ``allow_xla=True``.
    :param priority: higher wins among applicable rules.
    :param cases: :data:`case` objects run by the test-suite against JAX for every dtype.
    :param when: ``when(eqn) -> str | None``: a reason this rule cannot take this equation
        (parameter forms it does not handle), or None. A conditional rule outranks an
        unconditional one of the same priority.
    :param replaces: the id (``module:function``) of a rule this one overrides.
    :param polymorphic: True (the default): the rule reads shapes only through
        ``ctx.shape``/``ctx.dim`` (or not at all), so it handles symbolic dimensions
        (``polymorphic_shapes``). A rule that needs static sizes declares
        ``polymorphic=False`` and is not selected for equations with symbolic dimensions.
    :param targets: export targets (``"tf"``, ``"tflite"``, ``"onnx"``, ``"tfjs"``) this
        lowering is written for; it is then used only there, ahead of the generic rules.
        Default None: a generic rule, used for every target whose runtime accepts the TF ops it emits.
    :param name: the rule's name in its id (``module:name``), default the function's name;
        and ``doc``: its one-line description, default the docstring's first line. For a
        factory that makes one lowering per primitive from a local function, e.g.
        ``rule(prim, name=f"{prim}_tflite", doc=...)(lower)``: the function itself is
        left as it is.
    """
    prims = list(primitive) if isinstance(primitive, (list, tuple)) else [primitive]

    def mark(fn: Callable) -> Callable:
        records = list(getattr(fn, _MARK, ()))
        for p in prims:
            records.append(make_rule(p, fn, dtypes=dtypes, devices=devices,
                                     needs_xla=needs_xla, priority=priority, cases=cases,
                                     when=when, replaces=replaces, polymorphic=polymorphic,
                                     targets=targets, name=name, doc=doc))
        setattr(fn, _MARK, records)
        return fn
    return mark


def rules_of(obj: Any) -> list[Rule]:
    """Rules marked on a function, or every rule of a module (its ``@rule`` functions and
    the Rule objects in its ``RULES`` list), in definition order."""
    if callable(obj) and hasattr(obj, _MARK):
        return list(getattr(obj, _MARK))
    found: list[Rule] = []
    for value in vars(obj).values():
        if callable(value) and hasattr(value, _MARK):
            # only functions defined in this module, not ones imported from elsewhere
            if getattr(value, "__module__", None) == getattr(obj, "__name__", None):
                found.extend(getattr(value, _MARK))
    found.extend(getattr(obj, "RULES", ()))
    return found
