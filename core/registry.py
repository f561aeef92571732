"""The rule registry: pluggy finds rule packages, this module decides.

Building a registry calls each package's ``register_rules`` hook once, checks every rule
(unknown dtypes/devices, rules replacing nothing, ties nobody could break) and freezes one
index ``primitive -> rules, best first``. Selecting a rule for an equation is a lookup in
that index; no pluggy call happens per equation.

Run ``python -m core.registry list`` for the coverage table.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import traceback
import types
from typing import Any, Callable, Iterable, Sequence

if __name__ == "__main__":      # the CLI: without TensorFlow's start-up log lines
    from core import _import_tensorflow_quietly
    _import_tensorflow_quietly()

import pluggy

from core import hookspecs
from core import dtypes as _dtypes
from core.errors import NoRuleError, RegistryError
from core.rule import Rule, make_rule, rules_of

ENTRY_POINT_GROUP = "jaxtf.rules"
BUILTIN_PACKAGES = ("rules_lax", "rules_nn", "rules_random")


@dataclasses.dataclass
class PluginRecord:
    """One rule package: where it came from, how many rules it gave, or why it failed."""
    name: str
    source: str                      # "builtin" or "entry point"
    distribution: str = ""
    version: str = ""
    rule_count: int = 0
    error: str | None = None


class Registrar:
    """Handed to a package's ``register_rules`` hook; records each rule with its package."""

    def __init__(self, package: str):
        self.package = package
        self.rules: list[Rule] = []

    def module(self, mod: types.ModuleType) -> None:
        """Add every ``@rule`` function of ``mod`` and the Rule objects in ``mod.RULES``."""
        found = rules_of(mod)
        if not found:
            raise RegistryError(f"{self.package}: module {mod.__name__} declares no rules")
        for r in found:
            self.rule(r)

    def rule(self, obj: Rule | Callable) -> None:
        """Add one Rule, or every rule marked on a function."""
        items = [obj] if isinstance(obj, Rule) else rules_of(obj)
        if not items:
            raise RegistryError(f"{self.package}: {obj!r} is neither a Rule nor a @rule function")
        self.rules.extend(r.with_package(self.package) for r in items)


@dataclasses.dataclass(frozen=True)
class Candidate:
    rule: Rule
    reason: str | None                # None: applicable


@dataclasses.dataclass
class Gap:
    """An equation no rule can lower."""
    primitive: str
    dtypes: tuple[str, ...]
    where: str
    name_stack: str
    params: str
    candidates: list[Candidate]


def eqn_dtypes(eqn) -> tuple[str, ...]:
    """The dtypes a rule's constraint is checked against: the operands', or the results'
    when the equation has no operands (iota, rng ops)."""
    avals = [v.aval for v in eqn.invars] or [v.aval for v in eqn.outvars]
    names = []
    for a in avals:
        dt = getattr(a, "dtype", None)
        if dt is not None:
            n = _dtypes.name_of(dt)
            if n not in names:
                names.append(n)
    return tuple(names)


