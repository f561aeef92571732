"""What a jaxtf rule package may implement. These docstrings are the contract.

Every hook runs once, while the registry is built; none runs per equation.
A package is a module (or any object) with ``@hookimpl``-marked functions; built-in
packages are registered by the registry itself, third-party ones through the entry-point
group ``jaxtf.rules`` in their ``pyproject.toml``::

    [project.entry-points."jaxtf.rules"]
    mypkg = "mypkg.tf_rules"
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import pluggy

if TYPE_CHECKING:
    from core.registry import Registrar

PROJECT = "jaxtf"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_rules(register: "Registrar") -> None:
    """Add this package's lowering rules.

    ``register.module(mod)`` adds every ``@rule`` function of ``mod`` (and the Rule objects
    in its ``RULES`` list); ``register.rule(fn_or_rule)`` adds one. The return value is
    ignored. The registrar records the package that gave each rule, for ``list`` and
    error messages.

    If this hook raises, only this package is disabled: it is listed as "failed to load"
    with its error. With strict plugin loading the error propagates instead.
    """


def register_families(package: str, families) -> "Callable[[Registrar], None]":
    """A ``register_rules`` hook adding the rules of the modules ``package.family`` for
    each of ``families``, in order: what a package of family modules (the built-in ones)
    puts in its ``__init__``: ``register_rules = register_families(__name__, FAMILIES)``."""
    @hookimpl
    def register_rules(register: "Registrar") -> None:
        import importlib
        for family in families:
            register.module(importlib.import_module(f"{package}.{family}"))
    return register_rules
