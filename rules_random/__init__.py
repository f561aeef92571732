"""rules_random: see FAMILIES."""
from core.hookspecs import hookimpl

FAMILIES: tuple[str, ...] = ("keys", "threefry", "rbg", "rng_uniform")


@hookimpl
def register_rules(register) -> None:
    import importlib
    for family in FAMILIES:
        register.module(importlib.import_module(f"{__name__}.{family}"))