class Registry:
    """A frozen index of rules. Use :func:`build_registry` or :func:`default_registry`."""

    def __init__(self, rules: Sequence[Rule], plugins: Sequence[PluginRecord] = (),
                 replaced: Sequence[tuple[Rule, Rule]] = ()):
        index: dict[str, list[Rule]] = {}
        for r in rules:
            index.setdefault(r.primitive, []).append(r)
        for prim, rs in index.items():
            rs.sort(key=lambda r: (r.priority, r.specificity), reverse=True)
            _check_same_primitive(prim, rs)
            _check_ties(prim, rs)
        self._index = {p: tuple(rs) for p, rs in index.items()}
        self.plugins = tuple(plugins)
        self.replaced = tuple(replaced)   # (replacing rule, replaced rule)

    # -- queries ---------------------------------------------------------------------------
    def rules(self, primitive: str | None = None) -> list[Rule]:
        if primitive is not None:
            return list(self._index.get(primitive, ()))
        return [r for rs in self._index.values() for r in rs]

    def primitives(self) -> list[str]:
        return sorted(self._index)

    def ranked(self, primitive: str, target: str = "tf") -> tuple[Rule, ...]:
        """The rules for ``primitive`` in the order they are tried for ``target``: rules
        written for that target first, then the generic ones (each group by rank)."""
        rules = self._index.get(primitive, ())
        if not any(r.targets for r in rules):
            return rules
        return (tuple(r for r in rules if r.targets and target in r.targets)
                + tuple(r for r in rules if not (r.targets and target in r.targets)))

    def candidates(self, primitive: str, dtypes: Iterable[str], device: str = "cpu",
                   allow_xla: bool = False, eqn=None, target: str = "tf") -> list[Candidate]:
        """Every rule for ``primitive``, best first, with why it does or does not apply."""
        return [Candidate(r, r.reject_reason(dtypes, device, allow_xla, eqn, target))
                for r in self.ranked(primitive, target)]

    def with_overrides(self, add: Sequence[Rule | Callable] = (),
                       disable: Sequence[str] = ()) -> "Registry":
        """A new registry for one conversion: ``add`` rules (package "extra"), ``disable``
        rules by id. The result is checked like a freshly built one."""
        known = {r.id for r in self.rules()}
        unknown = [d for d in disable if d not in known]
        if unknown:
            raise RegistryError(f"cannot disable unknown rule ids {unknown}; "
                                "`python -m core.registry list` shows the ids")
        reg = Registrar("extra")
        for r in add:
            reg.rule(r)
        rules = [r for r in self.rules() if r.id not in set(disable)] + reg.rules
        kept, replaced = _apply_replacements(rules)
        return Registry(kept, self.plugins, (*self.replaced, *replaced))

    def select(self, eqn, device: str = "cpu", allow_xla: bool = False,
               prefer: dict[str, str] | None = None, target: str = "tf") -> Rule:
        """The rule for one equation. Raises :class:`NoRuleError` when none applies."""
        prim = eqn.primitive.name
        found = self._find(eqn, prim, eqn_dtypes(eqn), device, allow_xla, prefer, target)
        if isinstance(found, Rule):
            return found
        raise NoRuleError(format_gaps([found], device, allow_xla, target=target), [found])

    def _find(self, eqn, prim, dts, device, allow_xla, prefer, target="tf") -> Rule | Gap:
        rules = self.ranked(prim, target)
        if prefer and prim in prefer:
            # a preferred rule goes first; the others stay as fallbacks
            rules = tuple(sorted(rules, key=lambda r: r.id != prefer[prim]))
        for r in rules:
            if r.reject_reason(dts, device, allow_xla, eqn, target) is None:
                return r
        return Gap(prim, dts, where(eqn), _name_stack(eqn), _short_params(eqn),
                   [Candidate(r, r.reject_reason(dts, device, allow_xla, eqn, target))
                    for r in rules])

    def check(self, jaxpr, device: str = "cpu", allow_xla: bool = False,
              prefer: dict[str, str] | None = None, target: str = "tf") -> list[Gap]:
        """Pre-flight: every equation of ``jaxpr`` and of its sub-jaxprs without a rule."""
        gaps: list[Gap] = []
        for eqn in all_eqns(jaxpr):
            found = self._find(eqn, eqn.primitive.name, eqn_dtypes(eqn), device, allow_xla,
                               prefer, target)
            if isinstance(found, Gap):
                gaps.append(found)
        return gaps

    def require(self, jaxpr, device: str = "cpu", allow_xla: bool = False,
                prefer: dict[str, str] | None = None, what: str = "the program",
                target: str = "tf") -> None:
        gaps = self.check(jaxpr, device, allow_xla, prefer, target)
        if gaps:
            raise NoRuleError(format_gaps(gaps, device, allow_xla, what, self.plugins,
                                          target=target), gaps)


def _check_same_primitive(prim: str, rules: list[Rule]) -> None:
    objs = {}
    for r in rules:
        if r.primitive_obj is not None:
            objs.setdefault(id(r.primitive_obj), r)
    if len(objs) > 1:
        a, b = list(objs.values())[:2]
        raise RegistryError(
            f"two different primitives are named {prim!r}: {a.id} ({a.package}) lowers the "
            f"one from {getattr(a.primitive_obj, '__module__', '?')}, {b.id} ({b.package}) "
            f"another. Rename one of the primitives, or block one package "
            f"(JAXTF_BLOCK_PLUGINS).")


def _check_ties(prim: str, rules: list[Rule]) -> None:
    for i, a in enumerate(rules):
        for b in rules[i + 1:]:
            if (a.priority, a.specificity) != (b.priority, b.specificity):
                break
            same_targets = (a.targets is None and b.targets is None) or \
                bool(a.targets and b.targets and a.targets & b.targets)
            if same_targets and a.dtypes & b.dtypes and a.devices & b.devices:
                raise RegistryError(
                    f"ambiguous rules for {prim!r}: {a.id} ({a.package}) and {b.id} "
                    f"({b.package}) have the same priority {a.priority} and specificity and "
                    f"both accept {sorted(a.dtypes & b.dtypes)[:4]} on "
                    f"{sorted(a.devices & b.devices)}. Give one a higher priority, narrow "
                    f"its dtypes, or declare replaces='{a.id}'.")


def all_eqns(jaxpr):
    """Every equation of ``jaxpr`` (open or closed), sub-jaxprs included, in order."""
    from jax.extend.core import jaxprs_in_params
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jaxprs_in_params(eqn.params):
            yield from all_eqns(sub)


