"""rules_nn: see FAMILIES."""
from core.hookspecs import hookimpl

FAMILIES: tuple[str, ...] = ("conv", "windows", "activations")


@hookimpl
def register_rules(register) -> None:
    import importlib
    for family in FAMILIES:
        register.module(importlib.import_module(f"{__name__}.{family}"))