def where(eqn) -> str:
    """The user's source line of an equation, for error messages (frames of jaxtf's own
    packages are skipped, as JAX skips its own)."""
    try:
        from jax._src import source_info_util
        _exclude_own_frames(source_info_util)
        return source_info_util.summarize(eqn.source_info) or "unknown location"
    except Exception:  # source info is best effort
        return "unknown location"


_OWN_FRAMES_EXCLUDED = []


def _exclude_own_frames(source_info_util) -> None:
    if not _OWN_FRAMES_EXCLUDED:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        for pkg in ("core", *BUILTIN_PACKAGES):
            source_info_util.register_exclusion(os.path.join(root, pkg) + os.sep)
        _OWN_FRAMES_EXCLUDED.append(True)


def _name_stack(eqn) -> str:
    return str(getattr(eqn.source_info, "name_stack", "")) or ""


def _short_params(eqn) -> str:
    from jax.extend.core import jaxprs_in_params
    out = []
    for k, v in eqn.params.items():
        if list(jaxprs_in_params({k: v})):
            continue
        s = str(v)
        out.append(f"{k}={s if len(s) < 60 else s[:57] + '...'}")
    return " ".join(out)


def format_gaps(gaps: list[Gap], device: str, allow_xla: bool, what: str = "the program",
                plugins: Sequence[PluginRecord] = (), target: str = "tf") -> str:
    """The NoRuleError text: gaps grouped by primitive and dtypes, counted, each with its
    first source line and every candidate with the reason it was rejected."""
    groups: dict[tuple, list[Gap]] = {}
    for g in gaps:
        groups.setdefault((g.primitive, g.dtypes), []).append(g)
    lines = [f"{len(gaps)} equation{'s' if len(gaps) != 1 else ''} in {what} "
             f"{'have' if len(gaps) != 1 else 'has'} no usable rule "
             f"(device {device}, allow_xla={allow_xla}"
             + (f", target {target}" if target != "tf" else "") + "):"]
    for i, ((prim, dts), gs) in enumerate(groups.items(), 1):
        g = gs[0]
        count = f" ({len(gs)} equations)" if len(gs) > 1 else ""
        lines.append(f"[{i}] {prim}  dtypes {{{', '.join(dts)}}}{count}  {g.params}")
        lines.append(f"    at {g.where}" + (f"   (JAX name stack: {g.name_stack})"
                                             if g.name_stack else ""))
        if not g.candidates:
            from core.statuses import NO_RULE
            if prim in NO_RULE:
                status, reason = NO_RULE[prim]
                lines.append(f"    no rule for {prim!r}: {status}: {reason}")
            else:
                lines.append(f"    no rule for {prim!r} in any loaded package; custom "
                             f"primitives need a rule package (entry-point group "
                             f"'{ENTRY_POINT_GROUP}')")
        for c in g.candidates:
            lines.append(f"    {c.rule.id} ({c.rule.package}) prio {c.rule.priority}: "
                         f"rejected: {c.reason}")
    failed = [p for p in plugins if p.error]
    if failed:
        lines.append("Rule packages that failed to load (their rules are missing): "
                     + ", ".join(f"{p.name} ({p.error.splitlines()[-1]})" for p in failed))
    return "\n".join(lines)


# -- building ---------------------------------------------------------------------------------

def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def build_registry(packages: Sequence[Any] | None = None, *, entry_points: bool | None = None,
                   strict: bool | None = None, extra_rules: Sequence[Rule | Callable] = (),
                   blocked: Sequence[str] | None = None,
                   plugins: Sequence[types.ModuleType] = ()) -> Registry:
    """Build a frozen registry.

    :param packages: rule packages (modules or import names) to register explicitly;
        default: the built-in ``rules_lax``, ``rules_nn``, ``rules_random``.
    :param entry_points: also load third-party packages from the entry-point group
        ``jaxtf.rules``; default True unless ``JAXTF_DISABLE_PLUGIN_AUTOLOAD=1``.
    :param strict: raise when a third-party package fails to load or conflicts, instead of
        recording the error and leaving the package out; default from
        ``JAXTF_STRICT_PLUGINS=1``. A broken built-in package always raises.
    :param extra_rules: rules added under the package name "extra".
    :param plugins: third-party rule packages (modules with a ``register_rules`` hook)
        loaded like entry points: isolated, recorded if they fail.
    :param blocked: entry-point names not to load; default from ``JAXTF_BLOCK_PLUGINS``
        (comma-separated).
    """
    if entry_points is None:
        entry_points = not _env_flag("JAXTF_DISABLE_PLUGIN_AUTOLOAD")
    if strict is None:
        strict = _env_flag("JAXTF_STRICT_PLUGINS")
    if blocked is None:
        blocked = [b.strip() for b in os.environ.get("JAXTF_BLOCK_PLUGINS", "").split(",")
                   if b.strip()]
    load = _Loader(strict)
    load.builtins(BUILTIN_PACKAGES if packages is None else packages)
    load.modules(plugins)
    if entry_points:
        load.entry_points(blocked)
    accepted = load.rules()
    if extra_rules:
        reg = Registrar("extra")
        for r in extra_rules:
            reg.rule(r)
        accepted.extend(reg.rules)
        load.records["extra"] = PluginRecord("extra", "argument", rule_count=len(reg.rules))
    rules, replaced = _apply_replacements(accepted)
    return Registry(rules, list(load.records.values()), replaced)


class _Loader:
    """One build: the plugin manager, a record per rule package in load order, and what a
    failure does (raise for a built-in package or in strict mode, else record it)."""

    def __init__(self, strict: bool):
        self.strict = strict
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}

    def fail(self, rec: PluginRecord, exc: BaseException) -> None:
        rec.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        if self.strict or rec.source == "builtin":
            raise RegistryError(f"rule package {rec.name!r} ({rec.source}) failed to load: "
                                f"{rec.error}") from exc

    def _register(self, rec: PluginRecord, load: Callable[[], Any]) -> None:
        self.records[rec.name] = rec
        try:
            self.pm.register(load(), name=rec.name)
        except Exception as exc:
            self.fail(rec, exc)

    def builtins(self, packages: Sequence[Any]) -> None:
        """The packages registered explicitly (modules or import names)."""
        for pkg in packages:
            name = pkg if isinstance(pkg, str) else pkg.__name__
            self._register(PluginRecord(name, "builtin"), lambda: (
                importlib.import_module(pkg) if isinstance(pkg, str) else pkg))

    def modules(self, plugins: Sequence[types.ModuleType]) -> None:
        """Third-party packages handed over as modules: loaded like entry points."""
        for mod in plugins:
            self._register(PluginRecord(mod.__name__, "argument"), lambda: mod)

    def entry_points(self, blocked: Sequence[str]) -> None:
        """The entry-point group ``jaxtf.rules``, by name; a blocked name or one already
        taken is recorded with why it was not loaded."""
        for ep in sorted(_entry_points(), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            rec = PluginRecord(ep.name, "entry point", getattr(dist, "name", "") or "",
                               getattr(dist, "version", "") or "")
            if ep.name in blocked:
                rec.error = "blocked (JAXTF_BLOCK_PLUGINS or blocked=)"
                self.records[ep.name] = rec
            elif ep.name in self.records:
                taken = self.records[ep.name]
                rec.error = (f"entry point name {ep.name!r} is already taken by "
                             f"{taken.distribution or taken.source}")
                self.records[f"{ep.name} ({rec.distribution})"] = rec
            else:
                self._register(rec, ep.load)

    def rules(self) -> list[Rule]:
        """Each package's ``register_rules`` hook, in load order; a package whose rules
        conflict with the ones accepted before it is left out whole."""
        accepted: list[Rule] = []
        order = {name: i for i, name in enumerate(self.records)}
        impls = sorted(self.pm.hook.register_rules.get_hookimpls(),
                       key=lambda i: order.get(i.plugin_name, len(order)))
        for impl in impls:
            rec = self.records.get(impl.plugin_name) or self.records.setdefault(
                impl.plugin_name, PluginRecord(impl.plugin_name, "registered"))
            reg = Registrar(impl.plugin_name)
            try:
                impl.function(register=reg)
                _validate(accepted + reg.rules)
            except Exception as exc:
                self.fail(rec, exc)
                continue
            rec.rule_count = len(reg.rules)
            accepted.extend(reg.rules)
        return accepted


def _validate(rules: list[Rule]) -> None:
    kept, _ = _apply_replacements(rules)
    Registry(kept)


def _apply_replacements(rules: list[Rule]) -> tuple[list[Rule], list[tuple[Rule, Rule]]]:
    by_id = {(r.primitive, r.id): r for r in rules}
    replaced = []
    for r in rules:
        if r.replaces is not None:
            target = by_id.get((r.primitive, r.replaces))
            if target is None:
                raise RegistryError(f"{r.id} ({r.package}) declares replaces={r.replaces!r}, "
                                    f"but no rule with that id lowers {r.primitive!r}")
            replaced.append((r, target))
    gone = {id(t) for _, t in replaced}
    return [r for r in rules if id(r) not in gone], replaced


def _entry_points():
    try:
        from importlib.metadata import entry_points
    except ImportError:  # pragma: no cover
        from importlib_metadata import entry_points
    return list(entry_points(group=ENTRY_POINT_GROUP))


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The registry of built-in and installed rule packages, built on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = build_registry()
    return _DEFAULT


if __name__ == "__main__":
    # The command-line interface lives in core.coverage; entering through the importable
    # modules keeps one registry module instance.
    from core.coverage import main as _main
    sys.exit(_main())
